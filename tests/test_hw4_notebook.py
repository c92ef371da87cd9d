"""Execute hw4.ipynb top to bottom in quick mode (CPU, synthetic data when CIFAR-10 is absent)
and check what it wrote: every question's result, the invariants the labs promise (zeros
survive finetuning and quantization), the figures, and the report built from them."""
from pathlib import Path

import pytest

from helpers import execute_quick

from report.tables import QUICK_BANNER

ROOT = Path(__file__).resolve().parents[1]
QUICK_DIR = ROOT / "report" / "quick"
KEYS = ("lab2a", "lab2b", "lab2c", "lab2d", "lab2e", "timing", "lab3b", "lab3c", "lab3d", "lab3e",
        "compression")
FIGURES = ("hw4_2b_layer_zeros.png", "hw4_2cd_curves.png", "hw4_2e_layer_zeros.png", "hw4_3b_bits.png",
           "hw4_3c_curves.png", "hw4_3d_curves.png", "hw4_3e_layer_zeros.png", "ste_source.png",
           "hw4_compression.png")


@pytest.fixture(scope="module")
def results():
    return execute_quick("hw4.ipynb", "results.json")


def test_every_question_has_a_result_labelled_quick(results):
    assert all(key in results for key in KEYS)
    meta = results["meta"]
    assert meta["mode"] == "quick" and meta["banner"] == QUICK_BANNER
    assert meta["test_images"] > 0 and str(meta["test_images"]) in meta["test_label"]


def test_pruning_keeps_its_sparsity(results):
    for q, row in results["lab2b"].items():
        assert row["zeros_pct"] == pytest.approx(float(q), abs=0.1)  # q in percent
    for key in ("lab2c", "lab2d", "lab2e", "lab3e"):
        for recipe in ("faithful", "improved"):
            assert results[key][recipe]["zeros_pct"] == pytest.approx(80.0, abs=0.1), (key, recipe)
    for bits in ("4", "3", "2"):
        for recipe in ("faithful", "improved"):
            assert results["lab3d"][bits][recipe]["zeros_pct"] >= 79.9


def test_global_pruning_spreads_sparsity_unevenly(results):
    for key in ("lab2e", "lab3e"):
        zeros = results[key]["faithful"]["layer_zeros"].values()
        assert max(zeros) - min(zeros) > 10  # per-layer pruning would give 80 everywhere


def test_lab3d_columns_start_from_their_own_recipe(results):
    for recipe, source in results["lab3d"]["sources"].items():
        assert source["stage"].endswith(f"_{recipe}") and source["checkpoint"].endswith("_best")
        assert source["acc"] == results[source["question"]][recipe]["best_acc"]
        for bits in ("4", "3", "2"):
            assert recipe in results["lab3d"][bits]["before"]


def test_runs_report_final_and_best_apart(results):
    run = results["lab3c"]["2"]["faithful"]
    accs = run["history"]["test_acc"]
    assert run["final_acc"] == accs[-1] and run["best_acc"] == max(accs)


def test_every_model_has_a_storage_size_in_the_expected_order(results):
    models = results["compression"]["models"]
    for recipe in ("faithful", "improved"):
        kib = {key: row[recipe]["kib"] for key, row in models.items()}
        assert all(v is not None and v > 0 for v in kib.values()), kib
        assert kib["2c"] < kib["dense"] / 3            # 80 % zeros: 0.2*32 + 1 bits a weight
        for bits in ("4", "3", "2"):
            assert kib[f"3d_{bits}"] < kib[f"3c_{bits}"] < kib["dense"] / 3
        assert kib["3c_2"] < kib["3c_3"] < kib["3c_4"]
        assert models["2c"][recipe]["final_acc"] == results["lab2c"][recipe]["final_acc"]


def test_figures_written(results):
    for name in FIGURES:
        assert (QUICK_DIR / name).stat().st_size > 1000, name


def test_report_builds_from_quick_results(results):
    """The PDF built from this run's results holds every question and every table."""
    from pypdf import PdfReader
    from report.build import build
    from report.tables import table
    from test_report import HEADINGS, TABLE_KEYS, caption_text, squash

    pdf = build(results_dir=QUICK_DIR, out_dir=QUICK_DIR)
    text = squash(" ".join(page.extract_text() or "" for page in PdfReader(str(pdf)).pages))
    for heading in HEADINGS:
        assert squash(heading) in text, heading
    for key in TABLE_KEYS:
        assert squash(caption_text(table(results, key))) in text, key
    assert squash(QUICK_BANNER) in text
