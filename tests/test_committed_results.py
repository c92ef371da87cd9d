"""Re-measure the committed results on real CIFAR-10: every committed stage checkpoint of
hw4.ipynb (and our pretrained model) is reloaded and evaluated again, and must give exactly
the accuracy its record and report/results.json state; pruned stages keep their zeros and
quantized layers take at most 2^b values per tensor.

Needs the real test images ($HW4_REMEASURE_DATA, which CI sets to its offline copy, else the
kit's data folder or $HW4_DATA_DIR, e.g. torchvision's download);
without them, or before any stage is committed, the tests skip and say why."""
import json
import os
from pathlib import Path

import pytest
import torch

import experiment as ex
import train_util as tu

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints"
RESULTS = ROOT / "report" / "results.json"
# stage-name prefix -> (the results file that reports the stage, the notebook that writes it)
RESULTS_OF = {"dc_": (ROOT / "report" / "deep_compression.json", "deep_compression.ipynb"),
              "ext_": (ROOT / "report" / "extensions.json", "lecture_extensions.ipynb")}
SPARSE_STAGES = ("lab2c", "lab2d", "lab2e", "lab3d", "lab3e")


def stage_records():
    records = {}
    for meta in sorted(CKPT.glob("*.json")):
        saved = json.loads(meta.read_text())
        if "key" in saved and "record" in saved:  # a stage record (not the pretraining log)
            records[meta.stem] = saved
    return records


STAGES = stage_records()


@pytest.fixture(scope="module")
def data():
    try:
        # CI points HW4_REMEASURE_DATA at its offline copy, so the quick-mode notebook tests
        # keep their small synthetic data; elsewhere the kit's usual places are searched
        data = tu.load_cifar10(os.environ.get("HW4_REMEASURE_DATA"), download=False, device="cpu")
    except tu.DataNotFoundError:
        pytest.skip("real CIFAR-10 not found (data/, $HW4_DATA_DIR): committed results "
                    "cannot be re-measured here")
    return data  # as loaded: the records say which test images they were measured on


def test_pretrained_model_remeasures(data):
    log = CKPT / "pretrained_model.json"
    if not log.is_file():
        pytest.skip("checkpoints/pretrained_model.pt not committed yet (pretraining in progress)")
    saved = json.loads(log.read_text())
    if saved["test_images"] != data.n_test:
        pytest.skip(f"measured on {saved['test_images']} test images, {data.n_test} here")
    assert tu.sha256(CKPT / "pretrained_model.pt") == saved["sha256"]
    net = tu.load_checkpoint(ex.ResNetCIFAR(20), CKPT / "pretrained_model.pt")
    acc, _ = tu.evaluate(tu.prepare_for_device(net, data.device), data)
    assert acc == saved["final_acc"]


@pytest.mark.skipif(not STAGES, reason="no hw4 stage checkpoints committed yet")
@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_remeasures_exactly(name, data):
    saved = STAGES[name]
    if saved["key"]["data"]["test_images"] != data.n_test:
        pytest.skip(f"measured on {saved['key']['data']['test_images']} test images, {data.n_test} here")
    assert tu.sha256(CKPT / f"{name}.pt") == saved["sha256"]["final"]
    net = ex.network_from_spec(saved["key"]["network"])
    if name.startswith("ext_filter"):  # filter pruning: a narrower dense network
        import extensions
        net, _ = extensions.prune_filters(net, saved["key"]["fraction"])
    if name.startswith("dc_quant_"):  # trained quantization: shared (codebook + index) weights
        import compression
        state = torch.load(CKPT / f"{name}.pt", map_location="cpu", weights_only=True)
        compression.share_like_(net, state, saved["key"]["bits"])
    tu.load_checkpoint(net, CKPT / f"{name}.pt")
    acc, _ = tu.evaluate(tu.prepare_for_device(net, data.device), data)
    assert acc == saved["record"]["final_acc"]
    results, notebook = results_file_of(name)
    if results.is_file():  # absent while its notebook's campaign is still running
        reported = [r for r in _runs(json.loads(results.read_text()))
                    if r.get("stage") == name or Path(r.get("checkpoint", "")).stem == name]
        assert reported, (f"report/{results.name} does not report stage {name}: it is from an execution "
                          f"still running or older than the stage; execute {notebook} to the end")
        assert all(r["final_acc"] == acc for r in reported), name
    if name.startswith(SPARSE_STAGES):  # exactly round(0.8 n) per layer: 79.9997 % in all
        assert tu.sparsity(net) >= 79.99
    for module in net.modules():
        if isinstance(module, (ex.FP_Conv, ex.FP_Linear)) and module.Nbits:
            weight = module.conv.weight if isinstance(module, ex.FP_Conv) else module.linear.weight
            values = torch.unique(ex.linear_quantize(weight.detach(), module.Nbits, module.zero_preserving))
            assert len(values) <= 2 ** module.Nbits + module.zero_preserving


def results_file_of(stage):
    """(results file, notebook) of a stage: Deep Compression and the lecture extensions
    report their own stages, hw4.ipynb the others."""
    for prefix, where in RESULTS_OF.items():
        if stage.startswith(prefix):
            return where
    return RESULTS, "hw4.ipynb"


def _runs(tree):
    """Every run summary (a dict with a final accuracy and the 'stage' or 'checkpoint' it
    comes from) anywhere in a results file."""
    if isinstance(tree, dict):
        if ("stage" in tree or "checkpoint" in tree) and "final_acc" in tree:
            yield tree
        children = tree.values()
    else:
        children = tree if isinstance(tree, list) else []
    for child in children:
        yield from _runs(child)


def test_every_stage_is_looked_for_in_the_file_its_notebook_writes():
    assert results_file_of("dc_prune_s000")[0].name == "deep_compression.json"
    assert results_file_of("ext_nm24")[0].name == "extensions.json"
    assert results_file_of("lab3e_improved")[0] == RESULTS
    nested = {"a": [{"record": {"stage": "s", "final_acc": 1.0}}], "b": {"stage": "t", "final_acc": 2}}
    assert sorted(r["stage"] for r in _runs(nested)) == ["s", "t"]


def test_tuning_base_remeasures_on_its_validation_split(data):
    """The base model of tuning.py never trained on train[45000:50000] and scores there what
    its log says; the committed decision names that very model."""
    import tuning
    log = ROOT / tuning.BASE.with_suffix(".json")
    if not log.is_file():
        pytest.skip("tuning.py's base model not committed yet (tuning in progress)")
    saved = json.loads(log.read_text())
    if len(data.y_train) != saved["train_images"] + tuning.VAL_IMAGES:
        pytest.skip(f"needs all {saved['train_images'] + tuning.VAL_IMAGES} training images")
    assert tu.sha256(ROOT / tuning.BASE) == saved["sha256"]
    _, val = data.split_validation(tuning.VAL_IMAGES)
    acc, _ = tu.evaluate(tu.prepare_for_device(tuning.load(ROOT / tuning.BASE), val.device), val)
    assert acc == saved["record"]["final_acc"]
    decisions = ROOT / "report" / "tuning.json"
    if decisions.is_file():
        assert all(d["base"]["sha256"] == saved["sha256"] for d in json.loads(decisions.read_text()).values())


def test_tuning_stability_checks_start_from_the_remeasured_quantized_model(data):
    """Each committed first-epoch check starts from our pretrained model (its SHA-256) and
    its 'before' is that model at the check's bits, re-measured on the validation split."""
    import tuning
    checks = sorted((ROOT / tuning.BASE.parent).glob("*/*.check.json"))
    if not checks:
        pytest.skip("no first-epoch check of tuning.py committed yet")
    if len(data.y_train) != 50000:
        pytest.skip("needs all 50000 training images")
    _, val = data.split_validation(tuning.VAL_IMAGES)
    start = tuning.load(ROOT / tuning.START)
    net = tu.prepare_for_device(ex.ResNetCIFAR(num_layers=20, Nbits=3), val.device)
    net.load_state_dict(start.state_dict())
    acc, _ = tu.evaluate(net, val)
    for path in checks:
        saved = json.loads(path.read_text())
        assert saved["start_sha256"] == tu.sha256(ROOT / saved["start"]), path
        assert saved["before"] == acc, path
        assert saved["stable"] == (saved["after_one_epoch"] > saved["before"]), path
    # the decision file reports these checks and ranks only the candidates that passed
    decisions = json.loads((ROOT / "report" / "tuning.json").read_text())
    for stage_dir in {p.parent for p in checks}:
        decision = decisions[f"{stage_dir.name}_improved"]
        on_file = {p.name.removesuffix(".check.json"): json.loads(p.read_text())
                   for p in stage_dir.glob("*.check.json")}
        assert decision["stability"] == on_file
        assert decision["eligible"] == [k for k in decision["scores"] if on_file[k]["stable"]]
        assert decision["chosen"] == max(decision["eligible"], key=lambda k: decision["scores"][k])
