"""experiment.py: mode selection, the clear error for a missing checkpoint, resumable stages."""
import json

import pytest
import torch

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


def set_fc(value, calls=None):
    def train(net, recipe=None, **fit_options):
        if calls is not None:
            calls.append(recipe)
        with torch.no_grad():
            net.final_fc.linear.weight.fill_(value)
        return {"final_acc": value}
    return train


def test_finished_stage_is_reloaded_not_retrained(tmp_path):
    run, calls = full_mode_experiment(tmp_path), []
    first = run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls), epochs=1)
    net = ResNetCIFAR(8)
    second = run.stage("s", net, set_fc(0.5, calls), epochs=1)
    assert len(calls) == 1 and first == second
    assert first["stage"] == "s" and len(first["stage_key"]) == 16  # results name their stage
    assert torch.all(net.final_fc.linear.weight == 0.5)  # the trained weights came back
    run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls), epochs=2)  # other settings: trained again
    assert len(calls) == 2
    run.results["meta"]["pretrained"]["sha256"] = "B"  # another pretrained model: again
    run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls), epochs=2)
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


def test_results_of_an_earlier_execution_are_never_reused(tmp_path, monkeypatch):
    """An interrupted earlier run (maybe older code) must not leave entries that the report
    prints beside this run's: every execution starts its results afresh."""
    run = full_mode_experiment(tmp_path)
    run.results_path = tmp_path / "results.json"
    run.results_path.write_text('{"meta": {"pretrained": {"sha256": "A"}, "test_label": "t"}, '
                                '"lab2a": {"acc": 90.0}, "lab3d": {"source": "lab2c_improved"}}')
    monkeypatch.setattr(run, "_meta", lambda: {"pretrained": {"sha256": "A"}, "test_label": "t"})
    results = run._load_results()
    assert set(results) == {"meta"}


def test_changing_the_improved_recipe_does_not_retrain_faithful_stages(tmp_path):
    from dataclasses import replace
    run = full_mode_experiment(tmp_path)
    calls = []
    run.for_each_recipe("s", lambda: ResNetCIFAR(8), set_fc(1.0, calls))
    assert len(calls) == 2
    run.settings.recipes["improved"] = replace(tu.IMPROVED, lr=0.1)
    run.for_each_recipe("s", lambda: ResNetCIFAR(8), set_fc(1.0, calls))
    assert calls[2:] == [run.settings.recipes["improved"]]  # only the changed recipe ran


def test_code_changes_alone_do_not_retrain(tmp_path):
    """A docstring or refactor must not cost hours: the key holds no source code."""
    run, calls = full_mode_experiment(tmp_path), []
    run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls))

    def rewritten(net, **fit_options):  # another function, same training inputs
        calls.append("rewritten")
        return {"final_acc": 0.0}
    net = ResNetCIFAR(8)
    assert run.stage("s", net, rewritten)["final_acc"] == 0.5
    assert calls == [None] and torch.all(net.final_fc.linear.weight == 0.5)


def test_training_version_bump_retrains_and_says_what_changed(tmp_path, monkeypatch, capsys):
    run, calls = full_mode_experiment(tmp_path), []
    run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls))
    monkeypatch.setattr(tu, "TRAINING_VERSION", tu.TRAINING_VERSION + 1)
    run.stage("s", ResNetCIFAR(8), set_fc(0.5, calls))
    assert len(calls) == 2
    assert "changed: training_version" in capsys.readouterr().out


def test_network_build_is_part_of_the_stage_key(tmp_path, capsys):
    """A stage trained with the zero-preserving quantizer must not reload for a network
    without it (Lab 3 e), nor a 4-bit stage for a 2-bit network."""
    from FP_layers import set_zero_preserving
    run, calls = full_mode_experiment(tmp_path), []
    run.stage("s", set_zero_preserving(ResNetCIFAR(8, Nbits=4)), set_fc(0.5, calls))
    run.stage("s", ResNetCIFAR(8, Nbits=4), set_fc(0.5, calls))
    assert len(calls) == 2 and "changed: network" in capsys.readouterr().out
    run.stage("s", ResNetCIFAR(8, Nbits=2), set_fc(0.5, calls))
    assert len(calls) == 3


def test_checkpoint_that_does_not_match_its_record_is_not_reloaded(tmp_path):
    run, calls = full_mode_experiment(tmp_path), []
    run.stage("s", ResNetCIFAR(8), set_fc(1.0, calls))
    tu.save_checkpoint(ResNetCIFAR(8), run.checkpoint_of("s"))  # e.g. a rewrite interrupted before its record
    run.stage("s", ResNetCIFAR(8), set_fc(1.0, calls))
    assert len(calls) == 2


class Interrupt(Exception):
    pass


def test_interrupted_stage_resumes_after_its_last_epoch(tmp_path, capsys):
    run = full_mode_experiment(tmp_path)
    recipe = tu.Recipe(lr=0.05, batch_size=16)

    def train(net, stop_before=None, **fit_options):
        def hook(epoch, masks):
            if epoch == stop_before:
                raise Interrupt
        return tu.fit(net, run.data, 3, recipe, before_epoch=hook, progress=False, **fit_options)

    torch.manual_seed(0)
    uninterrupted = ResNetCIFAR(8)
    tu.fit(uninterrupted, run.data, 3, recipe, progress=False)
    with pytest.raises(Interrupt):
        torch.manual_seed(0)
        run.stage("s", ResNetCIFAR(8), lambda net, **o: train(net, stop_before=3, **o))
    assert len(list(run.settings.ckpt_dir.glob("s.*.resume.pt"))) == 1
    torch.manual_seed(0)
    net = ResNetCIFAR(8)
    record = run.stage("s", net, train)
    assert "resuming from epoch 2 of 3" in capsys.readouterr().out
    assert record["epochs"] == 3
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                  uninterrupted.state_dict().values()))
    assert not list(run.settings.ckpt_dir.glob("s.*.resume.pt"))  # done: state removed


def test_keep_best_saves_the_best_epoch_beside_the_final(tmp_path):
    run = full_mode_experiment(tmp_path)
    recipe = tu.Recipe(lr=0.05, batch_size=16)

    def train(net, **fit_options):
        return tu.fit(net, run.data, 3, recipe, progress=False, **fit_options)

    torch.manual_seed(0)
    record = run.stage("s", ResNetCIFAR(8), train, keep_best=True)
    best = run.checkpoint_of("s_best")
    meta = json.loads(run.checkpoint_of("s").with_suffix(".json").read_text())
    assert meta["sha256"]["best"] == tu.sha256(best)
    acc, _ = tu.evaluate(tu.load_checkpoint(ResNetCIFAR(8), best), run.data)
    assert acc == record["best_acc"]
    best.unlink()  # a missing best checkpoint: the stage is not complete, train again
    calls = []
    run.stage("s", ResNetCIFAR(8), lambda net, **o: calls.append(1) or train(net, **o), keep_best=True)
    assert calls == [1]


def test_lab3d_starts_each_recipe_from_its_own_best_lab2_model(tmp_path):
    """The faithful column must start from a faithful model, chosen by best accuracy."""
    run = full_mode_experiment(tmp_path)
    for q, (faithful, improved) in {"lab2c": (88.0, 91.0), "lab2d": (89.5, 90.0),
                                    "lab2e": (89.0, 92.5)}.items():
        run.results[q] = {"faithful": {"best_acc": faithful, "best_epoch": 7, "final_acc": 80.0},
                          "improved": {"best_acc": improved, "best_epoch": 9, "final_acc": 95.0}}
    sources = ex.best_sparse_sources(run)
    assert sources["faithful"]["stage"] == "lab2d_faithful"
    assert sources["faithful"]["checkpoint"] == "lab2d_faithful_best"
    assert sources["improved"]["stage"] == "lab2e_improved" and sources["improved"]["acc"] == 92.5


def test_network_from_spec_rebuilds_the_same_network():
    from FP_layers import set_zero_preserving
    net = set_zero_preserving(ResNetCIFAR(20, Nbits=3))
    spec = ex.network_spec(net)
    assert ex.network_spec(ex.network_from_spec(spec)) == spec
    assert ex.network_spec(ex.network_from_spec(ex.network_spec(ResNetCIFAR(20)))) != spec


def test_dense_vs_masked_timing_drops_the_first_pass_and_keeps_the_median(tmp_path, monkeypatch):
    run = full_mode_experiment(tmp_path)
    run.model = lambda: ResNetCIFAR(8)
    run.results["meta"]["device"] = "cpu"
    passes = iter([[9.0, 1.0, 3.0, 2.0], [9.0, 2.0, 8.0, 4.0]])   # dense, then masked
    seen = []

    def fake_fit(net, data, epochs, recipe, masks=None, **options):
        seen.append((epochs, masks is not None, len(data.y_train), len(data.y_test)))
        return {"history": {"epoch_s": next(passes)}}

    monkeypatch.setattr(tu, "fit", fake_fit)
    timing = ex.time_dense_vs_masked(run, batches=1, passes=4)
    scale = len(run.data.y_train) / min(len(run.data.y_train), tu.FAITHFUL.batch_size)
    assert timing["dense_epoch_s"] == pytest.approx(2.0 * scale)   # median of 1, 3, 2
    assert timing["masked_epoch_s"] == pytest.approx(4.0 * scale)  # median of 2, 8, 4
    assert timing["timed_passes"] == 3
    assert [s[:2] for s in seen] == [(4, False), (4, True)]          # same passes, one masked


def test_size_accuracy_labels_cover_neither_each_other_nor_a_marker(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

    def row(kib, faithful, improved):
        return {"faithful": {"kib": kib, "final_acc": faithful}, "improved": {"kib": kib, "final_acc": improved}}

    # models of equal size with near-equal accuracies, and neighbours on the log axis
    models = {"2c": row(264.7, 91.7, 92.5), "2d": row(264.7, 91.2, 92.6), "2e": row(264.7, 91.7, 91.5),
              "3d_3": row(66.6, 88.7, 92.3), "3d_4": row(73.4, 90.5, 92.5), "3e": row(75.5, 90.4, 91.5),
              "dense": row(1070.5, 93.5, 93.5)}
    fig = ex.plot_size_accuracy({"models": models}, tmp_path / "c.png", "t", "test")
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts if isinstance(t, Annotation)]
    markers = [Bbox.from_bounds(*(fig.axes[0].transData.transform((r[k]["kib"], r[k]["final_acc"])) - 3), 6, 6)
               for r in models.values() for k in ("faithful", "improved")]
    assert len(boxes) == len(models)   # one label per model
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:] + markers)
    plt.close("all")
