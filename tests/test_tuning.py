"""tuning.py: the base model and the candidates never train on the held-out training images
they are scored on, the best is chosen, and hw4's stages take the chosen recipe from the
decision file."""
import functools
from dataclasses import asdict, replace

import pytest
import torch

import experiment as ex
import train_util as tu
import tuning

CANDIDATES = {"lr0.05": replace(tu.IMPROVED, lr=0.05), "lr0.01": replace(tu.IMPROVED, lr=0.01)}


def fake_training(scores, seen):
    """A train_fn that records what it was given and scores each recipe as `scores` says."""
    def train_fn(recipe, data, base, resume):
        seen.append((recipe, data, resume))
        return {"final_acc": scores[recipe.lr], "best_acc": scores[recipe.lr]}
    return train_fn


def test_base_and_candidates_train_without_and_score_on_the_last_training_images(tmp_path, monkeypatch):
    data = tu.synthetic_cifar(60, 20, device="cpu")
    fit, base_data = tu.fit, []
    monkeypatch.setattr(tu, "fit", lambda net, d, *a, **k: base_data.append(d) or fit(net, d, *a, **k))
    seen = []
    result = tuning.tune(data, CANDIDATES, tmp_path, fake_training({0.05: 80.0, 0.01: 85.0}, seen),
                         val_images=10, base_epochs=1)
    for val in base_data + [v for _, v, _ in seen]:
        assert torch.equal(val.x_train, data.x_train[:50])
        assert torch.equal(val.x_test, data.x_train[50:]) and torch.equal(val.y_test, data.y_train[50:])
    assert len(base_data) == 1 and result["base"]["epochs"] == 1
    assert result["chosen"] == "lr0.01" and result["scores"] == {"lr0.05": 80.0, "lr0.01": 85.0}
    assert result["train_images"] == 50 and "validation" in result["validation"]


def test_finished_candidates_reload_and_a_changed_recipe_retrains(tmp_path):
    data = tu.synthetic_cifar(60, 20, device="cpu")
    seen = []
    train_fn = fake_training({0.05: 80.0, 0.01: 85.0, 0.02: 90.0}, seen)
    tuning.tune(data, CANDIDATES, tmp_path, train_fn, val_images=10, base_epochs=1)
    tuning.tune(data, CANDIDATES, tmp_path, train_fn, val_images=10, base_epochs=1)
    assert len(seen) == 2  # the second call trains nothing
    changed = {**CANDIDATES, "lr0.01": replace(tu.IMPROVED, lr=0.02)}
    assert tuning.tune(data, changed, tmp_path, train_fn, val_images=10, base_epochs=1)["chosen"] == "lr0.01"
    assert len(seen) == 3 and seen[-1][0].lr == 0.02


@pytest.mark.parametrize("scores, chosen", [({"a": 1.0, "b": 2.0}, "b"), ({"a": 2.0, "b": 2.0}, "a"),
                                            ({"a": 3.0, "b": 2.0, "c": 3.0}, "a")])
def test_choose_takes_the_highest_score_and_the_first_of_ties(scores, chosen):
    assert tuning.choose(scores) == chosen


def test_hw4_stages_take_the_chosen_recipe_from_the_decision_file(tmp_path):
    chosen = replace(tu.IMPROVED, lr=0.01)
    decision = {"lab2e_improved": {"chosen": "lr0.01", "runs": {"lr0.01": {"recipe": asdict(chosen)},
                                                                "lr0.05": {"recipe": asdict(tu.IMPROVED)}}}}
    tu.save_json(decision, tmp_path / "tuning.json")
    settings = ex.Settings.for_mode(False)
    settings.decisions = ex.load_decisions(tmp_path / "tuning.json")
    for stage in ("lab2e", "lab3e"):
        assert settings.recipes_for(stage) == {"faithful": tu.FAITHFUL, "improved": chosen}
    for stage in ("lab2c", "lab2d", "lab3c_4bit", "lab3d_2bit"):  # no Lab 3 (c) decision in the file
        assert settings.recipes_for(stage) == {"faithful": tu.FAITHFUL, "improved": tu.IMPROVED}
    qat = replace(tu.IMPROVED, lr=0.002)
    settings.decisions["lab3c_improved"] = {"chosen": "lr0.002", "runs": {"lr0.002": {"recipe": asdict(qat)}}}
    for stage in ("lab3c_4bit", "lab3c_3bit", "lab3c_2bit", "lab3d_4bit", "lab3d_3bit", "lab3d_2bit"):
        assert settings.recipes_for(stage)["improved"] == qat
    assert settings.recipes_for("lab3e")["improved"] == chosen
    assert ex.load_decisions(tmp_path / "missing.json") == {}


def test_a_candidate_starts_from_the_base_and_distils_from_it(monkeypatch):
    base = tuning.load(tuning.BASE) if tuning.BASE.is_file() else tuning.ResNetCIFAR(num_layers=20)
    captured = {}

    def fake_prune(net, *args, teacher=None, **kwargs):
        captured.update(net=net, teacher=teacher, kwargs=kwargs)
        return {"final_acc": 0.0}

    monkeypatch.setattr(tu, "iterative_prune", fake_prune)
    tuning.global_iterative(tu.IMPROVED, None, base, None)
    state = base.state_dict()
    for net in (captured["net"], captured["teacher"]):
        assert net is not base and all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert not any(p.requires_grad for p in captured["teacher"].parameters())
    assert captured["kwargs"]["use_global"] is True


def test_a_qat_candidate_quantizes_the_base_and_distils_from_its_float_copy(monkeypatch):
    base = tuning.ResNetCIFAR(num_layers=20)
    captured = {}

    def fake_fit(net, data, epochs, recipe, teacher=None, **kwargs):
        captured.update(net=net, teacher=teacher, epochs=epochs, recipe=recipe)
        return {"final_acc": 0.0, "best_acc": 0.0}

    monkeypatch.setattr(tu, "fit", fake_fit)
    tuning.quantization_aware(tu.IMPROVED, None, base, None, nbits=3)
    net, teacher, state = captured["net"], captured["teacher"], base.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert {m.Nbits for m in net.modules() if isinstance(m, ex.FP_Conv) and m.Nbits} == {3}
    assert teacher is not base and not any(p.requires_grad for p in teacher.parameters())
    assert all(getattr(m, "Nbits", None) is None for m in teacher.modules())
    assert captured["epochs"] == 20 and captured["recipe"] == tu.IMPROVED


def test_the_score_is_the_number_the_question_asks_for(tmp_path):
    data = tu.synthetic_cifar(60, 20, device="cpu")

    def train_fn(recipe, data, base, resume):  # final and best disagree on the order
        return {"final_acc": 90.0 if recipe.lr == 0.05 else 80.0, "best_acc": 85.0 if recipe.lr == 0.05 else 95.0}

    kwargs = dict(val_images=10, base_epochs=1, base_path=tmp_path / "base.pt")
    assert tuning.tune(data, CANDIDATES, tmp_path / "a", train_fn, **kwargs)["chosen"] == "lr0.05"
    best = tuning.tune(data, CANDIDATES, tmp_path / "b", train_fn, score="best_acc", **kwargs)
    assert best["chosen"] == "lr0.01" and best["score"] == "best-epoch accuracy"


def test_choose_ranks_only_the_eligible_candidates():
    assert tuning.choose({"a": 3.0, "b": 2.0, "c": 1.0}, eligible=["b", "c"]) == "b"
    with pytest.raises(ValueError, match="lower lr"):
        tuning.choose({"a": 3.0, "b": 2.0}, eligible=[])


def test_an_unstable_candidate_is_not_chosen_and_checks_reload(tmp_path):
    data = tu.synthetic_cifar(60, 20, device="cpu")
    start = tmp_path / "start.pt"
    tu.save_checkpoint(tuning.ResNetCIFAR(num_layers=20), start)
    checked = []

    def check_fn(recipe, val, start_net):
        checked.append((recipe.lr, val))
        return {"before": 50.0, "after_one_epoch": 40.0 if recipe.lr == 0.05 else 60.0,
                "stable": recipe.lr != 0.05}

    kwargs = dict(val_images=10, base_epochs=1, check_fn=check_fn, start_path=start)
    train_fn = fake_training({0.05: 90.0, 0.01: 85.0}, [])
    result = tuning.tune(data, CANDIDATES, tmp_path, train_fn, **kwargs)
    assert result["chosen"] == "lr0.01" and result["eligible"] == ["lr0.01"]
    assert result["stability"]["lr0.05"]["stable"] is False
    assert result["stability"]["lr0.05"]["start_sha256"] == tu.sha256(start)
    for _, val in checked:  # the check trains and scores on the same split as the candidates
        assert torch.equal(val.x_train, data.x_train[:50]) and torch.equal(val.x_test, data.x_train[50:])
    tuning.tune(data, CANDIDATES, tmp_path, train_fn, **kwargs)
    assert len(checked) == 2  # reloaded, not checked again
    tu.save_checkpoint(tuning.ResNetCIFAR(num_layers=20), start)  # another start model
    tuning.tune(data, CANDIDATES, tmp_path, train_fn, **kwargs)
    assert len(checked) == 4
    other_check = functools.partial(check_fn)  # another check: checked again
    tuning.tune(data, CANDIDATES, tmp_path, train_fn, **{**kwargs, "check_fn": other_check})
    assert len(checked) == 6


def test_a_check_is_described_with_its_fixed_arguments():
    assert tuning.describe(functools.partial(tuning.first_qat_epoch, nbits=3)) == "first_qat_epoch(nbits=3)"
    assert tuning.describe(tuning.first_qat_epoch) == "first_qat_epoch"


@pytest.mark.parametrize("delta, stable", [(10.0, True), (0.0, False), (-5.0, False)])
def test_the_first_qat_epoch_check_runs_the_first_epoch_of_the_schedule_from_the_start(monkeypatch, delta, stable):
    data = tu.synthetic_cifar(64, 32, device="cpu")
    start = tuning.ResNetCIFAR(num_layers=20)
    before = tu.evaluate(tuning.quantized(start, 3), data)[0]  # the start model at 3 bits, untrained
    captured = {}

    def fake_fit(net, d, epochs, recipe, teacher=None, **kwargs):
        captured.update(net=net, data=d, teacher=teacher, epochs=epochs, recipe=recipe)
        return {"final_acc": before + delta}

    monkeypatch.setattr(tu, "fit", fake_fit)
    verdict = tuning.first_qat_epoch(tu.IMPROVED, data, start, nbits=3)
    assert verdict == {"before": before, "after_one_epoch": before + delta, "stable": stable}
    net, state = captured["net"], start.state_dict()
    assert captured["data"] is data and captured["epochs"] == 1
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert {m.Nbits for m in net.modules() if isinstance(m, ex.FP_Conv) and m.Nbits} == {3}
    assert captured["teacher"] is not start and not any(p.requires_grad for p in captured["teacher"].parameters())
    assert all(getattr(m, "Nbits", None) is None for m in captured["teacher"].modules())
    # the lr of its one epoch is within 1 % of the first epoch of the 20-epoch run
    steps = 196
    for step in range(steps):
        lr = captured["recipe"].lr_at(step, steps, steps)
        assert lr == pytest.approx(tu.IMPROVED.lr_at(step, 20 * steps, steps), rel=0.01)
