"""Shared pytest setup: the repo root on sys.path (tests import the kit's modules as
top-level modules), two CPU threads, and a fixed torch seed per test so that tests
on random tensors are reproducible."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import torch
except ImportError:  # tests that need no torch still run
    torch = None
else:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_torch():
    if torch is not None:
        torch.manual_seed(0)
    yield


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "smoke: end-to-end smoke runs of scripts (part of the normal suite, < 60 s)")
