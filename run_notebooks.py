"""Execute the kit's notebooks top to bottom and build the report.

    python run_notebooks.py           # full mode: Lab 1, hw4 (CIFAR-10), report/report.pdf
    python run_notebooks.py --quick   # CPU smoke test: everything lands in report/quick/

Full mode executes the notebooks in place (their outputs are the submission). Quick mode
writes the executed notebooks to report/quick/, so smoke-test numbers never end up in the
committed notebooks or in report/.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parent
QUICK_CELL_TIMEOUT_S = 1800


def execute(notebook, out, env_overrides, timeout=None):
    """Run `notebook` in a fresh kernel (cwd = repo root) and save it, outputs included, to
    `out`. `timeout`: seconds per cell, None for no limit (a full-mode cell trains several
    stages: hours on a CPU). Any failure (an error in a cell, a cell timeout, a dead kernel,
    Ctrl-C) leaves the notebook as far as it ran in <name>.error.ipynb, so a failed run never
    overwrites a good one, and exits with a one-line reason."""
    os.environ.update(env_overrides)  # the kernel inherits this process's environment
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    # record_timing=False: re-running an unchanged notebook gives an unchanged file
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every failure is reported alike
        failed = out.with_name(out.stem + ".error.ipynb")
        failed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, failed)
        raise SystemExit(f"{notebook.name} stopped: {failure_reason(err, timeout)} "
                         f"(the notebook as far as it ran: {failed})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"{notebook.name}: executed in {time.perf_counter() - start:.0f} s -> {out}")


def failure_reason(err, timeout):
    """One line saying why execution stopped."""
    if isinstance(err, CellExecutionError):
        return f"{err.ename}: {str(err.evalue).splitlines()[0] if err.evalue else ''}"
    if isinstance(err, CellTimeoutError):
        return f"a cell ran longer than its {timeout} s limit (CellTimeoutError)"
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt); finished stages and epochs resume on the next run"
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU smoke test (numbers are not results)")
    parser.add_argument("--skip-lab1", action="store_true")
    parser.add_argument("--skip-hw4", action="store_true")
    parser.add_argument("--skip-extensions", action="store_true",
                        help="skip lecture_extensions.ipynb (it needs hw4's pretrained model)")
    parser.add_argument("--skip-deep-compression", action="store_true",
                        help="skip deep_compression.ipynb (it needs hw4's pretrained model)")
    parser.add_argument("--skip-report", action="store_true",
                        help="e.g. on a GPU machine without the PDF packages; run python -m report later")
    args = parser.parse_args(argv)
    env = {"HW4_QUICK": "1" if args.quick else "0"}
    # quick mode is a smoke test that must finish; full mode may train for hours per cell
    timeout = QUICK_CELL_TIMEOUT_S if args.quick else None
    results_dir = ROOT / ("report/quick" if args.quick else "report")
    # Lab 1 is exact and takes seconds: it has no quick mode, --quick only writes its copy aside
    for skip, name, quick_copy in ((args.skip_lab1, "lab1_sparse_linear", "lab1_executed"),
                                   (args.skip_hw4, "hw4", "hw4_quick"),
                                   (args.skip_extensions, "lecture_extensions", "extensions_quick"),
                                   (args.skip_deep_compression, "deep_compression",
                                    "deep_compression_quick")):
        if not skip:  # full mode executes in place: the committed notebook carries its outputs
            notebook = ROOT / f"{name}.ipynb"
            out = results_dir / f"{quick_copy}.ipynb" if args.quick else notebook
            execute(notebook, out, env, timeout)
    if not args.skip_report:
        subprocess.run([sys.executable, "-m", "report", "--results-dir", str(results_dir)],
                       cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
