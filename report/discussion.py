"""Short discussion paragraphs for the hw4 ``results.json`` (shared by hw4.ipynb and the report).

``discussion(results, key)`` returns markdown. Every number is formatted from ``results``;
comparisons are worded from the sign of the difference ("above" / "below" / "level with"),
so the prose never contradicts the tables. A missing key gives "<question>: not run."
"""
from __future__ import annotations

import math

from report.tables import (ALL_BITS, NOT_RUN, PRUNE_QS, QAT_BITS, QUICK_BANNER, RECIPES,
                           fmt, get, is_quick, question, source_label, test_set)

# differences smaller than this (in points) are called "level"
TIE = 0.005
# zero fractions that differ by less than this (in %) count as "preserved"
ZERO_TOL = 0.01


# ---------------------------------------------------------------- wording helpers
def above_below(diff: float, above: str = "above", below: str = "below",
                level: str = "level with") -> str:
    """Comparison word chosen by the sign of ``diff``."""
    if abs(diff) < TIE:
        return level
    return above if diff > 0 else below


def versus(a, b, what: str = "") -> str:
    """'X points above/below <what>' for a - b, or '' when either side is missing."""
    if a is None or b is None:
        return ""
    d = a - b
    if abs(d) < TIE:
        return f"level with {what}" if what else "level"
    return f"{abs(d):.2f} points {above_below(d)} {what}".strip()


def standard_error(acc: float, n: int) -> float:
    """Standard error, in points, of an accuracy of ``acc`` % measured on ``n`` images
    (binomial: each image is right or wrong)."""
    p = acc / 100
    return 100 * math.sqrt(p * (1 - p) / n)


def noise_band(a: float, b: float, n: int) -> float:
    """Two standard errors of one accuracy on ``n`` images, at the mean of a and b."""
    return 2 * standard_error((a + b) / 2, n)


def is_within_noise(a, b, n) -> bool:
    """True when accuracies a and b (%, on the same ``n`` test images) differ by less than
    two standard errors of one accuracy: a test set that size cannot separate them. Two
    models scored on the same images would need a paired test (per-image results, which the
    results files do not keep), so this is a rule of thumb, worded as such."""
    if a is None or b is None or not n:
        return False
    return abs(a - b) < noise_band(a, b, n)


def noise_clause(a, b, n) -> str:
    """'net k of n test images, within noise' for a difference inside the noise band; ''
    for a clear difference, a missing value, or a level pair ("level" says it already)."""
    if not is_within_noise(a, b, n) or abs(a - b) < TIE:
        return ""
    return f"net {round(abs(a - b) * n / 100):,} of {n:,} test images, within noise"


def noise_note(pairs, n) -> str:
    """The sentence that explains "within noise" once, for the (a, b) pairs it marked."""
    bands = sorted({round(noise_band(a, b, n), 1) for a, b in pairs if noise_clause(a, b, n)})
    if not bands:
        return ""
    band = f"{bands[0]:.1f}" if len(bands) == 1 else f"{bands[0]:.1f}–{bands[-1]:.1f}"
    return (f"*Within noise*: smaller than two standard errors of one accuracy on {n:,} test "
            f"images ({band} points at these accuracies), so this test set cannot separate the two.")


def versus_each(items, what: str) -> str:
    """Several comparisons (a, b, where) in one phrase; ``what`` is named only once."""
    out = []
    for a, b, where in items:
        if v := versus(a, b, "" if out else what):
            out.append(f"{v} {where}")
    if len(out) < 2:
        return "".join(out)
    return ", ".join(out[:-1]) + " and " + out[-1]


def run_phrase(r: dict | None, name: str) -> str:
    """'the faithful recipe peaked at X% (epoch e of E) and ended at Y%'."""
    if get(r, "best_acc") is None:
        return f"the {name} recipe: {NOT_RUN}"
    return (f"the {name} recipe peaked at {fmt(r['best_acc'])}% (epoch "
            f"{get(r, 'best_epoch')} of {get(r, 'epochs')}) and ended at "
            f"{fmt(get(r, 'final_acc'))}%")


def runs_sentence(res: dict, *path: str) -> str:
    """One sentence covering both recipes of a run pair."""
    return "; ".join(run_phrase(get(res, *path, r), r) for r in RECIPES) + "."


def _final_pairs(res: dict, key: str, other: str):
    return [(get(res, key, r, "final_acc"), get(res, other, r, "final_acc"), r) for r in RECIPES]


def _ties(res: dict, pairs) -> list[str]:
    """The recipes whose difference in ``pairs`` is within noise (level pairs included)."""
    n = get(res, "meta", "test_images")
    return [r for a, b, r in pairs if is_within_noise(a, b, n)]


def noise_sentence(res: dict, pairs) -> str:
    """Which recipes' (non-level) differences the test set cannot separate, or ''."""
    n = get(res, "meta", "test_images")
    close = [(a, b, r) for a, b, r in pairs if noise_clause(a, b, n)]
    if not close:
        return ""
    bands = " and ".join(f"{noise_band(a, b, n):.1f}" for a, b, _ in close)
    which = ("Both differences are" if len(close) == len(pairs) > 1
             else f"The difference with the {close[0][2]} recipe is")
    return (f"{which} smaller than two standard errors of one accuracy on {n:,} test images "
            f"({bands} points), so this test set cannot separate them.")


def compare_runs(res: dict, key: str, other: str, label: str) -> str:
    """Final-accuracy comparison of ``key`` against ``other`` for each recipe, and which
    of the differences are within sampling noise."""
    pairs = _final_pairs(res, key, other)
    phrase = versus_each([(a, b, f"with the {r} recipe") for a, b, r in pairs], label)
    if not phrase:
        return ""
    return join(f"On final accuracy, {question(key)} finished {phrase}.", noise_sentence(res, pairs))


def slash(values, nd: int = 2) -> str:
    """'a/b/c' of formatted values ("not run" for missing ones)."""
    return "/".join(fmt(v, nd) for v in values)


def best_by_bits(res: dict, *path: str) -> str:
    """'a/b/c% (faithful) and d/e/f% (improved) at 4/3/2 bits' for a QAT result key."""
    per = [f"{slash(get(res, *path, b, r, 'best_acc') for b in QAT_BITS)}% ({r})"
           for r in RECIPES]
    return " and ".join(per) + f" at {'/'.join(QAT_BITS)} bits"


def _drop(acc, ref):
    """Points lost from ``ref`` to ``acc`` (None when either is missing)."""
    return None if acc is None or ref is None else ref - acc


def epochs(res: dict, *path: str) -> str:
    """'N epochs of ' from the faithful run record under ``path`` ('' when unknown)."""
    n = get(res, *path, "faithful", "epochs")
    return f"{n} epoch{'' if n == 1 else 's'} of " if n else ""


def trend_words(values, falling: str, not_rising: str, mixed: str) -> str:
    """Wording for a sequence: strictly falling, falling with ties, or neither."""
    pairs = list(zip(values, values[1:]))
    if all(x > y for x, y in pairs):
        return falling
    return not_rising if all(x >= y for x, y in pairs) else mixed


def join(*sentences: str) -> str:
    """Join non-empty sentences into one paragraph."""
    return " ".join(s for s in sentences if s)


# ---------------------------------------------------------------- per-key paragraphs
def _lab2a(res: dict) -> str:
    a = res["lab2a"]
    return (f"The pretrained floating-point ResNet-20 reaches {fmt(a.get('acc'))}% "
            f"(test loss {fmt(a.get('loss'), 4)}) on {test_set(res)}; every later number "
            f"is compared against this reference.")


def _lab2b(res: dict) -> str:
    accs = [get(res, "lab2b", q, "acc") for q in PRUNE_QS]
    known = [a for a in accs if a is not None]
    listing = ", ".join(f"{fmt(a)}% at q = {q} %" for q, a in zip(PRUNE_QS, accs))
    trend = trend_words(known, "Accuracy falls monotonically as more weights are removed",
                        "Accuracy does not rise as more weights are removed",
                        "Accuracy does not fall monotonically with q here")
    base = get(res, "lab2a", "acc")
    drop = (f", and q = 80 % is {versus(accs[2], base, 'the pretrained model')}"
            if accs[2] is not None and base is not None else "")
    return (f"Pruning every layer at its own q-th magnitude percentile, without finetuning, "
            f"gives {listing}. {trend}{drop}: without retraining the remaining weights cannot "
            f"compensate for the removed ones.")


def preserved(zeros: list, ref) -> str:
    """'80.0% (faithful) and 80.0% (improved) zeros vs. 80.0% ..., so ... preserved'."""
    pairs = [(z, r) for z, r in zip(zeros, RECIPES) if z is not None]
    if ref is None or not pairs:
        return ""
    kept = all(abs(z - ref) < ZERO_TOL for z, _ in pairs)
    listing = " and ".join(f"{fmt(z, 1)}% ({r})" for z, r in pairs)
    return (f"{listing} zeros, against {fmt(ref, 1)}% right after pruning, so sparsity was "
            + ("preserved" if kept else "NOT preserved"))


def _lab2c(res: dict) -> str:
    before = get(res, "lab2c", "zeros_before")
    start = get(res, "lab2b", "80", "acc")
    opening = (f"One-shot pruning by q = 80 % zeroed {fmt(before, 1)}% of the pruned layers' "
               f"weights" + (f" and left {fmt(start)}% accuracy" if start is not None else "")
               + ".")
    kept = preserved([get(res, "lab2c", r, "zeros_pct") for r in RECIPES], before)
    return join(opening, f"With {epochs(res, 'lab2c')}masked finetuning, "
                + runs_sentence(res, "lab2c"),
                f"After finetuning the models hold {kept}." if kept else "")


def _lab2d(res: dict) -> str:
    drops = [_drop(get(res, "lab2d", r, "final_acc"), get(res, "lab2c", r, "final_acc"))
             for r in RECIPES]
    drops = [d for d in drops if d is not None]
    if not drops:
        why = ""
    elif len(_ties(res, _final_pairs(res, "lab2d", "lab2c"))) == len(drops):
        why = ("Neither schedule is measurably better here: iterative pruning lets pruned weights "
               "regrow until its last step, but spends fewer of its epochs at the final sparsity "
               "than one-shot pruning.")
    elif all(d <= 0 for d in drops):   # iterative at least as good (a "drop" of <= 0)
        why = ("Weights pruned early may regrow until the last pruning step, so the network "
               "adapts to the sparsity gradually instead of absorbing the whole cut at once.")
    elif all(d > 0 for d in drops):
        why = ("The gradual schedule did not pay off here; note that iterative pruning spends "
               "fewer of its epochs at the final sparsity, while one-shot pruning trains at it "
               "throughout.")
    else:
        why = ("Which schedule ends higher depends on the recipe, so neither is clearly better "
               "here: iterative pruning lets pruned weights regrow until its last step, but "
               "spends fewer of its epochs at the final sparsity than one-shot pruning.")
    return join(f"With iterative pruning over {epochs(res, 'lab2d')}finetuning, "
                + runs_sentence(res, "lab2d"),
                compare_runs(res, "lab2d", "lab2c", "one-shot pruning (Lab 2 (c))"), why)


def layer_spread(lz: dict | None) -> str:
    """How evenly a global threshold spread the zeros over the layers (one sentence)."""
    if not lz:
        return ""
    lo, hi = min(lz, key=lz.get), max(lz, key=lz.get)
    how = "unevenly" if lz[hi] - lz[lo] > 5.0 else "almost evenly"
    return (f"One global threshold spreads the sparsity {how}: per-layer zeros range from "
            f"{fmt(lz[lo], 1)}% ({lo}) to {fmt(lz[hi], 1)}% ({hi}) (faithful recipe).")


def _global(res: dict, key: str, intro: str, other: str, label: str) -> str:
    return join(intro + runs_sentence(res, key), compare_runs(res, key, other, label),
                layer_spread(get(res, key, "faithful", "layer_zeros")))


def _lab2e(res: dict) -> str:
    return _global(res, "lab2e", "With a single global magnitude threshold, ",
                   "lab2d", "layer-wise iterative pruning (Lab 2 (d))")


def _lab3b(res: dict) -> str:
    fp = get(res, "lab3b", "fp")
    accs = {b: get(res, "lab3b", b) for b in ALL_BITS}
    listing = ", ".join(f"{fmt(a)}% at {b} bits" for b, a in accs.items())
    within = [b for b, a in accs.items() if a is not None and fp is not None and fp - a < 1.0]
    lowest = (f"Accuracy stays within 1 point of floating point down to {min(within, key=int)} "
              f"bits" if within else "No bit width stays within 1 point of floating point")
    two = versus(accs["2"], fp, "floating point")
    return (f"Without finetuning the quantized model scores {listing}, against {fmt(fp)}% in "
            f"floating point. {lowest}" + (f"; at 2 bits it is {two}" if two else "") +
            ": each bit removed halves the number of levels, so rounding error grows "
            "quickly at the low end.")


def _lab3c(res: dict) -> str:
    best = {b: get(res, "lab3c", b, "faithful", "best_acc") for b in QAT_BITS}
    gains = versus_each([(best[b], get(res, "lab3b", b), f"at {b} bits") for b in QAT_BITS],
                        "no finetuning")
    known = [best[b] for b in QAT_BITS if best[b] is not None]
    order = trend_words(known, "Fewer bits give lower accuracy even after finetuning",
                        "Fewer bits never give higher accuracy after finetuning",
                        "Accuracy is not monotonic in bit width here")
    return join(f"After {epochs(res, 'lab3c', '4')}quantization-aware finetuning the best "
                f"accuracy is "
                f"{best_by_bits(res, 'lab3c')}.",
                f"With the faithful recipe that is {gains}." if gains else "",
                f"{order}; finetuning lets the float weights move so that their rounded "
                "values fit the data, which matters most where rounding error is largest.")


def _lab3d(res: dict) -> str:
    fp = get(res, "lab3b", "fp")
    starts = []
    for r in RECIPES:
        src = get(res, "lab3d", "sources", r)
        if isinstance(src, dict):
            zeros = get(res, src.get("question"), r, "zeros_pct")
            zeros = f", {fmt(zeros, 1)}% zeros" if zeros is not None else ""
            starts.append(f"the {r} column from {source_label(src)}{zeros} "
                          f"({fmt(get(src, 'acc'))}%)")
    opening = ("Each recipe starts from its own best Lab 2 model: " + "; ".join(starts) + "."
               if starts else "")
    return join(opening, lab3d_coupling(res), _lab3d_zeros(res))


# below this accuracy (%) a 10-class model is near chance (10 %): its drop says nothing
NEAR_CHANCE = 20.0


def _lab3d_drops(res: dict) -> str:
    """How much quantizing without finetuning costs the sparse vs the dense model, and why."""
    fp, start = get(res, "lab3b", "fp"), get(res, "lab3d", "sources", "faithful", "acc")
    parts, smaller, chance = [], False, []
    for b in QAT_BITS:
        after_sparse, after_dense = get(res, "lab3d", b, "before", "faithful"), get(res, "lab3b", b)
        sparse, dense = _drop(after_sparse, start), _drop(after_dense, fp)
        if sparse is None or dense is None:
            continue
        size = above_below(sparse - dense, "a larger", "a smaller", "the same")
        parts.append(f"{fmt(sparse)} points at {b} bits vs. {fmt(dense)} for the dense model ({size} drop)")
        if max(after_sparse, after_dense) < NEAR_CHANCE:
            chance.append(b)
        else:
            smaller |= size == "a smaller"
    if not parts:
        return ""
    src = get(res, "lab3d", "sources", "faithful")
    zeros = get(res, get(src, "question") or "", "faithful", "zeros_pct") if isinstance(src, dict) else None
    pruned = f"pruned {fmt(zeros, 0)}%" if zeros is not None else "pruned weights"
    why = ("Where the sparse model loses less, fewer weights carry rounding error: the "
           f"zero-preserving quantizer keeps the {pruned} exactly zero, and the dense model "
           "must round all of its many small weights." if smaller else "")
    at_chance = (f"At {' and '.join(chance)} bits both models are near chance (10% for ten classes), "
                 "so that comparison says nothing." if chance else "")
    return join("Quantizing without finetuning costs the faithful sparse model " + "; ".join(parts) + ".",
                why, at_chance)


def _lab3d_after(res: dict) -> str:
    """After finetuning: pruned-then-quantized against dense QAT (Lab 3 (c))."""
    pairs = [(get(res, "lab3d", b, "faithful", "best_acc"), get(res, "lab3c", b, "faithful", "best_acc"), b)
             for b in QAT_BITS]
    vs_c = versus_each([(d, c, f"at {b} bits") for d, c, b in pairs], "dense QAT (Lab 3 (c))")
    known = [(d, c, b) for d, c, b in pairs if d is not None and c is not None]
    n = get(res, "meta", "test_images")
    noisy = [is_within_noise(d, c, n) for d, c, _ in known]
    where = ("at every bit width" if len(known) == len(QAT_BITS)
             else f"at {'/'.join(b for _, _, b in known)} bits")
    adds_up = ""
    if known and all(d < c for d, c, _ in known):
        adds_up = (f"After finetuning, pruning and quantizing together end below quantizing alone {where}, "
                   "but by no more than the sampling noise." if all(noisy) else
                   "Once each has been finetuned against its rounding, the two losses add up: pruning and "
                   f"quantizing together end below quantizing alone {where}"
                   + (", though not everywhere by more than the sampling noise." if any(noisy) else "."))
    return join(f"After finetuning the best accuracy is {best_by_bits(res, 'lab3d')}.",
                f"With the faithful recipe (faithful start, faithful finetuning) that is {vs_c}."
                if vs_c else "", adds_up)


def lab3d_coupling(res: dict) -> str:
    """What Lab 3 (d) measured about pruning and quantization together (Problem 1.1)."""
    return join(_lab3d_drops(res), _lab3d_after(res))


def _lab3d_zeros(res: dict) -> str:
    """Did the zero-preserving quantizer keep each start model's sparsity?"""
    sentences = []
    for r in RECIPES:
        src = get(res, "lab3d", "sources", r)
        ref = get(res, get(src, "question") or "", r, "zeros_pct") if isinstance(src, dict) else None
        zs = [z for z in (get(res, "lab3d", b, r, "zeros_pct") for b in QAT_BITS) if z is not None]
        if ref is None or not zs:
            continue
        kept = all(abs(z - ref) < ZERO_TOL for z in zs)
        sentences.append(f"{r}: {'/'.join(fmt(z, 1) for z in zs)}% vs. {fmt(ref, 1)}% in its start "
                         f"model, " + ("preserved" if kept else "NOT preserved"))
    return ("Zeros after finetuning (4/3/2 bits): " + "; ".join(sentences) + "."
            if sentences else "")


def _lab3e(res: dict) -> str:
    pairs = [(get(res, "lab3e", r, "final_acc"), get(res, "lab3d", "4", r, "final_acc"), r) for r in RECIPES]
    phrase = versus_each([(e, d, f"with the {r} recipe") for e, d, r in pairs],
                         "pruning first and quantizing afterwards (Lab 3 (d), 4 bits)")
    return join(_global(res, "lab3e", "With 4-bit QAT during global iterative pruning, ",
                        "lab2e", "full-precision global pruning (Lab 2 (e))"),
                f"It finished {phrase}." if phrase else "",
                noise_sentence(res, pairs) if phrase else "")


def _timing(res: dict) -> str:
    t = res["timing"]
    dense, masked = t.get("dense_epoch_s"), t.get("masked_epoch_s")
    if not dense or masked is None:
        return f"Timing: {NOT_RUN}."
    ratio = masked / dense
    measured = (f"On {t.get('device', 'the device')}, one training epoch took {fmt(dense)} s "
                f"dense and {fmt(masked)} s with pruning masks applied (ratio {fmt(ratio)})")
    if abs(ratio - 1.0) < 0.05:
        return (f"{measured}: masked training is about as fast as dense training, because the "
                f"zeros are still multiplied by the same dense kernels (Problem 1.2).")
    if ratio > 1.0:
        return (f"{measured}: masked training is slower than dense training. Unstructured "
                f"zeros still go through the same dense kernels, and re-applying the masks "
                f"adds work (Problem 1.2).")
    return (f"{measured}: masked training is faster than dense training here. The zeros are "
            f"still multiplied by the same dense kernels, so sparsity does not explain this; "
            f"read it as a measurement effect (warm-up, caching, load) rather than a speed-up.")


def _compression(res: dict) -> str:
    models = get(res, "compression", "models") or {}
    dense = get(res, "compression", "dense_kib")
    done = sorted((get(row, "improved", "kib"), key) for key, row in models.items()
                  if key != "dense" and get(row, "improved", "kib"))
    if not dense or not done:
        return f"Compression: {NOT_RUN}."
    kib, key = done[0]
    row = models[key]
    accs = " / ".join(fmt(get(row, r, "final_acc")) for r in RECIPES)
    per_weight = (1 - 0.8) * 32 + 1  # bits per weight of an 80 %-sparse float layer
    return (f"The dense float model takes {fmt(dense, 1)} KiB. The smallest model, "
            f"{row.get('label', key)}, takes {fmt(kib, 1)} KiB, {fmt(dense / kib, 1)}x less, at "
            f"{accs}% final accuracy (faithful / improved) against "
            f"{fmt(get(res, 'lab2a', 'acc'))}% for the dense model. Unstructured pruning alone "
            f"is limited by the position map: an 80 %-sparse float layer still needs "
            f"{fmt(per_weight, 1)} bits per weight instead of 32, while N-bit quantization "
            f"needs about N; combined, 0.2 N + 1.")


_DISCUSS = {
    "lab2a": _lab2a, "lab2b": _lab2b, "lab2c": _lab2c, "lab2d": _lab2d, "lab2e": _lab2e,
    "lab3b": _lab3b, "lab3c": _lab3c, "lab3d": _lab3d, "lab3e": _lab3e, "timing": _timing,
    "compression": _compression,
}


# True/False problem -> (where in the report, the hw4 measurement its answer cites)
EVIDENCE = {"1.1": ("Lab 3 (d)", "lab3d", lab3d_coupling), "1.2": ("Lab 2 timing, training", "timing", _timing)}


def evidence(results: dict, problem: str) -> str:
    """The hw4 measurements a True/False answer cites ('' when it cites none)."""
    if problem not in EVIDENCE:
        return ""
    where, key, write = EVIDENCE[problem]
    if not get(results or {}, key):
        return f"*Measured on our ResNet-20 ({where}): hw4.ipynb {NOT_RUN}.*"
    banner = f"*{QUICK_BANNER}.* " if is_quick(results) else ""
    return f"*Measured on our ResNet-20 ({where}):* {banner}{write(results)}"


def discussion(results: dict, key: str) -> str:
    """Markdown paragraph discussing ``key``; "<question>: not run." when it is missing."""
    if key not in _DISCUSS:
        raise KeyError(f"no discussion for {key!r}; known: {sorted(_DISCUSS)}")
    results = results or {}
    name = {"timing": "Timing", "compression": "Compression"}.get(key) or question(key)
    if not results.get(key):
        return f"{name}: {NOT_RUN}."
    text = _DISCUSS[key](results)
    return f"*{QUICK_BANNER}.* {text}" if is_quick(results) else text
