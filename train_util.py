"""Data, training, evaluation and pruning helpers for hw4 (ResNet-20 on CIFAR-10).

Sections: data -> recipes and optimizer -> training engine -> train/finetune/test ->
pruning -> checkpoints -> command line (`python train_util.py pretrain ...`).

Speed: the whole dataset lives as uint8 tensors on the training device; random crop
(zero pad 4) and horizontal flip are batched tensor ops; there are no DataLoader workers.
On a GPU the step runs in bf16 autocast with channels_last and, by default, the whole
training step (forward, backward, masking, SGD update) is captured once in a CUDA graph
and replayed, because ResNet-20 at batch 256 is bound by kernel-launch overhead, not math.
The same code runs eagerly on a CPU.
"""
import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # plain bars: no ipywidgets needed in notebooks

from FP_layers import FP_Conv, FP_Linear

# ----------------------------------------------------------------------------- data

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the course's normalisation constants
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
NO_DATA_HELP = """CIFAR-10 was not found under {root} and could not be downloaded ({reason}).
Provide it in one of three ways:
  1. with internet: run again; torchvision downloads it to {root}/cifar-10-batches-py;
  2. copy an existing torchvision download (the folder cifar-10-batches-py) into {root}/;
  3. offline: an image tree {root}/train/<class>/*.png and {root}/test/<class>/*.png
     (or a .npz with x_train, y_train, x_test, y_test), e.g. made by the workplace's
     prepare.py; point HW4_DATA_DIR at it if it lives elsewhere."""


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 is neither on disk nor downloadable; the message lists the ways to provide it."""


@dataclass
class CifarData:
    """Train/test images as uint8 (N, 3, 32, 32) tensors and int64 labels, on one device."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    name: str = "CIFAR-10"  # "synthetic" for the CI stand-in

    @property
    def n_test(self):
        return len(self.y_test)

    @property
    def test_label(self):
        """Names the images accuracies are measured on, e.g. "CIFAR-10 test[0:1000]"."""
        if self.name == "CIFAR-10" and self.n_test == 10000:
            return "CIFAR-10 test (all 10000 images)"
        return f"{self.name} test[0:{self.n_test}]"

    @property
    def device(self):
        return self.x_train.device

    def to(self, device):
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))

    def subset(self, n_train, n_test):
        """The first n_train training and n_test test images (quick mode)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])

    def describe(self):
        return (f"{len(self.y_train)} training images, {self.n_test} test images "
                f"({self.test_label}) from {self.source}, on {self.device}")


def _make(x_train, y_train, x_test, y_test, source):
    """Build CifarData from NHWC uint8 arrays (the layout of every on-disk format)."""
    to_nchw = lambda x: torch.as_tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    to_labels = lambda y: torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return CifarData(to_nchw(x_train), to_labels(y_train), to_nchw(x_test), to_labels(y_test), source)


def _from_npz(root):
    for path in sorted(root.glob("*.npz")):
        with np.load(path) as z:
            if {"x_train", "y_train", "x_test", "y_test"} <= set(z.files):
                return _make(z["x_train"], z["y_train"], z["x_test"], z["y_test"], f"npz {path}")
    return None


def _read_image_tree(split_dir):
    """Images of split_dir/<class>/*.png in file-name order across classes (prepare.py
    names files by their index in the official order), so that the first n images are
    test[0:n] and a quick-mode subset holds every class."""
    from PIL import Image
    files = sorted((path.name, label, path) for label, name in enumerate(CLASSES)
                   for path in (split_dir / name).glob("*.png"))
    images = [np.asarray(Image.open(path).convert("RGB")) for _, _, path in files]
    return np.stack(images), np.array([label for _, label, _ in files])


def _from_image_tree(root):
    if not all((root / split / CLASSES[0]).is_dir() for split in ("train", "test")):
        return None
    x_train, y_train = _read_image_tree(root / "train")
    x_test, y_test = _read_image_tree(root / "test")
    return _make(x_train, y_train, x_test, y_test, f"image tree {root}")


def _from_torchvision(root, download):
    import torchvision
    kwargs = dict(root=str(root), download=download)
    train = torchvision.datasets.CIFAR10(train=True, **kwargs)
    test = torchvision.datasets.CIFAR10(train=False, **kwargs)
    return _make(train.data, train.targets, test.data, test.targets, f"torchvision {root}")


def load_cifar10(root=None, download=True, device=None):
    """CIFAR-10 as a CifarData on `device` (default: the best available).

    Looks, in order, in `root` (default: $HW4_DATA_DIR, else ./data) and its sub-folders
    for a .npz, an image tree, or torchvision's cifar-10-batches-py; then downloads with
    torchvision. No data and no network raise DataNotFoundError listing the three ways.
    """
    root = Path(root or os.environ.get("HW4_DATA_DIR", "data"))
    candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    for folder in candidates:
        data = _from_npz(folder) or _from_image_tree(folder)
        if data is not None:
            return data.to(device or default_device())
    if (root / "cifar-10-batches-py").is_dir() or download:
        try:
            return _from_torchvision(root, download).to(device or default_device())
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise DataNotFoundError(NO_DATA_HELP.format(root=root, reason=err)) from err
    raise DataNotFoundError(NO_DATA_HELP.format(root=root, reason="download=False"))


def synthetic_cifar(n_train=512, n_test=256, seed=0, device=None):
    """A learnable CIFAR-shaped stand-in for tests and CI: each class is a smooth random
    colour pattern plus per-image noise and a random shift. Not CIFAR-10: never a result."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(torch.rand(10, 3, 4, 4, generator=gen), size=32,
                               mode="bilinear", align_corners=False) * 255

    def draw(n):
        labels = torch.arange(n) % 10
        images = prototypes[labels] + 60 * torch.randn(n, 3, 32, 32, generator=gen)
        shifts = torch.randint(-3, 4, (2,), generator=gen).tolist()
        images = torch.roll(images, shifts=shifts, dims=(2, 3))
        return images.clamp(0, 255).to(torch.uint8), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return CifarData(x_train, y_train, x_test, y_test, f"synthetic_cifar(seed={seed})",
                     name="synthetic").to(device or default_device())


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=1)
def default_data():
    """CIFAR-10 from ./data, loaded once; used when a function is called without `data`."""
    return load_cifar10()


@functools.lru_cache(maxsize=None)
def _mean_std(device):
    # Cached so that a GPU step does not copy the constants from the host every batch.
    as_tensor = lambda v: torch.tensor(v, device=device).view(1, 3, 1, 1)
    return as_tensor(CIFAR_MEAN), as_tensor(CIFAR_STD)


def normalize(x_uint8):
    mean, std = _mean_std(x_uint8.device)
    x = (x_uint8.float() / 255 - mean) / std
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def random_crop(x, pad, generator=None):
    """Per-image random crop of a batch after zero padding (torchvision RandomCrop(32, 4))."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=x.device, generator=generator)
    rows = dy + torch.arange(h, device=x.device)  # (n, h) source rows per image
    cols = dx + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def random_flip(x, generator=None):
    """Flip each image of a batch left-right with probability 1/2."""
    flip = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def train_batches(data, batch_size, generator):
    """One epoch of augmented, normalised training batches (the last partial batch is
    dropped so every step has the same shape, which a CUDA graph needs)."""
    n = len(data.y_train)
    batch_size = min(batch_size, n)
    order = torch.randperm(n, device=data.device, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        x = random_flip(random_crop(data.x_train[idx], 4, generator), generator)
        yield normalize(x), data.y_train[idx]


# ----------------------------------------------------------------------------- recipes and optimizer

@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one training or finetuning run."""
    lr: float = 0.002              # peak learning rate
    momentum: float = 0.875
    nesterov: bool = False
    weight_decay: float = 1e-4     # coupled L2, as torch.optim.SGD(weight_decay=...)
    batch_size: int = 256
    schedule: str = "constant"     # constant | cosine (per step, to 0) | multistep (x0.1 at 50%, 75%)
    warmup_epochs: float = 0.0     # linear warm-up from 0 before the schedule
    label_smoothing: float = 0.0
    distill: float = 0.0           # weight of the distillation loss from a teacher (0: off)
    temperature: float = 4.0       # distillation temperature

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine", "multistep"):
            raise ValueError(f"schedule must be constant, cosine or multistep, got {self.schedule!r}")
        if self.lr <= 0 or self.batch_size < 1 or not 0 <= self.distill <= 1:
            raise ValueError(f"need lr > 0, batch_size >= 1 and 0 <= distill <= 1: {self}")

    def lr_at(self, step, total_steps, steps_per_epoch):
        warmup = int(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, total_steps - warmup)
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * frac))
        return self.lr * 0.1 ** ((frac >= 0.5) + (frac >= 0.75))  # multistep


# The course's finetuning settings (what the assignment's numbers were produced with).
FAITHFUL = Recipe()
# Same epoch budget, a recipe that recovers more accuracy: a larger peak lr annealed to 0
# (cosine) lets the pruned/quantized network move to a new basin and settle there; Nesterov
# and wd 5e-4 as in CIFAR ResNet training; the dense pretrained model as a teacher gives
# soft targets that carry more information than the labels.
IMPROVED = Recipe(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
                  distill=0.5, temperature=4.0)
# Pretraining from scratch (He et al. style, with cosine instead of step decay).
PRETRAIN = Recipe(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=256,
                  schedule="cosine", warmup_epochs=1.0)


class SGD:
    """SGD with momentum, Nesterov and coupled weight decay, step for step the update of
    torch.optim.SGD(dampening=0), with the learning rate held in a tensor so that a
    captured CUDA graph replays the current value."""

    def __init__(self, params, recipe):
        self.params = [p for p in params if p.requires_grad]
        self.recipe = recipe
        device = self.params[0].device
        self.neg_lr = torch.tensor(-recipe.lr, device=device)
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def set_lr(self, lr):
        self.neg_lr.fill_(-lr)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        r = self.recipe
        grads = [p.grad for p in self.params]
        if r.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=r.weight_decay)
        torch._foreach_mul_(self.buffers, r.momentum)
        torch._foreach_add_(self.buffers, grads)
        update = torch._foreach_add(grads, self.buffers, alpha=r.momentum) if r.nesterov else self.buffers
        torch._foreach_add_(self.params, torch._foreach_mul(update, self.neg_lr))


# ----------------------------------------------------------------------------- training engine

def distillation_loss(student_logits, teacher_logits, temperature):
    """Hinton et al.'s soft-target loss, scaled by T^2 so its gradient size is T-independent."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, 1),
                    F.log_softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


GRAPH_ENV = "HW4_CUDA_GRAPH"  # "0" turns CUDA graphs off (see graph_enabled)


class TrainStep:
    """One optimisation step: forward, loss, backward, gradient masking, SGD, weight masking.

    Keeps running sums of loss and correct predictions on the device so an epoch needs no
    host synchronisation. With `graph=True` (CUDA only) the step is captured once and
    replayed; inputs are copied into static tensors, the lr lives in a tensor, and masks
    must be updated in place (they are read, not copied, by the graph).
    """

    def __init__(self, net, optimizer, recipe, masks=None, teacher=None, graph=False):
        self.net, self.opt, self.recipe, self.teacher = net, optimizer, recipe, teacher
        params = dict(net.named_parameters())
        self.masked = [(params[_weight_name(n)], m) for n, m in (masks or {}).items()]
        device = optimizer.params[0].device
        self.amp = device.type == "cuda"
        self.graph = graph and device.type == "cuda"
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.seen = 0
        self._cuda_graph = None

    def reset_stats(self):
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = 0

    def stats(self):
        """(mean training loss, training accuracy %) since the last reset."""
        seen = max(self.seen, 1)
        return self.loss_sum.item() / seen, 100.0 * self.correct.item() / seen

    def _compute(self, x, y):
        r = self.recipe
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
            if self.teacher is not None and r.distill > 0:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
                soft = distillation_loss(logits, teacher_logits, r.temperature)
                loss = (1 - r.distill) * loss + r.distill * soft
        loss.backward()
        with torch.no_grad():
            for p, m in self.masked:  # pruned weights get no gradient (their momentum decays)
                p.grad.mul_(m)
        self.opt.step()
        with torch.no_grad():
            for p, m in self.masked:  # and stay exactly zero despite momentum and weight decay
                p.mul_(m)
            self.loss_sum.add_(loss.detach() * len(y))
            self.correct.add_((logits.argmax(1) == y).sum())

    def __call__(self, x, y):
        self.seen += len(y)
        if self.graph and self._cuda_graph is None:
            try:
                self._capture(x, y)
            except RuntimeError as err:  # the graph is only a fast path: the eager step is the same step
                warnings.warn(f"CUDA graph capture failed, training continues eagerly (slower). "
                              f"Set {GRAPH_ENV}=0 to skip the attempt. Cause: {err}", stacklevel=2)
                self.graph = False
        if not self.graph:
            self.opt.zero_grad()
            return self._compute(x, y)
        self._static_x.copy_(x)
        self._static_y.copy_(y)
        self._cuda_graph.replay()

    def _state(self):
        net_state = list(self.net.parameters()) + list(self.net.buffers())
        return net_state + self.opt.buffers + [self.loss_sum, self.correct]

    @torch.no_grad()
    def _restore(self, saved):
        for tensor, copy in zip(self._state(), saved):
            tensor.copy_(copy)

    def _capture(self, x, y):
        """Warm up on a side stream (cuDNN/autograd allocate), undo the warm-up updates,
        then capture one step; the caller's first replay performs the real first step."""
        self._static_x, self._static_y = x.clone(), y.clone()
        with torch.no_grad():
            saved = [t.detach().clone() for t in self._state()]
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self.opt.zero_grad()
                    self._compute(self._static_x, self._static_y)
            torch.cuda.current_stream().wait_stream(stream)
            self._restore(saved)
            self.opt.zero_grad()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records the step; nothing runs until replay
                self._compute(self._static_x, self._static_y)
        except RuntimeError:
            # A failed warm-up must not leave its updates behind; first let the side stream
            # finish, or its queued updates would land after the restore.
            torch.cuda.synchronize()
            self._restore(saved)
            raise
        self._cuda_graph = graph


def graph_enabled(device):
    """CUDA graphs by default on a GPU; HW4_CUDA_GRAPH=0 turns them off (e.g. to debug)."""
    return torch.device(device).type == "cuda" and os.environ.get(GRAPH_ENV, "1") != "0"


def _weight_name(layer_name):
    return layer_name if layer_name.endswith("weight") else f"{layer_name}.weight"


@contextlib.contextmanager
def exact_float32_convs():
    """cuDNN may run float32 convolutions in TF32 (10-bit mantissa) by default; not in here."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


@torch.no_grad()
def evaluate(net, data, batch_size=1000):
    """(accuracy %, mean loss) of `net` on data's test images, in eval mode."""
    with exact_float32_convs():
        return _evaluate(net, data, batch_size)


def _evaluate(net, data, batch_size):
    was_training = net.training
    net.eval()
    correct, loss_sum = 0, 0.0
    # float32 (no bf16, no TF32): a fixed-point weight must reach the conv unrounded, and
    # reported accuracies must not depend on the device. Evaluation is cheap.
    for start in range(0, data.n_test, batch_size):
        x = normalize(data.x_test[start:start + batch_size])
        y = data.y_test[start:start + batch_size]
        logits = net(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    net.train(was_training)
    return 100.0 * correct / data.n_test, loss_sum / data.n_test


def prepare_for_device(net, device):
    net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return net


def fit(net, data, epochs, recipe, masks=None, before_epoch=None, teacher=None,
        graph="auto", seed=0, desc="train", progress=True, best_from_epoch=1):
    """Train `net` on `data` for `epochs` and return a run record (see `run_record`).

    masks: {layer name: 0/1 tensor}; masked weights stay exactly zero throughout.
    before_epoch(epoch, masks): called before each epoch (1-based), e.g. to prune further;
    it must modify the masks in place. graph: capture the step in a CUDA graph ("auto":
    on CUDA unless HW4_CUDA_GRAPH=0; a failed capture falls back to eager with a warning).
    The model is left as trained after the final epoch (no best-epoch reload).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    prepare_for_device(net, data.device)
    if teacher is not None:
        prepare_for_device(teacher, data.device).eval()
    use_graph = graph_enabled(data.device) if graph == "auto" else bool(graph)
    if masks is not None:  # same tensors if already there, so in-place updates still reach the step
        masks = {name: m.to(data.device) for name, m in masks.items()}
    opt = SGD(net.parameters(), recipe)
    step = TrainStep(net, opt, recipe, masks, teacher if recipe.distill else None, use_graph)
    gen = torch.Generator(device=data.device).manual_seed(seed)
    steps_per_epoch = max(1, len(data.y_train) // min(recipe.batch_size, len(data.y_train)))
    total = epochs * steps_per_epoch
    history = {k: [] for k in ("epoch", "train_loss", "train_acc", "test_acc", "test_loss", "lr", "epoch_s")}
    if masks:
        history["zeros_pct"] = []
    start_time, done = time.perf_counter(), 0
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    for epoch in range(1, epochs + 1):
        if before_epoch is not None:
            before_epoch(epoch, masks)
        net.train()
        step.reset_stats()
        epoch_start = time.perf_counter()
        for x, y in train_batches(data, recipe.batch_size, gen):
            opt.set_lr(recipe.lr_at(done, total, steps_per_epoch))
            step(x, y)
            done += 1
            bar.update()
        train_loss, train_acc = step.stats()  # .item() waits for the GPU: the time is real
        epoch_s = time.perf_counter() - epoch_start
        test_acc, test_loss = evaluate(net, data)
        _append(history, epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_acc=test_acc,
                test_loss=test_loss, lr=recipe.lr_at(done - 1, total, steps_per_epoch), epoch_s=epoch_s)
        if masks:
            history["zeros_pct"].append(sparsity(net, masks.keys()))
        bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.2f}% of {data.n_test}")
    bar.close()
    return run_record(history, time.perf_counter() - start_time, best_from_epoch)


def _append(history, **values):
    for key, value in values.items():
        history[key].append(value)


def run_record(history, wall_s, best_from_epoch=1):
    """Summary of a run: final and best test accuracy kept apart, plus the full history.
    The best is taken over epochs >= best_from_epoch (iterative pruning: only epochs that
    end at the final sparsity count, not the denser ones before the last pruning step)."""
    accs = history["test_acc"]
    first = min(best_from_epoch, len(accs)) - 1
    best = first + int(np.argmax(accs[first:]))
    return {"final_acc": accs[-1], "best_acc": accs[best], "best_epoch": best + 1,
            "best_from_epoch": first + 1, "epochs": len(accs), "history": history,
            "wall_s": wall_s}


# ----------------------------------------------------------------------------- train / finetune / test

def train(net, epochs=200, batch_size=256, lr=0.1, reg=5e-4, data=None, recipe=None, **fit_kwargs):
    """Train from scratch (PRETRAIN recipe, with the given lr/batch/weight decay)."""
    recipe = recipe or replace(PRETRAIN, batch_size=batch_size, lr=lr, weight_decay=reg)
    return fit(net, data or default_data(), epochs, recipe, desc="pretrain", **fit_kwargs)


def finetune(net, epochs=20, batch_size=256, lr=0.002, reg=1e-4, data=None, recipe=None,
             **fit_kwargs):
    """Finetune with the course's settings (SGD momentum 0.875, constant lr) unless a
    `recipe` is given. Extra keyword arguments go to `fit` (masks, teacher, seed, ...)."""
    recipe = recipe or replace(FAITHFUL, batch_size=batch_size, lr=lr, weight_decay=reg)
    return fit(net, data or default_data(), epochs, recipe, desc="finetune", **fit_kwargs)


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


def _check_fraction(q):
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"pruning fraction q must be in [0, 1] (e.g. 0.8 for 80 %), got {q}")


def magnitude_mask(magnitudes, q):
    """0/1 mask keeping all but the round(q*n) smallest magnitudes (the q-quantile
    threshold); the count rounds like torch.nn.utils.prune does."""
    _check_fraction(q)
    k = round(q * magnitudes.numel())
    if k == 0:
        return torch.ones_like(magnitudes)
    threshold = magnitudes.flatten().kthvalue(k).values
    return (magnitudes > threshold).to(magnitudes.dtype)


@torch.no_grad()
def prune_by_percentage(layer, q=0.8):
    """Zero the fraction q of `layer.weight` with the smallest magnitude; return the mask."""
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
def prune_layers_by_percentage(net, q, layers=None):
    """Prune each of `layers` (default: prunable_layers) to fraction q; return the masks."""
    layers = layers or prunable_layers(net)
    return {name: prune_by_percentage(layer, q) for name, layer in layers.items()}


@torch.no_grad()
def global_prune_by_percentage(net, q, layers=None):
    """One magnitude threshold over all `layers` together: the q-quantile of every
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


def finetune_after_prune(net, epochs=20, batch_size=256, lr=0.002, reg=1e-4, data=None,
                         recipe=None, masks=None, **fit_kwargs):
    """Finetune a pruned network keeping its zeros: the masks (default: the current
    non-zero pattern of the prunable layers) zero the gradient before and the weights
    after every SGD step, so momentum and weight decay cannot revive pruned weights."""
    masks = masks if masks is not None else masks_from_zeros(net)
    return finetune(net, epochs, batch_size, lr, reg, data=data, recipe=recipe, masks=masks,
                    **fit_kwargs)


def iterative_prune_schedule(final_q, prune_epochs):
    """Pruning fraction before each epoch 1..prune_epochs, linear up to final_q
    (the assignment: 8e % before epoch e for 10 epochs -> 80 %)."""
    return [final_q * e / prune_epochs for e in range(1, prune_epochs + 1)]


def iterative_prune(net, final_q=0.8, prune_epochs=10, epochs=20, use_global=False, data=None,
                    recipe=FAITHFUL, **fit_kwargs):
    """Iterative magnitude pruning during finetuning: before epoch e <= prune_epochs prune
    to the schedule's fraction; until the final pruning step the pruned weights keep
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


# ----------------------------------------------------------------------------- checkpoints

def atomic_write_bytes(path, write):
    """Write a file through a temporary sibling and os.replace, so an interrupted run
    never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous file, if any, is still intact
        raise
    os.replace(tmp, path)
    return path


def save_checkpoint(net, path):
    """Save net's state dict (float32, contiguous: the course's layout) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def save_json(obj, path):
    return atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MISSING_CHECKPOINT_HELP = """No checkpoint at {path}.
Get one of:
  - the course's pretrained_model.pt (from HW4.zip), copied to {path};
  - our own: python train_util.py pretrain --epochs 200 --out {path}  (needs a GPU and CIFAR-10)."""


def load_checkpoint(net, path="checkpoints/pretrained_model.pt"):
    """Load a state dict saved by the course or by this kit into `net` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(MISSING_CHECKPOINT_HELP.format(path=path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net


def environment():
    """Versions and device, for logs."""
    import torchvision
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"device": device, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


# ----------------------------------------------------------------------------- command line

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
    record = fit(net, data, args.epochs, recipe, seed=args.seed, desc="pretrain")
    out = save_checkpoint(net, args.out)
    log = {"recipe": asdict(recipe), "epochs": args.epochs, "seed": args.seed,
           "data": data.describe(), "test_label": data.test_label, "test_images": data.n_test,
           "final_acc": record["final_acc"], "best_acc": record["best_acc"],
           "best_epoch": record["best_epoch"], "wall_s": record["wall_s"],
           "epoch_s": record["wall_s"] / args.epochs, "history": record["history"],
           "environment": environment(), "checkpoint": str(out), "sha256": sha256(out),
           "command": " ".join(sys.argv)}
    save_json(log, Path(args.out).with_suffix(".json"))
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
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        pretrain_main(args)


if __name__ == "__main__":
    main()
