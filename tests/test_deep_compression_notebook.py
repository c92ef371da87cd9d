"""Execute deep_compression.ipynb top to bottom in quick mode (CPU, small data) and check
what it wrote: every result key labelled quick, a compressed file that round-trips exactly,
and the figures."""
from pathlib import Path

import pytest

from helpers import execute_quick

ROOT = Path(__file__).resolve().parents[1]
QUICK_DIR = ROOT / "report" / "quick"
KEYS = ("file", "dense_acc", "final_acc", "ratio_formula", "ratio_file", "bytes")
FIGURES = ("dc_bytes.png", "dc_histograms.png", "dc_huffman.png", "dc_kmeans.png",
           "dc_pipeline.png", "dc_prune_layers.png")


@pytest.fixture(scope="module")
def results():
    return execute_quick("deep_compression.ipynb", "deep_compression.json")


def test_results_written_and_labelled_quick(results):
    assert results["meta"]["mode"] == "quick"
    for key in KEYS:
        assert key in results, key
    assert results["final"]["exact_round_trip"] is True
    assert results["ratio_file"] > 1 and results["ratio_formula"] > 1


def test_figures_written(results):
    for name in FIGURES:
        assert (QUICK_DIR / name).stat().st_size > 1000, name
