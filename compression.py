"""Deep Compression (Han et al., ICLR 2016) of the kit's ResNet-20: pruning by standard
deviation, K-means weight sharing with trained centroids, Huffman coding, and a real
compressed file that loads back into `ResNetCIFAR(num_layers=20)` (deep_compression.ipynb).

Sections:

1. layers and pruning: which weights are coded, pruning by s x the standard deviation;
2. K-means weight sharing per layer on the non-zero weights (linear, k-means++ or random
   initialisation), and `SharedWeight`, a parametrization that makes a layer's weight
   `codebook[index]`, so that the kit's `fit` trains the centroids (trained quantization);
3. Huffman coding (canonical codes, written here) of the cluster indices and of the gaps
   between non-zero positions (relative indexing with filler symbols);
4. the file: `save_compressed(net, path)`, `load_compressed(path)`, sizes and ratios;
5. what deep_compression.ipynb runs: settings, resumable stages, studies and figures.

File format (version 1). Integers are little-endian; "varint" is unsigned LEB128.

    header (13 bytes)  b"DCMP" | u8 version | u32 payload length | u32 CRC-32 of the payload
    payload            varint num_layers, varint num_classes of the ResNetCIFAR, then one
                       record per tensor of ResNetCIFAR(num_layers).state_dict(), in its order
                       (names and shapes come from the architecture, not from the file):
      u8 kind = RAW    u8 dtype (0 float32, 1 float16 (stored only when lossless), 2 int64),
                       then the values
      u8 kind = SHARED a conv / linear weight: varint k, u8 dtype, k centroids (the codebook);
                       index table, varint non-zero count, varint bytes, index bit stream;
                       u8 log2(max gap), gap table, varint gap symbols, varint bytes, gap stream
    Huffman table      varint n, then n x (varint symbol - previous symbol - 1, u8 code length);
                       the codes are the canonical ones for these lengths (a single symbol has
                       length 0: its stream is empty, the count says how many there are)

Gap symbols: a non-zero weight at flat position p follows the previous one (or -1) by a gap
g >= 1. Gaps 1..M are symbols 1..M; a larger gap is first advanced by filler symbols 0
("M positions further, no weight here"). M = 2^m is chosen per layer for the fewest bytes.
"""
import io
import math
import struct
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, replace
from heapq import heapify, heappop, heappush
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from tqdm import tqdm

import experiment as ex
import train_util as tu
from report.extensions_section import short  # layer names in tables and figures: b4.conv1, fc
from resnet20 import ResNetCIFAR

RESULTS_NAME = "deep_compression.json"


# ============================================================================ 1. layers and pruning

def coded_layers(net):
    """{name: nn.Conv2d or nn.Linear} whose weights the file codes with a codebook: every
    conv (shortcuts included) and the FC. Pruning touches only `tu.prunable_layers`."""
    return {name: m for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def layer_stds(net):
    """{prunable layer name: population std of its weight}, e.g. of the dense model."""
    return {n: float(m.weight.detach().std(correction=0)) for n, m in tu.prunable_layers(net).items()}


@torch.no_grad()
def prune_by_std(net, s, reference_std=None):
    """Zero every weight of the prunable layers with |w| < s x std and return the masks.

    std is the layer's own (`tu.prune_by_std`), or `reference_std[name]` when given: the
    pipeline's later pruning steps measure s against the dense model's std, so that
    s = 1.25 after s = 1.0 means a higher threshold (a pruned layer's own std, zeros
    included, is smaller, and the same s would prune nothing more)."""
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    masks = {}
    for name, layer in tu.prunable_layers(net).items():
        if reference_std is None:
            masks[name] = tu.prune_by_std(layer, s)
            continue
        mask = (layer.weight.abs() >= s * reference_std[name]).to(layer.weight.dtype)
        layer.weight.mul_(mask)
        masks[name] = mask
    return masks


# ============================================================================ 2. K-means weight sharing

INITS = ("linear", "kmeans++", "random")
# Bump when K-means computes other clusters: finished trained-quantization stages, whose
# codebooks and assignments it produced, then train again instead of being reloaded.
KMEANS_VERSION = 1


class KMeans(NamedTuple):
    centroids: torch.Tensor   # (k,) float64, in the order of the initial centroids
    labels: torch.Tensor      # (n,) int64 cluster of each value
    iterations: int


MAX_BITS = 12  # 4096 clusters: far beyond Deep Compression's 2-8 bits; indices fit in int16


def check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer from 1 to {MAX_BITS} (2^bits clusters), got {bits!r}")
    return bits


def init_centroids(values, k, method="linear", generator=None):
    """k initial centroids for the 1-D `values` (Han et al., section 3.2):
    linear: evenly spaced from min to max; random (Forgy): k distinct values drawn
    uniformly; kmeans++: the first drawn uniformly, each next with probability
    proportional to its squared distance from the nearest centroid chosen so far."""
    values = values.double()
    if method == "linear":
        return torch.linspace(float(values.min()), float(values.max()), k, dtype=torch.float64)
    if method == "random":
        distinct = values.unique()
        return distinct[torch.randperm(len(distinct), generator=generator)[:k]]
    if method == "kmeans++":
        return _kmeans_plus_plus(values, k, generator)
    raise ValueError(f"unknown initialisation {method!r}; choose one of {INITS}")


def _kmeans_plus_plus(values, k, generator):
    chosen = [values[torch.randint(len(values), (1,), generator=generator)].item()]
    d2 = (values - chosen[0]) ** 2
    for _ in range(k - 1):
        cumulative = torch.cumsum(d2, 0)
        if float(cumulative[-1]) == 0:  # fewer distinct values than k: nothing left to spread to
            break
        # draw with probability proportional to d2 (inverse CDF; far faster than multinomial)
        u = torch.rand(1, dtype=torch.float64, generator=generator) * cumulative[-1]
        pick = min(int(torch.searchsorted(cumulative, u, right=True)), len(values) - 1)
        chosen.append(values[pick].item())
        d2 = torch.minimum(d2, (values - chosen[-1]) ** 2)
    return torch.tensor(chosen, dtype=torch.float64)


def kmeans_1d(values, centroids, max_iter=300):
    """Lloyd's algorithm from the given centroids until no value changes cluster (the
    fixed point sklearn's KMeans(algorithm="lloyd", tol=0) stops at). A cluster that
    loses all its values keeps its centroid. Computed in float64.

    In 1-D every cluster is a contiguous range of the sorted values (between the
    midpoints of neighbouring centroids), so an iteration costs a binary search per
    centroid and a difference of prefix sums instead of n x k distances."""
    ordered, order = torch.sort(values.double())
    prefix = torch.cat([ordered.new_zeros(1), torch.cumsum(ordered, 0)])
    c = centroids.double().clone()
    start, end = _cluster_ranges(ordered, c)
    for iteration in range(1, max_iter + 1):
        counts = end - start
        c = torch.where(counts > 0, (prefix[end] - prefix[start]) / counts.clamp(min=1), c)
        new_start, new_end = _cluster_ranges(ordered, c)
        if torch.equal(new_start, start) and torch.equal(new_end, end):
            break
        start, end = new_start, new_end
    labels = torch.empty(len(ordered), dtype=torch.int64)
    labels[order] = _labels_of_ranges(start, end)
    return KMeans(c, labels, iteration)


def _cluster_ranges(ordered, centroids):
    """[start, end) of each centroid's values in `ordered` (sorted values): the values
    nearest to it; a value exactly between two centroids goes to the smaller one."""
    rank = torch.argsort(centroids, stable=True)
    sorted_c = centroids[rank]
    cuts = torch.searchsorted(ordered, (sorted_c[1:] + sorted_c[:-1]) / 2, right=True)
    bounds = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), len(ordered))])
    start, end = torch.empty_like(rank), torch.empty_like(rank)
    start[rank], end[rank] = bounds[:-1], bounds[1:]
    return start, end


def _labels_of_ranges(start, end):
    """The cluster of each sorted value, from the clusters' ranges (which partition the
    values in order of their starts; an empty cluster repeats zero times, wherever it sorts)."""
    rank = torch.argsort(start, stable=True)
    return torch.repeat_interleave(rank, (end - start)[rank])


def share_weight(weight, bits, init="linear", generator=None):
    """K-means weight sharing of one weight tensor: (codebook, index).

    Only the non-zero weights are clustered, into at most 2^bits clusters; zeros stay
    zero. codebook: (k,) float32 centroids in ascending order, empty clusters dropped.
    index: int64 of the weight's shape, the cluster of each weight, k for a zero weight.
    A layer with at most 2^bits distinct non-zero values keeps exactly those values."""
    flat = weight.detach().flatten().double().cpu()
    nonzero = flat != 0
    values = flat[nonzero]
    k = 2 ** check_bits(bits)
    distinct = values.unique()
    if len(distinct) <= k:
        centroids, labels = distinct, torch.searchsorted(distinct, values)
    else:
        start = init_centroids(values, k, init, generator)
        centroids, labels = kmeans_1d(values, start)[:2]
    codebook, labels = _compact(centroids, labels)
    index = torch.full_like(flat, len(codebook), dtype=torch.int64)
    index[nonzero] = labels
    return codebook.float(), index.view(weight.shape)


def _compact(centroids, labels):
    """Drop clusters without values and renumber the rest in ascending centroid order."""
    used = torch.bincount(labels, minlength=len(centroids)) > 0
    kept = torch.nonzero(used).flatten()
    kept = kept[torch.argsort(centroids[kept])]
    new_label = torch.empty(len(centroids), dtype=torch.int64)
    new_label[kept] = torch.arange(len(kept))
    return centroids[kept], new_label[labels]


class SharedWeight(nn.Module):
    """Parametrization (torch.nn.utils.parametrize) that makes a layer's weight
    `codebook[index]`, with `index == clusters` meaning a pruned weight (exactly 0).

    The codebook is the parametrization's `original`: the layer's only trainable tensor.
    Indexing's backward adds up the gradients of all weights that share a centroid, which
    is the centroid's gradient in Han et al.'s trained quantization; `index` is a buffer,
    so the assignments never change and pruned weights stay zero without masks. It is
    kept in int16 (a quarter of int64's bytes in checkpoints) and widened when used."""

    def __init__(self, index, clusters, bits):
        super().__init__()
        self.register_buffer("index", index.to(torch.int16))
        self.clusters = clusters
        self.bits = bits  # nominal bits per index (what the index-only formula counts)

    def forward(self, codebook):
        # take: a gather that keeps the index's shape, ~10x faster than advanced indexing
        return torch.cat([codebook, codebook.new_zeros(1)]).take(self.index.long())

    @torch.no_grad()
    def right_inverse(self, weight):
        """The codebook of a weight: each centroid is the mean of its weights (exact when
        the weight already is codebook[index], as `share_weights_` sets it before
        registering; float64 sums of equal float32 values are exact)."""
        index = self.index.flatten().long()
        sums = torch.zeros(self.clusters + 1, dtype=torch.float64, device=weight.device)
        sums.index_add_(0, index, weight.detach().flatten().double())
        counts = torch.bincount(index, minlength=self.clusters + 1).clamp(min=1)
        return (sums / counts)[:self.clusters].to(weight.dtype)


def is_shared(layer):
    return parametrize.is_parametrized(layer, "weight")


def codebook_and_index(layer):
    """(codebook, flat index) of a shared layer; k in the index marks a pruned weight."""
    shared = layer.parametrizations.weight
    return shared.original.detach().cpu(), shared[0].index.detach().cpu().flatten().long()


@torch.no_grad()
def share_weights_(net, bits, init="linear", seed=0, progress=False):
    """K-means weight sharing of every coded layer of `net`, in place: each weight becomes
    a `SharedWeight` parametrization (see there); `bits` is one int or {layer: bits}.
    kmeans++ / random draw from a generator seeded by `seed` and the layer's position."""
    layers = coded_layers(net)
    for i, (name, layer) in enumerate(tqdm(layers.items(), desc=f"K-means ({init})",
                                           disable=not progress, leave=False)):
        if is_shared(layer):
            raise ValueError(f"{name} is already shared: quantize a fresh copy of the float model")
        layer_bits = bits[name] if isinstance(bits, dict) else bits
        generator = torch.Generator().manual_seed(1000 * seed + i)
        codebook, index = share_weight(layer.weight, layer_bits, init, generator)
        device = layer.weight.device
        shared = SharedWeight(index.to(device), len(codebook), layer_bits)
        layer.weight.copy_(shared(codebook.to(device)))  # right_inverse then recovers the codebook exactly
        parametrize.register_parametrization(layer, "weight", shared)
    return net


@torch.no_grad()
def share_like_(net, state, bits):
    """Give `net` the `SharedWeight` parametrizations that the state dict `state` (of a
    trained-quantization stage, e.g. checkpoints/dc_quant_*.pt) holds, so that the state
    dict then loads strictly; `bits` is the nominal bits per index the stage used."""
    for name, layer in coded_layers(net).items():
        index = state.get(f"{name}.parametrizations.weight.0.index")
        if index is not None:
            codebook = state[f"{name}.parametrizations.weight.original"]
            shared = SharedWeight(index.to(layer.weight.device), len(codebook), bits)
            layer.weight.copy_(shared(codebook.to(layer.weight.device)))
            parametrize.register_parametrization(layer, "weight", shared)
    return net


@torch.no_grad()
def round_floats_to_float16_(net):
    """Round every float parameter and buffer (batch norm, biases, codebooks) to the
    nearest float16 value, kept in float32, where that is finite. The file then stores
    them in 2 bytes each without loss; the accuracy cost is measured, not assumed."""
    for tensor in [*net.parameters(), *net.buffers()]:
        if tensor.is_floating_point():
            rounded = tensor.half().float()
            if bool(torch.isfinite(rounded).all()):
                tensor.copy_(rounded)
    return net


def _skeleton(num_layers, num_classes):
    """ResNetCIFAR's state dict (names, shapes, dtypes) without allocating or initialising."""
    with torch.device("meta"):
        return ResNetCIFAR(num_layers=num_layers, num_classes=num_classes).state_dict()


def architecture(net):
    if not isinstance(net, ResNetCIFAR):
        raise TypeError(f"expected a ResNetCIFAR (the file stores its tensors in ResNetCIFAR's "
                        f"state-dict order), got {type(net).__name__}")
    return net.num_layers, net.final_fc.linear.out_features


def _module_and_attr(net, key):
    path, _, attr = key.rpartition(".")
    return net.get_submodule(path), attr


def plain_state_dict(net):
    """The state dict of a plain ResNetCIFAR with `net`'s effective tensors (shared weights
    expanded to codebook[index]), on the CPU, contiguous: what the file reproduces."""
    state = {}
    for key in _skeleton(*architecture(net)):
        module, attr = _module_and_attr(net, key)
        state[key] = getattr(module, attr).detach().cpu().contiguous()
    return state


def plain_copy(net):
    """A plain ResNetCIFAR (no parametrizations) with `net`'s effective weights."""
    num_layers, num_classes = architecture(net)
    plain = ResNetCIFAR(num_layers=num_layers, num_classes=num_classes)
    plain.load_state_dict(plain_state_dict(net), strict=True)
    return plain


# ============================================================================ 3. Huffman coding

def huffman_lengths(counts):
    """Code length of every symbol with a positive count in a Huffman code (an optimal
    prefix code): repeatedly merge the two least frequent subtrees. A single symbol gets
    length 0 (its count alone says how many there are). Ties merge the earlier-created
    subtree first, so the result is deterministic."""
    if any(c < 0 for c in counts.values()):
        raise ValueError("symbol counts must be >= 0")
    symbols = sorted(s for s, c in counts.items() if c > 0)
    if len(symbols) <= 1:
        return dict.fromkeys(symbols, 0)
    lengths = dict.fromkeys(symbols, 0)
    heap = [(counts[s], i, [s]) for i, s in enumerate(symbols)]
    heapify(heap)
    created = len(heap)
    while len(heap) > 1:
        count_a, _, a = heappop(heap)
        count_b, _, b = heappop(heap)
        for s in a + b:  # every leaf under the new node moves one level down
            lengths[s] += 1
        heappush(heap, (count_a + count_b, created, a + b))
        created += 1
    return lengths


def entropy_bits(counts):
    """Shannon entropy (bits per symbol) of the empirical distribution `counts`."""
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values() if c > 0)


def symbol_counts(symbols):
    values, counts = np.unique(np.asarray(symbols, dtype=np.int64), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


class HuffmanCode:
    """A canonical Huffman code: the codes follow from the lengths alone (sorted by length,
    then symbol, each code is the previous one plus 1, shifted left when the length grows),
    so a file stores only the lengths. Symbols are integers >= 0."""

    def __init__(self, lengths):
        if any(length < 0 for length in lengths.values()):
            raise ValueError(f"code lengths must be >= 0, got {lengths}")
        if len(lengths) > 1 and 0 in lengths.values():
            raise ValueError("only a code of a single symbol may have length 0")
        if sum(2.0 ** -l for l in lengths.values()) > 1:
            raise ValueError("code lengths violate Kraft's inequality: no prefix code has them")
        self.lengths = dict(sorted(lengths.items()))
        self.codes = self._canonical_codes()

    @classmethod
    def from_counts(cls, counts):
        return cls(huffman_lengths(counts))

    @classmethod
    def from_symbols(cls, symbols):
        return cls.from_counts(symbol_counts(symbols))

    def _canonical_codes(self):
        codes, code, previous = {}, 0, None
        for symbol, length in sorted(self.lengths.items(), key=lambda item: (item[1], item[0])):
            if previous is not None:
                code = (code + 1) << (length - previous)
            codes[symbol] = code
            previous = length
        return codes

    def code_strings(self):
        """{symbol: code as a string of 0 and 1} (for printing and tests)."""
        return {s: format(c, f"0{self.lengths[s]}b") if self.lengths[s] else ""
                for s, c in self.codes.items()}

    def average_length(self, counts):
        """Bits per symbol of `counts` under this code."""
        total = sum(counts.values())
        return sum(c * self.lengths[s] for s, c in counts.items()) / total if total else 0.0

    def encode(self, symbols):
        """(bytes, number of bits): the codes of `symbols`, most significant bit first,
        the last byte padded with zeros."""
        symbols = np.asarray(symbols, dtype=np.int64)
        if len(symbols) == 0:
            return b"", 0
        largest = max(self.lengths, default=-1)
        code_of = np.full(largest + 1, -1, dtype=np.int64)
        length_of = np.zeros(largest + 1, dtype=np.int64)
        for s, c in self.codes.items():
            code_of[s], length_of[s] = c, self.lengths[s]
        if symbols.min() < 0 or symbols.max() > largest or (code_of[symbols] < 0).any():
            raise ValueError("a symbol to encode has no code: build the code from these symbols")
        codes, lengths = code_of[symbols], length_of[symbols]
        shifts = lengths[:, None] - 1 - np.arange(max(int(lengths.max()), 1))
        bits = (codes[:, None] >> np.maximum(shifts, 0)) & 1
        stream = bits[shifts >= 0].astype(np.uint8)  # row-major: symbol by symbol, first bit first
        return np.packbits(stream).tobytes(), len(stream)

    def decode(self, data, count):
        """The first `count` symbols coded in `data` (canonical decoding, bit by bit)."""
        if count == 0:
            return []
        if len(self.lengths) == 1 and max(self.lengths.values()) == 0:
            return [next(iter(self.lengths))] * count
        if not self.lengths:
            raise CompressedFileError("a stream has symbols but its Huffman table is empty")
        first, number, start, ordered = self._decoding_tables()
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        out, code, length, longest = [], 0, 0, len(first) - 1
        for bit in bits:
            if len(out) == count:
                break
            code, length = (code << 1) | bit, length + 1
            if length > longest:
                raise CompressedFileError("a bit stream holds a code that its Huffman table lacks")
            offset = code - first[length]
            if 0 <= offset < number[length]:
                out.append(ordered[start[length] + offset])
                code, length = 0, 0
        if len(out) < count:
            raise CompressedFileError(f"a bit stream ends after {len(out)} of {count} symbols (truncated)")
        return out

    def _decoding_tables(self):
        """Per length l: first[l] (the first code of that length), number[l] and start[l]
        (where its symbols begin in `ordered`, the symbols sorted by (length, symbol))."""
        longest = max(self.lengths.values())
        number = [0] * (longest + 1)
        for length in self.lengths.values():
            number[length] += 1
        first, start, code, position = [0] * (longest + 1), [0] * (longest + 1), 0, 0
        for length in range(1, longest + 1):
            code = (code + number[length - 1]) << 1  # number[0] == 0: codes of length 1 start at 0
            first[length], start[length] = code, position
            position += number[length]
        ordered = [s for s, _ in sorted(self.lengths.items(), key=lambda item: (item[1], item[0]))]
        return first, number, start, ordered

    def write_table(self, writer, part):
        writer.varint(len(self.lengths), part)
        previous = -1
        for symbol, length in self.lengths.items():
            writer.varint(symbol - previous - 1, part)
            writer.u8(length, part)
            previous = symbol

    @classmethod
    def read_table(cls, reader):
        lengths, symbol = {}, -1
        for _ in range(reader.varint()):
            symbol += reader.varint() + 1
            lengths[symbol] = reader.u8()
        try:
            return cls(lengths)
        except ValueError as err:
            raise CompressedFileError(f"invalid Huffman table ({err})") from None


# ----------------------------------------------------------------------------- positions

def gap_symbols(positions, max_gap):
    """Relative indexing: sorted flat positions -> gap symbols 1..max_gap, a larger gap
    preceded by filler symbols 0 that each advance max_gap positions without a weight."""
    positions = np.asarray(positions, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1)
    if (gaps < 1).any():
        raise ValueError("positions must be strictly increasing and >= 0")
    fillers = (gaps - 1) // max_gap
    symbols = np.zeros(len(gaps) + int(fillers.sum()), dtype=np.int64)
    symbols[np.cumsum(fillers + 1) - 1] = gaps - fillers * max_gap
    return symbols


def positions_from_gaps(symbols, max_gap):
    """Inverse of `gap_symbols`."""
    symbols = np.asarray(symbols, dtype=np.int64)
    steps = np.where(symbols == 0, max_gap, symbols)
    return (np.cumsum(steps) - 1)[symbols != 0]


def table_bytes(code):
    """Bytes that `HuffmanCode.write_table` writes for `code`."""
    writer = _Writer()
    code.write_table(writer, "table")
    return len(writer.buffer)


MAX_GAP_LOG2 = 12  # max gaps 2 .. 4096 are tried per layer


def choose_max_gap(positions):
    """(log2 of the max gap, its Huffman code, the gap symbols) that code the positions in
    the fewest bytes, Huffman table included, among max gaps 2^1 .. 2^MAX_GAP_LOG2."""
    best = None
    for log2_gap in range(1, MAX_GAP_LOG2 + 1):
        symbols = gap_symbols(positions, 2 ** log2_gap)
        counts = symbol_counts(symbols)
        code = HuffmanCode.from_counts(counts)
        size = math.ceil(sum(c * code.lengths[s] for s, c in counts.items()) / 8) + table_bytes(code)
        if best is None or size < best[0]:
            best = (size, log2_gap, code, symbols)
    return best[1:]


# ============================================================================ 4. the compressed file

MAGIC = b"DCMP"
VERSION = 1
HEADER = struct.Struct("<4sBII")  # magic, version, payload length, CRC-32 of the payload
RAW, SHARED = 0, 1
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<i8")}
MAX_PLAIN_CODEBOOK = 256  # a plain (not shared) weight with more distinct values is stored raw


class CompressedFileError(ValueError):
    """A compressed model file that cannot be read; the message says why and what to do."""


class _Writer:
    """A byte buffer that counts how many bytes each part of the model takes."""

    def __init__(self):
        self.buffer = bytearray()
        self.parts = Counter()

    def put(self, data, part):
        self.buffer += data
        self.parts[part] += len(data)

    def u8(self, value, part):
        self.put(bytes([value]), part)

    def varint(self, value, part):
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
        self.put(bytes(out), part)


class _Reader:
    """Reads a payload; running past its end is a truncated (or corrupt) file."""

    def __init__(self, data):
        self.data, self.pos = memoryview(data), 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise CompressedFileError(f"the payload ends at byte {len(self.data)} but a record needs "
                                      f"{n} bytes from byte {self.pos} (truncated or corrupt)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(chunk)

    def u8(self):
        return self.take(1)[0]

    def varint(self):
        value = 0
        for shift in range(0, 70, 7):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise CompressedFileError("a length field is longer than 10 bytes (corrupt file)")


def _float_code(tensor):
    """1 (float16) when every value survives float16 exactly, else 0 (float32)."""
    return 1 if torch.equal(tensor.half().float(), tensor.float()) else 0


def _write_raw(writer, tensor, part):
    code = 2 if tensor.dtype == torch.int64 else _float_code(tensor)
    writer.u8(RAW, "layout")
    writer.u8(code, "layout")
    writer.put(tensor.numpy().astype(DTYPES[code]).tobytes(), part)


@dataclass
class LayerCode:
    """How one shared weight is coded (also the numbers of the Huffman study)."""
    codebook: torch.Tensor
    positions: np.ndarray       # flat positions of the coded (non-pruned) weights
    indices: np.ndarray         # their cluster indices
    index_code: HuffmanCode
    log2_gap: int
    gap_code: HuffmanCode
    gaps: np.ndarray            # gap symbols (fillers included)

    @classmethod
    def of(cls, codebook, index):
        index = index.numpy()
        positions = np.flatnonzero(index != len(codebook))
        indices = index[positions]
        log2_gap, gap_code, gaps = choose_max_gap(positions)
        return cls(codebook, positions, indices, HuffmanCode.from_symbols(indices), log2_gap, gap_code, gaps)

    def stats(self):
        counts, gap_counts = symbol_counts(self.indices), symbol_counts(self.gaps)
        n = len(self.indices)
        return {"nonzero": n, "clusters": len(self.codebook),
                "index_bits": self.index_code.average_length(counts),
                "index_entropy": entropy_bits(counts) if n else 0.0,
                "gap_bits": self.gap_code.average_length(gap_counts) * len(self.gaps) / n if n else 0.0,
                "max_gap": 2 ** self.log2_gap, "fillers": int((self.gaps == 0).sum())}


def shared_code(layer):
    """(codebook, flat index) of a coded layer: its parametrization's, or, for a plain
    weight with at most MAX_PLAIN_CODEBOOK distinct non-zero values, those values; None
    when the weight is stored raw."""
    if is_shared(layer):
        return codebook_and_index(layer)
    flat = layer.weight.detach().cpu().flatten()
    nonzero = flat != 0
    codebook, labels = flat[nonzero].unique(return_inverse=True)
    if len(codebook) > MAX_PLAIN_CODEBOOK:
        return None
    index = torch.full(flat.shape, len(codebook), dtype=torch.int64)
    index[nonzero] = labels
    return codebook.float(), index


def _write_shared(writer, code):
    writer.u8(SHARED, "layout")
    writer.varint(len(code.codebook), "layout")
    float_code = _float_code(code.codebook)
    writer.u8(float_code, "layout")
    writer.put(code.codebook.numpy().astype(DTYPES[float_code]).tobytes(), "codebooks")
    _write_stream(writer, code.index_code, code.indices, "indices")
    writer.u8(code.log2_gap, "layout")
    _write_stream(writer, code.gap_code, code.gaps, "positions")


def _write_stream(writer, code, symbols, part):
    code.write_table(writer, "huffman tables")
    data, _ = code.encode(symbols)
    writer.varint(len(symbols), "layout")
    writer.varint(len(data), "layout")
    writer.put(data, part)


def compress(net):
    """(file bytes, report) of `net`, a ResNetCIFAR (shared or plain weights).
    The report says where the bytes go: "parts" (header, layout, codebooks, huffman
    tables, indices, positions, batch norm, other floats) sum to the file size; "tensors"
    gives the same per state-dict key (header and architecture_bytes aside); "layers" the
    code statistics of each coded weight."""
    num_layers, num_classes = architecture(net)
    layers = coded_layers(net)
    writer = _Writer()
    writer.varint(num_layers, "layout")
    writer.varint(num_classes, "layout")
    architecture_bytes = len(writer.buffer)
    tensors, stats = {}, {}
    for key in _skeleton(num_layers, num_classes):
        before = Counter(writer.parts)
        module_name, attr = key.rpartition(".")[0], key.rpartition(".")[2]
        code = shared_code(layers[module_name]) if attr == "weight" and module_name in layers else None
        if code is not None:
            layer_code = LayerCode.of(*code)
            _write_shared(writer, layer_code)
            stats[module_name] = layer_code.stats()
        else:
            module, _ = _module_and_attr(net, key)
            part = "batch norm" if isinstance(module, nn.BatchNorm2d) else "other floats"
            _write_raw(writer, getattr(module, attr).detach().cpu().contiguous(), part)
        tensors[key] = dict(writer.parts - before)
    payload = bytes(writer.buffer)
    header = HEADER.pack(MAGIC, VERSION, len(payload), zlib.crc32(payload))
    parts = {"header": len(header), **dict(writer.parts)}
    return header + payload, {"bytes": len(header) + len(payload), "parts": parts,
                              "architecture_bytes": architecture_bytes, "tensors": tensors, "layers": stats}


def save_compressed(net, path):
    """Write `net` (a ResNetCIFAR, usually after `share_weights_`) to one binary file,
    atomically; return `compress`'s report with the path added."""
    data, report = compress(net)
    tu.atomic_write_bytes(path, lambda tmp: Path(tmp).write_bytes(data))
    return {"path": str(path), **report}


def load_compressed(path):
    """The state dict stored by `save_compressed`: float32 tensors (int64 for batch-norm
    counters) that load strictly into ResNetCIFAR(num_layers=...) and reproduce the saved
    model's tensors bit for bit. A damaged file raises CompressedFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no compressed model at {path}: write one with "
                                f"compression.save_compressed(net, path)")
    return decompress(path.read_bytes(), source=str(path))


def decompress(data, source="the data"):
    """`load_compressed` of bytes in memory."""
    return _decode(data, source)[1]


def _decode(data, source):
    """((num_layers, num_classes), state dict) of a compressed model's bytes."""
    payload = _checked_payload(data, source)
    reader = _Reader(payload)
    arch = reader.varint(), reader.varint()
    try:
        skeleton = _skeleton(*arch)
    except ValueError as err:
        raise CompressedFileError(f"{source}: invalid architecture fields ({err})") from None
    state = {key: _read_tensor(reader, like) for key, like in skeleton.items()}
    if reader.pos != len(payload):
        raise CompressedFileError(f"{source}: {len(payload) - reader.pos} bytes after the last tensor (corrupt)")
    return arch, state


def _checked_payload(data, source):
    advice = "Write it again with compression.save_compressed, or copy it again."
    if len(data) < HEADER.size:
        raise CompressedFileError(f"{source} is truncated: {len(data)} bytes, shorter than the "
                                  f"{HEADER.size}-byte header. {advice}")
    magic, version, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CompressedFileError(f"{source} is not a compressed model (starts with {magic!r}, "
                                  f"not {MAGIC!r}). {advice}")
    if version != VERSION:
        raise CompressedFileError(f"{source} has format version {version}; this code reads version "
                                  f"{VERSION}. {advice}")
    payload = data[HEADER.size:]
    if len(payload) != length:
        what = "truncated" if len(payload) < length else "longer than its header says"
        raise CompressedFileError(f"{source} is {what}: the header announces {length} payload bytes, "
                                  f"the file has {len(payload)}. {advice}")
    if zlib.crc32(payload) != crc:
        raise CompressedFileError(f"{source} is corrupted: the CRC-32 of its payload does not match "
                                  f"the header. {advice}")
    return payload


def _read_tensor(reader, like):
    kind = reader.u8()
    if kind == RAW:
        return _read_raw(reader, like)
    if kind == SHARED and like.dim() in (2, 4):
        return _read_shared(reader, like)
    raise CompressedFileError(f"record kind {kind} is not valid for a tensor of shape {tuple(like.shape)}")


def _read_values(reader, count, code):
    if code not in DTYPES:
        raise CompressedFileError(f"unknown dtype code {code} (corrupt file)")
    values = np.frombuffer(reader.take(count * DTYPES[code].itemsize), dtype=DTYPES[code])
    return torch.from_numpy(values.astype(np.int64 if code == 2 else np.float32))


def _read_raw(reader, like):
    code = reader.u8()
    if (code == 2) != (like.dtype == torch.int64):
        raise CompressedFileError(f"dtype code {code} does not fit a {like.dtype} tensor")
    return _read_values(reader, like.numel(), code).view(like.shape)


def _read_stream(reader):
    code = HuffmanCode.read_table(reader)
    count, size = reader.varint(), reader.varint()
    return np.asarray(code.decode(reader.take(size), count), dtype=np.int64)


def _read_shared(reader, like):
    k, code = reader.varint(), reader.u8()
    if code == 2:
        raise CompressedFileError("a codebook must hold floats (corrupt file)")
    codebook = _read_values(reader, k, code)
    indices = _read_stream(reader)
    log2_gap = reader.u8()
    if not 0 < log2_gap <= 62:
        raise CompressedFileError(f"invalid max gap 2^{log2_gap}")
    positions = positions_from_gaps(_read_stream(reader), 2 ** log2_gap)
    if len(positions) != len(indices) or (len(indices) and (indices.max() >= k or positions[-1] >= like.numel())):
        raise CompressedFileError("positions and cluster indices of a weight do not fit together (corrupt)")
    weight = torch.zeros(like.numel(), dtype=torch.float32)
    weight[torch.from_numpy(positions)] = codebook[torch.from_numpy(indices)]
    return weight.view(like.shape)


def load_compressed_model(path):
    """A ResNetCIFAR with the weights of a compressed file (architecture from the file)."""
    path = Path(path)
    if not path.is_file():
        return load_compressed(path)  # the same FileNotFoundError
    (num_layers, num_classes), state = _decode(path.read_bytes(), str(path))
    net = ResNetCIFAR(num_layers=num_layers, num_classes=num_classes)
    net.load_state_dict(state, strict=True)
    return net


# ----------------------------------------------------------------------------- sizes and ratios

def dense_bytes(net):
    """Bytes of the tensors of `net`'s plain state dict as stored uncompressed (float32 and
    the int64 batch-norm counters): the numerator of the file ratio."""
    return sum(t.numel() * t.element_size() for t in _skeleton(*architecture(net)).values())


def torch_save_bytes(net):
    """Size of `torch.save(state_dict)` of the plain model (with its container overhead)."""
    buffer = io.BytesIO()
    torch.save(plain_state_dict(net), buffer)
    return buffer.tell()


def formula_ratio(nonzero, total, quant_bits, huffman_bits):
    """The sibling assignment's ratio: 1 / (nonzero/total x quant_bits/32 x
    huffman_length/quant_bits). It counts only the cluster indices of the non-zero
    weights: not where they are, not the codebooks, not batch norm."""
    return 1.0 / ((nonzero / total) * (quant_bits / 32) * (huffman_bits / quant_bits))


def ratios(net, report, bits):
    """Formula ratio (with `bits` as quant_bits) and file ratio of `net` and its report."""
    total = sum(m.weight.numel() for m in coded_layers(net).values())
    nonzero = sum(s["nonzero"] for s in report["layers"].values())
    huffman = sum(s["index_bits"] * s["nonzero"] for s in report["layers"].values()) / max(nonzero, 1)
    return {"weights": total, "nonzero": nonzero, "quant_bits": bits, "huffman_bits": huffman,
            "ratio_formula": formula_ratio(nonzero, total, bits, huffman) if nonzero else None,
            "dense_bytes": dense_bytes(net), "file_bytes": report["bytes"],
            "ratio_file": dense_bytes(net) / report["bytes"]}


# ============================================================================ 5. deep_compression.ipynb

@dataclass(frozen=True)
class DCSettings:
    """What deep_compression.ipynb runs in one mode (quick: a smoke test, never results)."""
    sensitivities: tuple = (0.0, 0.25, 0.5, 1.0)   # pruning by std, one shot from the dense model
    retrain_epochs: int = 10        # masked retraining per s (s = 0 prunes nothing: the reference)
    kmeans_bits: tuple = (6, 5, 4, 3)
    hist_bits: int = 4              # the histograms before/after K-means
    huffman_bits: int = 5
    start_s: float = 1.0            # the retrained model the K-means study and the pipeline start from
    ladder: tuple = (1.25, 1.5)     # further pruning steps (s x the dense std), each retrained
    ladder_epochs: int = 20
    candidate_bits: tuple = (5, 4, 3)
    quant_epochs: int = 4           # trained quantization of one candidate
    max_quant_runs: int = 2         # candidates trained at most
    max_drop: float = 1.0           # points below the reference allowed (validation accuracy)
    recoverable: float = 3.0        # a candidate whose K-means accuracy is further below is skipped
    quant_lr: float = 1e-3          # peak lr of the centroids (summed gradients: smaller than 0.05)
    # the last training images, held out of every DC training: the pipeline's decisions
    # (how far to prune, which candidate to keep) are made on them, never on test images
    val_images: int = 5000

    def max_epochs(self):
        """Training epochs of a run that uses every stage."""
        return (len(self.sensitivities) * self.retrain_epochs + len(self.ladder) * self.ladder_epochs
                + self.max_quant_runs * self.quant_epochs)


FULL_DC = DCSettings()
# Quick: every stage once, 1 epoch each; a 100-point budget so that no step is skipped
# (a 1-epoch stand-in model would otherwise stop the ladder at once).
QUICK_DC = replace(FULL_DC, retrain_epochs=1, ladder=(1.25,), ladder_epochs=1, candidate_bits=(5, 4),
                   quant_epochs=1, max_quant_runs=2, max_drop=100.0, recoverable=100.0, val_images=256)


def retrain_recipe():
    """Masked retraining after pruning: the kit's improved recipe (cosine lr from 0.05,
    Nesterov, distillation from the dense model)."""
    return tu.IMPROVED


def quant_recipe(settings):
    """Trained quantization: the improved recipe with a smaller peak lr (a centroid's
    gradient is the sum over all its weights) and no weight decay: decay would pull each
    shared value towards zero with the weight of its whole cluster, for no regularising
    benefit on 8-64 values per layer (batch norm and the FC bias get none either here)."""
    return replace(tu.IMPROVED, lr=settings.quant_lr, weight_decay=0.0)


class DeepCompressionRun(ex.Experiment):
    """hw4's Experiment (mode, data, pretrained model, resumable stages) writing its
    results to deep_compression.json, with the settings of this notebook (`dc`)."""

    def __init__(self, quick, data_dir=None, seed=0):
        self.dc = QUICK_DC if quick else FULL_DC
        super().__init__(quick, data_dir, seed)
        self.split_validation()
        self.results["meta"].update(dc_settings=asdict(self.dc), retrain_recipe=asdict(retrain_recipe()),
                                    quant_recipe=asdict(quant_recipe(self.dc)),
                                    validation_label=self.val_data.test_label,
                                    dc_train_images=len(self.train_data.y_train))

    def split_validation(self):
        """`train_data`: what every DC stage trains on; `val_data`: the held-out training
        images the decisions use; `data` keeps the test images, for the reported numbers.
        The label says what these images are held out of: every DC retraining, not the
        pretrained model all DC stages start from (it trained on all training images)."""
        self.train_data, self.val_data = self.data.split_validation(self.dc.val_images, DC_VALIDATION)

    def data_identity(self):
        return {**super().data_identity(), "validation_images": self.dc.val_images}

    def _load_results(self):
        self.results_path = self.settings.results_dir / RESULTS_NAME
        return super()._load_results()

    def pretrained_path(self):
        """As Experiment's; quick mode copies its stand-in to a file of its own at once,
        because the other notebooks' quick runs rewrite the shared one."""
        path = super().pretrained_path()
        if path == ex.PRETRAINED:
            return path
        own = self.settings.ckpt_dir / "dc_pretrained_standin.pt"
        if not getattr(self, "_own_stand_in", False):
            tu.atomic_write_bytes(own, lambda tmp: Path(tmp).write_bytes(path.read_bytes()))
            self._own_stand_in = True
        return own

    def evaluate(self, net):
        """Accuracy on the test images: reported, never used to decide anything."""
        return tu.evaluate(net, self.data)[0]

    def validate(self, net):
        """Accuracy on the held-out training images: what the pipeline's decisions use."""
        return tu.evaluate(net, self.val_data)[0]

    def target(self):
        """The validation accuracy a compressed model must keep: max_drop below the
        reference, the dense model retrained as the pruned ones were (s = 0 prunes nothing).
        The dense model itself is no reference on these images: it trained on them."""
        return self.results["retrain"]["0"]["val_acc"] - self.dc.max_drop


# what Deep Compression's validation images are: held out of every DC retraining, but the
# pretrained model the DC runs start from trained on them (unlike tuning.py's base model)
DC_VALIDATION = ("validation: held out of every Deep Compression retraining; "
                 "the pretrained start model saw them")


def s_tag(s):
    return f"s{round(100 * s):03d}"


# ----------------------------------------------------------------------------- 1. pruning by std

def dense_summary(run):
    net = run.model()
    acc, loss = tu.evaluate(net, run.data)
    weights = sum(m.weight.numel() for m in coded_layers(net).values())
    return {"acc": acc, "loss": loss, "weights": weights, "params": sum(p.numel() for p in net.parameters()),
            "dense_bytes": dense_bytes(net), "torch_save_bytes": torch_save_bytes(net)}


def prune_without_retraining(run):
    """Accuracy and zeros (in all and per layer) after pruning the dense model by s x std."""
    out = {}
    for s in tqdm(run.dc.sensitivities, desc="prune by std", leave=False):
        net = run.model()
        prune_by_std(net, s)
        out[f"{s:g}"] = {"acc": run.evaluate(net), "zeros_pct": tu.sparsity(net),
                         "layer_zeros": tu.layer_zeros(net)}
    return out


def retrain_pruned(run, s, teacher):
    """Stage dc_prune_<s>: the dense model pruned by s x std, retrained with its masks."""
    net = run.model()
    masks = prune_by_std(net, s)
    before = run.evaluate(net)

    def train(net, resume):
        return tu.fit(net, run.train_data, run.dc.retrain_epochs, retrain_recipe(), masks=masks, teacher=teacher,
                      seed=run.seed, desc=f"retrain s={s:g}", resume=resume)

    record = run.stage(f"dc_prune_{s_tag(s)}", net, train, recipe=retrain_recipe(), s=s,
                       epochs=run.dc.retrain_epochs)
    return {"s": s, "before": before, **ex.summary(record, net), "val_acc": run.validate(net)}


def retrain_all(run, teacher):
    """Masked retraining for every s; s = 0 prunes nothing and is the reference the
    pipeline's decisions compare with (`DeepCompressionRun.target`)."""
    if 0.0 not in run.dc.sensitivities:
        raise ValueError("DCSettings.sensitivities needs s = 0: its retrained dense model is the reference")
    return {f"{s:g}": retrain_pruned(run, s, teacher) for s in run.dc.sensitivities}


# ----------------------------------------------------------------------------- 2. K-means

def kmeans_study(run, checkpoint):
    """Accuracy without finetuning and mean squared quantization error of the non-zero
    weights, for every initialisation and number of bits."""
    float_net = run.model(checkpoint=checkpoint)
    out = {"float_acc": run.evaluate(float_net), "bits": list(run.dc.kmeans_bits), "inits": {}}
    for init in tqdm(INITS, desc="K-means initialisations", leave=False):
        rows = {}
        for bits in run.dc.kmeans_bits:
            net = share_weights_(run.model(checkpoint=checkpoint), bits, init, seed=run.seed)
            rows[str(bits)] = {"acc": run.evaluate(net), "mse": quantization_mse(float_net, net)}
        out["inits"][init] = rows
    return out


@torch.no_grad()
def quantization_mse(float_net, shared_net):
    """Mean squared difference between the non-zero float weights and their centroids."""
    a, b = coded_layers(float_net), coded_layers(shared_net)
    diffs = [(a[n].weight - b[n].weight)[a[n].weight != 0] for n in a]
    squared = torch.cat([d.flatten() for d in diffs]).double() ** 2
    return float(squared.mean())


# ----------------------------------------------------------------------------- 3. Huffman

def huffman_study(run, checkpoint):
    """Per layer, at `huffman_bits` with linear initialisation: bits per index (Huffman
    and entropy) and per non-zero position, and the whole file's parts."""
    net = share_weights_(run.model(checkpoint=checkpoint), run.dc.huffman_bits, "linear")
    _, report = compress(net)
    layers = report["layers"]
    nonzero = sum(s["nonzero"] for s in layers.values())
    average = lambda key: sum(s[key] * s["nonzero"] for s in layers.values()) / nonzero
    return {"bits": run.dc.huffman_bits, "layers": layers, "index_bits": average("index_bits"),
            "index_entropy": average("index_entropy"), "gap_bits": average("gap_bits"),
            "nonzero": nonzero, "acc": run.evaluate(net)}


# ----------------------------------------------------------------------------- 4. the pipeline

def ladder(run, start, start_record, reference_std, teacher):
    """Further pruning steps s = dc.ladder (s x the dense std), each from the previous
    retrained model and retrained with its masks; stops once a step ends more than
    max_drop below the reference on the validation images (pruning further would only lose more)."""
    models = [{"name": f"s={run.dc.start_s:g} one-shot", "s": run.dc.start_s, "checkpoint": str(start),
               "final_acc": start_record["final_acc"], "val_acc": start_record["val_acc"],
               "zeros_pct": start_record["zeros_pct"]}]
    for s in run.dc.ladder:
        if models[-1]["val_acc"] < run.target():
            print(f"ladder stops before s={s:g}: {models[-1]['name']} is already more than "
                  f"{run.dc.max_drop:g} points below the reference on {run.val_data.test_label}")
            break
        previous = Path(models[-1]["checkpoint"])
        net = run.model(checkpoint=previous)
        masks = prune_by_std(net, s, reference_std)

        def train(net, resume, masks=masks, s=s):
            return tu.fit(net, run.train_data, run.dc.ladder_epochs, retrain_recipe(), masks=masks,
                          teacher=teacher, seed=run.seed, desc=f"ladder s={s:g}", resume=resume)

        name = f"dc_ladder_{s_tag(s)}"
        record = ex.summary(run.stage(name, net, train, recipe=retrain_recipe(), s=s, start=tu.sha256(previous),
                                      epochs=run.dc.ladder_epochs), net)
        models.append({"name": f"s={s:g} ladder", "s": s, "checkpoint": str(run.checkpoint_of(name)),
                       "final_acc": record["final_acc"], "best_acc": record["best_acc"],
                       "val_acc": run.validate(net), "zeros_pct": record["zeros_pct"], "epochs": record["epochs"],
                       "history": record["history"]})
    return models


def candidate(run, model, bits):
    """A pruned model with K-means at `bits` (linear init), float16-rounded floats: its
    accuracy without finetuning and its exact file size (trained quantization moves only
    centroid values, so the size is final)."""
    net = round_floats_to_float16_(share_weights_(run.model(checkpoint=model["checkpoint"]), bits, "linear"))
    data, report = compress(net)
    return {"model": model["name"], "s": model["s"], "checkpoint": model["checkpoint"], "bits": bits,
            "float_acc": model["final_acc"], "zeros_pct": model["zeros_pct"], "kmeans_acc": run.evaluate(net),
            "kmeans_val_acc": run.validate(net), **ratios(net, report, bits)}


def candidates(run, models):
    """Every (pruned model, bits) whose float model keeps the validation target (if none
    does, the model best on the validation images), by file ratio, highest first."""
    usable = ([m for m in models if m["val_acc"] >= run.target()]
              or [max(models, key=lambda m: m["val_acc"])])
    found = [candidate(run, m, b) for m in tqdm(usable, desc="candidates", leave=False) for b in run.dc.candidate_bits]
    return sorted(found, key=lambda c: -c["ratio_file"])


def trained_quantization(run, cand, teacher):
    """Stage dc_quant_<s>_<bits>bit: K-means at `bits` on the candidate's pruned model,
    then the centroids (and batch norm) finetuned with fixed assignments. Returns the
    trained shared net (float16-rounded) and the record."""
    checkpoint = Path(cand["checkpoint"])
    net = share_weights_(run.model(checkpoint=checkpoint), cand["bits"], "linear")
    recipe = quant_recipe(run.dc)

    def train(net, resume):
        return tu.fit(net, run.train_data, run.dc.quant_epochs, recipe, teacher=teacher, seed=run.seed,
                      desc=f"centroids {cand['model']} {cand['bits']}-bit", resume=resume)

    name = f"dc_quant_{s_tag(cand['s'])}_{cand['bits']}bit"
    record = run.stage(name, net, train, recipe=recipe, bits=cand["bits"], init="linear",
                       kmeans=KMEANS_VERSION, start=tu.sha256(checkpoint), epochs=run.dc.quant_epochs)
    return round_floats_to_float16_(net), ex.summary(record)


def pipeline(run, models, teacher):
    """Trained quantization of the candidates, highest file ratio first, until one keeps
    the validation target (at most max_quant_runs; candidates whose K-means validation
    accuracy is more than `recoverable` below it are skipped). A run left over after that
    goes to the skipped candidate with the highest file ratio above the kept one, so that
    the screen's prediction is measured rather than assumed. Returns (all candidates, the
    attempts, (chosen attempt, its trained net)): the attempt of highest file ratio that
    kept the target, else the one best on the validation images. Every decision here reads
    the validation images; test accuracies are only recorded. `write_and_verify` writes the file."""
    target = run.target()
    cands = candidates(run, models)
    hopeful = [c for c in cands if c["kmeans_val_acc"] >= target - run.dc.recoverable]
    for c in cands:
        if c not in hopeful:
            c["skipped"] = f"K-means validation accuracy more than {run.dc.recoverable:g} points below the target"
    # nothing hopeful: train the best one anyway, to report how far it gets
    queue = hopeful or [max(cands, key=lambda c: c["kmeans_val_acc"])]
    reason = "queue" if hopeful else "fallback"
    attempts = []
    for cand in queue[:run.dc.max_quant_runs]:
        attempts.append(_attempt(run, cand, teacher, reason))
        if attempts[-1][0]["compressed_val_acc"] >= target:
            break
    def passing():
        return [a for a in attempts if a[0]["compressed_val_acc"] >= target]

    if passing() and len(attempts) < run.dc.max_quant_runs:
        kept_ratio = passing()[0][0]["ratio_file"]
        above = [c for c in cands if c.get("skipped") and c["ratio_file"] > kept_ratio]
        if above:
            attempts.append(_attempt(run, max(above, key=lambda c: c["ratio_file"]), teacher, "leftover"))
    chosen = (max(passing(), key=lambda a: a[0]["ratio_file"]) if passing()
              else max(attempts, key=lambda a: a[0]["compressed_val_acc"]))
    return cands, [a for a, _ in attempts], chosen


def _attempt(run, cand, teacher, reason):
    """(the candidate with its trained accuracies, its record and why it was trained:
    "queue" (passed the screen), "leftover" (a run left after one passed) or "fallback"
    (nothing passed the screen), the trained net)."""
    net, record = trained_quantization(run, cand, teacher)
    return ({**cand, "compressed_acc": run.evaluate(net), "compressed_val_acc": run.validate(net),
             "record": record, "why": reason}, net)


def write_and_verify(run, attempt, net):
    """Save the chosen model to checkpoints/dc_compressed.dcmp, load the file back into a
    plain ResNetCIFAR (num_layers=20 for the notebook's model), check that its tensors
    equal the compressed model's bit for bit, and evaluate it: final_acc is the accuracy
    of the decoded file."""
    path = run.checkpoint_of("dc_compressed").with_suffix(".dcmp")
    report = save_compressed(net, path)
    decoded = load_compressed_model(path)  # ResNetCIFAR(num_layers from the file), loaded strictly
    expected = plain_state_dict(net)
    exact = all(torch.equal(decoded.state_dict()[k], expected[k]) for k in expected)
    final_acc = tu.evaluate(tu.prepare_for_device(decoded, run.data.device), run.data)[0]
    dense_acc = run.results["dense"]["acc"]
    return {"file": str(path), "sha256": tu.sha256(path), "dense_acc": dense_acc, "final_acc": final_acc,
            "drop": dense_acc - final_acc, "target_met": dense_acc - final_acc <= run.dc.max_drop,
            "val_acc": attempt["compressed_val_acc"], "reference_val_acc": run.results["retrain"]["0"]["val_acc"],
            "exact_round_trip": exact, "compressed_acc": attempt["compressed_acc"],
            "bits": attempt["bits"], "s": attempt["s"], "model": attempt["model"],
            "zeros_pct": attempt["zeros_pct"],  # of the pruned layers, as everywhere else
            **ratios(net, report, attempt["bits"]), "bytes": report["parts"],
            "layers": report["layers"]}


def total_epochs(results):
    """Training epochs this run's stages took (reloaded stages count what they trained)."""
    retrain = sum(r["epochs"] for r in results.get("retrain", {}).values())
    ladder_epochs = sum(m.get("epochs", 0) for m in results.get("pipeline", {}).get("models", []))
    quant = sum(a["record"]["epochs"] for a in results.get("pipeline", {}).get("attempts", []))
    return retrain + ladder_epochs + quant


# ----------------------------------------------------------------------------- figures

def plot_prune_layers(no_retrain, path):
    """Zeros per layer after pruning by s x std (no retraining)."""
    runs = {f"s = {s}": r["layer_zeros"] for s, r in no_retrain.items() if float(s) > 0}
    layers = list(next(iter(runs.values())))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(runs)
    for i, (label, zeros) in enumerate(runs.items()):
        ax.bar([x + i * width for x in range(len(layers))], [zeros[n] for n in layers], width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(layers))], [short(n) for n in layers],
                  rotation=60, fontsize=7)
    ax.set(ylabel="zeros (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return ex._finish(fig, path, "Pruning by standard deviation: zeros per layer")


def plot_kmeans(study, path, test_label):
    """Accuracy and quantization error against bits, one line per initialisation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    bits = study["bits"]
    for init, rows in study["inits"].items():
        left.plot(bits, [rows[str(b)]["acc"] for b in bits], marker="o", label=init)
        right.plot(bits, [rows[str(b)]["mse"] for b in bits], marker="o", label=init)
    left.axhline(study["float_acc"], color="gray", ls="--", lw=1, label="float (pruned)")
    left.set(xlabel="bits per index (2^bits clusters per layer)", ylabel=f"test accuracy (%)\n{test_label}")
    right.set(xlabel="bits per index", ylabel="mean squared error of non-zero weights", yscale="log")
    for ax in (left, right):
        ax.set_xticks(bits)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return ex._finish(fig, path, "K-means weight sharing without finetuning")


def plot_histograms(float_net, shared_net, names, bits, path):
    """Histograms of the non-zero weights of `names` before and after K-means."""
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6))
    before, after = coded_layers(float_net), coded_layers(shared_net)
    for ax, name in zip(np.atleast_1d(axes), names):
        w = before[name].weight.detach().cpu().flatten()
        kept = w != 0
        q = after[name].weight.detach().cpu().flatten()[kept]
        ax.hist(w[kept].numpy(), bins=120, color="tab:blue", alpha=0.6, label="before (non-zero)")
        values, counts = np.unique(q.numpy(), return_counts=True)
        ax.vlines(values, 0, counts / 10, color="tab:red", lw=1.5, label=f"after, {bits} bits (count / 10)")
        ax.set(title=short(name), xlabel="weight", ylabel="count")
        ax.legend(fontsize=7)
    return ex._finish(fig, path, f"Weights before and after K-means ({bits} bits, linear initialisation)")


def plot_huffman(study, path):
    """Bits per index (Huffman, entropy) and per position, per layer."""
    layers = study["layers"]
    names = list(layers)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(x - 0.2, [layers[n]["index_bits"] for n in names], 0.4, label="index: Huffman bits")
    ax.bar(x + 0.2, [layers[n]["gap_bits"] for n in names], 0.4, label="position: Huffman bits (gaps + fillers)")
    ax.plot(x - 0.2, [layers[n]["index_entropy"] for n in names], "k_", ms=10, label="index: entropy")
    ax.axhline(study["bits"], color="gray", ls="--", lw=1, label=f"{study['bits']} bits (fixed length)")
    ax.set_xticks(x, [short(n) for n in names], rotation=60, fontsize=7)
    ax.set(ylabel="bits per non-zero weight", ylim=(0, study["bits"] + 2))  # room for the legend
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2, loc="upper left")
    return ex._finish(fig, path, f"Huffman coding at {study['bits']} bits, per layer")


def plot_bytes(final, path):
    """Where the bytes of the compressed file go."""
    parts = {k: v for k, v in sorted(final["bytes"].items(), key=lambda kv: -kv[1]) if v}
    fig, ax = plt.subplots(figsize=(9, 2.4))
    left = 0
    for name, size in parts.items():
        ax.barh(0, size / 1024, left=left / 1024, label=f"{name}: {size / 1024:.1f} KiB")
        left += size
    ax.set(xlabel="KiB", yticks=[])
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ex._finish(fig, path, f"The compressed file: {final['file_bytes'] / 1024:.1f} KiB "
                            f"({final['ratio_file']:.1f}x smaller than float32)")


def plot_pipeline(cands, attempts, dense_acc, max_drop, path, test_label):
    """File ratio against accuracy: candidates after K-means, attempts after training."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([c["ratio_file"] for c in cands], [c["kmeans_acc"] for c in cands], marker="o",
               facecolors="none", edgecolors="tab:blue", label="K-means, no finetuning")
    ax.scatter([a["ratio_file"] for a in attempts], [a["compressed_acc"] for a in attempts], marker="s",
               color="tab:red", label="after trained quantization")
    for c in cands:
        ax.annotate(f"s={c['s']:g}, {c['bits']}b", (c["ratio_file"], c["kmeans_acc"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(dense_acc, color="black", lw=1, label="dense")
    if dense_acc - max_drop > 0:  # quick mode's 100-point budget would only squash the plot
        ax.axhline(dense_acc - max_drop, color="gray", ls="--", lw=1, label=f"dense - {max_drop:g} point")
    ax.set(xlabel="file ratio (float32 bytes / file bytes)", ylabel=f"test accuracy (%)\n{test_label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ex._finish(fig, path, "Deep Compression candidates")
