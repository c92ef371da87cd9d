"""Run configuration, resumable stages, the results file and the figures of hw4.ipynb.

The notebook asks one question per cell; everything it needs that is not the answer
itself lives here: which mode it runs in (QUICK smoke test or the assignment's full
epochs), where data, checkpoints and results go, how a finished stage is reloaded
instead of retrained, and how figures are drawn.

Quick mode never writes into the full-mode folders: its results go to report/quick/ and
its checkpoints to checkpoints/quick/ (both git-ignored).
"""
import copy
import functools
import hashlib
import inspect
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.transforms import Bbox
import torch

import train_util as tu
from FP_layers import FP_Conv, FP_Linear, linear_quantize  # noqa: F401 (re-measure test)
from report.tables import QUICK_BANNER, get  # one wording for notebook, results and report
from resnet20 import ResNetCIFAR

PRETRAINED = Path("checkpoints/pretrained_model.pt")
TUNING = Path("report/tuning.json")
# Stages whose improved recipe is the one tuning.py chose on a validation split, and the
# decision they take it from: Lab 3 (e) trains like Lab 2 (e), with 4-bit weights; every
# quantization-aware finetuning of Lab 3 (c) and (d) takes the one chosen at 3 bits.
TUNED_STAGES = {"lab2e": "lab2e_improved", "lab3e": "lab2e_improved",
                **{f"lab3{q}_{b}bit": "lab3c_improved" for q in "cd" for b in (4, 3, 2)}}


def load_decisions(path=TUNING):
    """tuning.py's decisions ({} if it has not run): {decision: {"chosen", "runs", ...}}."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def tuned_recipes(decisions):
    """{decision: the Recipe it chose on the validation split}."""
    return {name: tu.Recipe(**d["runs"][d["chosen"]]["recipe"]) for name, d in decisions.items()}


@dataclass
class Settings:
    """What a mode changes; everything else is the same code path."""
    quick: bool
    finetune_epochs: int        # Lab 2 (c), Lab 3 (c), (d): 20 in the assignment
    prune_epochs: int           # iterative pruning steps: 10 in the assignment
    iterative_epochs: int       # total epochs of iterative pruning: 20
    n_train: int | None         # None: all training images
    n_test: int | None
    results_dir: Path
    ckpt_dir: Path
    recipes: dict = field(default_factory=lambda: {"faithful": tu.FAITHFUL, "improved": tu.IMPROVED})
    decisions: dict = field(default_factory=load_decisions)  # tuning.py's, see TUNED_STAGES

    def recipes_for(self, stage):
        """The recipes of `stage`: `recipes`, with the tuned improved one where it has one."""
        tuned = tuned_recipes(self.decisions)
        decision = TUNED_STAGES.get(stage)
        if decision not in tuned:
            return dict(self.recipes)
        return {**self.recipes, "improved": tuned[decision]}

    @classmethod
    def for_mode(cls, quick):
        if quick:
            return cls(True, 1, 2, 2, 1024, 500, Path("report/quick"), Path("checkpoints/quick"))
        return cls(False, 20, 10, 20, None, None, Path("report"), Path("checkpoints"))


def quick_from_env(default=False):
    """HW4_QUICK=1 selects quick mode (what CI sets); unset keeps `default`."""
    value = os.environ.get("HW4_QUICK")
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


class Experiment:
    """Data, pretrained model, results file and stage cache of one notebook run."""

    def __init__(self, quick, data_dir=None, seed=0):
        self.settings = s = Settings.for_mode(quick)
        if not quick and not PRETRAINED.is_file():  # fail before loading data, with what to do
            raise FileNotFoundError(tu.MISSING_CHECKPOINT_HELP.format(path=PRETRAINED))
        self.seed = seed
        torch.manual_seed(seed)
        s.results_dir.mkdir(parents=True, exist_ok=True)
        s.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.data = self._load_data(data_dir)
        self.results_path = s.results_dir / "results.json"
        self.results = self._load_results()
        self.started = time.perf_counter()

    # -- data and models ---------------------------------------------------------------

    def _load_data(self, data_dir):
        s = self.settings
        if not s.quick:
            return tu.load_cifar10(data_dir, download=True)
        try:  # quick mode never waits on a download: real data if present, else synthetic
            data = tu.load_cifar10(data_dir, download=False)
        except tu.DataNotFoundError:
            print("Quick mode: CIFAR-10 not found locally, using synthetic stand-in data.")
            return tu.synthetic_cifar(512, 256, seed=self.seed)
        return data.subset(s.n_train, s.n_test)

    def model(self, Nbits=None, checkpoint=None):
        """A ResNet-20 with `Nbits` residual blocks, loaded from `checkpoint`
        (default: the pretrained model), on the data's device."""
        net = ResNetCIFAR(num_layers=20, Nbits=Nbits)
        tu.load_checkpoint(net, checkpoint or self.pretrained_path())
        return tu.prepare_for_device(net, self.data.device)

    def pretrained_path(self):
        """The pretrained checkpoint. Quick mode without one trains a 3-epoch stand-in
        (once per run, so CI can execute the notebook); full mode requires the real one."""
        if PRETRAINED.is_file() or not self.settings.quick:
            return PRETRAINED
        stand_in = self.settings.ckpt_dir / "pretrained_standin.pt"
        if not getattr(self, "_stand_in_trained", False):
            print(f"Quick mode: {PRETRAINED} missing, training a 3-epoch stand-in.")
            net = ResNetCIFAR(num_layers=20)
            # Small batches: a few hundred images give enough steps to learn something.
            recipe = replace(tu.PRETRAIN, batch_size=64, lr=0.05)
            tu.fit(net, self.data, 3, recipe, seed=self.seed, desc="stand-in pretrain")
            tu.save_checkpoint(net, stand_in)
            self._stand_in_trained = True
        return stand_in

    def teacher(self):
        """The dense pretrained model, frozen, as the distillation teacher of IMPROVED."""
        return tu.frozen(self.model())

    # -- results -----------------------------------------------------------------------

    def _load_results(self):
        """A fresh results file for this execution. Entries are never carried over from an
        earlier execution, whose code, checkpoints or recipes may differ: every cell writes
        its entry again (finished stages reload in seconds), so an interrupted run leaves
        only entries of this execution, and the report marks the rest "not run"."""
        return {"meta": self._meta()}

    def _meta(self):
        env = tu.environment()
        pretrained = self.pretrained_path()
        meta = {
            "mode": "quick" if self.settings.quick else "full",
            "test_images": self.data.n_test, "test_label": self.data.test_label,
            "train_images": len(self.data.y_train), "data_source": self.data.source,
            "device": env["device"], "torch": env["torch"],
            "pretrained": {"path": str(pretrained),
                           "sha256": tu.sha256(pretrained) if pretrained.is_file() else None},
            "recipes": {k: asdict(r) for k, r in self.settings.recipes.items()},
            "tuned_recipes": self._tuned_meta(),
            "training_version": tu.TRAINING_VERSION,
            "started": now(),
        }
        if self.settings.quick:
            meta["banner"] = QUICK_BANNER
        return meta

    def _tuned_meta(self):
        """Per tuned stage: its recipe and the validation scores it was chosen by."""
        decisions = self.settings.decisions
        tuned = tuned_recipes(decisions)
        return {stage: {**asdict(tuned[d]), "decision": d, "file": str(TUNING),
                        "validation": get(decisions, d, "validation"), "score": get(decisions, d, "score"),
                        "validation_scores": get(decisions, d, "scores"),
                        "stability": get(decisions, d, "stability")}
                for stage, d in TUNED_STAGES.items() if d in tuned}

    def save(self):
        meta = self.results["meta"]
        meta["finished"] = now()
        meta["wall_s"] = time.perf_counter() - self.started  # this execution (stages may be reloaded)
        tu.save_json(self.results, self.results_path)
        return self.results_path

    def record(self, key, value):
        """Store a question's result and write the results file at once."""
        self.results[key] = value
        self.save()
        return value

    # -- resumable stages --------------------------------------------------------------

    def stage_key(self, name, net, **extra):
        """What determines a stage's training: its name, the kit's TRAINING_VERSION (bumped
        on purpose when training behaviour changes), the epochs and images of this mode,
        the pretrained model, the data, how the network is built (Nbits and quantizer mode
        per layer) and the stage's own settings (recipe, start checkpoint, ...). Source
        code is deliberately not part of it: a docstring must not cost hours of retraining."""
        s = self.settings
        return {"stage": name, "training_version": tu.TRAINING_VERSION,
                "mode": {"quick": s.quick, "finetune_epochs": s.finetune_epochs,
                         "prune_epochs": s.prune_epochs, "iterative_epochs": s.iterative_epochs},
                "pretrained": self.results["meta"]["pretrained"]["sha256"],
                "data": self.data_identity(), "network": network_spec(net),
                **{k: _jsonable(v) for k, v in extra.items()}}

    def data_identity(self):
        if not hasattr(self, "_data_identity"):
            d = self.data
            self._data_identity = {"name": d.name, "train_images": len(d.y_train),
                                   "test_images": d.n_test,
                                   "digest": tu.tensor_digest([d.x_train, d.y_train, d.x_test, d.y_test])}
        return self._data_identity

    def stage(self, name, net, run, keep_best=False, **extra):
        """Run `run(net, resume=..., [best_path=...]) -> record` and save net's weights as
        checkpoints/<name>.pt (and the best epoch's as <name>_best.pt if `keep_best`), or,
        if that stage already finished with the same key (full mode), reload it. An
        interrupted stage resumes after its last finished epoch."""
        key = self.stage_key(name, net, **extra)
        saved = self._finished_stage(name, key, keep_best)
        if saved is not None:
            tu.load_checkpoint(net, self.checkpoint_of(name))
            print(f"{name}: reloaded from {self.checkpoint_of(name)} (finished earlier with the same key)")
            return saved["record"]
        options = {"resume": self._resume_path(name, key)}
        if keep_best:
            options["best_path"] = self.checkpoint_of(f"{name}_best")
        record = run(net, **options)
        record = dict(record, stage=name, stage_key=_digest(key))
        files = {"final": tu.save_checkpoint(net, self.checkpoint_of(name))}
        if keep_best:
            files["best"] = self.checkpoint_of(f"{name}_best")
        tu.save_json({"key": key, "sha256": {k: tu.sha256(f) for k, f in files.items()},
                      "record": record}, self.checkpoint_of(name).with_suffix(".json"))
        options["resume"].unlink(missing_ok=True)  # the stage is saved: its resume state is done
        return record

    def _finished_stage(self, name, key, keep_best):
        """The saved record of stage `name` if it finished with `key` and its checkpoints are
        the ones recorded (full mode only); else None, saying which input changed."""
        ckpt = self.checkpoint_of(name)
        meta_path = ckpt.with_suffix(".json")
        if self.settings.quick or not (ckpt.is_file() and meta_path.is_file()):
            return None
        saved = json.loads(meta_path.read_text())
        if saved.get("key") != key:
            changed = sorted(k for k in set(key) | set(saved.get("key", {}))
                             if saved.get("key", {}).get(k) != key.get(k))
            print(f"{name}: not reusing {ckpt}, trained with other inputs (changed: {', '.join(changed)})")
            return None
        files = {"final": ckpt, **({"best": self.checkpoint_of(f"{name}_best")} if keep_best else {})}
        # an interrupted rewrite must not pair new weights with an old record
        if any(not f.is_file() or saved.get("sha256", {}).get(k) != tu.sha256(f) for k, f in files.items()):
            print(f"{name}: not reusing {ckpt}, its checkpoint does not match its record")
            return None
        return saved

    def _resume_path(self, name, key):
        """Per-epoch resume state of stage `name` under `key`; states of other keys go."""
        path = self.settings.ckpt_dir / f"{name}.{_digest(key)}.resume.pt"
        for stale in self.settings.ckpt_dir.glob(f"{name}.*.resume.pt"):
            if stale != path:
                stale.unlink()
        return path

    def for_each_recipe(self, name, make_net, train, sources=None, keep_best=False, **extra):
        """Run stage `<name>_<recipe>` once per recipe (faithful, improved) on a fresh
        network and return ({recipe: run summary}, {recipe: trained net}). The network is
        `make_net()`, or `make_net(sources[recipe])` when each recipe starts from its own
        checkpoint (whose SHA-256 becomes part of the stage key)."""
        summaries, nets = {}, {}
        for recipe_name, recipe in self.settings.recipes_for(name).items():
            source = {} if sources is None else {"source": tu.sha256(sources[recipe_name])}
            net = make_net() if sources is None else make_net(sources[recipe_name])
            record = self.stage(f"{name}_{recipe_name}", net, functools.partial(train, recipe=recipe),
                                keep_best=keep_best, recipe=recipe, **source, **extra)
            summaries[recipe_name], nets[recipe_name] = summary(record, net), net
        return summaries, nets

    def checkpoint_of(self, name):
        return self.settings.ckpt_dir / f"{name}.pt"


def network_spec(net):
    """How a network is built, as far as training depends on it: per FP layer its Nbits
    and whether its quantizer preserves zeros (e.g. the switch of Lab 3 d/e)."""
    return {name: {"Nbits": m.Nbits, "zero_preserving": m.zero_preserving}
            for name, m in net.named_modules() if isinstance(m, (FP_Conv, FP_Linear))}


def network_from_spec(spec, num_layers=20):
    """A ResNet-20 built as `network_spec` describes (per-layer Nbits and quantizer mode)."""
    net = ResNetCIFAR(num_layers=num_layers)
    layers = dict(net.named_modules())
    for name, setting in spec.items():
        layers[name].Nbits = setting["Nbits"]
        layers[name].zero_preserving = setting["zero_preserving"]
    return net


def _jsonable(value):
    """Stage settings as JSON values (a Recipe becomes its fields)."""
    if isinstance(value, tu.Recipe):
        return asdict(value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _digest(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summary(record, net=None):
    """A run record with the per-layer zeros of `net` (if given) attached."""
    record = copy.deepcopy(record)
    if net is not None:
        record["layer_zeros"] = tu.layer_zeros(net)
        record["zeros_pct"] = tu.sparsity(net)
    return record


def zeros_kept(net, masks):
    """True if every weight that `masks` prunes is still exactly zero."""
    layers = tu.prunable_layers(net)
    return all(bool((layers[n].weight[m == 0] == 0).all()) for n, m in masks.items())


# ----------------------------------------------------------------------------- questions

SPARSE_RUNS = ("lab2c", "lab2d", "lab2e")  # the 80 %-sparse Lab 2 runs


def best_sparse_sources(run):
    """Per recipe, the 80 %-sparse Lab 2 run with the highest best-epoch accuracy (ties:
    the earlier question) and the checkpoint of that best epoch: where Lab 3 (d) starts."""
    sources = {}
    for recipe in run.settings.recipes:
        candidates = [(get(run.results, q, recipe, "best_acc"), -i, q)
                      for i, q in enumerate(SPARSE_RUNS) if get(run.results, q, recipe) is not None]
        if not candidates:
            raise RuntimeError(f"Lab 3 (d) needs the Lab 2 (c)-(e) results of the {recipe} recipe: "
                               f"run the Lab 2 cells first")
        acc, _, question = max(candidates)
        record = run.results[question][recipe]
        sources[recipe] = {"question": question, "stage": f"{question}_{recipe}",
                           "checkpoint": f"{question}_{recipe}_best", "acc": acc,
                           "best_epoch": record["best_epoch"], "final_acc": record["final_acc"]}
    return sources


def time_dense_vs_masked(run, batches=20, passes=4):
    """Seconds per training epoch of the dense and of the 80 %-pruned (masked) model, on
    the same `batches` batches, scaled to the whole training set: the training-time
    evidence for True/False 1.2. Each model makes `passes` passes; the first (start-up) is
    dropped and the median of the others is kept, since one pass varies by several percent
    on a shared CPU."""
    recipe = tu.FAITHFUL
    n = min(len(run.data.y_train), batches * recipe.batch_size)
    subset = run.data.subset(n, min(256, run.data.n_test))  # evaluation is not timed
    dense = tu.fit(run.model(), subset, passes, recipe, progress=False)
    pruned = run.model()
    masks = tu.prune_layers_by_percentage(pruned, 80.0)
    masked = tu.fit(pruned, subset, passes, recipe, masks=masks, progress=False)
    scale = len(run.data.y_train) / n
    dense_s, masked_s = (r["history"]["epoch_s"][1:] for r in (dense, masked))
    return {"dense_epoch_s": statistics.median(dense_s) * scale,
            "masked_epoch_s": statistics.median(masked_s) * scale,
            "measured_images": n, "timed_passes": len(dense_s), "device": run.results["meta"]["device"]}


# ----------------------------------------------------------------------------- compression

# (row key, label, results path of the run, Nbits, stage name); {r} is the recipe.
COMPRESSED_MODELS = [
    ("2c", "80 % zeros per layer, one-shot (2 c)", ("lab2c", "{r}"), None, "lab2c_{r}"),
    ("2d", "80 % zeros per layer, iterative (2 d)", ("lab2d", "{r}"), None, "lab2d_{r}"),
    ("2e", "80 % zeros global, iterative (2 e)", ("lab2e", "{r}"), None, "lab2e_{r}"),
    *[(f"3c_{b}", f"{b}-bit (3 c)", ("lab3c", str(b), "{r}"), b, f"lab3c_{b}bit_{{r}}") for b in (4, 3, 2)],
    *[(f"3d_{b}", f"80 % zeros + {b}-bit (3 d)", ("lab3d", str(b), "{r}"), b, f"lab3d_{b}bit_{{r}}")
      for b in (4, 3, 2)],
    ("3e", "80 % zeros global + 4-bit QAT (3 e)", ("lab3e", "{r}"), 4, "lab3e_{r}"),
]


def compression(run):
    """Storage size (train_util.storage_kib) and final accuracy of every trained model,
    read back from the stage checkpoints, next to the dense float model."""
    dense_kib = tu.storage_kib(run.model())

    def entry(acc, kib):
        return {"final_acc": acc, "kib": kib, "smaller_x": dense_kib / kib if kib else None}

    rows = {"dense": {"label": "dense float (2 a)", **{
        r: entry(get(run.results, "lab2a", "acc"), dense_kib) for r in run.settings.recipes}}}
    for key, label, path, nbits, stage in COMPRESSED_MODELS:
        rows[key] = {"label": label}
        for r in run.settings.recipes:
            ckpt = run.checkpoint_of(stage.format(r=r))
            kib = tu.storage_kib(run.model(Nbits=nbits, checkpoint=ckpt)) if ckpt.is_file() else None
            rows[key][r] = entry(get(run.results, *[p.format(r=r) for p in path], "final_acc"), kib)
    return {"dense_kib": dense_kib, "models": rows}


# ----------------------------------------------------------------------------- figures

def _finish(fig, path, title):
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return fig


def plot_curves(curves, path, title, test_label):
    """Test accuracy per epoch for several runs: {label: history}."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, history in curves.items():
        ax.plot(history["epoch"], history["test_acc"], marker=".", label=label)
    ax.set(xlabel="epoch", ylabel=f"test accuracy (%)\n{test_label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def plot_layer_zeros(per_run, path, title):
    """Grouped bars of % zeros per layer: {run label: {layer: pct}}."""
    layers = list(next(iter(per_run.values())))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(per_run)
    for i, (label, zeros) in enumerate(per_run.items()):
        ax.bar([x + i * width for x in range(len(layers))], [zeros[n] for n in layers], width, label=label)
    short = [n.replace(".conv", "").replace("body_op.", "b").replace(".0", "") for n in layers]
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(layers))], short, rotation=60, fontsize=7)
    ax.set(ylabel="zeros (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def plot_bits(accuracy_by_bits, path, title, test_label):
    """Accuracy without finetuning against Nbits ({"fp": acc, "6": acc, ...})."""
    labels = list(accuracy_by_bits)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, [accuracy_by_bits[k] for k in labels], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set(xlabel="Nbits of the residual blocks (fp = floating point)",
           ylabel=f"test accuracy (%)\n{test_label}", ylim=(0, 100))
    return _finish(fig, path, title)


def plot_size_accuracy(compressed, path, title, test_label):
    """Final accuracy against storage size (log scale), one marker style per recipe; a grey
    line joins the two recipes' points of one model, which is labelled once."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    points = {}  # model -> {recipe: (kib, acc)}
    for recipe, marker in (("faithful", "o"), ("improved", "s")):
        mine = {key: (row[recipe]["kib"], row[recipe]["final_acc"]) for key, row in compressed["models"].items()
                if get(row, recipe, "kib") is not None and get(row, recipe, "final_acc") is not None}
        ax.scatter([p[0] for p in mine.values()], [p[1] for p in mine.values()], marker=marker, label=recipe,
                   zorder=2)
        for key, point in mine.items():
            points.setdefault(key, {})[recipe] = point
    for pair in points.values():
        ax.plot(*zip(*pair.values()), color="0.75", lw=0.8, zorder=1)
    ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the labels of the largest model
    ax.set(xlabel="storage size (KiB): non-zero values at Nbits + 1-bit position map",
           ylabel=f"final test accuracy (%)\n{test_label}")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()  # before the labels: they are placed where the points are drawn
    _label_models(ax, {key: max(pair.values(), key=lambda p: p[1]) for key, pair in points.items()},
                  [p for pair in points.values() for p in pair.values()])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path, title)


# where a label may sit around its point: (x, y offset in points, horizontal alignment)
_LABEL_SPOTS = [(6, 2, "left"), (-6, 2, "right"), (6, -9, "left"), (-6, -9, "right"),
                (0, 6, "center"), (0, -13, "center")]


def _label_models(ax, tops, obstacles=()):
    """Label each model beside its higher point, from the most accurate down, at the first
    spot around it (right, left, below, above) that covers no label already placed and no
    marker in `obstacles` (data points), else further down on its right."""
    ax.figure.canvas.draw()  # final axis limits, so that data map to where they are drawn
    renderer, placed = ax.figure.canvas.get_renderer(), []
    markers = [Bbox.from_bounds(*(ax.transData.transform(p) - 5), 10, 10) for p in obstacles]
    spots = _LABEL_SPOTS + [(6, -9 * k, "left") for k in range(2, 8)]
    for key, point in sorted(tops.items(), key=lambda kv: -kv[1][1]):
        name = key.replace("_", " ") + ("-bit" if "_" in key else "")  # 3d_2 -> 3d 2-bit
        label = ax.annotate(name, point, fontsize=7, xytext=spots[0][:2], textcoords="offset points")
        for dx, dy, align in spots:
            label.set_position((dx, dy))
            label.set_horizontalalignment(align)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed + markers):
                break
        placed.append(box)


def render_source(objects, path):
    """An image of the source code of `objects` (Lab 3 (a) asks for a screenshot)."""
    source = "\n\n".join(inspect.getsource(o) for o in objects)
    lines = source.splitlines()
    fig = plt.figure(figsize=(9, 0.16 * len(lines) + 0.4))
    fig.text(0.01, 0.99, source, family="monospace", fontsize=7.5, va="top")
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
