"""Smoke test of benchmarks/epoch_time.py: it runs end to end on a CPU, in seconds, and its
JSON summary is consistent with what it prints (sizes reduced from the documented
`--synthetic 1024 --epochs 2`)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
def test_epoch_time_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "benchmarks/epoch_time.py", "--synthetic", "256", "--epochs", "2",
           "--batch-size", "128", "--workers", "0", "--device", "cpu", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "torch" in text and "device: CPU" in text
    assert "speed-up A/B" in text
    summary = json.loads(out.read_text())
    assert summary["n_train"] == 256 and summary["epochs"] == 2 and summary["workers"] == 0
    for side in ("starter", "engine"):
        s = summary[side]
        assert len(s["epoch_s"]) == 2 and all(t > 0 for t in s["epoch_s"])
        assert s["first_epoch_s"] == s["epoch_s"][0]
        assert s["mean_excludes_first"] and s["mean_epoch_s"] == pytest.approx(s["epoch_s"][1])
        assert 0.0 <= s["final_acc"] <= 100.0
    ratio = summary["starter"]["mean_epoch_s"] / summary["engine"]["mean_epoch_s"]
    assert math.isclose(summary["ratio_a_over_b"], ratio)
    assert f"{ratio:.2f}x" in text


@pytest.mark.smoke
def test_real_data_check_runs_and_judges_what_holds_for_any_model(tmp_path):
    import torch
    from resnet20 import ResNetCIFAR
    checkpoint, out = tmp_path / "random.pt", tmp_path / "check.json"
    torch.manual_seed(0)
    torch.save(ResNetCIFAR(20).state_dict(), checkpoint)
    cmd = [sys.executable, "benchmarks/real_data_check.py", "--synthetic", "--train-images", "64",
           "--checkpoint", str(checkpoint), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    checks = result["checks"]
    # An untrained model on synthetic data cannot show recovery, so the script exits 1 ...
    assert proc.returncode == (0 if all(checks.values()) else 1), proc.stderr[-3000:]
    # ... but pruning's zero counts hold for any weights.
    assert checks["per-layer pruning leaves q zeros in every layer"]
    for recipe in ("faithful", "improved"):
        assert result["finetuning"][recipe]["pruned_80_zeros"] == pytest.approx(80.0, abs=0.5)
    for name, ok in checks.items():
        assert f"{'PASS' if ok else 'FAIL'} {name}" in proc.stdout
