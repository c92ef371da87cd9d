"""Tests for report/: shared tables, discussion wording, and the report.md/report.pdf builder.

The results dict is made up here (full schema, plausible values); the PDF text is read
back with pypdf, so the tests need no system packages.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from report.build import build
from report.pdf import keep_together, tex_to_html, top_level_blocks
from report.discussion import discussion
from report.tables import NOT_RUN, QUICK_BANNER, table

LAYERS = ["layer1.0.conv1", "layer1.0.conv2", "layer2.1.conv1", "layer3.2.conv2"]
HW4_FIGS = ["hw4_2b_layer_zeros.png", "hw4_2cd_curves.png", "hw4_2e_layer_zeros.png",
            "hw4_3b_bits.png", "hw4_3c_curves.png", "hw4_3d_curves.png",
            "hw4_3e_layer_zeros.png", "ste_source.png", "hw4_compression.png"]
TABLE_KEYS = ["lab2a", "lab2b", "lab2c", "lab2d", "lab2e", "lab2e_layers", "lab3b",
              "lab3c", "lab3d", "lab3e", "lab3e_layers", "timing", "recipes", "compression"]
HEADINGS = ([f"Problem 1.{i}" for i in range(1, 11)]
            + [f"Lab 1 ({q})" for q in "abcdef"] + [f"Lab 2 ({q})" for q in "abcde"]
            + [f"Lab 3 ({q})" for q in "abcde"] + ["Compression: storage size against accuracy"])


# ----------------------------------------------------------------------------- fixtures
def run(best, final, epoch, epochs=20, zeros=None, layer_zeros=None, wall=612.0):
    """A run record R with a short made-up history."""
    hist = {"epoch": list(range(1, epochs + 1)),
            "train_loss": [1.0 / e for e in range(1, epochs + 1)],
            "train_acc": [90.0] * epochs, "test_acc": [final] * epochs,
            "test_loss": [0.3] * epochs, "lr": [0.01] * epochs}
    r = {"final_acc": final, "best_acc": best, "best_epoch": epoch, "epochs": epochs,
         "history": hist, "wall_s": wall}
    if zeros is not None:
        r["zeros_pct"] = zeros
    if layer_zeros is not None:
        r["layer_zeros"] = layer_zeros
    return r


def make_results(mode: str = "full") -> dict:
    """Full-schema results with distinct, plausible values."""
    recipe = {"optimizer": "SGD", "lr": 0.01, "momentum": 0.9, "nesterov": False,
              "weight_decay": 0.0005, "batch_size": 128, "schedule": "constant"}
    lz2e = dict(zip(LAYERS, [52.5, 61.25, 78.5, 88.75]))
    lz3e = dict(zip(LAYERS, [50.5, 63.25, 77.5, 89.5]))
    return {
        "meta": {"mode": mode, "test_images": 1000, "test_label": "CIFAR-10 test[0:1000]",
                 "train_images": 50000, "device": "NVIDIA H100", "torch": "2.11.0",
                 "data_source": "torchvision CIFAR10",
                 "pretrained": {"path": "checkpoints/pretrained_model.pt", "sha256": "ab" * 32},
                 "recipes": {"faithful": recipe,
                             "improved": {**recipe, "nesterov": True, "schedule": "cosine"}},
                 "started": "2026-10-01T10:00:00", "finished": "2026-10-01T12:30:00",
                 "wall_s": 9000.0},
        "lab2a": {"acc": 91.87, "loss": 0.3012},
        "lab2b": {"40": {"acc": 91.12, "zeros_pct": 40.0, "layer_zeros": {}},
                  "60": {"acc": 88.43, "zeros_pct": 60.0, "layer_zeros": {}},
                  "80": {"acc": 62.35, "zeros_pct": 80.0, "layer_zeros": {}}},
        "lab2c": {"zeros_before": 80.0, "faithful": run(90.51, 90.27, 17, zeros=80.0),
                  "improved": run(91.03, 90.88, 19, zeros=80.0)},
        "lab2d": {"faithful": run(90.94, 90.66, 18, zeros=80.0),
                  "improved": run(91.22, 91.15, 20, zeros=80.0)},
        "lab2e": {"faithful": run(91.05, 90.71, 16, zeros=80.0, layer_zeros=lz2e),
                  "improved": run(91.31, 91.20, 20, zeros=80.0, layer_zeros=lz2e)},
        "lab3b": {"fp": 91.87, "6": 91.64, "5": 91.02, "4": 88.17, "3": 71.45, "2": 10.33},
        "lab3c": {b: {"faithful": run(v, v - 0.21, 15), "improved": run(v + 0.3, v + 0.1, 18)}
                  for b, v in (("4", 91.43), ("3", 89.76), ("2", 82.14))},
        "lab3d": {"sources": {
                      "faithful": {"question": "lab2e", "stage": "lab2e_faithful",
                                   "checkpoint": "lab2e_faithful_best", "acc": 91.05,
                                   "best_epoch": 16, "final_acc": 90.71},
                      "improved": {"question": "lab2e", "stage": "lab2e_improved",
                                   "checkpoint": "lab2e_improved_best", "acc": 91.31,
                                   "best_epoch": 20, "final_acc": 91.20}},
                  **{b: {"before": {"faithful": before, "improved": before + 0.5},
                         "faithful": run(v, v - 0.11, 14, zeros=80.0),
                         "improved": run(v + 0.2, v + 0.05, 17, zeros=80.0)}
                     for b, before, v in (("4", 86.05, 90.88), ("3", 60.12, 88.93),
                                          ("2", 10.0, 79.64))}},
        "lab3e": {"faithful": run(90.12, 89.87, 19, zeros=80.0, layer_zeros=lz3e),
                  "improved": run(90.55, 90.41, 20, zeros=80.0, layer_zeros=lz3e)},
        "timing": {"dense_epoch_s": 9.84, "masked_epoch_s": 10.73, "device": "NVIDIA H100"},
        "compression": {"dense_kib": 1080.0, "models": {
            "dense": {"label": "dense float (2 a)",
                      **{r: {"final_acc": 91.87, "kib": 1080.0, "smaller_x": 1.0} for r in ("faithful", "improved")}},
            "2e": {"label": "80 % zeros global, iterative (2 e)",
                   "faithful": {"final_acc": 90.71, "kib": 270.0, "smaller_x": 4.0},
                   "improved": {"final_acc": 91.20, "kib": 240.0, "smaller_x": 4.5}},
            "3e": {"label": "80 % zeros global + 4-bit QAT (3 e)",
                   "faithful": {"final_acc": 89.87, "kib": 60.0, "smaller_x": 18.0},
                   "improved": {"final_acc": 90.41, "kib": 60.0, "smaller_x": 18.0}}}},
    }


def png(path: Path, color=(40, 90, 160), size=(60, 40)) -> None:
    """A tiny solid PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_lab1(root: Path) -> None:
    """A Lab 1 notebook with tagged answer cells (with math), figures and summary."""
    cells = [{"cell_type": "markdown", "metadata": {"tags": [f"report:lab1-{q}"]},
              "source": [f"Answer for {q}: with step size $\\mu$ and penalty "
                         f"$\\lambda \\|W\\|_1$ the weights shrink.\n\n",
                         "$$W^{k+1} = W^k - 2\\mu \\sum_{i=1}^{3} x_i^T (x_i W^k - y_i)$$\n"]}
             for q in "abcdef"]
    cells.append({"cell_type": "code", "metadata": {}, "source": "print(1)",
                  "outputs": [], "execution_count": None})
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "lab1_sparse_linear.ipynb").write_text(json.dumps(nb))
    for q in "bcdef":
        png(root / "report" / f"lab1_{q}_loss.png")
        png(root / "report" / f"lab1_{q}_weights.png", color=(200, 120, 30))
    png(root / "report" / "lab1_f_first20.png")
    (root / "report" / "lab1_summary.md").write_text(
        "| method | final log L | nonzeros |\n|---|---:|---:|\n| GD | -3.21 | 5 |\n")


def setup_dirs(tmp: Path, results: dict | None, lab1: bool = True) -> tuple[Path, Path]:
    """(results dir, repo root) under ``tmp``, filled as asked."""
    root, rdir = tmp / "repo", tmp / "results"
    (root / "report").mkdir(parents=True)
    rdir.mkdir()
    if lab1:
        write_lab1(root)
    if results is not None:
        (rdir / "results.json").write_text(json.dumps(results))
        for f in HW4_FIGS:
            png(rdir / f)
    return rdir, root


def pdf_pages(pdf: Path) -> list[str]:
    """Extracted text of each page."""
    return [p.extract_text() or "" for p in PdfReader(str(pdf)).pages]


def squash(text: str) -> str:
    """Drop all whitespace, so PDF line wrapping does not matter for comparisons."""
    return re.sub(r"\s+", "", text)


def caption_text(md: str) -> str:
    """The caption line of a table() result, without markdown emphasis."""
    return md.splitlines()[0].strip("*")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Build once from the full fixture: (results, report.md text, page texts)."""
    results = make_results()
    rdir, root = setup_dirs(tmp_path_factory.mktemp("full"), results)
    pdf = build(rdir, root=root)
    return results, (rdir / "report.md").read_text(), pdf_pages(pdf)


# ----------------------------------------------------------------------------- builder
def test_pdf_has_every_heading_and_caption(full):
    results, md, pages = full
    text = squash(" ".join(pages))
    for h in HEADINGS:
        assert squash(h) in text, h
    for key in TABLE_KEYS:
        assert squash(caption_text(table(results, key))) in text, key
    # hw4 is complete in this fixture; only the extensions section (6) has no results here
    hw4_part, extensions = md.split("\n# 6 ", 1)
    cited = [line for line in hw4_part.splitlines() if line.startswith("*Measured on our ResNet-20")]
    from_ext = [line for line in cited if "(section 6," in line]
    from_hw4 = [line for line in cited if line not in from_ext]
    assert len(from_ext) == 2 and all(NOT_RUN in line for line in from_ext)  # T/F 1.2, 1.10 cite section 6
    assert len(from_hw4) == 2 and all(NOT_RUN not in line for line in from_hw4)  # 1.1: Lab 3 (d); 1.2: timing
    assert NOT_RUN not in "\n".join(line for line in hw4_part.splitlines() if line not in from_ext)
    assert NOT_RUN in extensions
    assert QUICK_BANNER not in " ".join(pages)


def test_table_numbers_match_results(full):
    results, md, pages = full
    rows = ["| faithful | 90.51 | 90.27 | 17 | 20 | 80.0 | 612 |",     # lab2c
            "| 80 | 62.35 | 80.0 | 29.52 |",                           # lab2b, drop 91.87-62.35
            "| 2 | 10.33 | -81.54 |",                                  # lab3b
            "| 4 | 86.05 / 86.55 | 90.88 | 90.77 | 91.08 | 90.93 | 80.0 / 80.0 |",   # lab3d
            "own best Lab 2 model (faithful: Lab 2 (e) best epoch 16; improved: Lab 2 (e) best epoch 20)",  # lab3d
            "| layer3.2.conv2 | 89.5 | 89.5 | 88.8 | 88.8 |",           # lab3e_layers
            "| NVIDIA H100 | 9.84 | 10.73 | 1.09 |"]                    # timing
    for row in rows:
        assert row in md, row
    text = squash(" ".join(pages))
    for value in ["91.87", "62.35", "90.51", "91.43", "89.76", "82.14", "10.33", "86.05"]:
        assert value in text


def test_lab1_material_is_included(full):
    _, md, pages = full
    assert "Answer for f" in md and "../repo/report/lab1_b_loss.png" in md
    assert "λ" in " ".join(pages) and "‖" in " ".join(pages)   # inline math as unicode
    assert "$$" not in " ".join(pages)                          # display math was rendered


def test_missing_keys_render_not_run(tmp_path):
    results = make_results()
    for key in ("lab2d", "lab3c", "timing"):
        del results[key]
    del results["lab2c"]["improved"]
    rdir, root = setup_dirs(tmp_path, results)
    md_text = (build(rdir, root=root).with_suffix(".md")).read_text()
    section = md_text.split("## Lab 2 (d)")[1].split("## Lab 2 (e)")[0]
    assert NOT_RUN in section and "90.94" not in md_text
    assert "| improved | not run | not run |" in md_text
    assert "Timing: not run." in md_text and "Lab 3 (c): not run." in md_text


def test_quick_mode_stamps_every_page(tmp_path):
    rdir, root = setup_dirs(tmp_path, make_results(mode="quick"))
    pages = pdf_pages(build(rdir, root=root))
    assert len(pages) >= 5
    assert all(squash(QUICK_BANNER) in squash(p) for p in pages)


def test_builds_without_lab1_or_results(tmp_path):
    rdir, root = setup_dirs(tmp_path, None, lab1=False)
    out = tmp_path / "out"
    pages = pdf_pages(build(rdir, out_dir=out, root=root))
    text = squash(" ".join(pages))
    for h in HEADINGS:
        assert squash(h) in text, h
    md = (out / "report.md").read_text()
    assert "Lab 1 (c): not run" in md and "Lab 1 summary table: not run" in md
    assert "Lab 2 (b): not run." in md


LAB1_SUMMARY = """# Lab 1 summary (made up)

| run | final L |
|---|---|
| (c) projected GD | 0.5 |

## (c) Numbers behind the discussion

*Table: (c) made-up steps.*

| step | L |
| --- | --- |
| 7 | 6.855 |

- The made-up switch happens at step 7.
"""


def test_lab1_numbers_sit_between_task_and_discussion(tmp_path):
    rdir, root = setup_dirs(tmp_path, make_results())
    nb_path = root / "lab1_sparse_linear.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {"tags": ["report:lab1-c"]},
                        "source": "Discussion of c, after the numbers."})
    nb_path.write_text(json.dumps(nb))
    (root / "report" / "lab1_summary.md").write_text(LAB1_SUMMARY)
    pdf = build(rdir, root=root)
    md = pdf.with_suffix(".md").read_text()
    c = md.split("## Lab 1 (c)")[1].split("## Lab 1 (d)")[0]
    order = ["Answer for c", "lab1_c_loss.png", "### Numbers behind the discussion",
             "| 7 | 6.855 |", "switch happens at step 7", "Discussion of c"]
    assert [c.index(x) for x in order] == sorted(c.index(x) for x in order)
    assert "Numbers behind" not in md.split("## Lab 1 (d)")[1]       # only under (c)
    summary = md.split("## Lab 1 summary")[1]
    assert "| (c) projected GD | 0.5 |" in summary and "made-up steps" not in summary
    assert "*Table: Lab 1 summary (made up).*" in summary
    assert "6.855" in " ".join(pdf_pages(pdf))


def test_repository_pdf_carries_lab1_tables_and_answers(tmp_path):
    """The checked-in notebook, lab1_summary.md and answers.md all reach the PDF."""
    repo = Path(__file__).resolve().parents[1]
    pdf = build(tmp_path / "results", out_dir=tmp_path / "out", root=repo)
    text = squash(" ".join(pdf_pages(pdf)))
    summary = (repo / "report" / "lab1_summary.md").read_text()
    for q in "cdef":
        part = summary.split(f"## ({q})")[1].split("\n## (")[0]
        captions = re.findall(r"^\*Table: (.*)\*$", part, flags=re.M)
        assert len(captions) >= 2, q                      # the question has its tables
        for cap in captions:
            assert squash(cap) in text, cap
        rows = [r for r in part.splitlines() if r.startswith("| ") and "---" not in r]
        for row in rows:                                  # every row, cells in order
            assert squash(" ".join(c for c in row.strip("| ").split(" | "))) in text, row
    answers = (repo / "report" / "answers.md").read_text()
    verdicts = re.findall(r"^## Problem (1\.\d+)\n\n\*\*(True|False)\.\*\*", answers, flags=re.M)
    assert [v[0] for v in verdicts] == [f"1.{i}" for i in range(1, 11)]   # one per problem
    for number, verdict in verdicts:
        assert f"Problem{number}{verdict}." in text, number


# ----------------------------------------------------------------------------- tables
def test_table_caption_names_test_set_and_columns_carry_n():
    md = table(make_results(), "lab2c")
    assert "CIFAR-10 test[0:1000], 1000 images" in md.splitlines()[0]
    assert "best acc. (%, n=1000)" in md and "final acc. (%, n=1000)" in md


def test_only_tables_of_accuracies_name_an_accuracy_in_their_caption():
    res = make_results()
    for key in ("timing", "recipes", "lab2e_layers"):
        assert "Accuracy (%)" not in table(res, key).splitlines()[0], key
    assert "Accuracy (%) on CIFAR-10 test[0:1000]" in table(res, "lab3b").splitlines()[0]
    quick = make_results(mode="quick")
    assert caption_text(table(quick, "timing")).startswith(QUICK_BANNER)


def test_table_missing_key_and_quick_banner():
    assert "| 40 | not run | not run | not run |" in table({}, "lab2b")
    assert "Per-layer zeros: not run" in table({}, "lab3e_layers")
    quick = make_results(mode="quick")
    assert caption_text(table(quick, "lab3b")).startswith(QUICK_BANNER)


def test_recipes_table_shows_recorded_fields_only():
    res = make_results()
    del res["meta"]["recipes"]["faithful"]["optimizer"]
    res["meta"]["recipes"]["improved"]["label_smoothing"] = 0.1
    md = table(res, "recipes")
    assert "| optimizer | not recorded | SGD |" in md
    assert "| label smoothing | not recorded | 0.1 |" in md


def test_recipes_table_names_the_tuned_stages_their_change_and_validation_scores():
    res = make_results()
    assert "Improved recipe of" not in table(res, "recipes")
    improved = dict(res["meta"]["recipes"]["improved"])
    tuned = {**improved, "lr": 0.002, "file": "report/tuning.json", "decision": "lab2e_improved",
             "validation": "CIFAR-10 train[45000:50000]", "validation_scores": {"lr0.01": 91.0, "lr0.002": 92.5},
             "score": "final-epoch accuracy"}
    res["meta"]["tuned_recipes"] = {"lab2e": tuned, "lab3e": tuned}
    md = table(res, "recipes")
    assert "Improved recipe of Lab 2 (e) and Lab 3 (e): lr 0.002," in md
    assert "final-epoch accuracy (%) on CIFAR-10 train[45000:50000]: lr0.01 91.00, lr0.002 92.50" in md
    res["meta"]["tuned_recipes"] = {"lab2e": {**improved, "validation_scores": {"lr0.05": 92.0}}}
    assert "Improved recipe of Lab 2 (e): as in the table," in table(res, "recipes")
    qat = {**improved, "lr": 0.002, "validation_scores": {"lr0.05": 90.0, "lr0.002": 92.0}}
    res["meta"]["tuned_recipes"] = {"lab3c_4bit": qat, "lab3c_3bit": qat, "lab3d_2bit": qat}
    assert "Improved recipe of Lab 3 (c) 4-bit, Lab 3 (c) 3-bit and Lab 3 (d) 2-bit: lr 0.002," in table(res, "recipes")
    assert "Not eligible" not in table(res, "recipes")
    check = {"check": "first_qat_epoch(nbits=3)", "images": "CIFAR-10 train[45000:50000] (validation, ...)"}
    qat["stability"] = {"lr0.05": {**check, "before": 64.3, "after_one_epoch": 55.0, "stable": False},
                        "lr0.002": {**check, "before": 64.3, "after_one_epoch": 88.0, "stable": True}}
    md = table(res, "recipes")
    assert "excluded: lr0.05 (64.30 → 55.00 %), whatever its score above." in md and "lr0.002 (64.30" not in md
    assert "our 3-bit pretrained model's accuracy on CIFAR-10 train[45000:50000] (images that model trained on," in md


def test_table_unknown_key_raises():
    with pytest.raises(KeyError):
        table({}, "lab9z")


# ----------------------------------------------------------------------------- discussion
def test_discussion_wording_flips_with_sign():
    res = make_results()
    assert "0.39 points above one-shot pruning" in discussion(res, "lab2d")   # 90.66-90.27
    res["lab2d"]["faithful"]["final_acc"] = 89.77
    assert "0.50 points below one-shot pruning" in discussion(res, "lab2d")
    res["lab2d"]["faithful"]["final_acc"] = 90.27
    assert "level with one-shot pruning" in discussion(res, "lab2d")


def test_discussion_timing_and_zero_preservation():
    res = make_results()
    assert "slower than dense" in discussion(res, "timing")
    res["timing"]["masked_epoch_s"] = 9.9
    assert "about as fast as dense" in discussion(res, "timing")
    res["timing"]["masked_epoch_s"] = 8.0
    assert "faster than dense" in discussion(res, "timing")
    assert "measurement effect" in discussion(res, "timing")
    assert "faithful: 80.0/80.0/80.0% vs. 80.0% in its start model, preserved" in discussion(res, "lab3d")
    res["lab3d"]["3"]["faithful"]["zeros_pct"] = 71.4
    assert "faithful: 80.0/71.4/80.0% vs. 80.0% in its start model, NOT preserved" in discussion(res, "lab3d")


def test_discussion_explains_by_outcome():
    res = make_results()
    for r in ("faithful", "improved"):
        res["lab2d"][r]["final_acc"] = res["lab2c"][r]["final_acc"] + 3.0
    assert "adapts to the sparsity gradually" in discussion(res, "lab2d")
    # around 90 % on 1,000 images two standard errors are 1.9 points: 3.0 is outside, 0.1 inside
    res["lab2d"]["faithful"]["final_acc"] = res["lab2c"]["faithful"]["final_acc"] - 3.0
    res["lab2d"]["improved"]["final_acc"] = res["lab2c"]["improved"]["final_acc"] + 0.1
    text = discussion(res, "lab2d")
    assert "depends on the recipe" in text    # one better, one worse
    assert "The difference with the improved recipe is smaller than two standard errors" in text
    res["lab2d"]["improved"]["final_acc"] = res["lab2c"]["improved"]["final_acc"] - 0.1
    assert "did not pay off" in discussion(res, "lab2d")
    res["lab2d"]["faithful"]["final_acc"] = res["lab2c"]["faithful"]["final_acc"] - 1.0
    text = discussion(res, "lab2d")
    assert "Neither schedule is measurably better" in text and "Both differences are smaller" in text
    assert "spreads the sparsity unevenly" in discussion(res, "lab2e")
    res["lab2e"]["faithful"]["layer_zeros"] = dict.fromkeys(LAYERS, 80.0)
    assert "almost evenly" in discussion(res, "lab2e")
    res["lab3d"]["sources"]["improved"].update(question="lab2d", best_epoch=12, acc=91.22)
    text = discussion(res, "lab3d")
    assert "the improved column from Lab 2 (d) best epoch 12, 80.0% zeros (91.22%)" in text
    assert "the faithful column from Lab 2 (e) best epoch 16, 80.0% zeros (91.05%)" in text


def test_discussion_numbers_come_from_results():
    res = make_results()
    text = discussion(res, "lab3b")
    assert "91.64% at 6 bits" in text and "81.54 points below floating point" in text
    assert "down to 5 bits" in text                 # 91.87 - 91.02 < 1 point, 4 bits is not
    res2 = copy.deepcopy(res)
    res2["lab3b"]["4"] = 91.5
    assert "down to 4 bits" in discussion(res2, "lab3b")


def test_discussion_missing_and_quick():
    assert discussion({}, "lab2e") == "Lab 2 (e): not run."
    assert discussion({}, "timing") == "Timing: not run."
    assert discussion(make_results("quick"), "lab2a").startswith(f"*{QUICK_BANNER}.*")


# ----------------------------------------------------------------------------- layout
def test_captions_and_headings_stay_with_what_follows():
    banner = f"<p><em>{QUICK_BANNER} — Table: x.</em></p>"
    html = ("<h2>Lab 2 (c)</h2><p><em>Task:</em> t</p>" + banner
            + "<font size=\"8\"><table><tr><td>1</td></tr></table></font><p>discussion</p>")
    groups = keep_together(top_level_blocks(html))
    assert len(groups) == 2 and groups[0].endswith("</font>") and "Lab 2 (c)" in groups[0]


# ----------------------------------------------------------------------------- math
def test_inline_tex_to_unicode():
    out = tex_to_html(r"\lambda \|W\|_1 \le \frac{a}{b+1}, x^{k+1} \in \mathbb{R}^{5}")
    assert out == "λ‖W‖<sub>1</sub> ≤ a/(b+1), x<sup>k+1</sup> ∈ ℝ<sup>5</sup>"
    assert tex_to_html(r"W=[0,-3]") == "W = [0, −3]"          # TeX-like spacing, real minus
    assert tex_to_html(r"x-\mu\nabla L") == "x − μ∇L"
    assert tex_to_html(r"\log L + \max(a,b)") == "log L + max(a, b)"


def test_trend_wording_distinguishes_ties_from_a_fall():
    from report.discussion import trend_words
    words = ("falls", "does not rise", "mixed")
    assert trend_words([90.0, 80.0, 10.0], *words) == "falls"
    assert trend_words([9.77, 9.77, 9.77], *words) == "does not rise"
    assert trend_words([50.0, 60.0, 10.0], *words) == "mixed"


def test_compression_table_and_discussion():
    res = make_results()
    md = table(res, "compression")
    assert "| dense float (2 a) | 1080.0 | 1.0 | 91.87 | 91.87 |" in md
    assert "| 80 % zeros global, iterative (2 e) | 270.0 / 240.0 | 4.0 / 4.5 | 90.71 | 91.20 |" in md
    assert "| 80 % zeros global + 4-bit QAT (3 e) | 60.0 | 18.0 | 89.87 | 90.41 |" in md
    text = discussion(res, "compression")
    assert "80 % zeros global + 4-bit QAT (3 e), takes 60.0 KiB, 18.0x less" in text
    assert "89.87 / 90.41%" in text and "1080.0 KiB" in text
    assert "Compression: not run" in table({}, "compression")
    assert discussion({}, "compression") == "Compression: not run."


def test_true_false_answers_cite_the_extensions_measurements(tmp_path):
    """answers.md's measurement markers become section 6's sentences (or a not-run line)."""
    from report import extensions_section as ext
    from report.build import tf_section
    before = tf_section({}, tmp_path)
    assert "<!-- measured" not in before
    assert before.count("lecture_extensions.ipynb not run") == len(ext.EVIDENCE)
    results = {"timing": {name: {"median_ms": ms, "weights": 1000, "nonzero": nz, "macs": macs,
                                 "batch": 256, "images_per_s": 256e3 / ms, "threads": 2, "repeats": 9}
                          for name, ms, nz, macs in (("dense", 40.0, 1000, 4e7),
                                                      ("element-wise", 41.0, 200, 4e7),
                                                      ("filter", 12.0, 200, 1e7))}}
    (tmp_path / ext.RESULTS_NAME).write_text(json.dumps(results))
    after = tf_section({}, tmp_path)
    problem_1_2 = after.split("## Problem 1.2")[1].split("## Problem 1.3")[0]
    assert "41.0 ms" in problem_1_2 and "12.0 ms" in problem_1_2   # the measured times, cited
    problem_1_10 = after.split("## Problem 1.10")[1]
    assert "lecture_extensions.ipynb not run" in problem_1_10      # no mixed-precision numbers


def test_true_false_answers_cite_the_hw4_measurements(tmp_path):
    from report.build import tf_section
    assert tf_section({}, tmp_path).count("hw4.ipynb not run") == 2            # 1.1 and 1.2
    text = tf_section(make_results(), tmp_path)
    problem_1_1 = text.split("## Problem 1.1")[1].split("## Problem 1.2")[0]
    assert "5.00 points at 4 bits vs. 3.70 for the dense model (a larger drop)" in problem_1_1  # 91.05-86.05, 91.87-88.17
    problem_1_2 = text.split("## Problem 1.2")[1].split("## Problem 1.3")[0]
    assert "9.84 s dense and 10.73 s with pruning masks" in problem_1_2


def test_lab3d_explains_drops_only_where_they_mean_something():
    res = make_results()
    text = discussion(res, "lab3d")
    # 2 bits: 10.0 % and 10.33 % are chance level for ten classes, whatever the drops say
    assert "At 2 bits both models are near chance" in text and "fewer weights carry rounding error" not in text
    # after finetuning every sparse model ends below dense QAT, at 4 bits by 0.55 (inside the noise)
    assert "end below quantizing alone at every bit width, though not everywhere by more than" in text
    res["lab3d"]["4"]["before"]["faithful"] = 90.0     # drop 1.05 < 3.70: the sparse model loses less
    assert "the zero-preserving quantizer keeps the pruned 80% exactly zero" in discussion(res, "lab3d")


def test_lab3e_compares_final_accuracies_with_lab3d():
    text = discussion(make_results(), "lab3e")
    # 89.87 - 90.77 and 90.41 - 90.93 (Lab 3 (d) 4-bit finals)
    assert "It finished 0.90 points below pruning first and quantizing afterwards (Lab 3 (d), 4 bits) " \
           "with the faithful recipe and 0.52 points below with the improved recipe." in text
    assert "Both differences are smaller than two standard errors" in text


def test_standard_error_is_the_binomial_closed_form_and_sets_the_noise_band():
    from report.discussion import is_within_noise, noise_clause, noise_note, standard_error
    assert standard_error(50.0, 100) == pytest.approx(5.0)        # sqrt(.5 * .5 / 100) = 0.05
    assert standard_error(0.0, 100) == standard_error(100.0, 100) == 0.0
    assert is_within_noise(51.0, 50.0, 100) and is_within_noise(50.0, 50.0, 100)   # 1 < 2 x 5.0
    assert not is_within_noise(61.0, 50.0, 100)                                    # 11 > 2 x 4.9
    assert not is_within_noise(None, 50.0, 100) and not is_within_noise(51.0, 50.0, None)
    assert noise_clause(51.0, 50.0, 100) == "net 1 of 100 test images, within noise"
    assert noise_clause(50.0, 50.0, 100) == noise_clause(61.0, 50.0, 100) == ""   # level / clear
    assert "(10.0 points at these accuracies)" in noise_note([(51.0, 49.0), (80.0, 20.0)], 100)
    assert noise_note([(80.0, 20.0)], 100) == ""


def test_lab2d_counts_a_level_recipe_as_inside_the_noise():
    res = make_results()
    res["lab2d"]["faithful"]["final_acc"] = res["lab2c"]["faithful"]["final_acc"]          # level
    res["lab2d"]["improved"]["final_acc"] = res["lab2c"]["improved"]["final_acc"] + 0.3
    text = discussion(res, "lab2d")
    assert "Neither schedule is measurably better" in text and "adapts to the sparsity" not in text
    assert "The difference with the improved recipe is smaller than two standard errors" in text
    del res["meta"]["test_images"]      # no test-set size: no noise claims at all
    text = discussion(res, "lab2d")
    assert "standard errors" not in text and "adapts to the sparsity gradually" in text


def test_run_information_adds_up_the_training_time_of_the_stages(tmp_path):
    from report.build import title_section
    res = make_results()
    # every run record of the fixture took 612 s: count them independently of the builder
    records = [res[q][r] for q in ("lab2c", "lab2d", "lab2e", "lab3e") for r in ("faithful", "improved")] + \
              [res[q][b][r] for q in ("lab3c", "lab3d") for b in ("4", "3", "2") for r in ("faithful", "improved")]
    assert all(r["wall_s"] == 612.0 for r in records)
    assert f"| training time of its stages | {len(records) * 612 / 3600:.2f} h" in title_section(res, tmp_path)
    assert "| training time of its stages | not run |" in title_section({}, tmp_path)


def test_lab3d_names_the_bit_widths_it_has_and_the_noise():
    res = make_results()
    for b in ("3", "2"):
        del res["lab3d"][b]
    text = discussion(res, "lab3d")      # 4 bits only: 90.88 vs 91.43, a 0.55 gap inside the noise
    assert "end below quantizing alone at 4 bits, but by no more than the sampling noise." in text
    assert "every bit width" not in text and "add up" not in text
