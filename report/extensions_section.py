"""The report section of lecture_extensions.ipynb: tables and generated sentences from
``extensions.json`` and the figures ``ext_*.png`` beside it ("not run" where missing).

``table(results, key)`` and ``discussion(results, key)`` are what the notebook shows inline;
``section(results_dir)`` assembles them for the PDF. Every number is read from the results;
comparisons are worded from the sign of the difference, as in ``report.discussion``.
"""
from __future__ import annotations

import re
from pathlib import Path

from report.discussion import NEAR_CHANCE, above_below, join, noise_clause, noise_note, versus
from report.notebook_section import NotebookSection, not_run_table
from report.tables import NOT_RUN, acc_col, caption, fmt, get, md_table

RESULTS_NAME = "extensions.json"
TITLE = "Beyond the homework: what the lectures teach, measured on our ResNet-20"

# key -> (heading, task, tables, figures (name, caption))
SUBSECTIONS = {
    "prune_sensitivity": (
        "Sensitivity of each layer to pruning",
        "One layer at a time pruned by magnitude to 10-90 %, all others dense, no finetuning.",
        ["prune_sensitivity"], [("ext_prune_sensitivity.png", "accuracy with one layer pruned")]),
    "quant_sensitivity": (
        "Sensitivity of each layer to quantization",
        "One residual-block conv at a time quantized by the homework's STE to 2-6 bits.",
        ["quant_sensitivity"], [("ext_quant_sensitivity.png", "accuracy with one layer quantized")]),
    "coarse_fine": (
        "Coarse (filter) vs. fine (element-wise) pruning",
        "L1 filter pruning that removes conv1's output channels in every residual block (a "
        "smaller dense network) against element-wise magnitude pruning of the same number "
        "of weights in each layer, before and after a short finetune.",
        ["coarse_fine_sweep", "coarse_fine"],
        [("ext_coarse_fine.png", "accuracy against weights kept, and CPU time per batch")]),
    "timing": (
        "Measured CPU inference time (evidence for Problem 1.2)",
        "One forward pass of a batch of 256 images on the CPU, median of repeated runs, the "
        "models taking turns.", ["timing"], []),
    "quantizers": (
        "Quantizer families, post-training",
        "Weights of the residual-block convs rounded per tensor or per output channel, to "
        "an asymmetric min/max grid (the homework's STE), a symmetric grid, or power-of-two "
        "levels; no finetuning.", ["quantizers"],
        [("ext_quantizers.png", "accuracy against bits for each quantizer family")]),
    "mixed_precision": (
        "Mixed precision at equal size (evidence for Problem 1.10)",
        "Bits per layer chosen from the quantization sensitivity (loss on training images) "
        "so that the average over all weights equals uniform 3 and 4 bits, against uniform "
        "bits, without and with quantization-aware finetuning.",
        ["mixed_precision", "mixed_alloc"], [("ext_mixed_bits.png", "bits per layer")]),
    "nm": (
        "2:4 sparsity vs. 50 % unstructured",
        "Two of every four consecutive input channels kept (the N:M pattern of sparse "
        "tensor cores) against the 50 % smallest weights of each layer, same layers.",
        ["nm"], []),
    "int8": (
        "int8 inference with PyTorch's own quantization",
        "torch.ao static post-training quantization (FX graph mode, x86 backend), "
        "calibrated on training images, against the float32 model on the CPU.", ["int8"], []),
}


# ---------------------------------------------------------------- helpers
def _ratio(a, b):
    return None if a is None or not b else a / b


def short(name: str) -> str:
    """Layer name for tables and figures: body_op.4.conv1.0.conv -> b4.conv1,
    body_op.3.id_mapping.0 -> b3.shortcut, head_conv.0.conv -> head, final_fc.linear -> fc."""
    name = re.sub(r"body_op\.(\d+)\.(conv\d)\.0(\.conv)?$", r"b\1.\2", name)
    name = re.sub(r"body_op\.(\d+)\.id_mapping\.0(\.conv)?$", r"b\1.shortcut", name)
    return re.sub(r"^head_conv\.0(\.conv)?$", "head", re.sub(r"^final_fc(\.linear)?$", "fc", name))


def _pick(levels: list, wanted=(0.5, 0.7, 0.9)) -> list:
    """The levels shown in the table: 50/70/90 % if scanned, else the last three."""
    return [v for v in levels if v in wanted] or levels[-3:]


def _final(r: dict | None):
    return get(r, "final_acc")


def _epochs(res: dict) -> str:
    for path in (("coarse_fine", "filter"), ("nm", "2:4")):
        n = get(res, *path, "epochs")
        if n:
            return f"{n} epoch{'' if n == 1 else 's'}"
    return "the"


# ---------------------------------------------------------------- tables
def _prune_sensitivity(res: dict) -> str:
    scan, title = get(res, "prune_sensitivity"), "one layer pruned at a time, no finetuning"
    if not scan:
        return not_run_table(res, title, "pruning sensitivity")
    shown = _pick(scan["levels"])
    idx = [scan["levels"].index(v) for v in shown]
    rows = [["(dense)", "", *[fmt(scan["dense_acc"]) for _ in shown]]]
    rows += [[short(n), str(r["weights"]), *[fmt(r["acc"][i]) for i in idx]]
             for n, r in scan["layers"].items()]
    header = ["layer", "weights", *[acc_col(res, f"{round(100 * v)} % pruned") for v in shown]]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _quant_sensitivity(res: dict) -> str:
    scan, title = get(res, "quant_sensitivity"), "one residual-block conv quantized at a time"
    if not scan:
        return not_run_table(res, title, "quantization sensitivity")
    rows = [["(float)", "", *[fmt(scan["dense_acc"]) for _ in scan["bits"]]]]
    rows += [[short(n), str(r["weights"]), *[fmt(a) for a in r["acc"]]]
             for n, r in scan["layers"].items()]
    header = ["layer", "weights", *[acc_col(res, f"{b} bits") for b in scan["bits"]]]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _coarse_fine_sweep(res: dict) -> str:
    cf, title = get(res, "coarse_fine"), "filter vs. element-wise pruning at equal weights, no finetuning"
    if not cf:
        return not_run_table(res, title, "coarse vs. fine pruning")
    dense = cf["dense"]
    rows = [["0 (dense)", str(dense["weights"]), fmt(dense["macs"] / 1e6, 1), fmt(dense["acc"]), fmt(dense["acc"])]]
    rows += [[f"{round(100 * float(f))} %", str(r["weights"]), fmt(r["macs"] / 1e6, 1), fmt(r["filter_acc"]),
              fmt(r["element_acc"])] for f, r in cf["sweep"].items()]
    header = ["inner channels removed", "weights kept", "filter MACs (M)", acc_col(res, "filter"),
              acc_col(res, "element-wise")]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _coarse_fine(res: dict) -> str:
    cf = get(res, "coarse_fine")
    title = (f"filter vs. element-wise pruning ({round(100 * cf['fraction'])} % of inner channels), "
             f"finetuned" if cf else "filter vs. element-wise pruning, finetuned")
    if not cf:
        return not_run_table(res, title, "coarse vs. fine pruning")
    rows = [[label, str(get(cf, k, "nonzero")), fmt(_ratio(get(cf, k, "macs"), 1e6), 1), fmt(get(cf, k, "before")),
             fmt(get(cf, k, "best_acc")), fmt(get(cf, k, "final_acc"))]
            for k, label in (("filter", "filter (smaller dense net)"), ("element", "element-wise (masked)"))]
    header = ["model", "non-zero weights", "MACs executed (M)", acc_col(res, "before"),
              acc_col(res, "best"), acc_col(res, "final")]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _timing(res: dict) -> str:
    t, title = get(res, "timing"), "CPU inference time per batch"
    if not t:
        return not_run_table(res, title, "CPU timing")
    dense = get(t, "dense", "median_ms")
    rows = [[name, str(r["weights"]), str(r["nonzero"]), fmt(r["macs"] / 1e6, 1), fmt(r["median_ms"], 1),
             fmt(r["images_per_s"], 0), fmt(_ratio(r["median_ms"], dense))] for name, r in t.items()]
    first = next(iter(t.values()))
    header = ["model", "weights", "non-zero", "MACs (M)", f"ms per batch of {first['batch']} (median)",
              "images/s", "time vs. dense"]
    note = f" ({first['threads']} threads, median of {first['repeats']} runs)"
    return f"{caption(res, title + note, accuracy=False)}\n\n{md_table(header, rows)}\n"


def _quantizers(res: dict) -> str:
    q, title = get(res, "quantizers"), "quantizer families, post-training (residual-block convs)"
    if not q:
        return not_run_table(res, title, "quantizer families")
    rows = [[name, *[fmt(a) for a in r["acc"]]] for name, r in q["families"].items()]
    rows.append(["float (no quantization)", *[fmt(q["dense_acc"]) for _ in q["bits"]]])
    header = ["family", *[acc_col(res, f"{b} bits") for b in q["bits"]]]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _mixed_precision(res: dict) -> str:
    mp, title = get(res, "mixed_precision"), "mixed vs. uniform precision at the same average bits"
    if not mp:
        return not_run_table(res, title, "mixed precision")
    rows = []
    for t, r in mp["targets"].items():
        for k in ("uniform", "mixed"):
            bits = t if k == "uniform" else fmt(r["avg_bits"])
            rows.append([f"{k} {t}-bit" if k == "uniform" else f"mixed, average {t} bits", bits,
                         fmt(get(r, "kib", k), 1), fmt(get(r, "ptq", k)),
                         fmt(get(r, "qat", k, "best_acc")), fmt(get(r, "qat", k, "final_acc"))])
    header = ["model", "average bits", "size (KiB)", acc_col(res, "no finetune"), acc_col(res, "QAT best"),
              acc_col(res, "QAT final")]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _mixed_alloc(res: dict) -> str:
    mp, title = get(res, "mixed_precision"), "bits per layer of the mixed-precision models"
    if not mp:
        return not_run_table(res, title, "mixed precision")
    targets = list(mp["targets"])
    rows = [[short(n), str(size), *[str(mp["targets"][t]["alloc"][n]) for t in targets]]
            for n, size in mp["sizes"].items()]
    header = ["layer", "weights", *[f"bits (average {t})" for t in targets]]
    return f"*Table: {title}.*\n\n{md_table(header, rows)}\n"


def _nm(res: dict) -> str:
    nm, title = get(res, "nm"), "2:4 vs. 50 % unstructured sparsity"
    if not nm:
        return not_run_table(res, title, "N:M sparsity")
    rows = [["dense", "0.0", fmt(nm["dense_acc"]), "", ""]]
    rows += [[k, fmt(get(nm, k, "zeros_pct"), 1), fmt(get(nm, k, "before")), fmt(get(nm, k, "best_acc")),
              fmt(get(nm, k, "final_acc"))] for k in ("2:4", "unstructured")]
    header = ["pattern", "zeros (%)", acc_col(res, "before"), acc_col(res, "best"), acc_col(res, "final")]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _int8(res: dict) -> str:
    q, title = get(res, "int8"), "float32 vs. torch.ao int8 on the CPU"
    if not q:
        return not_run_table(res, title, "int8 inference")
    rows = [[k, fmt(get(q, k, "kib"), 1), fmt(get(q, k, "acc")), fmt(get(q, k, "median_ms"), 1),
             fmt(get(q, k, "images_per_s"), 0)] for k in ("float32", "int8")]
    header = ["model", "file size (KiB)", acc_col(res), f"ms per batch of {get(q, 'int8', 'batch')} (median)",
              "images/s"]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


_TABLES = {"prune_sensitivity": _prune_sensitivity, "quant_sensitivity": _quant_sensitivity,
           "coarse_fine_sweep": _coarse_fine_sweep, "coarse_fine": _coarse_fine, "timing": _timing,
           "quantizers": _quantizers, "mixed_precision": _mixed_precision, "mixed_alloc": _mixed_alloc,
           "nm": _nm, "int8": _int8}


# ---------------------------------------------------------------- discussion
def _extremes(scan: dict, col: int):
    """(most sensitive layer, its acc), (least sensitive layer, its acc) at column `col`."""
    accs = {n: r["acc"][col] for n, r in scan["layers"].items()}
    lo, hi = min(accs, key=accs.get), max(accs, key=accs.get)
    return (lo, accs[lo]), (hi, accs[hi]), accs


def _sensitivity(scan: dict, col: int, setting: str, mid: int, mid_setting: str,
                 single: str = "a single rate") -> str:
    (worst, a_w), (best, a_b), _ = _extremes(scan, col)
    dense = scan["dense_acc"]
    within = sum(abs(dense - r["acc"][mid]) <= 1 for r in scan["layers"].values())
    spread = a_b - a_w
    return join(f"With one layer {setting} and the rest untouched, the most sensitive layer is "
                f"{short(worst)} ({fmt(a_w)}%, {versus(a_w, dense, 'the unmodified model')}) and the "
                f"least sensitive {short(best)} ({fmt(a_b)}%).",
                f"At {mid_setting}, {within} of {len(scan['layers'])} layers stay within 1 point of "
                f"{fmt(dense)}%.",
                f"Layers differ by {fmt(spread)} points at {setting.split(' to ')[-1]}: "
                + (f"{single} for every layer wastes accuracy on the sensitive ones." if spread > 5
                   else f"here {single} for every layer loses little."))


def _d_prune_sensitivity(res: dict) -> str:
    scan = res["prune_sensitivity"]
    levels = scan["levels"]
    mid = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
    return _sensitivity(scan, len(levels) - 1, f"pruned to {round(100 * levels[-1])} %", mid,
                        f"{round(100 * levels[mid])} % pruned")


def _d_quant_sensitivity(res: dict) -> str:
    scan = res["quant_sensitivity"]
    bits = scan["bits"]
    low = bits.index(min(bits))
    mid = min(range(len(bits)), key=lambda i: abs(bits[i] - 3))
    return _sensitivity(scan, low, f"quantized to {bits[low]} bits", mid, f"{bits[mid]} bits",
                        single="a single bit width")


def _d_coarse_fine(res: dict) -> str:
    cf = res["coarse_fine"]
    f, d = cf["fraction"], cf["dense"]
    filt, elem = cf.get("filter", {}), cf.get("element", {})
    size = (f"Removing {round(100 * f)} % of the inner channels of every residual block keeps "
            f"{filt.get('weights')} of {d['weights']} weights and {fmt(_ratio(filt.get('macs'), 1e6), 1)} of "
            f"{fmt(d['macs'] / 1e6, 1)} M MACs per image.")
    before = (f"Before finetuning the filter-pruned network reached {fmt(filt.get('before'))}%, "
              f"{versus(filt.get('before'), elem.get('before'), 'element-wise pruning of the same weights')} "
              f"({fmt(elem.get('before'))}%)")
    ff, fe = _final(filt), _final(elem)
    if ff is None or fe is None:
        return join(size, before + ".")
    after = (f"; after {_epochs(res)} of finetuning it ended at {fmt(ff)}%, "
             f"{versus(ff, fe, 'element-wise')} ({fmt(fe)}%).")
    why = ("Element-wise pruning keeps the largest weights wherever they are; filter pruning must drop "
           "whole filters, large weights included." if ff < fe
           else "Here the smaller dense network recovered at least as well as the masked one.")
    return join(size, before + after, why)


def _speed_words(ratio) -> str:
    if ratio is None:
        return NOT_RUN
    if abs(ratio - 1) < 0.1:
        return f"{fmt(ratio)}x the dense time, i.e. no faster"
    return f"{fmt(ratio)}x the dense time: {'faster' if ratio < 1 else 'slower'}"


def _d_timing(res: dict) -> str:
    t = res["timing"]
    dense, elem, filt = (t.get(k, {}) for k in ("dense", "element-wise", "filter"))
    r_e, r_f = _ratio(elem.get("median_ms"), dense.get("median_ms")), _ratio(filt.get("median_ms"), dense.get("median_ms"))
    zeros = 100 * (1 - elem.get("nonzero", 0) / elem["weights"]) if elem.get("weights") else None
    verdict = ("Zeros inside dense tensors are multiplied like any other weight, so element-wise "
               "pruning alone does not make a general-purpose processor faster; removing them from "
               "the shapes does." if r_e is not None and r_f is not None and r_e > 0.9 and r_f < r_e
               else "The measurement does not show the expected pattern (element-wise no faster, "
                    "filter-pruned faster); see the table.")
    return join(f"On the CPU the dense model took {fmt(dense.get('median_ms'), 1)} ms per batch of "
                f"{dense.get('batch')}; the element-wise-pruned model, with {fmt(zeros, 1)}% of its weights "
                f"zero, took {fmt(elem.get('median_ms'), 1)} ms ({_speed_words(r_e)}); the filter-pruned "
                f"model, with {fmt(_ratio(filt.get('macs'), dense.get('macs')))}x the MACs, took "
                f"{fmt(filt.get('median_ms'), 1)} ms ({_speed_words(r_f)}).", verdict)


def _d_quantizers(res: dict) -> str:
    q = res["quantizers"]
    bits, fams, dense = q["bits"], q["families"], q["dense_acc"]
    top, low = bits.index(max(bits)), bits.index(min(bits))
    worst = max(dense - r["acc"][top] for r in fams.values())
    at = bits.index(4) if 4 in bits else low
    acc = {n: r["acc"][at] for n, r in fams.items()}
    best_low = max(fams, key=lambda n: fams[n]["acc"][low])
    pow2 = fams["per-tensor power-of-two"]["acc"]
    plateau = (f"Power-of-two levels gain {fmt(pow2[top] - pow2[at])} points from {bits[at]} to {bits[top]} "
               f"bits: more exponents only add tiny levels, neighbouring levels stay a factor of two apart."
               if top != at and abs(pow2[top] - pow2[at]) < 1 else "")
    close = [n for n, r in fams.items() if dense - r["acc"][top] <= 1]
    far = [n for n in fams if n not in close]
    at_top = (f"At {bits[top]} bits every family is within {fmt(max(worst, 0))} points of the float model ({fmt(dense)}%)"
              + (f"; all but {' and '.join(far)} are within 1 point." if far and close else "."))
    lowest = max(r["acc"][low] for r in fams.values())
    at_low = (f"At {bits[low]} bits every family is near chance (10% for ten classes; the best reaches "
              f"{fmt(lowest)}%)." if lowest < NEAR_CHANCE
              else f"At {bits[low]} bits the best family is {best_low} ({fmt(fams[best_low]['acc'][low])}%).")
    return join(
        at_top,
        f"At {bits[at]} bits per-channel scales give {fmt(acc['per-channel asymmetric'])}%, "
        f"{versus(acc['per-channel asymmetric'], acc['per-tensor asymmetric'], 'per-tensor scales')} "
        f"(asymmetric, the homework's grid); symmetric grids give {fmt(acc['per-tensor symmetric'])}/"
        f"{fmt(acc['per-channel symmetric'])}% and power-of-two levels {fmt(acc['per-tensor power-of-two'])}/"
        f"{fmt(acc['per-channel power-of-two'])}% (per tensor/per channel).",
        at_low, plateau)


def _noise(a, b, res: dict) -> str:
    """'' or '; net k of n test images, within noise' for a comparison of a and b."""
    clause = noise_clause(a, b, get(res, "meta", "test_images"))
    return f"; {clause}" if clause else ""


def _noise_note(res: dict, pairs) -> str:
    return noise_note([(a, b) for a, b in pairs if a is not None and b is not None],
                      get(res, "meta", "test_images"))


def _qat_recipe_sentence(res: dict) -> str:
    """The recipe of the quantization-aware finetunes, when the results record it and all
    of them ran the same number of epochs."""
    r = get(res, "meta", "ext_qat_recipe")
    runs = [q for t in (get(res, "mixed_precision", "targets") or {}).values()
            for q in (get(t, "qat") or {}).values()]
    epochs = {q.get("epochs") for q in runs}
    if not r or len(epochs) != 1 or None in epochs:
        return ""
    source = get(res, "meta", "ext_qat_recipe_source") or "the recipe recorded in the results"
    return (f"Every quantization-aware finetune (uniform and mixed alike) ran {epochs.pop()} epochs "
            f"from lr {r['lr']:g} ({r['schedule']} schedule, distillation weight {r['distill']:g}): "
            f"{source}.")


def _d_mixed_precision(res: dict) -> str:
    mp = res["mixed_precision"]
    sentences, pairs = [], []
    for t, r in mp["targets"].items():
        m, u = get(r, "ptq", "mixed"), get(r, "ptq", "uniform")
        qm, qu = get(r, "qat", "mixed", "final_acc"), get(r, "qat", "uniform", "final_acc")
        pairs += [(m, u), (qm, qu)]
        alloc = r["alloc"].values()
        sentences.append(
            f"At an average of {fmt(r['avg_bits'])} bits per weight, the size of uniform {t}-bit "
            f"({fmt(get(r, 'kib', 'mixed'), 1)} vs. {fmt(get(r, 'kib', 'uniform'), 1)} KiB), the allocation from the sensitivity "
            f"scan ({min(alloc)} to {max(alloc)} bits per layer) reached {fmt(m)}% without finetuning, "
            f"{versus(m, u, f'uniform {t}-bit')} ({fmt(u)}%{_noise(m, u, res)})"
            + (f"; after quantization-aware finetuning it ended at {fmt(qm)}%, {versus(qm, qu, 'uniform')} "
               f"({fmt(qu)}%{_noise(qm, qu, res)})." if qm is not None and qu is not None else "."))
    return join(*sentences, _qat_recipe_sentence(res), _noise_note(res, pairs))


def _d_nm(res: dict) -> str:
    nm = res["nm"]
    a, b = nm.get("2:4", {}), nm.get("unstructured", {})
    after = (_final(a), _final(b))
    return join(
        f"With {fmt(a.get('zeros_pct'), 1)}% zeros in the same layers, the 2:4 pattern reached "
        f"{fmt(a.get('before'))}% before finetuning, {versus(a.get('before'), b.get('before'), 'unstructured pruning')} "
        f"({fmt(b.get('before'))}%), and {fmt(after[0])}% after finetuning, "
        f"{versus(*after, 'unstructured')} ({fmt(after[1])}%{_noise(*after, res)}).",
        "The constraint (two of every four consecutive input channels) is what sparse tensor cores "
        "(NVIDIA Ampere and later) execute at up to twice the dense rate; that speed is not measured here "
        "(CPU only).", _noise_note(res, [after]))


def _speedup_words(speed) -> str:
    """'4.1x faster' / '1.3x slower' / 'the same speed' for a time ratio old/new."""
    if speed is None or speed <= 0:
        return NOT_RUN
    factor = max(speed, 1 / speed)
    if round(factor, 1) == 1.0:       # "1.0x faster" would say nothing
        return "the same speed"
    return f"{fmt(factor, 1)}x {'faster' if speed > 1 else 'slower'}"


def _d_int8(res: dict) -> str:
    q = res["int8"]
    f, i = q.get("float32", {}), q.get("int8", {})
    speed = _ratio(f.get("median_ms"), i.get("median_ms"))
    return join(
        f"torch.ao's int8 model (x86 backend, calibrated on {q.get('calib_images')} training images) "
        f"takes {fmt(i.get('kib'), 1)} KiB on disk against {fmt(f.get('kib'), 1)} KiB in float32 "
        f"({fmt(_ratio(f.get('kib'), i.get('kib')), 1)}x smaller; both are torch.save files of the "
        "state dict, container and quantization parameters included).",
        f"It ran a batch of {i.get('batch')} in {fmt(i.get('median_ms'), 1)} ms against "
        f"{fmt(f.get('median_ms'), 1)} ms ({_speedup_words(speed)}) and reached "
        f"{fmt(i.get('acc'))}%, {versus(i.get('acc'), f.get('acc'), 'float32')} ({fmt(f.get('acc'))}%).")


_DISCUSSIONS = {"prune_sensitivity": _d_prune_sensitivity, "quant_sensitivity": _d_quant_sensitivity,
                "coarse_fine": _d_coarse_fine, "timing": _d_timing, "quantizers": _d_quantizers,
                "mixed_precision": _d_mixed_precision, "nm": _d_nm, "int8": _d_int8}


# ---------------------------------------------------------------- section
# True/False problem -> the subsection whose measurements its answer cites
EVIDENCE = {"1.2": ("timing", "CPU inference time"), "1.10": ("mixed_precision", "mixed precision")}


def evidence(results: dict, problem: str) -> str:
    """The measured sentences a True/False answer cites, or a line saying they are not run."""
    key, label = EVIDENCE[problem]
    where = f"section 6, {label}"
    if not get(results or {}, key):
        return f"*Measured on our ResNet-20 ({where}): lecture_extensions.ipynb {NOT_RUN}.*"
    return f"*Measured on our ResNet-20 ({where}):* {discussion(results, key)}"


SECTION = NotebookSection("lecture_extensions.ipynb", RESULTS_NAME, TITLE, SUBSECTIONS, _TABLES,
                          {key: (write, key) for key, write in _DISCUSSIONS.items()})
table, discussion, load = SECTION.table, SECTION.discussion, SECTION.load


def section(results_dir: Path, out_dir: Path | None = None, number: int = 6) -> str:
    """Section 6 of the report (see ``NotebookSection.section``)."""
    return SECTION.section(results_dir, out_dir, number)
