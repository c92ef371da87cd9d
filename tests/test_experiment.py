"""experiment.py: mode selection, the clear error for a missing checkpoint, resumable stages."""
import torch
import pytest

import experiment as ex
import train_util as tu
from resnet20 import ResNetCIFAR


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("no", False)])
def test_quick_from_env(monkeypatch, value, expected):
    monkeypatch.setenv("HW4_QUICK", value)
    assert ex.quick_from_env(default=not expected) is expected


def test_quick_from_env_default(monkeypatch):
    monkeypatch.delenv("HW4_QUICK", raising=False)
    assert ex.quick_from_env(default=True) is True


def test_full_mode_without_checkpoint_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "PRETRAINED", tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="train_util.py pretrain"):
        ex.Experiment(quick=False)


def test_quick_and_full_modes_write_to_different_places():
    quick, full = ex.Settings.for_mode(True), ex.Settings.for_mode(False)
    assert quick.results_dir != full.results_dir and quick.ckpt_dir != full.ckpt_dir
    assert full.finetune_epochs == 20 and full.prune_epochs == 10 and full.iterative_epochs == 20


def full_mode_experiment(tmp_path):
    """An Experiment in full mode on tiny synthetic data, without touching CIFAR-10."""
    run = ex.Experiment.__new__(ex.Experiment)
    run.settings = ex.Settings(False, 1, 1, 1, None, None, tmp_path / "report", tmp_path / "ckpt")
    run.settings.ckpt_dir.mkdir(parents=True)
    run.data = tu.synthetic_cifar(32, 16, device="cpu")
    run.results = {"meta": {"pretrained": {"sha256": "A"}}}
    return run


def test_finished_stage_is_reloaded_not_retrained(tmp_path):
    run, calls = full_mode_experiment(tmp_path), []

    def train(net):
        calls.append(1)
        with torch.no_grad():
            net.final_fc.linear.weight.fill_(0.5)
        return {"final_acc": 1.0}

    first = run.stage("s", ResNetCIFAR(8), train, epochs=1)
    net = ResNetCIFAR(8)
    second = run.stage("s", net, train, epochs=1)
    assert len(calls) == 1 and first == second
    assert torch.all(net.final_fc.linear.weight == 0.5)  # the trained weights came back
    run.stage("s", ResNetCIFAR(8), train, epochs=2)  # other settings: trained again
    assert len(calls) == 2
    run.results["meta"]["pretrained"]["sha256"] = "B"  # another pretrained model: again
    run.stage("s", ResNetCIFAR(8), train, epochs=2)
    assert len(calls) == 3


def test_zeros_kept_detects_a_revived_weight():
    net = ResNetCIFAR(8)
    masks = tu.prune_layers_by_percentage(net, 0.5)
    assert ex.zeros_kept(net, masks)
    name = next(iter(masks))
    layer = tu.prunable_layers(net)[name]
    with torch.no_grad():
        layer.weight[masks[name] == 0] = 1.0
    assert not ex.zeros_kept(net, masks)


def test_results_of_another_pretrained_model_are_not_kept(tmp_path, monkeypatch):
    run = full_mode_experiment(tmp_path)
    run.results_path = tmp_path / "results.json"
    run.results_path.write_text('{"meta": {"pretrained": {"sha256": "A"}, "test_label": "t"}, '
                                '"lab2a": {"acc": 90.0}}')
    meta = {"pretrained": {"sha256": "A"}, "test_label": "t", "started": "x"}
    monkeypatch.setattr(run, "_meta", lambda previous: dict(meta))
    assert run._load_results()["lab2a"] == {"acc": 90.0}  # same model and test set: resume
    meta["pretrained"] = {"sha256": "B"}
    assert "lab2a" not in run._load_results()  # another model: start afresh
