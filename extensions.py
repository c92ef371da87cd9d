"""What the lectures teach beyond hw4, measured on our ResNet-20 (lecture_extensions.ipynb).

Sections (each a function the notebook calls in one cell; results go to
`report/extensions.json`, figures to `report/ext_*.png`):

1. sensitivity scans: one layer at a time pruned to 10..90 % or quantized to 2..6 bits;
2. coarse vs. fine pruning: L1 filter pruning that really removes channels (a smaller dense
   network) against element-wise pruning of the same number of weights, and the measured
   CPU inference time of both (evidence for True/False 1.2);
3. quantizer families, post-training: per-tensor vs. per-channel, asymmetric (min/max, the
   homework's STE) vs. symmetric, uniform vs. power-of-two levels;
4. mixed precision: bits per layer from the sensitivity scan at the average bits of uniform
   3 and 4 bits, with and without a short QAT finetune (evidence for True/False 1.10);
5. 2:4 (N:M) sparsity against 50 % unstructured sparsity;
6. int8 inference with torch.ao (x86 backend): size on disk, CPU latency, accuracy.

Every finetune is a resumable stage (`checkpoints/ext_*.pt`, per-epoch resume state beside
it) of at most `finetune_epochs` (5 in full mode, 8 finetunes: 40 epochs in all).
"""
import contextlib
import copy
import functools
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import experiment as ex
import train_util as tu
from FP_layers import FP_Conv, FP_Linear
from report.extensions_section import short

RESULTS_NAME = "extensions.json"


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class ExtSettings:
    """What the study measures in one mode (quick: a smoke test whose numbers are not results)."""
    prune_levels: tuple        # fractions of one layer's weights zeroed in the pruning scan
    bits: tuple                # bit widths of the quantization scan = mixed-precision choices
    family_bits: tuple         # bit widths of the quantizer-family table
    filter_fractions: tuple    # fractions of each block's inner channels removed (no finetune)
    finetune_fraction: float   # the fraction that is finetuned and timed
    finetune_epochs: int       # epochs of every finetune (the issue allows <= 10)
    mixed_targets: tuple       # average bits of the mixed-precision comparison
    qat: bool                  # finetune the mixed and uniform models (quantization-aware)
    calib_images: int          # training images: sensitivity losses, int8 calibration
    timing_repeats: int        # timed forward passes per model (median reported)
    timing_batch: int = 256


FULL_SETTINGS = ExtSettings(prune_levels=tuple(round(0.1 * i, 1) for i in range(1, 10)),
                            bits=(2, 3, 4, 5, 6), family_bits=(8, 6, 4, 3, 2),
                            filter_fractions=(0.25, 0.5, 0.75), finetune_fraction=0.5,
                            finetune_epochs=5, mixed_targets=(3, 4), qat=True,
                            calib_images=1000, timing_repeats=20)
# Quick: every code path once, on as little work as a shared 2-core CPU allows.
QUICK_SETTINGS = replace(FULL_SETTINGS, prune_levels=(0.5, 0.9), bits=(2, 3, 4), family_bits=(8, 4, 2),
                         filter_fractions=(0.5,), finetune_epochs=1, mixed_targets=(3,),
                         calib_images=128, timing_repeats=3)


def finetunes(s):
    """Number of finetunes a run performs: filter + element, uniform + mixed per target, 2:4 + unstructured."""
    return 2 + (2 * len(s.mixed_targets) if s.qat else 0) + 2


def recipe():
    """The finetuning recipe of the pruning stages: the kit's improved one (cosine lr from
    0.05, Nesterov, distillation from the dense model), the same for every arm of a comparison."""
    return tu.IMPROVED


def qat_recipe():
    """The recipe of the quantization-aware finetunes (uniform and mixed alike): the one
    tuning.py chose for Lab 3 (c) (report/tuning.json; lr 0.01). At lr 0.05 our quantized
    model collapses in its first epoch (tuning.py's check), and a 2-bit-heavy mixed model
    more than a uniform one, so lr 0.05 would compare the lr's harm, not the allocations."""
    return ex.tuned_recipes(ex.load_decisions()).get("lab3c_improved", tu.IMPROVED)


def qat_recipe_source():
    """Where `qat_recipe()` comes from, in words (the report names it)."""
    if "lab3c_improved" in ex.load_decisions():
        return "the recipe tuning.py chose for Lab 3 (c) on the validation split"
    return "the improved recipe, because report/tuning.json holds no Lab 3 (c) decision"


class Extensions(ex.Experiment):
    """hw4's Experiment (mode, data, pretrained model, resumable stages) writing its results
    to extensions.json, plus the extension settings (`ext`) and a calibration split."""

    def __init__(self, quick, data_dir=None, seed=0):
        self.ext = QUICK_SETTINGS if quick else FULL_SETTINGS
        super().__init__(quick, data_dir, seed)
        self.calib = calibration_data(self.data, self.ext.calib_images)
        self.results["meta"].update(calib_label=calib_label(self.data, self.ext.calib_images),
                                    ext_settings={k: str(v) for k, v in vars(self.ext).items()},
                                    ext_recipe=asdict(recipe()), ext_qat_recipe=asdict(qat_recipe()),
                                    ext_qat_recipe_source=qat_recipe_source())

    def _load_results(self):
        self.results_path = self.settings.results_dir / RESULTS_NAME
        return super()._load_results()

    def pretrained_path(self):
        """As Experiment's; quick mode's stand-in is copied to a file of our own at once,
        because hw4.ipynb's quick run rewrites the shared one when both run together."""
        path = super().pretrained_path()
        if path == ex.PRETRAINED:
            return path
        own = self.settings.ckpt_dir / "ext_pretrained_standin.pt"
        if not getattr(self, "_own_stand_in", False):  # the first call has just trained it
            tu.atomic_write_bytes(own, lambda tmp: Path(tmp).write_bytes(path.read_bytes()))
            self._own_stand_in = True
        return own

    def finetune(self, name, net, masks=None, finetune_recipe=None, **extra):
        """Stage `name` (checkpoints/<name>.pt, reloaded in full mode if it finished with
        the same key; per-epoch resume state beside it): finetune `net` in place with
        `finetune_recipe` (default `recipe()`) and the dense teacher, keeping the zeros of
        `masks`. The stage key holds digests of the starting weights and masks: they capture
        the filter choice, the pruning and the pretrained model without hashing source code.
        Returns a summary."""
        epochs, teacher = self.ext.finetune_epochs, self.teacher()
        finetune_recipe = finetune_recipe or recipe()

        def train(net, resume):
            return tu.fit(net, self.data, epochs, finetune_recipe, masks=masks, teacher=teacher,
                          seed=self.seed, desc=name, resume=resume)

        start = tu.tensor_digest(net.state_dict().values())
        mask_digest = tu.tensor_digest([masks[k] for k in sorted(masks)]) if masks else None
        record = self.stage(name, net, train, recipe=finetune_recipe, epochs=epochs, start=start,
                            masks=mask_digest, **extra)
        return ex.summary(record)


def calibration_data(data, n):
    """`data` whose *test* split is the first n training images (no augmentation): the
    losses that choose bits per layer are measured there, never on the test images."""
    return replace(data, x_test=data.x_train[:n], y_test=data.y_train[:n])


def calib_label(data, n):
    return f"{data.name} train[0:{min(n, len(data.y_train))}]"


def accuracy(net, data):
    return tu.evaluate(net, data)[0]


# ----------------------------------------------------------------------------- layers and weights

def quant_layers(net):
    """{name: FP_Conv} of the convs hw4's Nbits quantizes: every conv inside the residual
    blocks, shortcuts included (the first conv and the FC stay float)."""
    return {n: m for n, m in net.named_modules() if isinstance(m, FP_Conv) and n.startswith("body_op.")}


def weight_count(net):
    """Weights of every conv and linear layer (shortcuts included; BN and biases not)."""
    return sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def nonzero_count(net):
    return sum(int(m.weight.count_nonzero()) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@contextlib.contextmanager
def restored(net):
    """Run the body on `net`, then put its state dict and every layer's Nbits back."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    bits = {m: m.Nbits for m in net.modules() if isinstance(m, (FP_Conv, FP_Linear))}
    try:
        yield net
    finally:
        net.load_state_dict(state)
        for m, b in bits.items():
            m.Nbits = b


def smallest_mask(magnitudes, k):
    """0/1 mask that zeros exactly the k smallest entries (equal values: lower index first).
    Our own count-based rule, so it does not depend on train_util's q convention."""
    mask = torch.ones(magnitudes.numel(), device=magnitudes.device)
    if k > 0:
        mask[magnitudes.flatten().argsort(stable=True)[:k]] = 0
    return mask.view_as(magnitudes)


@torch.no_grad()
def prune_fraction_(weight, fraction):
    """Zero the round(fraction * n) smallest-magnitude entries of `weight`; return the mask."""
    mask = smallest_mask(weight.abs(), round(fraction * weight.numel()))
    weight.mul_(mask)
    return mask


# ----------------------------------------------------------------------------- 1. sensitivity scans

@torch.no_grad()
def prune_sensitivity(net, data, levels, progress=True):
    """Accuracy with one prunable layer (tu.prunable_layers) at a time pruned to each level,
    all other layers dense: {"levels", "dense_acc", "layers": {name: {"weights", "acc"}}}."""
    layers = {}
    for name, layer in tqdm(tu.prunable_layers(net).items(), desc="prune scan", disable=not progress):
        accs = []
        for level in levels:
            with restored(net):
                prune_fraction_(layer.weight, level)
                accs.append(accuracy(net, data))
        layers[name] = {"weights": layer.weight.numel(), "acc": accs}
    return {"levels": list(levels), "dense_acc": accuracy(net, data), "layers": layers}


@torch.no_grad()
def quant_sensitivity(net, data, calib, bits, progress=True):
    """One residual-block conv at a time quantized by the homework's STE to each bit width:
    test accuracy, and the loss on calibration images (what chooses mixed precision)."""
    layers = {}
    for name, m in tqdm(quant_layers(net).items(), desc="quantization scan", disable=not progress):
        accs, losses = [], []
        for b in bits:
            with restored(net):
                m.Nbits = b
                accs.append(accuracy(net, data))
                losses.append(tu.evaluate(net, calib)[1])
        layers[name] = {"weights": m.conv.weight.numel(), "acc": accs, "calib_loss": losses}
    return {"bits": list(bits), "dense_acc": accuracy(net, data),
            "dense_calib_loss": tu.evaluate(net, calib)[1], "layers": layers}


# ----------------------------------------------------------------------------- 2. filter pruning

def l1_keep(weight, fraction):
    """Ascending indices of the filters (output channels) kept: all but the
    round(fraction * C) with the smallest L1 norm."""
    norms = weight.detach().abs().flatten(1).sum(1)
    n_keep = weight.shape[0] - round(fraction * weight.shape[0])
    return norms.argsort(descending=True, stable=True)[:n_keep].sort().values


def _slice_conv(conv, out_idx=None, in_idx=None):
    """A copy of `conv` holding only the given output / input channels."""
    new, w = copy.deepcopy(conv), conv.weight.detach()
    if out_idx is not None:
        w, new.out_channels = w[out_idx], len(out_idx)
        if conv.bias is not None:
            new.bias = nn.Parameter(conv.bias.detach()[out_idx].clone())
    if in_idx is not None:
        w, new.in_channels = w[:, in_idx], len(in_idx)
    new.weight = nn.Parameter(w.clone())
    return new


def _slice_bn(bn, idx):
    """A copy of batch norm `bn` holding only the channels `idx`."""
    new = copy.deepcopy(bn)
    new.num_features = len(idx)
    new.weight = nn.Parameter(bn.weight.detach()[idx].clone())
    new.bias = nn.Parameter(bn.bias.detach()[idx].clone())
    new.running_mean = bn.running_mean[idx].clone()
    new.running_var = bn.running_var[idx].clone()
    return new


def prune_filters(net, fraction):
    """A smaller dense copy of `net` (ResNetCIFAR): in every residual block the
    round(fraction * C) filters of conv1 with the smallest L1 norm are removed, with their
    batch-norm channels and the matching input channels of conv2. Only these inner channels
    can go without other changes: a block's output is added to its shortcut, so its width
    is fixed by the stage (Li et al., "Pruning filters for efficient ConvNets", do the same).
    Returns (small net, {block index: kept channel indices})."""
    small, keep = copy.deepcopy(net), {}
    for i, block in enumerate(small.body_op):
        idx = l1_keep(block.conv1[0].conv.weight, fraction)
        block.conv1[0].conv = _slice_conv(block.conv1[0].conv, out_idx=idx)
        block.conv1[1] = _slice_bn(block.conv1[1], idx)
        block.conv2[0].conv = _slice_conv(block.conv2[0].conv, in_idx=idx)
        keep[i] = idx
    return small, keep


def filter_masks(net, keep):
    """Element masks on the full `net` equivalent to prune_filters: conv1's removed filters
    and conv2's matching input channels are zero (the test compares the two networks)."""
    masks = {}
    for i, idx in keep.items():
        block = net.body_op[i]
        m1 = torch.zeros_like(block.conv1[0].conv.weight)
        m1[idx] = 1
        m2 = torch.zeros_like(block.conv2[0].conv.weight)
        m2[:, idx] = 1
        masks[f"body_op.{i}.conv1.0.conv"], masks[f"body_op.{i}.conv2.0.conv"] = m1, m2
    return masks


@torch.no_grad()
def element_prune_like(net, small):
    """A copy of `net` pruned element-wise (smallest |w| of each layer) to exactly the weight
    count of the same layer of `small`: the same parameters, spread as magnitude decides.
    Returns (pruned net, {layer: mask}) for the layers that lost weights."""
    pruned, masks = copy.deepcopy(net), {}
    target = tu.prunable_layers(small)
    for name, layer in tu.prunable_layers(pruned).items():
        k = layer.weight.numel() - target[name].weight.numel()
        if k > 0:
            masks[name] = smallest_mask(layer.weight.abs(), k)
            layer.weight.mul_(masks[name])
    return pruned, masks


@torch.no_grad()
def count_macs(net):
    """Multiply-accumulates of one 32x32 image through every FP conv and linear layer: what
    a dense kernel executes (multiplications by zero included)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        inner = module.conv if isinstance(module, FP_Conv) else module.linear
        per_output = (inner.in_channels // inner.groups * math.prod(inner.kernel_size)
                      if isinstance(module, FP_Conv) else inner.in_features)
        total += output.numel() * per_output

    fp = [m for m in net.modules() if isinstance(m, (FP_Conv, FP_Linear))]
    handles = [m.register_forward_hook(hook) for m in fp]
    was_training = net.training
    try:  # eval: one image must not update the batch-norm statistics
        net.eval()(torch.zeros(1, 3, 32, 32, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return total


def coarse_vs_fine(run):
    """Filter pruning against element-wise pruning at equal weight counts: a sweep without
    finetuning, then both finetuned at `finetune_fraction`. Returns (results, {name: net})
    with the dense, element-wise and filter-pruned networks for timing."""
    s, data, dense = run.ext, run.data, run.model()
    sweep = {}
    for f in s.filter_fractions:
        small, _ = prune_filters(dense, f)
        elem, _ = element_prune_like(dense, small)
        sweep[str(f)] = {"weights": weight_count(small), "macs": count_macs(small),
                         "filter_acc": accuracy(small, data), "element_acc": accuracy(elem, data)}
    f, pct = s.finetune_fraction, round(100 * s.finetune_fraction)
    small, _ = prune_filters(dense, f)
    elem, masks = element_prune_like(dense, small)
    result = {"fraction": f, "sweep": sweep,
              "dense": {"acc": accuracy(dense, data), "weights": weight_count(dense), "macs": count_macs(dense)}}
    for key, net, net_masks in (("filter", small, None), ("element", elem, masks)):
        before = accuracy(net, data)
        result[key] = {"before": before, **run.finetune(f"ext_{key}{pct}", net, masks=net_masks, fraction=f),
                       "weights": weight_count(net), "nonzero": nonzero_count(net), "macs": count_macs(net)}
    return result, {"dense": dense, "element-wise": elem, "filter": small}


# ----------------------------------------------------------------------------- CPU timing

def cpu_copy(net):
    """A copy of `net` on the CPU in eval mode and channels_last (the layout the kit runs)."""
    return tu.prepare_for_device(copy.deepcopy(net), torch.device("cpu")).eval()


@torch.inference_mode()
def latency(nets, batch=256, repeats=20, warmup=3, seed=0, progress=True):
    """Median wall time (ms) of one forward pass of a batch of `batch` random images on the
    CPU, per model of {name: CPU model}. The models take turns (round robin), so background
    load falls on all of them alike; the first `warmup` rounds are not timed."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    x = x.contiguous(memory_format=torch.channels_last)
    times = {name: [] for name in nets}
    for r in tqdm(range(warmup + repeats), desc="CPU timing", disable=not progress):
        for name, net in nets.items():
            start = time.perf_counter()
            net(x)
            if r >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t),
                   "images_per_s": 1000 * batch / statistics.median(t), "repeats": repeats,
                   "batch": batch, "threads": torch.get_num_threads()} for name, t in times.items()}


def inference_timing(nets, settings):
    """CPU latency of {name: net} with their weights, non-zero weights and MACs."""
    timed = latency({k: cpu_copy(n) for k, n in nets.items()}, settings.timing_batch,
                    settings.timing_repeats)
    return {k: {**timed[k], "weights": weight_count(n), "nonzero": nonzero_count(n),
                "macs": count_macs(n)} for k, n in nets.items()}


# ----------------------------------------------------------------------------- 3. quantizer families

SCHEMES = ("asymmetric", "symmetric", "pow2")
# table name -> (scheme, per_channel); per-tensor asymmetric is hw4's quantizer
FAMILIES = {f"per-{g} {label}": (scheme, g == "channel")
            for scheme, label in (("asymmetric", "asymmetric"), ("symmetric", "symmetric"), ("pow2", "power-of-two"))
            for g in ("tensor", "channel")}


def fake_quantize(w, bits, scheme="asymmetric", per_channel=False):
    """`w` rounded to a `bits`-bit grid, per tensor or per output channel (dim 0):

    asymmetric: 2^bits levels from min to max (the homework's STE; per tensor this is
                FP_layers.linear_quantize, operation for operation);
    symmetric:  2^bits - 1 levels k*s, |k| <= 2^(bits-1) - 1, s = max|w| / (2^(bits-1) - 1);
                zero is a level, so pruned weights stay zero;
    pow2:       0 and +-2^(e-j), j = 0 .. 2^(bits-1) - 2, e = round(log2 max|w|): every
                level is a power of two (a multiplication becomes a shift); each weight
                goes to the nearest level.
    """
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}")
    dims = tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))
    if scheme == "asymmetric":
        return _asymmetric(w, bits, dims)
    if scheme == "symmetric":
        return _symmetric(w, bits, dims)
    if scheme == "pow2":
        return _pow2(w, bits, dims)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def _asymmetric(w, bits, dims):
    lo, hi = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    alpha = hi - lo
    safe = torch.where(alpha > 0, alpha, torch.ones_like(alpha))  # constant tensor: unchanged
    steps = 2 ** bits - 1
    return torch.round((w - lo) / safe * steps) / steps * safe + lo


def _symmetric(w, bits, dims):
    n = 2 ** (bits - 1) - 1
    top = w.abs().amax(dim=dims, keepdim=True)
    scale = torch.where(top > 0, top / n, torch.ones_like(top))
    return torch.clamp(torch.round(w / scale), -n, n) * scale


def _pow2(w, bits, dims):
    top = w.abs().amax(dim=dims, keepdim=True)
    top = torch.exp2(torch.round(torch.log2(torch.where(top > 0, top, torch.ones_like(top)))))
    count = 2 ** (bits - 1) - 1  # non-zero magnitudes; with the sign and 0: 2^bits - 1 levels
    levels = torch.cat([torch.zeros(1), torch.exp2(-torch.arange(count - 1, -1, -1.0))]).to(w)
    u = (w / top).abs().contiguous()  # dividing by a power of two is exact
    q = levels[torch.bucketize(u, (levels[1:] + levels[:-1]) / 2)]
    return torch.sign(w) * q * top


@torch.no_grad()
def quantize_weights_(net, bits, scheme, per_channel, layers=None):
    """Post-training: replace the weights of `layers` (default: quant_layers) by their
    fake-quantized values, in place."""
    for m in (layers or quant_layers(net)).values():
        m.conv.weight.copy_(fake_quantize(m.conv.weight, bits, scheme, per_channel))
    return net


def quantizer_families(net, data, bits, progress=True):
    """Accuracy of every family of FAMILIES at every bit width, post-training, applied to
    the layers hw4 quantizes: {"bits", "dense_acc", "families": {name: {"acc": [...]}}}."""
    families = {}
    for name, (scheme, per_channel) in tqdm(FAMILIES.items(), desc="quantizers", disable=not progress):
        accs = []
        for b in bits:
            with restored(net):
                accs.append(accuracy(quantize_weights_(net, b, scheme, per_channel), data))
        families[name] = {"scheme": scheme, "per_channel": per_channel, "acc": accs}
    return {"bits": list(bits), "dense_acc": accuracy(net, data), "families": families}


# ----------------------------------------------------------------------------- 4. mixed precision

def allocate_bits(costs, sizes, target):
    """Bits per layer that minimise the summed cost with sum(size * bits) equal to
    target * sum(size) exactly: a knapsack solved by dynamic programming over the bit
    budget in units of the gcd of the layer sizes. costs: {layer: {bits: cost}}."""
    names = list(costs)
    unit = functools.reduce(math.gcd, (sizes[n] for n in names))
    budget = target * sum(sizes[n] for n in names) / unit
    if budget != int(budget):
        raise ValueError(f"target {target} bits is not reachable in whole bits per layer")
    budget = int(budget)
    best = {0: (0.0, ())}  # bit units used -> (cost, bits of the layers so far)
    for name in names:
        step, nxt = sizes[name] // unit, {}
        for used, (cost, chosen) in best.items():
            for b, c in sorted(costs[name].items()):
                total = used + step * b
                if total <= budget and (total not in nxt or cost + c < nxt[total][0]):
                    nxt[total] = (cost + c, chosen + (b,))
        best = nxt
    if budget not in best:
        raise ValueError(f"no allocation of {sorted(next(iter(costs.values())))} bits averages {target}")
    return dict(zip(names, best[budget][1]))


def average_bits(alloc, sizes):
    """Bits per weight averaged over the layers, weighted by their parameter counts."""
    return sum(sizes[n] * b for n, b in alloc.items()) / sum(sizes[n] for n in alloc)


def sensitivity_costs(scan):
    """{layer: {bits: increase of the calibration loss}} from quant_sensitivity."""
    base = scan["dense_calib_loss"]
    return {n: {int(b): loss - base for b, loss in zip(scan["bits"], r["calib_loss"])}
            for n, r in scan["layers"].items()}


def with_bits(net, alloc):
    """Set each quantized layer's Nbits from {layer: bits} (the homework's STE per layer)."""
    layers = quant_layers(net)
    for name, b in alloc.items():
        layers[name].Nbits = b
    return net


def mixed_precision(run, scan):
    """For each target average: the allocation chosen from `scan`, against uniform bits,
    post-training and (settings.qat) after a QAT finetune of the same epochs and recipe
    (`qat_recipe()`)."""
    sizes = {n: r["weights"] for n, r in scan["layers"].items()}
    costs, out, qat = sensitivity_costs(scan), {}, qat_recipe()
    for target in run.ext.mixed_targets:
        alloc = allocate_bits(costs, sizes, target)
        nets = {"uniform": run.model(Nbits=target), "mixed": with_bits(run.model(), alloc)}
        row = {"alloc": alloc, "avg_bits": average_bits(alloc, sizes),
               "kib": {k: tu.storage_kib(n) for k, n in nets.items()},
               "ptq": {k: accuracy(n, run.data) for k, n in nets.items()}}
        if run.ext.qat:
            row["qat"] = {k: run.finetune(f"ext_{k}{target}bit", n, finetune_recipe=qat,
                                          alloc=alloc if k == "mixed" else target)
                          for k, n in nets.items()}
        out[str(target)] = row
    return {"sizes": sizes, "targets": out}


# ----------------------------------------------------------------------------- 5. N:M sparsity

def nm_mask(weight, n=2, m=4):
    """0/1 mask keeping the n largest |w| of every group of m consecutive input channels
    (dim 1), at every output channel and kernel position: the groups lie along the
    reduction dimension, as NVIDIA's 2:4 sparse tensor cores need."""
    if weight.shape[1] % m:
        raise ValueError(f"{weight.shape[1]} input channels are not a multiple of {m}")
    moved = weight.detach().abs().movedim(1, -1)
    groups = moved.reshape(-1, m)
    mask = torch.zeros_like(groups).scatter_(1, groups.topk(n, dim=1).indices, 1.0)
    return mask.view(moved.shape).movedim(-1, 1).contiguous()


def nm_layers(net, m=4):
    """Prunable layers whose input channels split into groups of m (the first conv, with
    3 input channels, stays dense)."""
    return {k: v for k, v in tu.prunable_layers(net).items() if v.weight.shape[1] % m == 0}


@torch.no_grad()
def nm_prune(net, n=2, m=4):
    """A copy of `net` with n:m sparsity in nm_layers; returns (net, masks)."""
    pruned = copy.deepcopy(net)
    masks = {k: nm_mask(v.weight, n, m) for k, v in nm_layers(pruned, m).items()}
    for k, v in nm_layers(pruned, m).items():
        v.weight.mul_(masks[k])
    return pruned, masks


@torch.no_grad()
def unstructured_prune(net, names, fraction):
    """A copy of `net` with `fraction` of each named layer's smallest weights zeroed."""
    pruned = copy.deepcopy(net)
    layers = tu.prunable_layers(pruned)
    return pruned, {k: prune_fraction_(layers[k].weight, fraction) for k in names}


def nm_study(run):
    """2:4 against 50 % unstructured sparsity on the same layers, before and after finetuning."""
    dense = run.model()
    names = list(nm_layers(dense))
    out = {"layers": names, "dense_acc": accuracy(dense, run.data)}
    for key, (net, masks) in (("2:4", nm_prune(dense)), ("unstructured", unstructured_prune(dense, names, 0.5))):
        out[key] = {"before": accuracy(net, run.data), "zeros_pct": tu.sparsity(net, names),
                    **run.finetune("ext_nm24" if key == "2:4" else "ext_unstructured50", net, masks=masks)}
    return out


# ----------------------------------------------------------------------------- 6. int8 with torch.ao

def plain_float(net):
    """A CPU copy of `net` in eval mode with every FP_Conv / FP_Linear replaced by the
    nn.Conv2d / nn.Linear it wraps (the same computation when Nbits is None), so that FX
    tracing and torch.ao's conv-BN-ReLU fusion see ordinary modules."""
    plain = copy.deepcopy(net).cpu().eval()
    for name, m in list(plain.named_modules()):
        if isinstance(m, (FP_Conv, FP_Linear)):
            if m.Nbits is not None:
                raise ValueError(f"{name} is quantized (Nbits={m.Nbits}); int8 starts from float")
            parent, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(parent), attr, m.conv if isinstance(m, FP_Conv) else m.linear)
    return plain


@torch.no_grad()
def int8_model(net, calib_images, batch=256):
    """Static int8 post-training quantization with torch.ao (FX graph mode, x86 backend:
    per-channel int8 weights, uint8 activations with histogram observers), calibrated on
    the uint8 images `calib_images`."""
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to the torchao package (not a dependency
        # of the kit); it still works in the pinned torch. reduce_range: a note on defaults.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
        torch.backends.quantized.engine = "x86"
        calib = calib_images.cpu()
        prepared = prepare_fx(plain_float(net), get_default_qconfig_mapping("x86"),
                              (tu.normalize(calib[:1]),))
        for start in range(0, len(calib), batch):
            prepared(tu.normalize(calib[start:start + batch]))
        return convert_fx(prepared)


def file_kib(net, path):
    """Size (KiB) of `net`'s state dict saved to `path` with torch.save (atomically)."""
    tu.atomic_write_bytes(path, lambda tmp: torch.save(net.state_dict(), tmp))
    return Path(path).stat().st_size / 1024


def cpu_data(data, n_calib):
    """The test split and the first n_calib training images of `data`, on the CPU."""
    return replace(data, x_train=data.x_train[:n_calib].cpu(), y_train=data.y_train[:n_calib].cpu(),
                   x_test=data.x_test.cpu(), y_test=data.y_test.cpu())


def int8_study(run):
    """float32 against torch.ao int8 on the CPU: file size, accuracy, latency (batch 256)."""
    s, data = run.ext, cpu_data(run.data, run.ext.calib_images)
    nets = {"float32": plain_float(run.model()), "int8": int8_model(run.model(), data.x_train)}
    ckpt = run.settings.ckpt_dir
    timed = latency(nets, s.timing_batch, s.timing_repeats)
    return {"calib_images": len(data.y_train), "engine": torch.backends.quantized.engine,
            **{k: {"acc": accuracy(n, data), "kib": file_kib(n, ckpt / f"ext_{k}.pt"), **timed[k]}
               for k, n in nets.items()}}


# ----------------------------------------------------------------------------- figures

def _save(fig, path, title):
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return fig


def plot_heatmap(layers, columns, values, reference, path, title, xlabel, test_label):
    """Accuracy per layer (rows) and setting (columns) written in the cells; the colour is
    the loss against `reference` (the unmodified model), so small differences show."""
    grid = np.array(values, dtype=float)
    drop = reference - grid
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.7 * len(columns)), 0.9 + 0.26 * len(layers)))
    image = ax.imshow(drop, cmap="magma_r", vmin=0, vmax=max(1.0, float(drop.max())), aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6.5,
                color="white" if drop[i, j] > 0.6 * max(1.0, float(drop.max())) else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(layers)), [short(n) for n in layers], fontsize=7)
    ax.set_xlabel(xlabel)
    fig.colorbar(image, ax=ax, label=f"points below the unmodified model\n(cells: accuracy %, {test_label})")
    return _save(fig, path, title)


def plot_prune_sensitivity(scan, path, test_label):
    layers = list(scan["layers"])
    return plot_heatmap(layers, [f"{round(100 * q)}" for q in scan["levels"]],
                        [scan["layers"][n]["acc"] for n in layers], scan["dense_acc"], path,
                        f"Pruning one layer at a time (dense: {scan['dense_acc']:.1f} %)",
                        "weights of that layer pruned (%)", test_label)


def plot_quant_sensitivity(scan, path, test_label):
    layers = list(scan["layers"])
    return plot_heatmap(layers, [str(b) for b in scan["bits"]],
                        [scan["layers"][n]["acc"] for n in layers], scan["dense_acc"], path,
                        f"Quantizing one layer at a time (float: {scan['dense_acc']:.1f} %)",
                        "bits of that layer (homework STE)", test_label)


def plot_coarse_fine(cf, timing, path, test_label):
    """Left: accuracy against weights kept, filter vs. element-wise (before finetuning;
    finetuned as stars). Right: measured CPU time per batch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    dense = cf["dense"]["weights"]
    sweep = sorted(cf["sweep"].values(), key=lambda r: -r["weights"])
    x = [100 * r["weights"] / dense for r in sweep]
    for key, label, color in (("filter", "filter (L1, channels removed)", "tab:red"),
                              ("element", "element-wise, same count", "tab:blue")):
        left.plot(x, [r[f"{key}_acc"] for r in sweep], marker="o", color=color, label=label)
        after = cf[key]
        left.scatter([100 * after["weights" if key == "filter" else "nonzero"] / dense], [after["final_acc"]],
                     marker="*", s=120, color=color, label=f"{label}, finetuned")
    left.axhline(cf["dense"]["acc"], color="gray", ls="--", lw=1, label="dense")
    left.set(xlabel="conv + FC weights kept (%)", ylabel=f"accuracy (%)\n{test_label}")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    names = list(timing)
    bars = right.bar(names, [timing[n]["median_ms"] for n in names], color=["gray", "tab:blue", "tab:red"][:len(names)])
    right.bar_label(bars, fmt="%.1f ms", fontsize=8)
    right.set(ylabel=f"CPU time per batch of {timing[names[0]]['batch']} (ms, median)")
    return _save(fig, path, "Coarse (filter) vs. fine (element-wise) pruning")


def plot_quantizers(q, path, test_label):
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"asymmetric": "-", "symmetric": "--", "pow2": ":"}
    for name, r in q["families"].items():
        ax.plot(q["bits"], r["acc"], marker="o" if r["per_channel"] else "s",
                ls=styles[r["scheme"]], label=name)
    ax.axhline(q["dense_acc"], color="gray", lw=1, label="float")
    ax.set(xlabel="bits (residual-block convs)", ylabel=f"accuracy (%)\n{test_label}", ylim=(0, 100))
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path, "Quantizer families, post-training")


def plot_mixed_bits(mp, path):
    """Bits per layer of each mixed-precision allocation, with the uniform width as a line."""
    targets = list(mp["targets"])
    layers = list(mp["sizes"])
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(targets)
    for i, t in enumerate(targets):
        alloc = mp["targets"][t]["alloc"]
        ax.bar([j + i * width for j in range(len(layers))], [alloc[n] for n in layers], width,
               label=f"mixed, average {mp['targets'][t]['avg_bits']:.2f} bits")
        ax.axhline(int(t), color=f"C{i}", ls="--", lw=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))],
                  [f"{short(n)} ({mp['sizes'][n]})" for n in layers], fontsize=7, rotation=60, ha="right")
    ax.set(ylabel="bits", xlabel="layer (weights)")
    ax.legend(fontsize=8)
    return _save(fig, path, "Mixed precision: bits per layer from the sensitivity scan (dashed: uniform)")
