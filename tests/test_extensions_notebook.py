"""Execute lecture_extensions.ipynb top to bottom in quick mode (CPU, synthetic data when
CIFAR-10 is absent) and check it wrote every section and figure, labelled quick."""
from pathlib import Path

import pytest

from helpers import execute_quick

ROOT = Path(__file__).resolve().parents[1]
QUICK_DIR = ROOT / "report" / "quick"
SECTIONS = ("prune_sensitivity", "quant_sensitivity", "coarse_fine", "timing", "quantizers",
            "mixed_precision", "nm", "int8")
FIGURES = ("ext_prune_sensitivity.png", "ext_quant_sensitivity.png", "ext_coarse_fine.png",
           "ext_quantizers.png", "ext_mixed_bits.png")


@pytest.fixture(scope="module")
def results():
    return execute_quick("lecture_extensions.ipynb", "extensions.json")


def test_every_section_written_and_labelled_quick(results):
    assert results["meta"]["mode"] == "quick"
    for key in SECTIONS:
        assert key in results, key


def test_figures_written(results):
    for name in FIGURES:
        assert (QUICK_DIR / name).stat().st_size > 1000, name
