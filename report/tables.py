"""Markdown tables for the hw4 ``results.json`` (shared by hw4.ipynb and the report builder).

``table(results, key)`` returns a caption line plus a markdown table. Every number is read
from ``results``; anything missing shows as "not run", never as a stale or invented value.
Every caption names the test set (``meta.test_label`` and ``meta.test_images``), every
accuracy column carries ``n=<test images>``, and quick-mode captions carry ``QUICK_BANNER``.

Keys: lab2a, lab2b, lab2c, lab2d, lab2e, lab2e_layers, lab3b, lab3c, lab3d, lab3e,
lab3e_layers, timing, recipes, compression.
"""
from __future__ import annotations

NOT_RUN = "not run"
QUICK_BANNER = "QUICK MODE — smoke test on a small subset or synthetic data, not results"
RECIPES = ("faithful", "improved")
PRUNE_QS = ("40", "60", "80")  # percent, as the course starter's q
ALL_BITS = ("6", "5", "4", "3", "2")
QAT_BITS = ("4", "3", "2")


# ---------------------------------------------------------------- small helpers
def get(d, *path):
    """Nested lookup that returns None as soon as a level is missing."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(x, nd: int = 2) -> str:
    """Format a number with ``nd`` decimals, or "not run" when it is missing."""
    if x is None:
        return NOT_RUN
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.{nd}f}"


def fmt_int(x) -> str:
    """Format an integer-valued field (epochs, batch size), or "not run"."""
    return NOT_RUN if x is None else str(int(x))


def is_quick(results: dict) -> bool:
    """True when the results come from a quick (synthetic smoke-test) run."""
    return get(results, "meta", "mode") == "quick"


def n_test(results: dict) -> str:
    """Number of test images as text ("?" when meta does not say)."""
    n = get(results, "meta", "test_images")
    return "?" if n is None else str(n)


def test_set(results: dict) -> str:
    """Human name of the evaluation set, e.g. "CIFAR-10 test[0:1000], 1000 images"."""
    label = get(results, "meta", "test_label") or "test set (label not recorded)"
    return f"{label}, {n_test(results)} images"


def acc_col(results: dict, what: str = "acc.") -> str:
    """Accuracy column header that names the test-set size."""
    return f"{what} (%, n={n_test(results)})"


def caption(results: dict, title: str, accuracy: bool = True) -> str:
    """Italic caption line: quick banner (if any), title, and the test set (for tables
    that hold accuracies)."""
    banner = f"{QUICK_BANNER} — " if is_quick(results) else ""
    measured = f" Accuracy (%) on {test_set(results)}." if accuracy else ""
    return f"*{banner}Table: {title}.{measured}*"


def md_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    """Markdown table; columns from ``right_from`` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, align] + rows
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)


def with_caption(results: dict, title: str, body: str, accuracy: bool = True) -> str:
    """Caption line, blank line, table."""
    return f"{caption(results, title, accuracy)}\n\n{body}\n"


# ---------------------------------------------------------------- per-key tables
def _lab2a(res: dict) -> str:
    a = get(res, "lab2a")
    rows = [["pretrained FP ResNet-20", fmt(get(a, "acc")), fmt(get(a, "loss"), 4)]]
    body = md_table(["model", acc_col(res), "test loss"], rows)
    return with_caption(res, "Lab 2 (a) pretrained floating-point model", body)


def _lab2b(res: dict) -> str:
    base = get(res, "lab2a", "acc")
    rows = []
    for q in PRUNE_QS:
        acc = get(res, "lab2b", q, "acc")
        drop = None if acc is None or base is None else base - acc
        rows.append([q, fmt(acc), fmt(get(res, "lab2b", q, "zeros_pct"), 1), fmt(drop)])
    header = ["q (%)", acc_col(res), "zeros (%)", "drop vs. pretrained (points)"]
    return with_caption(res, "Lab 2 (b) layer-wise pruning by percentile, no finetuning",
                        md_table(header, rows))


def recipe_row(name: str, r: dict | None) -> list[str]:
    """One row of a run-record table: best, final, best epoch, epochs, zeros, wall."""
    return [name, fmt(get(r, "best_acc")), fmt(get(r, "final_acc")),
            fmt_int(get(r, "best_epoch")), fmt_int(get(r, "epochs")),
            fmt(get(r, "zeros_pct"), 1), fmt(get(r, "wall_s"), 0)]


def recipe_header(res: dict, first: str = "recipe") -> list[str]:
    """Header matching ``recipe_row``."""
    return [first, acc_col(res, "best acc."), acc_col(res, "final acc."), "best epoch",
            "epochs", "zeros (%)", "wall (s)"]


_RUN_TITLES = {
    "lab2c": "Lab 2 (c) one-shot pruning (q = 80 %), then masked finetuning",
    "lab2d": "Lab 2 (d) iterative pruning (8e% before epoch e), then finetuning",
    "lab2e": "Lab 2 (e) global iterative pruning to 80%",
    "lab3e": "Lab 3 (e) global iterative pruning to 80% with 4-bit QAT",
}


def _runs(res: dict, key: str) -> str:
    rows = [recipe_row(r, get(res, key, r)) for r in RECIPES]
    return with_caption(res, _RUN_TITLES[key], md_table(recipe_header(res), rows))


def _layer_runs(key: str) -> list[tuple[str, str]]:
    """(results key, recipe) per column; the Lab 3 (e) table also shows Lab 2 (e)."""
    keys = ["lab2e"] if key == "lab2e_layers" else ["lab3e", "lab2e"]
    return [(k, r) for k in keys for r in RECIPES]


def question(key: str) -> str:
    """Question name of a results key: "lab2e" -> "Lab 2 (e)"."""
    return f"Lab {key[3]} ({key[4]})"


def _layers(res: dict, key: str) -> str:
    runs = _layer_runs(key)
    zeros = [get(res, k, r, "layer_zeros") or {} for k, r in runs]
    layers = list(dict.fromkeys(name for lz in zeros for name in lz))
    title = f"{_RUN_TITLES[key[:5]]}: zeros (%) per layer"
    if not layers:
        return with_caption(res, title, f"*Per-layer zeros: {NOT_RUN}.*", accuracy=False)
    rows = [[name] + [fmt(lz.get(name), 1) for lz in zeros] for name in layers]
    rows.append(["overall"] + [fmt(get(res, k, r, "zeros_pct"), 1) for k, r in runs])
    header = ["layer"] + [f"{question(k)} {r} zeros (%)" for k, r in runs]
    return with_caption(res, title, md_table(header, rows), accuracy=False)


def _lab3b(res: dict) -> str:
    fp = get(res, "lab3b", "fp")
    rows = [["fp (32-bit float)", fmt(fp), fmt(0.0 if fp is not None else None)]]
    for b in ALL_BITS:
        acc = get(res, "lab3b", b)
        rows.append([b, fmt(acc), fmt(None if acc is None or fp is None else acc - fp)])
    header = ["Nbits", acc_col(res), "change vs. fp (points)"]
    return with_caption(res, "Lab 3 (b) fixed-point quantization without finetuning",
                        md_table(header, rows))


def _lab3c(res: dict) -> str:
    rows = []
    for b in QAT_BITS:
        runs = [get(res, "lab3c", b, r) for r in RECIPES]
        rows.append([b, fmt(get(res, "lab3b", b))]
                    + [fmt(get(r, k)) for r in runs for k in ("best_acc", "final_acc")])
    header = ["Nbits", acc_col(res, "no finetune")] + [
        acc_col(res, f"{r} {k}") for r in RECIPES for k in ("best", "final")]
    return with_caption(res, "Lab 3 (c) 20-epoch quantization-aware finetuning",
                        md_table(header, rows))


def _lab3d(res: dict) -> str:
    sources = [get(res, "lab3d", "sources", r) for r in RECIPES]
    rows = [["start (pruned, fp)", " / ".join(fmt(get(src, "acc")) for src in sources)] + [""] * 5]
    for b in QAT_BITS:
        runs = [get(res, "lab3d", b, r) for r in RECIPES]
        before = " / ".join(fmt(get(res, "lab3d", b, "before", r)) for r in RECIPES)
        zeros = " / ".join(fmt(get(r, "zeros_pct"), 1) for r in runs)
        rows.append([b, before] + [fmt(get(r, k)) for r in runs for k in ("best_acc", "final_acc")]
                    + [zeros])
    header = (["Nbits", acc_col(res, "before finetune, faithful / improved")]
              + [acc_col(res, f"{r} {k}") for r in RECIPES for k in ("best", "final")]
              + ["zeros (%) faithful / improved"])
    starts = "; ".join(f"{r}: {source_label(src)}" for r, src in zip(RECIPES, sources))
    return with_caption(res, "Lab 3 (d) quantizing the pruned model (zero-preserving); each recipe "
                        f"starts from its own best Lab 2 model ({starts})", md_table(header, rows))


def source_label(src) -> str:
    """'Lab 2 (d) best epoch 14' for a Lab 3 (d) source entry, or "not run"."""
    if not isinstance(src, dict) or "question" not in src:
        return NOT_RUN
    q = src["question"]
    return f"Lab 2 ({q[-1]}) best epoch {src.get('best_epoch', '?')}"


def _timing(res: dict) -> str:
    t = get(res, "timing")
    dense, masked = get(t, "dense_epoch_s"), get(t, "masked_epoch_s")
    ratio = masked / dense if dense and masked is not None else None
    rows = [[str(get(t, "device") or NOT_RUN), fmt(dense), fmt(masked), fmt(ratio)]]
    header = ["device", "dense epoch (s)", "masked epoch (s)", "masked / dense"]
    return with_caption(res, "Lab 2 training time per epoch, dense vs. pruned (masked)",
                        md_table(header, rows), accuracy=False)


def _per_recipe(row: dict | None, field: str, nd: int) -> str:
    """One value when the recipes agree (to the shown precision), else "faithful / improved"."""
    shown = [fmt(get(row, r, field), nd) for r in RECIPES]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def _compression(res: dict) -> str:
    models = get(res, "compression", "models") or {}
    rows = [[str(row.get("label", "?")), _per_recipe(row, "kib", 1), _per_recipe(row, "smaller_x", 1)]
            + [fmt(get(row, r, "final_acc")) for r in RECIPES] for row in models.values()]
    if not rows:
        return with_caption(res, "storage size and accuracy of every model", f"*Compression: {NOT_RUN}.*")
    header = ["model", "size (KiB)", "smaller than dense (x)"] + [acc_col(res, f"{r} final") for r in RECIPES]
    return with_caption(res, "storage size and final accuracy of every model (size: non-zero weights at "
                             "Nbits plus a 1-bit position map, float32 for the rest; where the recipes "
                             "differ: faithful / improved)", md_table(header, rows))


_RECIPE_FIELDS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay",
                  "batch_size", "schedule")


def _recipes(res: dict) -> str:
    """Recipe settings, one row per setting (schema fields plus any extra ones recorded)."""
    recs = [get(res, "meta", "recipes", r) or {} for r in RECIPES]
    extra = [f for rec in recs for f in rec if f not in _RECIPE_FIELDS]
    fields = [f for f in (*_RECIPE_FIELDS, *dict.fromkeys(extra)) if any(f in r for r in recs)]
    title = "finetuning recipes used in Labs 2 and 3"
    if not fields:
        return with_caption(res, title, f"*Recipes: {NOT_RUN}.*", accuracy=False)
    rows = [[f.replace("_", " ")] + [str(rec[f]) if f in rec else "not recorded" for rec in recs]
            for f in fields]
    body = md_table(["setting", *RECIPES], rows, right_from=3)
    return with_caption(res, title, body + _tuned_note(res, recs[1]), accuracy=False)


def _tuned_note(res: dict, improved: dict) -> str:
    """A line per group of stages whose improved recipe was tuned on a validation split."""
    groups = {}
    for stage, rec in (get(res, "meta", "tuned_recipes") or {}).items():
        changes = ", ".join(f"{f.replace('_', ' ')} {rec[f]}" for f in rec
                            if f in improved and rec[f] != improved[f]) or "as in the table"
        scores = ", ".join(f"{k} {fmt(v)}" for k, v in (rec.get("validation_scores") or {}).items())
        key = (changes, rec.get("file"), rec.get("score") or "accuracy", rec.get("validation"), scores,
               _unstable_note(rec.get("stability")))
        groups.setdefault(key, []).append(stage)
    lines = [f"\n\n*Improved recipe of {_join(_stage_name(s) for s in stages)}: {changes}, "
             f"chosen by tuning.py ({file}) on a validation split of the training images, never on "
             f"the test images: {score} (%) on {validation}: {scores or 'not recorded'}.{unstable}*"
             for (changes, file, score, validation, scores, unstable), stages in groups.items()]
    return "".join(lines)


def _unstable_note(checks) -> str:
    """The candidates excluded because one epoch made our quantized pretrained model worse."""
    failed = {k: c for k, c in (checks or {}).items() if not c.get("stable", True)}
    if not failed:
        return ""
    first = next(iter(failed.values()))
    images = get(first, "images") or "the validation images"
    bits = _check_bits(first.get("check", ""))
    model = f"our {bits}-bit pretrained model" if bits else "our quantized pretrained model"
    items = "; ".join(f"{k} ({fmt(c.get('before'))} → {fmt(c.get('after_one_epoch'))} %)" for k, c in failed.items())
    scores = "its score" if len(failed) == 1 else "their scores"
    return (f" The choice ranks only the candidates that passed a stability check first; excluded: "
            f"{items}, whatever {scores} above. One epoch at the candidate's peak lr lowered "
            f"{model}'s accuracy on {images.split(' (')[0]} (images that model trained on, unlike "
            f"the tuning base; the check compares the model only with itself before and after).")


def _check_bits(check: str) -> str:
    """"first_qat_epoch(nbits=3)" -> "3"."""
    _, _, rest = check.partition("nbits=")
    return rest.split(",")[0].split(")")[0]


def _join(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _stage_name(stage: str) -> str:
    """lab2e -> Lab 2 (e); lab3c_4bit -> Lab 3 (c) 4-bit."""
    if not stage.startswith("lab"):
        return stage
    question, _, bits = stage[4:].partition("_")
    return f"Lab {stage[3]} ({question})" + (f" {bits.removesuffix('bit')}-bit" if bits else "")


_TABLES = {
    "lab2a": _lab2a, "lab2b": _lab2b, "lab3b": _lab3b, "lab3c": _lab3c,
    "lab3d": _lab3d, "timing": _timing, "recipes": _recipes, "compression": _compression,
    **{k: (lambda res, k=k: _runs(res, k)) for k in _RUN_TITLES},
    **{k: (lambda res, k=k: _layers(res, k)) for k in ("lab2e_layers", "lab3e_layers")},
}


def table(results: dict, key: str) -> str:
    """Markdown caption + table for ``key`` (see module docstring for the keys)."""
    if key not in _TABLES:
        raise KeyError(f"no table for {key!r}; known: {sorted(_TABLES)}")
    return _TABLES[key](results or {})
