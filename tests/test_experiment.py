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
    masks = tu.prune_layers_by_percentage(net, 50.0)
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


def set_fc(value):
    def train(net, recipe=None):
        with torch.no_grad():
            net.final_fc.linear.weight.fill_(value)
        return {"final_acc": value}
    return train


def test_changing_the_improved_recipe_does_not_retrain_faithful_stages(tmp_path):
    from dataclasses import replace
    run = full_mode_experiment(tmp_path)
    calls = []
    train = lambda net, recipe: calls.append(recipe) or {"final_acc": 1.0}  # noqa: E731
    run.for_each_recipe("s", lambda: ResNetCIFAR(8), train)
    assert len(calls) == 2
    run.settings.recipes["improved"] = replace(tu.IMPROVED, lr=0.1)
    run.for_each_recipe("s", lambda: ResNetCIFAR(8), train)
    assert calls[2:] == [run.settings.recipes["improved"]]  # only the changed recipe ran


def test_a_changed_training_function_is_trained_again(tmp_path):
    run = full_mode_experiment(tmp_path)
    assert run.stage("s", ResNetCIFAR(8), set_fc(0.5))["final_acc"] == 0.5
    assert run.stage("s", ResNetCIFAR(8), set_fc(0.5))["final_acc"] == 0.5  # reloaded

    def other_code(net):
        with torch.no_grad():
            net.final_fc.linear.weight.fill_(0.25)
        return {"final_acc": 0.25}

    net = ResNetCIFAR(8)
    assert run.stage("s", net, other_code)["final_acc"] == 0.25
    assert torch.all(net.final_fc.linear.weight == 0.25)


def test_kit_code_is_part_of_the_stage_fingerprint(monkeypatch):
    train = set_fc(0.5)
    before = ex.code_fingerprint(train)
    monkeypatch.setattr(ex, "KIT_MODULES", ex.KIT_MODULES[:-1])  # as if a module changed
    assert ex.code_fingerprint(train) != before


def test_checkpoint_that_does_not_match_its_record_is_not_reloaded(tmp_path):
    run = full_mode_experiment(tmp_path)
    calls = []

    def train(net):
        calls.append(1)
        return {"final_acc": 1.0}

    run.stage("s", ResNetCIFAR(8), train)
    tu.save_checkpoint(ResNetCIFAR(8), run.checkpoint_of("s"))  # e.g. a rewrite interrupted before its record
    run.stage("s", ResNetCIFAR(8), train)
    assert len(calls) == 2


def test_results_of_other_recipes_are_not_kept(tmp_path, monkeypatch):
    run = full_mode_experiment(tmp_path)
    run.results_path = tmp_path / "results.json"
    run.results_path.write_text('{"meta": {"pretrained": {"sha256": "A"}, "test_label": "t", '
                                '"recipes": {"improved": {"lr": 0.05}}}, "lab2a": {"acc": 90.0}}')
    meta = {"pretrained": {"sha256": "A"}, "test_label": "t", "recipes": {"improved": {"lr": 0.05}}}
    monkeypatch.setattr(run, "_meta", lambda previous: dict(meta))
    assert "lab2a" in run._load_results()
    meta["recipes"] = {"improved": {"lr": 0.1}}
    assert "lab2a" not in run._load_results()
