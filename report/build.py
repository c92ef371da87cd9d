"""Assemble ``report.md`` and ``report.pdf`` for ECE 661 HW4 (pruning and quantization).

Usage, from the repository root::

    python -m report                              # full results: report/ -> report/report.{md,pdf}
    python -m report --results-dir report/quick   # quick smoke run -> report/quick/report.{md,pdf}

Inputs (any of them may be missing; the report then says "not run"):

* ``<results-dir>/results.json`` and the hw4 figures written next to it;
* Lab 1, always from the repository: the answer cells of ``lab1_sparse_linear.ipynb``
  tagged ``report:lab1-<q>``, the figures ``report/lab1_*.png`` and ``report/lab1_summary.md``
  (the final-runs table, then per question the tables and sentences behind its discussion,
  placed between the question's task cell and its discussion);
* ``report/answers.md`` (True/False answers, shipped with this package).

Tables and discussion paragraphs come from ``report.tables`` / ``report.discussion``, the
same functions hw4.ipynb shows inline, so notebook and report cannot disagree.

The PDF is rendered by ``report.pdf`` (markdown -> HTML -> fpdf2).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from report.discussion import discussion, evidence as hw4_evidence
from report.deep_compression_section import section as deep_compression_section
from report import extensions_section as extensions
from report.pdf import markdown_to_html, render_pdf
from report.tables import (NOT_RUN, QUICK_BANNER, caption, get, is_quick, md_table,
                           table, test_set)

REPO_ROOT = Path(__file__).resolve().parent.parent
ANSWERS = Path(__file__).resolve().parent / "answers.md"
LAB1_NOTEBOOK = "lab1_sparse_linear.ipynb"
LAB1_TAG = "report:lab1-"
# a "## (c) <heading>" line of lab1_summary.md starts the numbers of question (c)
LAB1_SECTION = re.compile(r"^## \(([a-f])\)[ \t]*(.*)$", re.M)
# where answers.md cites a measurement of the lecture extensions (see tf_section)
MEASURED = re.compile(r"^<!-- measured: (1\.\d+) -->$", re.M)
TITLE = "ECE 661 Homework 4: Pruning and Fixed-point Quantization"

# --------------------------------------------------------------------------- questions
LAB1 = {
    "a": "gradient-descent update rule",
    "b": "plain gradient descent",
    "c": "projected gradient descent onto ‖W‖₀ ≤ 2",
    "d": "ℓ1 regularization by gradient descent",
    "e": "proximal gradient descent (soft thresholding)",
    "f": "trimmed ℓ1 with proximal gradient descent",
}

# key -> (heading title, task summary, tables, figures); discussion uses the same key
LAB2 = {
    "lab2a": ("pretrained model", "Accuracy of the floating-point pretrained ResNet-20.",
              ["lab2a"], []),
    "lab2b": ("pruning by percentage", "Each layer pruned at the q-th percentile of its "
              "|weights|, q = 40, 60, 80 %, without finetuning.", ["lab2b"],
              ["hw4_2b_layer_zeros.png"]),
    "lab2c": ("one-shot pruning and finetuning", "Prune by q = 80 % once, then finetune 20 "
              "epochs with the pruned weights held at zero.", ["lab2c"], []),
    "lab2d": ("iterative pruning", "Prune 8e% before epoch e = 1..10 (pruned weights may "
              "recover until the last step), then finetune 10 more epochs.", ["lab2d"],
              ["hw4_2cd_curves.png"]),
    "lab2e": ("global iterative pruning", "One magnitude threshold ranked over all layers, "
              "iterative schedule to 80% zeros.", ["lab2e", "lab2e_layers"],
              ["hw4_2e_layer_zeros.png"]),
}
LAB3 = {
    "lab3b": ("quantization without finetuning", "Residual stages quantized to Nbits "
              "(first conv and FC stay floating point), no finetuning.", ["lab3b"],
              ["hw4_3b_bits.png"]),
    "lab3c": ("quantization-aware finetuning", "20 epochs of finetuning with the STE at 4, "
              "3 and 2 bits.", ["lab3c"], ["hw4_3c_curves.png"]),
    "lab3d": ("quantizing the pruned model", "Each recipe's best 80%-sparse model from Lab 2, "
              "quantized with a zero-preserving STE, then finetuned as in (c).", ["lab3d"],
              ["hw4_3d_curves.png"]),
    "lab3e": ("pruning with quantization-aware training", "Global iterative pruning to 80% "
              "as in Lab 2 (e), with 4-bit quantization during training.",
              ["lab3e", "lab3e_layers"], ["hw4_3e_layer_zeros.png"]),
}

FIGURES = {
    "hw4_2b_layer_zeros.png": "zeros (%) per layer after pruning at q = 40, 60, 80 %",
    "hw4_2cd_curves.png": "test accuracy per epoch, one-shot (c) vs. iterative (d) pruning",
    "hw4_2e_layer_zeros.png": "zeros (%) per layer after global pruning",
    "hw4_3b_bits.png": "accuracy vs. Nbits without finetuning",
    "hw4_3c_curves.png": "test accuracy per epoch of quantization-aware finetuning",
    "hw4_3d_curves.png": "test accuracy per epoch, quantization-aware finetuning of the "
                         "pruned model",
    "hw4_3e_layer_zeros.png": "zeros (%) per layer after global pruning with 4-bit QAT",
    "hw4_compression.png": "final accuracy against storage size of every model",
}

LAB3A = r"""The STE class used for all of Lab 3 is rendered below from its source (the
screenshot the assignment asks for). Its forward pass quantizes the float weights of a
layer to $2^N$ levels with a scale computed from the current weights (dynamic scaling);
its backward pass returns the incoming gradient unchanged, so the float weights $W$ are
the trainable variables and receive the gradient of the quantized weights $Q(W)$:

$$\dfrac{\partial \mathcal{L}}{\partial W} \approx \dfrac{\partial \mathcal{L}}{\partial Q(W)}$$

For Lab 3 (d) the zero weights of the pruned model are masked out of the quantizer so
that they stay exactly zero."""

LAB2_INTRO = """Every run is reported with two finetuning recipes: *faithful* follows the
assignment's pipeline as given, *improved* is our tuned variant (both listed below).
"Best" is the highest test accuracy over the epochs and is chosen on the test set, so it is
optimistic; "final" is the last epoch."""


# --------------------------------------------------------------------------- helpers
def rel(path: Path, out_dir: Path) -> str:
    """Path of ``path`` relative to the folder of report.md, with forward slashes."""
    return Path(os.path.relpath(path, out_dir)).as_posix()


def demote(md: str, levels: int = 2) -> str:
    """Push markdown headings down ``levels`` levels so they nest under ours.

    Fenced code is left alone (a "# comment" there is not a heading).
    """
    def shift(text):
        return re.sub(r"^(#{1,6})(?=\s)",
                      lambda m: "#" * min(6, len(m.group(1)) + levels), text, flags=re.M)
    pieces = re.split(r"(```.*?```)", md, flags=re.S)
    return "".join(p if i % 2 else shift(p) for i, p in enumerate(pieces))


def figure_row(paths: list[Path], out_dir: Path, title: str) -> str:
    """Markdown for one or more figures shown side by side, with a caption."""
    have = [p for p in paths if p.exists()]
    missing = "".join(f"\n\n*Figure {p.name}: {NOT_RUN}.*" for p in paths if not p.exists())
    if not have:
        return missing.strip()
    imgs = " ".join(f"![{p.stem}]({rel(p, out_dir)})" for p in have)
    return f"{imgs}\n\n*Figure: {title}.*{missing}"


def git_commit(root: Path) -> str:
    """Short commit of ``root`` (+ a note when the tree is dirty), or "not available"."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=10)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode:
            return "not available"
        # --no-optional-locks: a read-only look that never touches the index
        dirty = " (working tree has uncommitted changes)" if git(
            "--no-optional-locks", "status", "--porcelain").stdout.strip() else ""
        return head.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return "not available"


def load_results(results_dir: Path) -> dict:
    """``results.json`` from ``results_dir``, or {} when it does not exist yet."""
    path = results_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


# --------------------------------------------------------------------------- sections
def banner(results: dict) -> str:
    """Quick-mode stamp placed under every section heading (empty in full mode)."""
    return f"\n\n**{QUICK_BANNER}**" if is_quick(results) else ""


def _training_hours(results: dict) -> str:
    """Wall time the stage records add up to: what the results cost to train, also when this
    execution only reloaded them (then it is short and says nothing about training)."""
    def walk(node):
        if not isinstance(node, dict):
            return 0.0
        own = (node.get("wall_s") or 0.0) if "epochs" in node else 0.0
        return own + sum(walk(v) for k, v in node.items() if k != "meta")
    seconds = walk(results)
    return f"{seconds / 3600:.2f} h (the stage records' wall time)" if seconds else NOT_RUN


def title_section(results: dict, root: Path) -> str:
    """Title and run information."""
    m = results.get("meta", {})
    wall = get(m, "wall_s")
    rows = [
        ["mode", str(m.get("mode", NOT_RUN))],
        ["data", str(m.get("data_source", NOT_RUN))],
        ["test set", test_set(results)],
        ["training images", str(m.get("train_images", NOT_RUN))],
        ["device", str(m.get("device", NOT_RUN))],
        ["torch", str(m.get("torch", NOT_RUN))],
        ["pretrained checkpoint", f"{get(m, 'pretrained', 'path') or NOT_RUN} "
                                  f"(sha256 {str(get(m, 'pretrained', 'sha256') or '?')[:16]})"],
        ["this execution", (f"{m['started']} to {m.get('finished', '?')}" if m.get("started")
                            else NOT_RUN) + (f" ({wall / 3600:.2f} h)" if wall else "")],
        ["training time of its stages", _training_hours(results)],
        ["report generated", _dt.datetime.now().isoformat(timespec="seconds")],
        ["git commit", git_commit(root)],
    ]
    info = md_table(["item", "value"], rows, right_from=2)
    return (f"# {TITLE}{banner(results)}\n\n{caption(results, 'run information', accuracy=False)}\n\n"
            f"{info}\n")


def _evidence(results: dict, measured: dict, problem: str) -> str:
    """hw4's and the extensions' measurements that answer ``problem`` cites, one paragraph each."""
    cited = [hw4_evidence(results, problem)]
    if problem in extensions.EVIDENCE:
        cited.append(extensions.evidence(measured, problem))
    return "\n\n".join(c for c in cited if c)


def tf_section(results: dict, rdir: Path) -> str:
    """Section 1: our True/False answers (report/answers.md without its own title); a line
    ``<!-- measured: 1.2 -->`` becomes the measurements of section 6 that the answer cites."""
    body = ANSWERS.read_text() if ANSWERS.exists() else f"True/False answers: {NOT_RUN}."
    body = re.sub(r"\A#\s.*\n", "", body.lstrip())
    measured = extensions.load(rdir)
    body = MEASURED.sub(lambda m: _evidence(results, measured, m.group(1)), body)
    return f"# 1 True/False questions{banner(results)}\n\n{body.strip()}\n"


def lab1_cells(root: Path) -> dict[str, list[str]]:
    """Markdown answer cells of the Lab 1 notebook, keyed by question letter, in order."""
    nb = root / LAB1_NOTEBOOK
    if not nb.exists():
        return {}
    cells: dict[str, list[str]] = {}
    for cell in json.loads(nb.read_text()).get("cells", []):
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        for tag in cell.get("metadata", {}).get("tags", []):
            if cell.get("cell_type") == "markdown" and tag.startswith(LAB1_TAG):
                cells.setdefault(tag[len(LAB1_TAG):], []).append(src)
    return cells


def relink(md: str, base: Path, out_dir: Path) -> str:
    """Rewrite relative image links of ``md`` (relative to ``base``) for report.md."""
    def fix(m):
        src = m.group(2)
        if re.match(r"^([a-z]+:|/)", src):
            return m.group(0)
        return f"![{m.group(1)}]({rel(base / src, out_dir)})"
    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", fix, md)


def cell_title(cell: str, default: str) -> tuple[str, str]:
    """Use a cell's leading heading ("## (b) Plain gradient descent") as the question title."""
    m = re.match(r"#{1,6}\s+(?:\(?[a-f]\)\s*)?(.+)\n?", cell)
    if not m:
        return default, cell
    return m.group(1).strip(), cell[m.end():].strip()


def lab1_question(q: str, cells: list[str] | None, numbers: str | None, root: Path,
                  out_dir: Path) -> str:
    """One Lab 1 question: the task cell, its figures, the numbers the notebook measured
    for it (from lab1_summary.md), then the discussion cells."""
    title, task, rest = LAB1[q], f"*Lab 1 ({q}): {NOT_RUN} (no cell tagged {LAB1_TAG}{q} " \
                                 f"in {LAB1_NOTEBOOK}).*", []
    if cells:
        title, task = cell_title(cells[0].strip(), title)
        rest = cells[1:]
    parts = [demote(relink(c, root, out_dir)) for c in (task, *rest)]
    head = f"## Lab 1 ({q}): {title}\n\n"
    if q == "a":
        return head + "\n\n".join(parts) + "\n"
    shown = "\n".join(parts)
    figs = [root / "report" / f"lab1_{q}_{k}.png" for k in ("loss", "weights")]
    figs = [p for p in figs if p.name not in shown]   # a cell may embed them already
    extra = []
    if figs:
        extra.append(figure_row(figs, out_dir, f"Lab 1 ({q}), log L, then the elements of "
                                               f"W, vs. step"))
    first20 = root / "report" / "lab1_f_first20.png"
    if q == "f" and first20.name not in shown:
        extra.append(figure_row([first20], out_dir, "Lab 1 (f), the first 20 steps of "
                                                    "trimmed ℓ1 vs. iterative pruning"))
    if numbers:
        extra.append(numbers)
    return head + "\n\n".join([parts[0], *extra, *parts[1:]]) + "\n"


def lab1_section(results: dict, root: Path, out_dir: Path) -> str:
    """Section 2: Lab 1 from the notebook's tagged cells, figures and summary file."""
    cells = lab1_cells(root)
    table, numbers = lab1_summary_parts(root)
    parts = [f"# 2 Lab 1: sparse optimization of linear models{banner(results)}"]
    parts += [lab1_question(q, cells.get(q), numbers.get(q), root, out_dir) for q in LAB1]
    parts.append(f"## Lab 1 summary\n\n{table}\n")
    return "\n\n".join(parts)


def lab1_summary_parts(root: Path) -> tuple[str, dict[str, str]]:
    """report/lab1_summary.md as (final-runs table, {question: its numbers}).

    The notebook writes the table under a "# ..." title, whose text becomes the table
    caption, and then one "## (q) <heading>" section per question with the tables and
    sentences behind that question's discussion; each section keeps its heading, one
    level below the question's.
    """
    path = root / "report" / "lab1_summary.md"
    if not path.exists():
        return f"*Lab 1 summary table: {NOT_RUN}.*", {}
    pieces = LAB1_SECTION.split(path.read_text().strip())
    title, body = cell_title(pieces[0].strip(), "Lab 1 summary")
    numbers = {q: f"### {heading.strip()}\n\n{text.strip()}"
               for q, heading, text in zip(pieces[1::3], pieces[2::3], pieces[3::3])}
    return f"*Table: {title.rstrip('.')}.*\n\n{demote(body)}", numbers


def question_block(results: dict, key: str, spec: tuple, rdir: Path, out_dir: Path) -> str:
    """A Lab 2/3 question: task line, tables, figures and discussion."""
    title, task, tables, figs = spec
    name = f"Lab {key[3]} ({key[4]})"
    parts = [f"## {name}: {title}", f"*Task:* {task}"]
    parts += [table(results, t) for t in tables]
    parts += [figure_row([rdir / f], out_dir, f"{name}, {FIGURES[f]}") for f in figs]
    parts.append(discussion(results, key))
    return "\n\n".join(parts) + "\n"


def lab2_section(results: dict, rdir: Path, out_dir: Path) -> str:
    """Section 3: Lab 2, recipes, questions (a)-(e) and the timing check."""
    parts = [f"# 3 Lab 2: pruning ResNet-20{banner(results)}", LAB2_INTRO,
             table(results, "recipes")]
    parts += [question_block(results, k, s, rdir, out_dir) for k, s in LAB2.items()]
    parts.append("## Lab 2 timing: dense vs. masked training\n\n" + table(results, "timing")
                 + "\n\n" + discussion(results, "timing") + "\n")
    return "\n\n".join(parts)


def lab3_section(results: dict, rdir: Path, out_dir: Path) -> str:
    """Section 4: Lab 3, STE description (a) and questions (b)-(e)."""
    ste = figure_row([rdir / "ste_source.png"], out_dir, "Lab 3 (a), source of the STE "
                                                         "class")
    parts = [f"# 4 Lab 3: fixed-point quantization{banner(results)}",
             f"## Lab 3 (a): straight-through estimator\n\n{LAB3A}\n\n{ste}\n"]
    parts += [question_block(results, k, s, rdir, out_dir) for k, s in LAB3.items()]
    return "\n\n".join(parts)


def compression_section(results: dict, rdir: Path, out_dir: Path) -> str:
    """Section 5: what pruning and quantization save in storage, and what it costs."""
    fig = figure_row([rdir / "hw4_compression.png"], out_dir,
                     f"Compression, {FIGURES['hw4_compression.png']}")
    return "\n\n".join([f"# 5 Compression: storage size against accuracy{banner(results)}",
                         table(results, "compression"), fig, discussion(results, "compression")]) + "\n"


def report_markdown(results: dict, rdir: Path, out_dir: Path, root: Path) -> str:
    """The whole report as markdown (image links relative to ``out_dir``)."""
    sections = [title_section(results, root), tf_section(results, rdir),
                lab1_section(results, root, out_dir), lab2_section(results, rdir, out_dir),
                lab3_section(results, rdir, out_dir), compression_section(results, rdir, out_dir),
                extensions.section(rdir, out_dir, number=6),
                deep_compression_section(rdir, out_dir, number=7)]
    return "\n\n".join(s.strip() for s in sections) + "\n"


# --------------------------------------------------------------------------- entry point
def build(results_dir: str | Path | None = None, out_dir: str | Path | None = None,
          root: str | Path | None = None) -> Path:
    """Write report.md and report.pdf into ``out_dir`` (default: ``results_dir``).

    ``results_dir`` defaults to ``<root>/report``. ``root`` is the repository holding the
    Lab 1 notebook and ``report/lab1_*`` (default: this checkout); tests point it at a
    temporary folder. Returns the PDF path.
    """
    root = Path(root).resolve() if root else REPO_ROOT
    rdir = Path(results_dir).resolve() if results_dir else root / "report"
    out = Path(out_dir).resolve() if out_dir else rdir
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(rdir)
    md = report_markdown(results, rdir, out, root)
    (out / "report.md").write_text(md, encoding="utf-8")
    pdf_path = out / "report.pdf"
    banner_text = QUICK_BANNER if is_quick(results) else None
    with tempfile.TemporaryDirectory() as tmp:
        html = markdown_to_html(md, base=out, tmp=Path(tmp))
        render_pdf(html, pdf_path, banner_text, TITLE)
    return pdf_path
