"""Tests for extensions.py (lecture_extensions.ipynb) and report/extensions_section.py.

Each transformation is checked against an independent reference: torch's fake-quantize
ops, the homework's own quantizer, brute-force enumeration (filter choice, 2:4 groups,
bit allocation, nearest power of two), closed-form counts, and the float model for int8.
Tiny networks (ResNet-8) and tensors only: the whole file runs in seconds.
"""
import copy
import itertools
import json
import math
from dataclasses import replace

import pytest
import torch

import experiment as ex
import extensions as ext
import train_util as tu
from FP_layers import linear_quantize
from helpers import random_resnet
from report import extensions_section as sec
from report.tables import NOT_RUN, QUICK_BANNER
from resnet20 import ResNetCIFAR

BITS = (2, 3, 4, 6, 8)


def weight(shape=(6, 5, 3, 3)):
    """Random weights with channels of very different ranges (as in real layers)."""
    w = torch.randn(shape)
    return w * torch.logspace(-2, 0, shape[0]).view(-1, *[1] * (len(shape) - 1))


def tiny_net(seed=0):
    """ResNet-8 with random weights and non-trivial batch-norm statistics, in eval mode."""
    return random_resnet(8, seed)


# ----------------------------------------------------------------------------- quantizers

@pytest.mark.parametrize("bits", BITS)
def test_per_tensor_asymmetric_is_the_homework_ste(bits):
    w = weight()
    assert torch.equal(ext.fake_quantize(w, bits, "asymmetric"), linear_quantize(w, bits))


def test_asymmetric_rounds_ties_to_even_like_torch():
    """Exact halfway cases: min 0 and max 3 at 2 bits put the grid on the integers, so
    0.5, 1.5, 2.5 are ties; torch's per-tensor fake quantizer rounds them to even."""
    w = torch.arange(0, 3.5, 0.5)
    ref = torch.fake_quantize_per_tensor_affine(w, 1.0, 0, 0, 3)
    assert torch.equal(ext.fake_quantize(w, 2, "asymmetric"), ref)
    assert ref.tolist() == [0, 0, 1, 2, 2, 2, 3]


@pytest.mark.parametrize("bits", BITS)
def test_asymmetric_matches_torch_fake_quantize_per_channel(bits):
    """Per channel and (as one channel) per tensor, against torch's affine fake quantizer
    with the float zero point -min/scale (the homework's grid runs from min to max)."""
    w, steps = weight(), 2 ** bits - 1
    lo, hi = w.flatten(1).min(1).values, w.flatten(1).max(1).values
    scale = (hi - lo) / steps
    ref = torch.fake_quantize_per_channel_affine(w, scale, -lo / scale, 0, 0, steps)
    torch.testing.assert_close(ext.fake_quantize(w, bits, "asymmetric", per_channel=True), ref,
                               rtol=0, atol=1e-6)
    flat, scale = w.reshape(1, -1), (w.max() - w.min()).view(1) / steps
    ref = torch.fake_quantize_per_channel_affine(flat, scale, -w.min().view(1) / scale, 0, 0, steps)
    torch.testing.assert_close(ext.fake_quantize(w, bits, "asymmetric").reshape(1, -1), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_symmetric_matches_torch_fake_quantize(bits):
    w, n = weight(), 2 ** (bits - 1) - 1
    ref = torch.fake_quantize_per_tensor_affine(w, float(w.abs().max() / n), 0, -n, n)
    torch.testing.assert_close(ext.fake_quantize(w, bits, "symmetric"), ref, rtol=0, atol=1e-6)
    scale = w.abs().flatten(1).max(1).values / n
    ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(len(w), dtype=torch.int32), 0, -n, n)
    torch.testing.assert_close(ext.fake_quantize(w, bits, "symmetric", per_channel=True), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_power_of_two_levels_are_the_nearest_powers_of_two(bits):
    w = weight()
    for per_channel in (False, True):
        q = ext.fake_quantize(w, bits, "pow2", per_channel)
        nonzero = q[q != 0].abs()
        assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())  # powers of two
        rows = w.flatten(1) if per_channel else w.reshape(1, -1)
        for row, qrow in zip(rows, q.flatten(1) if per_channel else q.reshape(1, -1)):
            top = 2.0 ** round(math.log2(float(row.abs().max())))
            levels = torch.tensor([0.0] + [top * 2.0 ** -j for j in range(2 ** (bits - 1) - 1)])
            assert len(qrow.abs().unique()) <= len(levels)
            # brute force: each weight went to a nearest level (ties either way)
            dist = (row.abs().unsqueeze(1) - levels).abs()
            chosen = (row.abs() - qrow.abs()).abs()
            torch.testing.assert_close(chosen, dist.min(1).values, rtol=0, atol=1e-7)
            assert torch.equal(torch.sign(qrow[qrow != 0]), torch.sign(row[qrow != 0]))


@pytest.mark.parametrize("scheme", ext.SCHEMES)
def test_level_count_and_zero_channels(scheme):
    w = weight()
    w[2] = 0  # a pruned filter: no NaN, stays zero
    for bits in BITS:
        q = ext.fake_quantize(w, bits, scheme, per_channel=True)
        assert torch.isfinite(q).all() and torch.equal(q[2], w[2])
        limit = 2 ** bits if scheme == "asymmetric" else 2 ** bits - 1
        assert all(len(row.unique()) <= limit for row in q.flatten(1))
    with pytest.raises(ValueError):
        ext.fake_quantize(w, 1, scheme)


def test_quantized_net_matches_hw4_nbits_model():
    """Per-tensor asymmetric post-training quantization of the layers hw4 quantizes gives
    the same outputs as ResNetCIFAR(Nbits=b) (the homework's STE in every block conv)."""
    net, x = tiny_net(), torch.randn(4, 3, 32, 32)
    reference = ResNetCIFAR(num_layers=8, Nbits=3).eval()
    reference.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ext.quantize_weights_(net, 3, "asymmetric", False)(x), reference(x))


# ----------------------------------------------------------------------------- pruning

def test_l1_keep_is_the_best_subset_by_brute_force():
    w = torch.randn(8, 3, 3, 3)
    for fraction in (0.25, 0.5, 0.75):
        n_keep = 8 - round(8 * fraction)
        l1 = w.abs().flatten(1).sum(1)
        best = max(itertools.combinations(range(8), n_keep), key=lambda s: float(l1[list(s)].sum()))
        assert ext.l1_keep(w, fraction).tolist() == list(best)


def test_filter_pruned_net_computes_the_masked_full_net():
    net, x = tiny_net(), torch.randn(5, 3, 32, 32)
    small, keep = ext.prune_filters(net, 0.5)
    masked = copy.deepcopy(net)
    with torch.no_grad():
        for name, mask in ext.filter_masks(masked, keep).items():
            tu.prunable_layers(masked)[name].weight.mul_(mask)
        out_small, out_masked, out_full = small(x), masked(x), net(x)
    torch.testing.assert_close(out_small, out_masked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out_small, out_full, atol=1e-3)  # the pruning did change something
    for i, block in enumerate(small.body_op):
        mid = net.body_op[i].conv1[0].conv.out_channels
        assert block.conv1[0].conv.weight.shape[0] == block.conv2[0].conv.weight.shape[1] == mid // 2
        assert block.conv1[1].running_mean.shape == (mid // 2,)
    inner = sum(b.conv1[0].conv.weight.numel() + b.conv2[0].conv.weight.numel() for b in net.body_op)
    assert ext.weight_count(net) - ext.weight_count(small) == inner // 2


def test_element_pruning_matches_the_filter_weight_count_per_layer():
    net = tiny_net()
    small, _ = ext.prune_filters(net, 0.5)
    elem, masks = ext.element_prune_like(net, small)
    target, layers, original = tu.prunable_layers(small), tu.prunable_layers(elem), tu.prunable_layers(net)
    for name, layer in layers.items():
        assert int(layer.weight.count_nonzero()) == target[name].weight.numel()
        if name in masks:  # the removed weights are the smallest of the layer
            w = original[name].weight.abs()
            assert w[masks[name] == 0].max() <= w[masks[name] == 1].min()
    assert set(masks) == {n for n in layers if "body_op" in n}


def test_count_macs_matches_the_closed_form():
    """ResNet-20 on a 32x32 image: sum over convs of H*W*C_out*C_in*k*k, plus the FC."""
    stages = [(16, 32), (32, 16), (64, 8)]  # channels, feature-map side
    macs = 32 * 32 * 16 * 3 * 9  # head conv
    for s, (c, side) in enumerate(stages):
        c_in = 16 if s == 0 else stages[s - 1][0]
        for b in range(3):
            first_in = c_in if b == 0 else c
            macs += side * side * c * (first_in + c) * 9
            if b == 0 and s > 0:
                macs += side * side * c * c_in  # 1x1 shortcut
    macs += 64 * 10
    net = ResNetCIFAR(20)
    assert ext.count_macs(net) == macs
    small, _ = ext.prune_filters(net, 0.5)
    assert ext.count_macs(small) < 0.55 * macs


@pytest.mark.parametrize("shape", [(8, 16, 3, 3), (10, 8)])
def test_two_four_mask_keeps_the_two_largest_of_every_four_inputs(shape):
    w = torch.randn(shape)
    mask = ext.nm_mask(w)
    assert mask.shape == w.shape and set(mask.unique().tolist()) == {0.0, 1.0}
    kernel = [range(s) for s in shape[2:]]
    for o, g, *pos in itertools.product(range(shape[0]), range(shape[1] // 4), *kernel):
        idx = [(o, c, *pos) for c in range(4 * g, 4 * g + 4)]
        kept = [i for i in idx if mask[i] == 1]
        largest = sorted(idx, key=lambda i: -abs(float(w[i])))[:2]
        assert sorted(kept) == sorted(largest)
    with pytest.raises(ValueError):
        ext.nm_mask(torch.randn(4, 3, 3, 3))


def test_nm_and_unstructured_prune_half_of_the_same_layers():
    net = tiny_net()
    nm, nm_masks = ext.nm_prune(net)
    names = list(nm_masks)
    un, _ = ext.unstructured_prune(net, names, 0.5)
    assert "head_conv.0.conv" not in names and "final_fc.linear" in names
    assert tu.sparsity(nm, names) == pytest.approx(50.0) and tu.sparsity(un, names) == pytest.approx(50.0)
    assert tu.sparsity(net, names) == 0.0  # copies: the original stays dense


# ----------------------------------------------------------------------------- mixed precision

def brute_force_allocation(costs, sizes, target):
    names, best = list(costs), None
    for bits in itertools.product(*[sorted(costs[n]) for n in names]):
        if sum(sizes[n] * b for n, b in zip(names, bits)) == target * sum(sizes.values()):
            cost = sum(costs[n][b] for n, b in zip(names, bits))
            best = min(best or (cost, bits), (cost, bits))
    return best


@pytest.mark.parametrize("target", [2, 3, 4, 5])
def test_allocation_is_optimal_and_averages_the_target(target):
    gen = torch.Generator().manual_seed(target)
    sizes = {"a": 512, "b": 2304, "c": 4608, "d": 9216, "e": 36864}
    # cost falls with bits, at a different rate per layer
    costs = {n: {b: float(torch.rand(1, generator=gen)) * 2.0 ** -b for b in range(2, 7)} for n in sizes}
    alloc = ext.allocate_bits(costs, sizes, target)
    assert ext.average_bits(alloc, sizes) == target
    cost, _ = brute_force_allocation(costs, sizes, target)
    assert sum(costs[n][b] for n, b in alloc.items()) == pytest.approx(cost)


def test_allocation_gives_sensitive_layers_more_bits():
    sizes = {"robust": 1000, "sensitive": 1000}
    costs = {"robust": {b: 0.01 * (6 - b) for b in range(2, 7)},
             "sensitive": {b: 1.0 * (6 - b) ** 2 for b in range(2, 7)}}
    assert ext.allocate_bits(costs, sizes, 3) == {"robust": 2, "sensitive": 4}
    with pytest.raises(ValueError):
        ext.allocate_bits(costs, sizes, 7)


def test_sensitivity_scans_leave_the_network_unchanged():
    net, data = tiny_net(), tu.synthetic_cifar(16, 40, seed=1, device="cpu")
    before = copy.deepcopy(net.state_dict())
    scan = ext.prune_sensitivity(net, data, (0.0, 1.0), progress=False)
    quant = ext.quant_sensitivity(net, data, ext.calibration_data(data, 8), (2,), progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.Nbits is None for m in ext.quant_layers(net).values())
    for r in scan["layers"].values():
        assert r["acc"][0] == scan["dense_acc"]  # 0 % pruned is the dense model
    # an all-zero first conv: every image gets the same logits, so exactly one class of ten is right
    assert scan["layers"]["head_conv.0.conv"]["acc"][1] == 10.0
    assert len(quant["layers"]) == 2 * 3 + 2  # ResNet-8: 3 blocks x 2 convs + 2 shortcuts
    costs = ext.sensitivity_costs(quant)
    assert all(set(c) == {2} for c in costs.values())
    assert all(len(r["acc"]) == len(r["calib_loss"]) == 1 for r in quant["layers"].values())


# ----------------------------------------------------------------------------- int8 and timing

def test_int8_model_is_close_to_float_and_smaller(tmp_path):
    net = tiny_net()
    images = (torch.rand(64, 3, 32, 32) * 255).to(torch.uint8)
    x = tu.normalize(images[:32])
    plain, quantized = ext.plain_float(net), ext.int8_model(net, images)
    with torch.no_grad():
        reference, fp_out, q_out = net(x), plain(x), quantized(x)
    torch.testing.assert_close(fp_out, reference, rtol=1e-5, atol=1e-5)  # same computation
    assert float((q_out - fp_out).norm() / fp_out.norm()) < 0.05
    assert ext.file_kib(quantized, tmp_path / "q.pt") < ext.file_kib(plain, tmp_path / "f.pt") / 2.5
    with pytest.raises(ValueError):
        ext.plain_float(ResNetCIFAR(8, Nbits=4))


def test_latency_measures_every_model():
    nets = {"a": ext.cpu_copy(tiny_net()), "b": ext.cpu_copy(ext.prune_filters(tiny_net(), 0.75)[0])}
    timed = ext.latency(nets, batch=4, repeats=3, warmup=1, progress=False)
    for r in timed.values():
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["repeats"] == 3 and r["batch"] == 4


def test_finetune_budget():
    s = ext.FULL_SETTINGS
    assert s.finetune_epochs <= 10 and ext.finetunes(s) * s.finetune_epochs <= 40
    quick = ext.QUICK_SETTINGS
    assert quick.finetune_epochs == 1 and set(quick.mixed_targets) <= set(quick.bits)


def test_finetune_stage_keeps_the_mask_and_saves_the_stage(tmp_path):
    """Extensions.finetune through Experiment.stage on a tiny net and synthetic data."""
    run = object.__new__(ext.Extensions)  # no data loading or stand-in training
    run.settings = replace(ex.Settings.for_mode(True), ckpt_dir=tmp_path, results_dir=tmp_path)
    run.ext, run.seed = ext.QUICK_SETTINGS, 0
    run.data = tu.synthetic_cifar(64, 32, seed=0, device="cpu")
    run.results = {"meta": {"pretrained": {"sha256": "tiny"}}}
    teacher = tiny_net()
    run.teacher = lambda: teacher
    net, masks = ext.nm_prune(tiny_net())
    summary = run.finetune("ext_test", net, masks=masks)
    assert summary["epochs"] == 1 and summary["final_acc"] == summary["history"]["test_acc"][-1]
    assert ex.zeros_kept(net, masks) and tu.sparsity(net, list(masks)) == pytest.approx(50.0)
    assert (tmp_path / "ext_test.pt").is_file() and not list(tmp_path.glob("*.resume.pt"))
    saved = json.loads((tmp_path / "ext_test.json").read_text())
    assert saved["key"]["masks"] == tu.tensor_digest([masks[k] for k in sorted(masks)])


def test_qat_finetunes_use_the_tuned_lab3c_recipe_and_pruning_ones_the_improved(monkeypatch):
    tuned = replace(tu.IMPROVED, lr=0.01)
    decision = {"lab3c_improved": {"chosen": "lr0.01", "runs": {"lr0.01": {"recipe": tuned.__dict__}}}}
    monkeypatch.setattr(ex, "load_decisions", lambda: decision)
    assert ext.qat_recipe() == tuned and ext.recipe() == tu.IMPROVED
    monkeypatch.setattr(ex, "load_decisions", lambda: {})
    assert ext.qat_recipe() == tu.IMPROVED       # before tuning.py has run

    class Run:  # records what mixed_precision asks to finetune, trains nothing
        ext = replace(ext.QUICK_SETTINGS, qat=True, mixed_targets=(3,))
        data = tu.synthetic_cifar(16, 8, seed=0, device="cpu")
        calls = []

        def model(self, Nbits=None):
            return ResNetCIFAR(num_layers=20, Nbits=Nbits)

        def finetune(self, name, net, **options):
            self.calls.append((name, options.get("finetune_recipe")))
            return {"final_acc": 0.0}

    monkeypatch.setattr(ex, "load_decisions", lambda: decision)
    monkeypatch.setattr(ext, "accuracy", lambda net, data: 0.0)
    layer = "body_op.0.conv1.0"
    monkeypatch.setattr(ext, "allocate_bits", lambda costs, sizes, target: {layer: target})
    monkeypatch.setattr(ext, "sensitivity_costs", lambda scan: {})
    run = Run()
    ext.mixed_precision(run, {"layers": {layer: {"weights": 2304}}})
    assert [name for name, _ in run.calls] == ["ext_uniform3bit", "ext_mixed3bit"]
    assert all(r == tuned for _, r in run.calls)


# ----------------------------------------------------------------------------- report section

def fake_results(quick=False):
    layers = {"body_op.0.conv1.0": 2304, "body_op.0.conv2.0": 2304, "body_op.3.id_mapping.0": 512}
    run = lambda best, final: {"best_acc": best, "final_acc": final, "best_epoch": 2, "epochs": 5}
    timing = lambda ms, nonzero, macs: {"median_ms": ms, "images_per_s": 256000 / ms, "batch": 256, "repeats": 20,
                                        "threads": 2, "weights": 1000, "nonzero": nonzero, "macs": macs}
    return {
        "meta": {"mode": "quick" if quick else "full", "test_images": 1000, "test_label": "CIFAR-10 test[0:1000]"},
        "prune_sensitivity": {"levels": [0.5, 0.9], "dense_acc": 91.0, "layers": {
            "head_conv.0.conv": {"weights": 432, "acc": [80.0, 20.0]},
            "body_op.0.conv1.0.conv": {"weights": 2304, "acc": [90.5, 85.0]}}},
        "quant_sensitivity": {"bits": [2, 3], "dense_acc": 91.0, "dense_calib_loss": 0.1, "layers": {
            n: {"weights": w, "acc": [50.0 + i, 89.0], "calib_loss": [1.0, 0.2]} for i, (n, w) in enumerate(layers.items())}},
        "coarse_fine": {"fraction": 0.5, "dense": {"acc": 91.0, "weights": 1000, "macs": 40e6},
                        "sweep": {"0.5": {"weights": 500, "macs": 20e6, "filter_acc": 30.0, "element_acc": 85.0}},
                        "filter": {"before": 30.0, "weights": 500, "nonzero": 500, "macs": 20e6, **run(88.0, 87.5)},
                        "element": {"before": 85.0, "weights": 1000, "nonzero": 500, "macs": 40e6, **run(90.0, 89.9)}},
        "timing": {"dense": timing(100.0, 1000, 40e6), "element-wise": timing(101.0, 500, 40e6),
                   "filter": timing(55.0, 500, 20e6)},
        "quantizers": {"bits": [8, 4, 2], "dense_acc": 91.0, "families": {
            name: {"scheme": s, "per_channel": c, "acc": [90.9, 80.0 + 5 * c, 10.0 + i]}
            for i, (name, (s, c)) in enumerate(ext.FAMILIES.items())}},
        "mixed_precision": {"sizes": layers, "targets": {"3": {
            "alloc": {"body_op.0.conv1.0": 4, "body_op.0.conv2.0": 2, "body_op.3.id_mapping.0": 3},
            "avg_bits": 3.0, "kib": {"uniform": 2.0, "mixed": 2.0}, "ptq": {"uniform": 60.0, "mixed": 70.0},
            "qat": {"uniform": run(85.0, 84.0), "mixed": run(87.0, 86.0)}}}},
        "nm": {"layers": ["x"], "dense_acc": 91.0, "2:4": {"before": 70.0, "zeros_pct": 50.0, **run(89.0, 88.0)},
               "unstructured": {"before": 85.0, "zeros_pct": 50.0, **run(90.0, 89.5)}},
        "int8": {"calib_images": 1000, "engine": "x86",
                 "float32": {"acc": 91.0, "kib": 1100.0, **timing(100.0, 1, 1)},
                 "int8": {"acc": 90.8, "kib": 320.0, **timing(25.0, 1, 1)}},
    }


def test_section_says_not_run_without_results(tmp_path):
    md = sec.section(tmp_path)
    assert md.startswith("# 6 ") and NOT_RUN in md
    for key, (heading, *_rest) in sec.SUBSECTIONS.items():
        assert f"## {heading}" in md and f"{heading}: {NOT_RUN}." in md


def test_section_renders_tables_figures_and_sentences_from_the_numbers(tmp_path):
    (tmp_path / "extensions.json").write_text(json.dumps(fake_results()))
    (tmp_path / "ext_quantizers.png").write_bytes(b"png")
    md = sec.section(tmp_path, out_dir=tmp_path.parent, number=7)
    assert md.startswith("# 7 ") and QUICK_BANNER not in md
    assert f"]({tmp_path.name}/ext_quantizers.png)" in md and "ext_coarse_fine.png: not run" in md
    assert "| b0.conv1 | 2304 | 90.50 | 85.00 |" in md and "b3.shortcut" in md
    timing = sec.discussion(fake_results(), "timing")
    assert "1.01x the dense time, i.e. no faster" in timing and "0.55x the dense time: faster" in timing
    assert "does not make a general-purpose processor faster" in timing
    mixed = sec.discussion(fake_results(), "mixed_precision")
    assert "reached 70.00% without finetuning, 10.00 points above uniform 3-bit" in mixed
    assert "ended at 86.00%, 2.00 points above uniform" in mixed
    cf = sec.discussion(fake_results(), "coarse_fine")
    assert "55.00 points below element-wise pruning of the same weights" in cf
    assert "most sensitive layer is head (20.00%" in sec.discussion(fake_results(), "prune_sensitivity")


def test_comparisons_inside_the_noise_band_are_marked_and_the_band_explained_once():
    res = fake_results()
    qat = res["mixed_precision"]["targets"]["3"]["qat"]
    qat["uniform"]["final_acc"], qat["mixed"]["final_acc"] = 92.6, 92.8
    res["meta"].update(ext_qat_recipe={"lr": 0.01, "schedule": "cosine", "distill": 0.5},
                       ext_qat_recipe_source="the recipe tuning.py chose for Lab 3 (c)")
    mixed = sec.discussion(res, "mixed_precision")
    assert "0.20 points above uniform (92.60%; net 2 of 1,000 test images, within noise)" in mixed
    # two standard errors near 92.7 % on 1,000 images: 2 x 100 x sqrt(.927 x .073 / 1000) = 1.6
    assert mixed.count("standard errors") == 1 and "(1.6 points at these accuracies)" in mixed
    assert "uniform 3-bit (60.00%)" in mixed        # 10 points apart without finetuning: no mark
    assert "ran 5 epochs from lr 0.01 (cosine schedule, distillation weight 0.5): the recipe tuning.py" in mixed
    qat["mixed"]["epochs"] = 4                       # runs that disagree: no claim about "every" one
    assert "Every quantization-aware finetune" not in sec.discussion(res, "mixed_precision")
    res["nm"]["2:4"]["final_acc"], res["nm"]["unstructured"]["final_acc"] = 93.0, 93.9
    assert "(93.90%; net 9 of 1,000 test images, within noise)" in sec.discussion(res, "nm")
    res["nm"]["2:4"]["final_acc"] = 70.0
    assert "within noise" not in sec.discussion(res, "nm")


def test_discussion_wording_follows_the_sign_and_quick_banner(tmp_path):
    res = fake_results(quick=True)
    res["timing"]["element-wise"]["median_ms"] = 50.0  # a surprising measurement is not hidden
    timing = sec.discussion(res, "timing")
    assert timing.startswith(f"**{QUICK_BANNER}.**") and "does not show the expected pattern" in timing
    res["mixed_precision"]["targets"]["3"]["ptq"]["mixed"] = 55.0
    assert "5.00 points below uniform 3-bit" in sec.discussion(res, "mixed_precision")
    (tmp_path / "extensions.json").write_text(json.dumps(res))
    assert QUICK_BANNER in sec.section(tmp_path)
    with pytest.raises(KeyError):
        sec.table(res, "nonsense")


def test_int8_speed_is_worded_from_the_time_ratio():
    words = sec._speedup_words
    assert words(4.1) == "4.1x faster" and words(0.5) == "2.0x slower"
    assert words(1.02) == words(0.98) == "the same speed"     # would print as 1.0x
    assert words(None) == words(0.0) == NOT_RUN
