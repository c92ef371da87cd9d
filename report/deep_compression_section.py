"""The report section of deep_compression.ipynb: tables and generated sentences from
``deep_compression.json`` and the figures ``dc_*.png`` beside it ("not run" where missing).

``table(results, key)`` and ``discussion(results, key)`` are what the notebook shows inline;
``section(results_dir)`` assembles them for the PDF. Every number is read from the results;
comparisons are worded from the sign of the difference, as in ``report.discussion``.
"""
from __future__ import annotations

from pathlib import Path

from report.discussion import join, versus
from report.extensions_section import short
from report.notebook_section import NotebookSection, not_run_table
from report.tables import NOT_RUN, acc_col, caption, fmt, get, md_table

RESULTS_NAME = "deep_compression.json"
TITLE = "Deep Compression: pruning, trained quantization and Huffman coding, to a real file"

# key -> (heading, task, tables, figures (name, caption)); the discussion uses the same key
SUBSECTIONS = {
    "prune": (
        "Pruning by standard deviation",
        "Every conv (except the 1x1 shortcuts) and the FC pruned where |w| < s x std of the layer, "
        "s = 0, 0.25, 0.5, 1.0, from the dense model; then retrained with the pruned weights held at zero.",
        ["prune", "prune_layers"], [("dc_prune_layers.png", "zeros per layer after pruning, no retraining")]),
    "kmeans": (
        "K-means weight sharing without finetuning",
        "The non-zero weights of each layer of the retrained s = 1 model clustered into 2^bits "
        "centroids (zeros stay zero), from linear, k-means++ and random initial centroids.",
        ["kmeans"], [("dc_kmeans.png", "accuracy and quantization error against bits"),
                     ("dc_histograms.png", "weights before and after K-means")]),
    "huffman": (
        "Huffman coding",
        "Canonical Huffman codes of each layer's cluster indices at 5 bits and of the gaps between "
        "its non-zero positions (relative indexing, filler symbols for long gaps). The Deep Compression "
        "assignment's compression-rate formula, called the index-only formula below, counts only the "
        "Huffman-coded cluster indices of the non-zero weights: it ignores their positions, the "
        "codebooks and batch norm.",
        ["huffman"], [("dc_huffman.png", "bits per non-zero weight, per layer")]),
    "final": (
        "The whole pipeline, to a file",
        "Pruning steps beyond s = 1 (s x the dense std, each retrained), K-means at several bits, "
        "trained quantization of the centroids, float16 batch norm, Huffman coding, written to one "
        "file and read back into a plain ResNet-20; the index-only formula's ratio beside the real file's. "
        "How far to prune and which candidate to keep is decided on training images held out of every "
        "retraining (validation), against the dense model retrained the same way (s = 0); the test "
        "images only measure the result.",
        ["pipeline", "final", "bytes"], [("dc_pipeline.png", "candidates: file ratio against accuracy"),
                                         ("dc_bytes.png", "where the bytes of the file go")]),
}


# ---------------------------------------------------------------- helpers
def _kib(n) -> str:
    return fmt(None if n is None else n / 1024, 1)


def _ratio(x) -> str:
    return "not run" if x is None else f"{fmt(x, 1)}x"


def _epochs(n) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _s_sorted(d: dict) -> list:
    return sorted(d, key=float)


# ---------------------------------------------------------------- tables
def _prune(res: dict) -> str:
    p, title = get(res, "prune_std"), "pruning by s x std, before and after masked retraining"
    if not p:
        return not_run_table(res, title, "pruning by standard deviation")
    rows = []
    for s in _s_sorted(p):
        r = get(res, "retrain", s)
        rows.append([s, fmt(p[s]["zeros_pct"]), fmt(p[s]["acc"]),
                     fmt(get(r, "best_acc")) if r else "not retrained", fmt(get(r, "final_acc")) if r else "",
                     fmt(get(r, "val_acc")) if r else "", str(get(r, "epochs") or "")])
    header = ["s", "zeros (%)", acc_col(res, "no retraining"), acc_col(res, "retrained, best"),
              acc_col(res, "retrained, final"), "validation, final (%)", "epochs"]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _prune_layers(res: dict) -> str:
    p, title = get(res, "prune_std"), "zeros (%) per layer after pruning by s x std"
    if not p:
        return not_run_table(res, title, "pruning by standard deviation")
    ss = [s for s in _s_sorted(p) if float(s) > 0]
    layers = list(p[ss[0]]["layer_zeros"]) if ss else []
    rows = [[short(n), *[fmt(p[s]["layer_zeros"][n], 1) for s in ss]] for n in layers]
    return f"*Table: {title}.*\n\n{md_table(['layer', *[f's = {s}' for s in ss]], rows)}\n"


def _kmeans(res: dict) -> str:
    k, title = get(res, "kmeans"), "K-means weight sharing without finetuning"
    if not k:
        return not_run_table(res, title, "K-means")
    bits = [str(b) for b in k["bits"]]
    rows = [[f"{init}: accuracy", *[fmt(get(r, b, "acc")) for b in bits]] for init, r in k["inits"].items()]
    rows += [[f"{init}: MSE", *[f"{get(r, b, 'mse'):.2e}" if get(r, b, "mse") is not None else NOT_RUN
                               for b in bits]] for init, r in k["inits"].items()]
    rows.append(["float (pruned, retrained): accuracy", *[fmt(k["float_acc"]) for _ in bits]])
    header = ["initialisation", *[f"{b} bits" for b in bits]]
    return f"{caption(res, title + ' (MSE: mean squared error of the non-zero weights)')}\n\n{md_table(header, rows)}\n"


def _huffman(res: dict) -> str:
    h = get(res, "huffman")
    title = f"Huffman coding at {get(h, 'bits') or '?'} bits, bits per non-zero weight"
    if not h:
        return not_run_table(res, title, "Huffman coding")
    rows = [[short(n), str(s["nonzero"]), str(s["clusters"]), fmt(s["index_bits"]), fmt(s["index_entropy"]),
             fmt(s["gap_bits"]), str(s["max_gap"]), str(s["fillers"])] for n, s in h["layers"].items()]
    rows.append(["all layers", str(h["nonzero"]), "", fmt(h["index_bits"]), fmt(h["index_entropy"]),
                 fmt(h["gap_bits"]), "", str(sum(s["fillers"] for s in h["layers"].values()))])
    header = ["layer", "non-zero", "clusters", "index bits (Huffman)", "index entropy", "position bits",
              "max gap", "fillers"]
    return f"*Table: {title}.*\n\n{md_table(header, rows)}\n"


def _attempt_of(res: dict):
    """{(model, bits): the pipeline's trained-quantization attempt of that candidate}."""
    return {(a["model"], a["bits"]): a for a in get(res, "pipeline", "attempts") or []}


def _pipeline(res: dict) -> str:
    p, title = get(res, "pipeline"), "candidates, by file ratio (trained: after trained quantization)"
    if not p:
        return not_run_table(res, title, "the pipeline")
    trained = _attempt_of(res)
    kept_ratio = get(res, "final", "ratio_file")
    rows = []
    for c in p["candidates"]:
        a = trained.get((c["model"], c["bits"]))
        untrained = ("skipped" if c.get("skipped") else "not needed"
                     if kept_ratio is not None and c["ratio_file"] < kept_ratio else "not trained")
        rows.append([c["model"], fmt(c["zeros_pct"], 1), str(c["bits"]), fmt(c["float_acc"]), fmt(c["kmeans_acc"]),
                     fmt(a["compressed_acc"]) if a else untrained, fmt(c.get("kmeans_val_acc")),
                     fmt(a.get("compressed_val_acc")) if a else untrained,
                     _ratio(c["ratio_formula"]), _ratio(c["ratio_file"]), _kib(c["file_bytes"])])
    header = ["pruned model", "zeros (%)", "bits", acc_col(res, "float"), acc_col(res, "K-means"),
              acc_col(res, "trained"), "K-means, validation (%)", "trained, validation (%)",
              "ratio (index-only formula)", "ratio (file)", "file (KiB)"]
    note = _untrained_note(res, {cell for row in rows for cell in row})
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n" + (f"\n{note}\n" if note else "")


def _points(x, digits=None) -> str:
    """'1.0 point', '3 points': a settings value in points (`digits` decimals, else as set)."""
    return f"{fmt(x, digits) if digits is not None else f'{x:g}'} point{'' if x == 1 else 's'}"


def _max_drop(res: dict) -> float:
    """The accuracy a compressed model may lose, in points (the settings' max_drop)."""
    return get(res, "meta", "dc_settings", "max_drop") or 1.0


def _recoverable(res: dict, target=None) -> str:
    """'more than 3 points below the target' (the screen's threshold, from the settings;
    with the validation target's value when given)."""
    r = get(res, "meta", "dc_settings", "recoverable")
    where = "the target" if target is None else f"the validation target ({fmt(target)}%)"
    return f"more than {_points(r)} below {where}" if r is not None else f"far below {where}"


def _untrained_note(res: dict, cells: set) -> str:
    """What "skipped" and "not trained" in the candidates table mean (only those that occur)."""
    runs = get(res, "meta", "dc_settings", "max_quant_runs")
    budget = f" ({runs} run{'' if runs == 1 else 's'})" if runs is not None else ""
    notes = []
    if "skipped" in cells:
        notes.append(f"*skipped*: screened out and not trained, because its K-means accuracy on the validation "
                     f"images was {_recoverable(res)} (the target: at most {_points(_max_drop(res), 1)} below "
                     f"the dense model retrained the same way, s = 0)")
    if "not needed" in cells:
        notes.append("*not needed*: passed that screen, but a candidate of higher file ratio kept the target")
    if "not trained" in cells:
        notes.append(f"*not trained*: passed that screen, but the budget of trained quantizations{budget} "
                     f"was used up before its turn")
    return "; ".join(notes) + "." if notes else ""


def _final(res: dict) -> str:
    f, title = get(res, "final"), "the dense model and the decoded file, side by side"
    if not f:
        return not_run_table(res, title, "the compressed file")
    rows = [["dense float32 (state dict)", fmt(f["dense_acc"]), str(f["dense_bytes"]), "1.0x", "1.0x"],
            [f"file {Path(f['file']).name}: {f['model']}, {f['bits']} bits, {fmt(f['zeros_pct'], 1)} % zeros",
             fmt(f["final_acc"]), str(f["file_bytes"]), _ratio(f["ratio_formula"]), _ratio(f["ratio_file"])]]
    header = ["model", acc_col(res), "bytes", "ratio (index-only formula)", "ratio (file)"]
    return f"{caption(res, title)}\n\n{md_table(header, rows)}\n"


def _bytes(res: dict) -> str:
    f, title = get(res, "final"), "where the bytes of the compressed file go"
    if not f:
        return not_run_table(res, title, "the compressed file")
    total = f["file_bytes"]
    parts = sorted(f["bytes"].items(), key=lambda kv: -kv[1])
    rows = [[name, str(n), fmt(100 * n / total, 1)] for name, n in parts]
    rows.append(["file", str(total), "100.0"])
    return f"*Table: {title}.*\n\n{md_table(['part', 'bytes', '% of file'], rows)}\n"


TABLES = {"prune": _prune, "prune_layers": _prune_layers, "kmeans": _kmeans, "huffman": _huffman,
          "pipeline": _pipeline, "final": _final, "bytes": _bytes}


# ---------------------------------------------------------------- discussion
def _d_prune(res: dict) -> str:
    p, retrain, dense = res["prune_std"], res.get("retrain", {}), get(res, "dense", "acc")
    ss = [s for s in _s_sorted(p) if float(s) > 0]
    top = ss[-1]
    lz = p[top]["layer_zeros"]
    most, least = max(lz, key=lz.get), min(lz, key=lz.get)
    sentences = [
        f"Without retraining, s = {'/'.join(ss)} zeroed {'/'.join(fmt(p[s]['zeros_pct'], 1) for s in ss)}% of the "
        f"pruned weights and left {'/'.join(fmt(p[s]['acc']) for s in ss)}% accuracy "
        f"(dense {fmt(dense)}%).",
        f"At s = {top} the layers range from {fmt(lz[least], 1)}% zeros ({short(least)}) to {fmt(lz[most], 1)}% "
        f"({short(most)}): the threshold follows each layer's own spread, so the sparsity is unstructured and "
        f"differs by layer."]
    if get(retrain, top, "final_acc") is not None:
        r = retrain[top]
        sentences.append(f"Masked retraining for {_epochs(r['epochs'])} brought s = {top} back to "
                         f"{fmt(r['final_acc'])}% (final epoch), {versus(r['final_acc'], dense, 'the dense model')}.")
    return join(*sentences)


def _d_kmeans(res: dict) -> str:
    k = res["kmeans"]
    bits, inits = [str(b) for b in k["bits"]], k["inits"]
    low = min(bits, key=int)
    acc = {i: get(r, low, "acc") for i, r in inits.items()}
    mse = {i: get(r, low, "mse") for i, r in inits.items()}
    best_acc, best_mse = max(acc, key=acc.get), min(mse, key=mse.get)
    lin = inits.get("linear", {})
    why = ("As Han et al. argue, linear initialisation keeps centroids in the tails, where the few large "
           "weights live, while random and k-means++ follow the density and crowd them near zero, which "
           "lowers the squared error more than it helps accuracy." if best_acc == "linear" and best_mse != "linear"
           else f"Han et al. prefer linear initialisation for keeping centroids in the tails; on this model "
                f"{best_acc} is at least as accurate at {low} bits." if best_acc != "linear" else "")
    return join(
        f"Without finetuning, linear initialisation keeps {'/'.join(fmt(get(lin, b, 'acc')) for b in bits)}% at "
        f"{'/'.join(bits)} bits, against {fmt(k['float_acc'])}% for the float model it quantizes.",
        f"At {low} bits the most accurate initialisation is {best_acc} ({fmt(acc[best_acc])}%) and the smallest "
        f"squared error comes from {best_mse}"
        + (" too." if best_acc == best_mse else ": error and accuracy do not rank the initialisations alike."),
        why)


def _d_huffman(res: dict) -> str:
    h = res["huffman"]
    saved = 100 * (1 - h["index_bits"] / h["bits"])
    lay = h["layers"]
    lo, hi = min(lay, key=lambda n: lay[n]["index_bits"]), max(lay, key=lambda n: lay[n]["index_bits"])
    return join(
        f"At {h['bits']} bits, Huffman coding stores a cluster index in {fmt(h['index_bits'])} bits on average "
        f"({fmt(saved, 1)}% less than fixed length; the entropy bound is {fmt(h['index_entropy'])} bits).",
        f"Per layer it ranges from {fmt(lay[lo]['index_bits'])} ({short(lo)}) to {fmt(lay[hi]['index_bits'])} bits "
        f"({short(hi)}).",
        f"Where the non-zero weights are costs another {fmt(h['gap_bits'])} bits each (Huffman-coded gaps), "
        f"which the index-only formula leaves out.")


def _d_final(res: dict) -> str:
    f = res["final"]
    parts, total = f["bytes"], f["file_bytes"]
    share = lambda name: fmt(100 * parts.get(name, 0) / total, 1)
    verdict = (("within" if f["target_met"] else "short of")
               + f" the target of at most {_points(_max_drop(res), 1)} below the dense model")
    chosen_on = (f"It was chosen on {res['meta']['validation_label']}: {fmt(f.get('val_acc'))}% there against "
                 f"{fmt(f.get('reference_val_acc'))}% for the dense model retrained the same way."
                 if get(res, "meta", "validation_label") and f.get("val_acc") is not None else "")
    return join(
        f"The file ({total} bytes: {f['model']}, {f['bits']} bits, {fmt(f['zeros_pct'], 1)}% zeros) decodes to "
        f"{fmt(f['final_acc'])}%, {versus(f['final_acc'], f['dense_acc'], 'the dense model')}, {verdict}.",
        f"It is {fmt(f['ratio_file'], 1)}x smaller than the float32 state dict; the index-only formula says "
        f"{fmt(f['ratio_formula'], 1)}x because it counts only the Huffman-coded indices.",
        f"Indices take {share('indices')}% of the file, positions {share('positions')}%, batch norm "
        f"{share('batch norm')}%, codebooks and Huffman tables "
        f"{fmt(100 * (parts.get('codebooks', 0) + parts.get('huffman tables', 0)) / total, 1)}%.", chosen_on,
        _screen_overruled(res), _why_not_smaller(res))


def _screen_overruled(res: dict) -> str:
    """Sentences when the kept candidate is one the K-means screen had skipped, told from
    why the pipeline trained it (the attempt's "why")."""
    f, p = res["final"], get(res, "pipeline") or {}
    key = (f["model"], f["bits"])
    kept = next((c for c in p.get("candidates", []) if (c["model"], c["bits"]) == key and c.get("skipped")), None)
    if kept is None:
        return ""
    why = _attempt_of(res).get(key, {}).get("why")
    first = next((a for a in p.get("attempts", []) if a.get("why") == "queue"), None)
    name = (f"the {first['bits']}-bit candidate" if first and first["model"] == f["model"]
            else f"the {first['model']} {first['bits']}-bit candidate" if first else "another candidate")
    how = {"leftover": f"A trained-quantization run was left after {name} passed; trained on it, the",
           "fallback": "No candidate passed the screen, so the best of them was trained anyway: the"
           }.get(why, "Trained anyway, the")
    ref = f.get("reference_val_acc")
    return join(
        f"K-means alone left this candidate at {fmt(kept.get('kmeans_val_acc'))}% on the validation images, "
        f"{_recoverable(res, None if ref is None else ref - _max_drop(res))}, so the screen skipped it at first.",
        f"{how} {f['bits']}-bit candidate reached {fmt(f.get('val_acc'))}% on the validation images and "
        "passed, so the screen was too cautious.")


def _why_not_smaller(res: dict) -> str:
    """Why the candidate with the best file ratio was not the one kept (when it was not)."""
    f, p = res["final"], get(res, "pipeline") or {}
    smaller = [c for c in p.get("candidates", []) if c["ratio_file"] > f["ratio_file"]]
    if not smaller:
        return ""
    c = max(smaller, key=lambda c: c["ratio_file"])
    tried = _attempt_of(res).get((c["model"], c["bits"]))
    what = f"{c['model']} at {c['bits']} bits would give {fmt(c['ratio_file'], 1)}x"
    if tried is not None:
        ref = f.get("reference_val_acc")
        against = (f"more than {_points(_max_drop(res), 1)} below the {fmt(ref)}% of the reference" if ref is not None
                   else "below what the target allows")
        screened = " (a leftover run, although the K-means screen had skipped it)" if c.get("skipped") else ""
        why = (f"after trained quantization{screened} it scored {fmt(tried.get('compressed_val_acc'))}% on the "
               f"validation images, {against} ({fmt(tried.get('compressed_acc'))}% on the test images)")
    elif c.get("skipped"):
        why = (f"K-means alone left it at {fmt(c.get('kmeans_val_acc'))}% on the validation images "
               f"({c['skipped']}), so it was not trained")
    else:
        why = "the budget of trained candidates was spent on better-placed ones"
    return f"A smaller file was among the candidates: {what}, but {why}."


_DISCUSSIONS = {"prune": (_d_prune, "prune_std"), "kmeans": (_d_kmeans, "kmeans"),
                "huffman": (_d_huffman, "huffman"), "final": (_d_final, "final")}


# ---------------------------------------------------------------- section
SECTION = NotebookSection("deep_compression.ipynb", RESULTS_NAME, TITLE, SUBSECTIONS, TABLES,
                          _DISCUSSIONS)
table, discussion, load = SECTION.table, SECTION.discussion, SECTION.load


def section(results_dir: Path, out_dir: Path | None = None, number: int = 7) -> str:
    """Section 7 of the report (see ``NotebookSection.section``)."""
    return SECTION.section(results_dir, out_dir, number)
