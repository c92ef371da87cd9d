"""The course's starter API for hw4 (ResNet-20 on CIFAR-10): `train`, `finetune`,
`test`, the pruning helpers, storage size, and the `pretrain` command line
(`python train_util.py pretrain ...`).

The machinery lives in modules of its own and is re-exported here, so that
`import train_util as tu` reaches everything: `cifar` (data and augmentation), `engine`
(recipes, SGD, the bf16 training step, `fit` with per-epoch resume, evaluation) and
`fileio` (atomic writes, checkpoints).
"""
import argparse
import math
import numbers
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm  # plain bars: no ipywidgets needed in notebooks

from FP_layers import FP_Conv, FP_Linear
from cifar import (CIFAR_MEAN, CIFAR_STD, CLASSES, NO_DATA_HELP, CifarData,  # noqa: F401
                   DataNotFoundError, default_data, default_device, load_cifar10, normalize,
                   random_crop, random_flip, synthetic_cifar, train_batches)
from engine import (FAITHFUL, GRAPH_ENV, IMPROVED, PRETRAIN, SGD, TRAINING_VERSION,  # noqa: F401
                    NonFiniteLossError, Recipe, ResumeState, TrainStep, distillation_loss, training_loss,
                    evaluate, exact_float32_convs, fit, fit_fingerprint, frozen, graph_enabled,
                    prepare_for_device, run_record, tensor_digest)
from fileio import (MISSING_CHECKPOINT_HELP, CheckpointError, atomic_write_bytes,  # noqa: F401
                    environment, load_checkpoint, read_state_dict, save_checkpoint, save_json,
                    sha256)

# ----------------------------------------------------------------------------- train / finetune / test

def train(net, epochs=200, batch_size=256, lr=0.1, reg=5e-4, log_every_n=50, data=None,
          recipe=None, save_best="pretrained_model.pt", **fit_kwargs):
    """Train from scratch (PRETRAIN recipe with the given lr, batch size and weight decay).
    As the starter's `train`, the weights of the epoch with the best test accuracy are saved
    to `save_best` (None: not saved); the model is left as after the final epoch.
    `log_every_n` is the starter's argument: here a progress bar and a line per epoch
    report the loss instead. Extra keyword arguments go to `fit` (resume, seed, ...)."""
    recipe = recipe or replace(PRETRAIN, batch_size=batch_size, lr=lr, weight_decay=reg)
    return fit(net, data or default_data(), epochs, recipe, desc="pretrain",
               best_path=_best_path(save_best, fit_kwargs), **fit_kwargs)


def finetune(net, epochs=20, batch_size=256, lr=0.002, reg=1e-4, log_every_n=50, data=None,
             recipe=None, save_best="quantized_net_after_finetune.pt", **fit_kwargs):
    """Finetune with the course's settings (SGD momentum 0.875, constant lr) unless a
    `recipe` is given. As the starter's `finetune`, the best-test-accuracy weights are saved
    to `save_best` (the course notebook loads quantized_net_after_finetune.pt right after;
    None: not saved). Extra keyword arguments go to `fit` (masks, teacher, resume, ...)."""
    recipe = recipe or replace(FAITHFUL, batch_size=batch_size, lr=lr, weight_decay=reg)
    return fit(net, data or default_data(), epochs, recipe, desc="finetune",
               best_path=_best_path(save_best, fit_kwargs), **fit_kwargs)


def _best_path(save_best, fit_kwargs):
    """`best_path=` (fit's name, as a notebook stage passes it) overrides `save_best`."""
    return fit_kwargs.pop("best_path", save_best)


def test(net, data=None):
    """Accuracy (%) and loss on the test images; prints how many images that was."""
    data = data or default_data()
    prepare_for_device(net, data.device)
    acc, loss = evaluate(net, data)
    print(f"Test accuracy {acc:.2f}% (loss {loss:.4f}) on {data.n_test} images: {data.test_label}")
    return acc, loss


# ----------------------------------------------------------------------------- pruning

def prunable_layers(net):
    """{name: module} of the layers the course prunes: every conv except the 1x1
    shortcut (id_mapping) convs, and every linear layer."""
    return {name: m for name, m in net.named_modules()
            if (isinstance(m, nn.Conv2d) and "id_mapping" not in name) or isinstance(m, nn.Linear)}


def check_percentage(q):
    """Return `q` if it is a pruning percentage in [0, 100] (the starter's convention:
    q=80.0 prunes 80 %); otherwise raise a ValueError that says what to pass."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise ValueError(f"q must be a number of percent, e.g. q=80.0 to prune 80 %; "
                         f"got {q!r} ({type(q).__name__})")
    if not (math.isfinite(q) and 0 <= q <= 100):
        raise ValueError(f"q is a percentage in [0, 100] (q=80.0 prunes 80 %); got {q}")
    if 0 < q < 1:  # 0.4 / 0.6 / 0.8 as the assignment's text writes them: almost surely fractions
        raise ValueError(f"q={q} looks like a fraction, but q is a percentage, as in the course's "
                         f"starter: pass q={100 * q:g} to prune {100 * q:g} %")
    return q


def magnitude_mask(magnitudes, q):
    """0/1 mask that zeros exactly the k = round(q/100 * n) smallest magnitudes; k rounds
    and ties break as in torch.nn.utils.prune (amount=q/100). Exactly k matters: weights
    regrown from zero under bf16 gradients can tie, and a threshold would prune them all."""
    k = round(check_percentage(q) / 100 * magnitudes.numel())
    flat = magnitudes.flatten()  # logical (NCHW) order, whatever the memory format
    mask = torch.ones_like(flat)
    if k > 0:
        mask[torch.topk(flat, k, largest=False).indices] = 0
    return mask.view(magnitudes.shape)


@torch.no_grad()
def prune_by_percentage(layer, q=80.0):
    """Zero the q percent of `layer.weight` with the smallest magnitude; return the mask."""
    mask = magnitude_mask(layer.weight.abs(), q)
    layer.weight.mul_(mask)
    return mask


@torch.no_grad()
def prune_by_std(layer, s=0.25):
    """Zero the weights with |w| below s times the standard deviation of `layer.weight`
    (population std, as numpy's np.std)."""
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    std = layer.weight.std(correction=0)
    mask = (layer.weight.abs() >= s * std).to(layer.weight.dtype)
    layer.weight.mul_(mask)
    return mask


@torch.no_grad()
def prune_layers_by_percentage(net, q=80.0, layers=None):
    """Prune each of `layers` (default: prunable_layers) by q percent; return the masks."""
    layers = layers or prunable_layers(net)
    return {name: prune_by_percentage(layer, q) for name, layer in layers.items()}


@torch.no_grad()
def global_prune_by_percentage(net, q=80.0, layers=None):
    """One magnitude threshold over all `layers` together: the q-th percentile of every
    weight's |w|; return the per-layer masks (layers end up with different sparsity)."""
    layers = layers or prunable_layers(net)
    magnitudes = torch.cat([m.weight.abs().flatten() for m in layers.values()])
    mask = magnitude_mask(magnitudes, q)
    masks, offset = {}, 0
    for name, layer in layers.items():
        n = layer.weight.numel()
        masks[name] = mask[offset:offset + n].view_as(layer.weight)
        layer.weight.mul_(masks[name])
        offset += n
    return masks


def masks_from_zeros(net, layers=None):
    """Masks that keep the currently non-zero weights of `layers` (default: prunable)."""
    layers = layers or prunable_layers(net)
    return {name: (m.weight != 0).to(m.weight.dtype) for name, m in layers.items()}


def zero_counts(net, names=None):
    """{layer name: (exactly-zero weights, weights)} for `names` (default: all prunable)."""
    layers = prunable_layers(net)
    names = list(names) if names is not None else list(layers)
    return {n: (int((layers[n].weight == 0).sum()), layers[n].weight.numel()) for n in names}


def layer_zeros(net, names=None):
    """{layer name: % of exactly-zero weights}."""
    return {n: 100.0 * z / total for n, (z, total) in zero_counts(net, names).items()}


def sparsity(net, names=None):
    """% of exactly-zero weights over `names` (default: all prunable layers) together."""
    counts = zero_counts(net, names).values()
    return 100.0 * sum(z for z, _ in counts) / sum(total for _, total in counts)


def sparsity_table(net):
    """Rows (layer, shape, weights, zeros, zeros %) for every prunable layer, and a total."""
    layers = prunable_layers(net)
    rows = [{"layer": n, "shape": tuple(layers[n].weight.shape), "weights": total, "zeros": z,
             "zeros_pct": 100.0 * z / total} for n, (z, total) in zero_counts(net).items()]
    total = sum(r["weights"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    rows.append({"layer": "total", "shape": (), "weights": total, "zeros": zeros,
                 "zeros_pct": 100.0 * zeros / total})
    return rows


def format_sparsity_table(rows):
    lines = [f"{'layer':32s} {'shape':>16s} {'weights':>8s} {'zeros':>8s} {'zeros %':>8s}"]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['layer']:32s} {shape:>16s} {r['weights']:8d} {r['zeros']:8d} {r['zeros_pct']:8.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- storage size

def weight_storage_bits(weight, bits=None):
    """Bits to store one weight tensor at `bits` per value (None: float32): dense, or, when
    that is smaller, only its non-zero values plus a bitmap (1 bit per position) of where
    they are. A quantized tensor also stores its alpha and beta as two float32."""
    width = 32 if bits is None else bits
    n, nonzero = weight.numel(), int(weight.count_nonzero())
    values = min(n * width, nonzero * width + n)
    return values + (0 if bits is None else 64)


def storage_bits(net):
    """Bits to store `net` for inference: each FP_Conv / FP_Linear weight as in
    `weight_storage_bits` at that layer's Nbits, every other parameter and floating-point
    buffer (biases, batch-norm affine and running statistics) as float32."""
    total, counted = 0, set()
    for m in net.modules():
        if isinstance(m, (FP_Conv, FP_Linear)):
            weight = (m.conv if isinstance(m, FP_Conv) else m.linear).weight
            total += weight_storage_bits(weight.detach(), m.Nbits)
            counted.add(id(weight))
    others = [t for t in [*net.parameters(), *net.buffers()] if id(t) not in counted]
    return total + sum(32 * t.numel() for t in others if t.is_floating_point())


def storage_kib(net):
    return storage_bits(net) / 8 / 1024


def finetune_masked(net, epochs=20, data=None, recipe=FAITHFUL, masks=None, **fit_kwargs):
    """The kit's multi-epoch finetune of a pruned network that keeps its zeros: the masks
    (default: the current non-zero pattern of the prunable layers) zero the gradient before
    and the weights after every SGD step, so momentum and weight decay cannot revive pruned
    weights. Keyword arguments go to `fit` (teacher, resume, best_path, ...)."""
    masks = masks if masks is not None else masks_from_zeros(net)
    return fit(net, data or default_data(), epochs, recipe, masks=masks, desc="finetune masked",
               **fit_kwargs)


def finetune_after_prune(net, trainloader, criterion, optimizer, prune=True):
    """The starter's call: one epoch over `trainloader` with the caller's loss and optimizer.

    prune=True: the weights of the prunable layers that are exactly zero now stay zero
    (their gradient is masked before and the weights after every step, so momentum and
    weight decay cannot revive them). prune=False: they may regrow (iterative pruning
    before its last step). Returns (mean training loss, training accuracy %). The kit's
    own multi-epoch path is `finetune_masked`."""
    device = next(net.parameters()).device
    layers = prunable_layers(net)
    masks = masks_from_zeros(net, layers) if prune else {}
    net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for inputs, targets in tqdm(trainloader, desc="finetune_after_prune", leave=False):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        _apply_masks(layers, masks, grad=True)
        optimizer.step()
        _apply_masks(layers, masks, grad=False)
        loss_sum += loss.item() * len(targets)
        correct += (outputs.argmax(1) == targets).sum().item()
        seen += len(targets)
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


@torch.no_grad()
def _apply_masks(layers, masks, grad):
    for name, mask in masks.items():
        weight = layers[name].weight
        target = weight.grad if grad else weight
        if target is not None:
            target.mul_(mask)


def iterative_prune_schedule(final_q, prune_epochs):
    """Pruning percentage before each epoch 1..prune_epochs, linear up to final_q
    (the assignment: 8e % before epoch e for 10 epochs -> 80 %)."""
    return [final_q * e / prune_epochs for e in range(1, prune_epochs + 1)]


def iterative_prune(net, final_q=80.0, prune_epochs=10, epochs=20, use_global=False, data=None,
                    recipe=FAITHFUL, **fit_kwargs):
    """Iterative magnitude pruning during finetuning: before epoch e <= prune_epochs prune
    to the schedule's percentage; until the final pruning step the pruned weights keep
    receiving gradients (they may recover and survive the next, re-ranked step); from the
    final step on the mask is fixed. Per layer, or one global threshold (`use_global`)."""
    if not 1 <= prune_epochs <= epochs:
        raise ValueError(f"need 1 <= prune_epochs <= epochs, got {prune_epochs}, {epochs}")
    schedule = iterative_prune_schedule(final_q, prune_epochs)
    data = data or default_data()
    prepare_for_device(net, data.device)
    layers = prunable_layers(net)
    masks = {name: torch.ones_like(m.weight) for name, m in layers.items()}
    prune = global_prune_by_percentage if use_global else prune_layers_by_percentage

    def before_epoch(epoch, masks):
        if epoch > prune_epochs:
            return
        new_masks = prune(net, schedule[epoch - 1], layers)
        final = epoch == prune_epochs
        for name, mask in masks.items():  # in place: a captured graph reads these tensors
            mask.copy_(new_masks[name] if final else torch.ones_like(mask))

    record = fit(net, data, epochs, recipe, masks=masks, before_epoch=before_epoch,
                 desc="iterative prune", best_from_epoch=prune_epochs, **fit_kwargs)
    record["prune_schedule"] = schedule
    return record


# ----------------------------------------------------------------------------- command line

def resume_path_of(checkpoint):
    """Where the per-epoch resume state of the run that writes `checkpoint` lives."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".resume.pt")


def pretrain_main(args):
    from resnet20 import ResNetCIFAR
    torch.manual_seed(args.seed)
    if args.synthetic:
        data = synthetic_cifar(device=default_device())
    else:
        data = load_cifar10(args.data_dir, download=not args.no_download)
    print(data.describe())
    net = ResNetCIFAR(num_layers=20)
    recipe = replace(PRETRAIN, lr=args.lr, batch_size=args.batch_size, weight_decay=args.wd)
    resume = Path(args.resume or resume_path_of(args.out))
    record = fit(net, data, args.epochs, recipe, seed=args.seed, desc="pretrain", resume=resume)
    out = save_checkpoint(net, args.out)
    log = {"recipe": asdict(recipe), "epochs": args.epochs, "seed": args.seed,
           "data": data.describe(), "test_label": data.test_label, "test_images": data.n_test,
           "final_acc": record["final_acc"], "best_acc": record["best_acc"],
           "best_epoch": record["best_epoch"], "wall_s": record["wall_s"],
           "epoch_s": record["wall_s"] / args.epochs, "history": record["history"],
           "environment": environment(), "checkpoint": str(out), "sha256": sha256(out),
           "command": " ".join(sys.argv)}
    save_json(log, Path(args.out).with_suffix(".json"))
    resume.unlink(missing_ok=True)  # the checkpoint and its log are written: the run is over
    print(f"saved {out} (sha256 {log['sha256'][:12]}...): final test accuracy "
          f"{record['final_acc']:.2f}% on {data.n_test} images ({data.test_label}), "
          f"{record['wall_s']:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description="hw4 kit: pretrain ResNet-20 on CIFAR-10")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train ResNet-20 from scratch and save a checkpoint")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--out", default="checkpoints/pretrained_model.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=PRETRAIN.lr)
    p.add_argument("--batch-size", type=int, default=PRETRAIN.batch_size)
    p.add_argument("--wd", type=float, default=PRETRAIN.weight_decay)
    p.add_argument("--data-dir", default=None, help="default: $HW4_DATA_DIR, else ./data")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--synthetic", action="store_true", help="smoke test on synthetic data")
    p.add_argument("--resume", default=None,
                   help="per-epoch resume state (default: <out without .pt>.resume.pt); "
                        "run the same command again to continue an interrupted run")
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        pretrain_main(args)


if __name__ == "__main__":
    main()
