"""scripts/campaign_status.py reads stage records and resume states and compares the
improved column with the target of the number the assignment asks for (best or final)."""
import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "campaign_status.py"
spec = importlib.util.spec_from_file_location("campaign_status", SCRIPT)
status_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(status_mod)


def record(final, best, best_epoch=3, wall_s=100.0):
    return {"record": {"final_acc": final, "best_acc": best, "best_epoch": best_epoch, "wall_s": wall_s}}


def test_verdict_uses_the_number_the_assignment_asks_for(tmp_path):
    # 2(c) asks for the best epoch, 2(d) for the final one: each is judged on its own number
    (tmp_path / "lab2c_improved.json").write_text(json.dumps(record(final=92.0, best=91.0)))
    (tmp_path / "lab2d_improved.json").write_text(json.dumps(record(final=91.6, best=90.0)))
    torch.save({"epoch": 4, "wall_s": 50.0, "history": {"test_acc": [80.0, 85.5]}},
               tmp_path / "lab2c_faithful.0123.resume.pt")
    rows, seconds = status_mod.status(tmp_path)
    lab2c, lab2d = rows[0], rows[1]
    assert "short by 0.50" in lab2c and "running: epoch 4, last 85.50" in lab2c
    assert lab2d.endswith("| met |") and "91.60 / 90.00" in lab2d
    assert seconds == 250.0
    assert all(row.endswith("| — |") for row in rows[2:])  # nothing else has finished
