"""Executes lab1_sparse_linear.ipynb top to bottom, as CI and the grader do.

Outputs are redirected to a pytest temp dir through LAB1_REPORT_DIR so the run never
touches the committed report/ files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "lab1_sparse_linear.ipynb"
EXPECTED_PNGS = sorted(
    [f"lab1_{q}_{kind}.png" for q in "bcdef" for kind in ("loss", "weights")]
    + ["lab1_f_first20.png"]
)


def test_notebook_runs_and_writes_report(tmp_path: Path, monkeypatch) -> None:
    # The kernel inherits this process's environment.
    monkeypatch.setenv("LAB1_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    written = sorted(p.name for p in tmp_path.glob("lab1_*.png"))
    assert written == EXPECTED_PNGS
    assert all((tmp_path / name).stat().st_size > 1000 for name in EXPECTED_PNGS)
    summary = (tmp_path / "lab1_summary.md").read_text(encoding="utf-8")
    assert summary.count("\n| (") == 14  # one table row per run: b, c, 4 x d, 4 x e, 4 x f
