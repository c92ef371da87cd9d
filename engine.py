"""The training engine: recipes, SGD, the training step, `fit` with per-epoch resume,
and float32 evaluation.

Speed on the CPU (the kit's real machine, 2 cores): the step runs in bf16 autocast with
channels_last tensors, which oneDNN convolves with its AVX-512 bf16 kernels; evaluation
stays exact float32. On a GPU the same eager bf16 step runs; capturing it in a CUDA graph
is opt-in (HW4_CUDA_GRAPH=1) because it has not yet been measured on a GPU here.

Resume: `fit(..., resume=path)` writes the whole training state after every epoch,
atomically, and a rerun with the same arguments continues bitwise where it stopped.
"""
import contextlib
import hashlib
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm  # plain bars: no ipywidgets needed in notebooks

from cifar import normalize, train_batches
from fileio import atomic_write_bytes, save_checkpoint

# Bump on purpose when a change alters what training computes (the step, the optimiser,
# augmentation, masking, precision): finished hw4 stages keyed on the old value then train
# again. Refactors, docstrings and logging leave it alone, so they cost no retraining.
# 1: bf16 autocast + channels_last on CPU and GPU, exact-k magnitude pruning.
TRAINING_VERSION = 1

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

def frozen(net):
    """`net` itself, in eval mode and with no parameter requiring a gradient: a teacher
    whose batch-norm statistics and weights stay what they are while a student trains."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def training_loss(logits, y, recipe, teacher_logits=None):
    """The loss `recipe` trains with: cross-entropy (with its label smoothing), mixed with the
    distillation loss from `teacher_logits` when given and recipe.distill > 0."""
    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
    if teacher_logits is None or recipe.distill == 0:
        return loss
    soft = distillation_loss(logits, teacher_logits, recipe.temperature)
    return (1 - recipe.distill) * loss + recipe.distill * soft


def distillation_loss(student_logits, teacher_logits, temperature):
    """Hinton et al.'s soft-target loss, scaled by T^2 so its gradient size is T-independent."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, 1),
                    F.log_softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


GRAPH_ENV = "HW4_CUDA_GRAPH"  # "1" turns CUDA graphs on (see graph_enabled)


class TrainStep:
    """One optimisation step: forward, loss, backward, gradient masking, SGD, weight masking.

    Keeps running sums of loss and correct predictions on the device so an epoch needs no
    host synchronisation. With `graph=True` (CUDA only) the step is captured once and
    replayed; inputs are copied into static tensors, the lr lives in a tensor, and masks
    must be updated in place (they are read, not copied, by the graph).
    """

    def __init__(self, net, optimizer, recipe, masks=None, teacher=None, graph=False, amp=True):
        self.net, self.opt, self.recipe, self.teacher = net, optimizer, recipe, teacher
        params = dict(net.named_parameters())
        self.masked = [(params[_weight_name(n)], m) for n, m in (masks or {}).items()]
        device = optimizer.params[0].device
        self.device_type = device.type
        self.amp = amp
        self.graph = graph and device.type == "cuda"
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        # Steps are counted on the device so that a non-finite loss is located without a
        # host synchronisation per step (and inside a CUDA graph).
        self.steps = torch.zeros((), device=device, dtype=torch.int64)
        self.first_nonfinite = torch.full((), -1, device=device, dtype=torch.int64)
        self.seen = 0
        self._cuda_graph = None

    def reset_stats(self):
        self.loss_sum.zero_()
        self.correct.zero_()
        self.steps.zero_()
        self.first_nonfinite.fill_(-1)
        self.seen = 0

    @torch.no_grad()
    def masked_zeros_pct(self):
        """% of exactly-zero weights over the masked layers together."""
        zeros = sum(int((p == 0).sum()) for p, _ in self.masked)
        return 100.0 * zeros / max(1, sum(p.numel() for p, _ in self.masked))

    def nonfinite_step(self):
        """1-based step of this epoch whose loss was NaN or infinite first, else None."""
        step = int(self.first_nonfinite)
        return None if step < 0 else step + 1

    def stats(self):
        """(mean training loss, training accuracy %) since the last reset."""
        seen = max(self.seen, 1)
        return self.loss_sum.item() / seen, 100.0 * self.correct.item() / seen

    def _compute(self, x, y):
        r = self.recipe
        with torch.autocast(self.device_type, torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.net(x)
            teacher_logits = None
            if self.teacher is not None and r.distill > 0:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
            loss = training_loss(logits, y, r, teacher_logits)
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
            first_bad = (self.first_nonfinite < 0) & ~torch.isfinite(loss.detach())
            self.first_nonfinite.copy_(torch.where(first_bad, self.steps, self.first_nonfinite))
            self.steps.add_(1)

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
        return net_state + self.opt.buffers + [self.loss_sum, self.correct, self.steps,
                                                self.first_nonfinite]

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
    """CUDA graphs only on request (HW4_CUDA_GRAPH=1): the captured step has not yet been
    measured on a GPU in this repository, so plain eager bf16 is the default there too."""
    return torch.device(device).type == "cuda" and os.environ.get(GRAPH_ENV, "0") == "1"


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
    net.to(memory_format=torch.channels_last)  # matches normalize(): no layout conversions
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return net


def tensor_digest(tensors):
    """SHA-256 (hex, 16 chars) of the values of a sequence of tensors, in order."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fit_fingerprint(net, data, epochs, recipe, masks, teacher, seed, amp):
    """What determines a training run, so that resume state of another run is not used."""
    state = net.state_dict()
    return {"epochs": epochs, "recipe": asdict(recipe), "seed": seed, "amp": amp,
            "train_images": len(data.y_train),
            "data": tensor_digest([data.x_train, data.y_train]),
            "initial_weights": tensor_digest(state[k] for k in sorted(state)),
            "masks": tensor_digest(masks[k] for k in sorted(masks)) if masks else None,
            "teacher": tensor_digest(teacher.state_dict().values()) if teacher is not None else None}


class ResumeState:
    """Per-epoch training state in one file (see `fit`'s `resume`); path None: off."""
    FORMAT = 1

    def __init__(self, path, fingerprint):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint

    def _load(self):
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
            raise RuntimeError(f"cannot read the resume state {self.path} ({type(err).__name__}: "
                               f"{err}); delete it to start this run from epoch 1") from err

    def restore(self, net, opt, masks, gen, history):
        """Load a matching state into the live objects; (next epoch, steps done, wall s)."""
        if self.path is None or not self.path.is_file():
            return 1, 0, 0.0
        state = self._load()
        if state.get("format") != self.FORMAT or state.get("fingerprint") != self.fingerprint:
            changed = sorted(k for k in self.fingerprint
                             if state.get("fingerprint", {}).get(k) != self.fingerprint[k])
            # keep the other run's hours of work: set its state aside instead of overwriting it
            aside = self.path.with_name(f"{self.path.name}.other-run-epoch{state.get('epoch', 0)}")
            os.replace(self.path, aside)
            print(f"not resuming from {self.path}: it belongs to another run "
                  f"(changed: {', '.join(changed) or 'format'}); its state is kept as {aside}; "
                  f"starting from epoch 1")
            return 1, 0, 0.0
        net.load_state_dict(state["net"])
        with torch.no_grad():
            for buffer, saved in zip(opt.buffers, state["optimizer"], strict=True):
                buffer.copy_(saved)
            for name, mask in (masks or {}).items():  # in place: the step holds these tensors
                mask.copy_(state["masks"][name])
        gen.set_state(state["generator"])
        for key, values in state["history"].items():
            history[key][:] = values
        epoch, epochs = state["epoch"], self.fingerprint["epochs"]
        print(f"resuming from epoch {epoch} of {epochs} ({self.path})"
              + ("; already finished" if epoch == epochs else ""))
        return epoch + 1, state["done"], state["wall_s"]

    def save(self, epoch, done, net, opt, masks, gen, history, wall_s, finished):
        if self.path is None:
            return
        state = {"format": self.FORMAT, "fingerprint": self.fingerprint, "epoch": epoch,
                 "done": done, "finished": finished, "wall_s": wall_s,
                 "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                 "optimizer": [b.cpu() for b in opt.buffers],
                 "masks": {k: m.cpu() for k, m in (masks or {}).items()},
                 "generator": gen.get_state(), "history": history}
        atomic_write_bytes(self.path, lambda tmp: torch.save(state, tmp))


def fit(net, data, epochs, recipe, masks=None, before_epoch=None, teacher=None,
        graph="auto", seed=0, desc="train", progress=True, best_from_epoch=1, resume=None,
        amp=True, best_path=None):
    """Train `net` on `data` for `epochs` and return a run record (see `run_record`).

    masks: {layer name: 0/1 tensor}; masked weights stay exactly zero throughout.
    before_epoch(epoch, masks): called before each epoch (1-based), e.g. to prune further;
    it must modify the masks in place. graph: capture the step in a CUDA graph ("auto":
    on CUDA only if HW4_CUDA_GRAPH=1). amp: bf16 autocast in the training step (CPU and
    GPU); evaluation is always float32.
    resume: a file for per-epoch resume state. After every epoch the whole training state
    (weights, optimiser buffers, masks, step count, random generator, history) is written
    there atomically; called again with the same arguments, fit continues after the last
    finished epoch and ends bitwise where an uninterrupted run ends. A finished state is
    kept (marked finished) so a rerun returns at once; the caller removes it when done.
    best_path: where to save the weights of the epoch with the best test accuracy (over
    epochs >= best_from_epoch), as the starter does; written before the epoch's resume state.
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
    step = TrainStep(net, opt, recipe, masks, teacher if recipe.distill else None, use_graph, amp)
    gen = torch.Generator(device=data.device).manual_seed(seed)
    steps_per_epoch = max(1, len(data.y_train) // min(recipe.batch_size, len(data.y_train)))
    total = epochs * steps_per_epoch
    history = {k: [] for k in ("epoch", "train_loss", "train_acc", "test_acc", "test_loss", "lr", "epoch_s")}
    if masks:
        history["zeros_pct"] = []
    run = ResumeState(resume, fit_fingerprint(net, data, epochs, recipe, masks, teacher, seed, amp))
    first_epoch, done, wall_before = run.restore(net, opt, masks, gen, history)
    if first_epoch > epochs:
        return run_record(history, wall_before, best_from_epoch)
    start_time = time.perf_counter()
    # In a notebook (stderr not a terminal) every bar refresh becomes an output of the cell:
    # refresh rarely there, or an executed hw4.ipynb would hold tens of thousands of them.
    refresh_s = 0.1 if sys.stderr.isatty() else 60
    bar = tqdm(total=total, initial=done, desc=desc, disable=not progress, leave=False, unit="step",
               mininterval=refresh_s)
    for epoch in range(first_epoch, epochs + 1):
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
        _stop_if_nonfinite(step, epoch, steps_per_epoch)
        epoch_s = time.perf_counter() - epoch_start
        test_acc, test_loss = evaluate(net, data)
        _append(history, epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_acc=test_acc,
                test_loss=test_loss, lr=recipe.lr_at(done - 1, total, steps_per_epoch), epoch_s=epoch_s)
        if masks:
            history["zeros_pct"].append(step.masked_zeros_pct())
        if best_path is not None and _is_new_best(history["test_acc"], best_from_epoch):
            save_checkpoint(net, best_path)
        run.save(epoch, done, net, opt, masks, gen, history,
                 wall_before + time.perf_counter() - start_time, finished=epoch == epochs)
        bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.2f}% of {data.n_test}")
    bar.close()
    return run_record(history, wall_before + time.perf_counter() - start_time, best_from_epoch)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the epoch and step."""


def _stop_if_nonfinite(step, epoch, steps_per_epoch):
    bad = step.nonfinite_step()
    if bad is not None:
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {epoch}, step {bad} of {steps_per_epoch} "
            f"(overall step {(epoch - 1) * steps_per_epoch + bad}); training stopped. The "
            f"learning rate is probably too large for this model: lower it and run again "
            f"(a resume state, if any, still holds the last finished epoch).")


def _is_new_best(accs, best_from_epoch):
    """True if the last epoch is the first to reach the best accuracy so far (ties keep the
    earlier epoch, as run_record's best_epoch does)."""
    epoch = len(accs)
    earlier = accs[best_from_epoch - 1:-1]
    return epoch >= best_from_epoch and (not earlier or accs[-1] > max(earlier))


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
