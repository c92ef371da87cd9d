"""Tests for compression.py (deep_compression.ipynb) and report/deep_compression_section.py.

Independent references: sklearn's KMeans (same initial centroids), dahuffman and a
brute-force search over all code lengths (Huffman optimality), the entropy bounds,
per-cluster sums by hand (centroid gradients), hand-made gap sequences, and a plain
ResNetCIFAR loaded from the file (round trip). Tiny tensors and ResNet-8 where a network
trains: the file runs in seconds.
"""
import itertools
import json
import math
import random
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import compression as cp
import experiment as ex
import train_util as tu
from report import deep_compression_section as sec
from report.tables import NOT_RUN, QUICK_BANNER
from helpers import random_resnet, randomize_batch_norm
from resnet20 import ResNetCIFAR


def pruned_shared_net(num_layers=8, bits=3, s=0.7, seed=0):
    net = random_resnet(num_layers, seed)
    cp.prune_by_std(net, s)
    return cp.share_weights_(net, bits, "linear")


# ============================================================================ K-means

def lloyd_reference(values, init):
    from sklearn.cluster import KMeans
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that an explicit init runs once
        km = KMeans(len(init), init=init.numpy().reshape(-1, 1), n_init=1, algorithm="lloyd", tol=0,
                    max_iter=1000).fit(values.double().numpy().reshape(-1, 1))
    return km.labels_, km.cluster_centers_.ravel()


def never_empties(values, start, iterations):
    """True if no cluster is empty after any iteration (sklearn relocates an empty
    cluster to a far value, we keep its centroid: the two agree only without empties)."""
    return all(bool((torch.bincount(cp.kmeans_1d(values, start, max_iter=i).labels, minlength=len(start)) > 0).all())
               for i in range(1, iterations + 1))


@pytest.mark.parametrize("init", cp.INITS)
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_matches_sklearn_lloyd_from_the_same_centroids(init, seed):
    gen = torch.Generator().manual_seed(seed)
    # weight-sized values: a peak at zero over a uniform floor that populates the tails
    values = torch.cat([torch.randn(2000, generator=gen) * 0.02, torch.rand(1000, generator=gen) * 0.2 - 0.1])
    start = cp.init_centroids(values, 16, init, torch.Generator().manual_seed(seed))
    ours = cp.kmeans_1d(values, start)
    assert never_empties(values, start, ours.iterations)
    labels, centers = lloyd_reference(values, start)
    np.testing.assert_array_equal(ours.labels.numpy(), labels)
    np.testing.assert_allclose(ours.centroids.numpy(), centers, rtol=0, atol=1e-12)
    assert ours.iterations > 1


def test_kmeans_is_a_fixed_point_by_brute_force():
    values = torch.randn(500, dtype=torch.float64)
    result = cp.kmeans_1d(values, cp.init_centroids(values, 8, "linear"))
    distances = (values[:, None] - result.centroids[None, :]).abs()
    assert torch.equal(distances.argmin(1), result.labels)  # every value at its nearest centroid
    for j in range(8):
        torch.testing.assert_close(result.centroids[j], values[result.labels == j].mean())


def test_linear_init_spans_min_to_max_evenly():
    values = torch.tensor([0.3, -0.2, 0.1, 0.05, -0.15])
    torch.testing.assert_close(cp.init_centroids(values, 6, "linear"),
                               torch.tensor([-0.2, -0.1, 0.0, 0.1, 0.2, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_random_inits_draw_distinct_data_values_reproducibly(init):
    values = torch.randn(400)
    draw = lambda seed: cp.init_centroids(values, 16, init, torch.Generator().manual_seed(seed))
    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a.unique()) == 16 and all(bool((values.double() == v).any()) for v in a)


def test_kmeanspp_picks_the_far_value_second():
    """D^2 sampling: with one value 1000 std away, it is the second centroid with
    probability 1 - 1e-6 or so (uniform seeding would pick it 1 time in 500)."""
    values = torch.cat([torch.randn(499) * 0.1, torch.tensor([100.0])])
    for seed in range(5):
        start = cp.init_centroids(values, 2, "kmeans++", torch.Generator().manual_seed(seed))
        assert 100.0 in start.tolist()


def test_bad_init_and_bits_get_clear_errors():
    with pytest.raises(ValueError, match="kmeans\\+\\+"):
        cp.init_centroids(torch.randn(10), 4, "forgy")
    for bits in (0, cp.MAX_BITS + 1, 2.5, True):
        with pytest.raises(ValueError, match="bits must be an integer"):
            cp.share_weight(torch.randn(10), bits)


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_share_weight_clusters_only_nonzero_weights(bits):
    weight = torch.randn(8, 4, 3, 3)
    weight[weight.abs() < 0.5] = 0
    codebook, index = cp.share_weight(weight, bits, "linear")
    k = len(codebook)
    assert index.shape == weight.shape and 0 < k <= 2 ** bits
    assert torch.equal(index == k, weight == 0)  # zeros, and only zeros, are pruned
    assert torch.all(codebook[1:] > codebook[:-1])  # ascending, no empty or repeated cluster
    w, idx = weight[weight != 0].double(), index[weight != 0]
    distances = (w[:, None] - codebook.double()[None, :]).abs()
    assert torch.all(distances.gather(1, idx[:, None]).squeeze(1) <= distances.min(1).values + 1e-7)
    for j in range(k):  # each centroid is the mean of its weights (float32-rounded)
        torch.testing.assert_close(codebook[j], w[idx == j].mean().float())


def test_layers_with_few_distinct_values_keep_them_exactly():
    weight = torch.tensor([[0.0, 0.5, -0.25], [0.5, 0.0, 0.125]])
    codebook, index = cp.share_weight(weight, 2)
    assert codebook.tolist() == [-0.25, 0.125, 0.5]
    assert torch.equal(torch.cat([codebook, torch.zeros(1)])[index], weight)
    codebook, index = cp.share_weight(torch.zeros(3, 3), 4)
    assert len(codebook) == 0 and bool((index == 0).all())


# ============================================================================ trained quantization

def test_share_weights_keeps_the_model_and_makes_codebooks_the_only_layer_parameters():
    net = pruned_shared_net()
    for name, layer in cp.coded_layers(net).items():
        codebook, index = cp.codebook_and_index(layer)
        assert torch.equal(layer.weight.flatten(), torch.cat([codebook, torch.zeros(1)])[index])
        assert len(layer.weight.unique()) <= 2 ** 3 + 1
    names = [n for n, p in net.named_parameters()]
    assert not any(n.endswith("conv.weight") or n.endswith("linear.weight") for n in names)
    assert sum(n.endswith("parametrizations.weight.original") for n in names) == len(cp.coded_layers(net))
    with pytest.raises(ValueError, match="already shared"):
        cp.share_weights_(net, 3)


def test_a_shared_state_dict_loads_strictly_into_a_net_shared_like_it(tmp_path):
    net = pruned_shared_net().eval()
    torch.save(net.state_dict(), tmp_path / "q.pt")
    state = torch.load(tmp_path / "q.pt", weights_only=True)
    fresh = ResNetCIFAR(num_layers=8)
    with pytest.raises(RuntimeError):   # a plain net does not take the codebooks and indices
        fresh.load_state_dict(state, strict=True)
    fresh = cp.share_like_(ResNetCIFAR(num_layers=8), state, bits=3)
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), net(x))


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    net = pruned_shared_net()
    plain = cp.plain_copy(net).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    for model in (net, plain):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    plain_layers = cp.coded_layers(plain)
    for name, layer in cp.coded_layers(net).items():
        codebook, index = cp.codebook_and_index(layer)
        weight_grad = plain_layers[name].weight.grad.flatten().double()
        by_hand = torch.stack([weight_grad[index == j].sum() for j in range(len(codebook))])
        scale = torch.stack([weight_grad[index == j].abs().sum() for j in range(len(codebook))])
        # float32 sums in another order: equal up to rounding of the terms' magnitudes
        difference = (layer.parametrizations.weight.original.grad.double() - by_hand).abs()
        assert bool((difference <= 1e-5 * scale + 1e-12).all()), name


def tiny_data():
    return tu.synthetic_cifar(64, 32, seed=1, device="cpu")


def quant_recipe():
    return replace(cp.quant_recipe(cp.FULL_DC), batch_size=32, distill=0.0)


def test_fit_trains_centroids_and_keeps_assignments_and_zeros():
    net = pruned_shared_net()
    before = {n: [t.clone() for t in cp.codebook_and_index(m)] for n, m in cp.coded_layers(net).items()}
    zeros_before = {n: (m.weight == 0).clone() for n, m in cp.coded_layers(net).items()}
    tu.fit(net, tiny_data(), 1, quant_recipe(), progress=False)
    moved = 0
    for name, layer in cp.coded_layers(net).items():
        codebook, index = cp.codebook_and_index(layer)
        assert torch.equal(index, before[name][1])
        assert torch.equal(layer.weight == 0, zeros_before[name])
        assert len(layer.weight.unique()) <= len(codebook) + 1
        moved += not torch.equal(codebook, before[name][0])
    assert moved == len(before)  # every codebook was trained


def test_fit_resumes_a_shared_net_bitwise(tmp_path):
    """An interrupted trained quantization continues exactly (fit's per-epoch resume)."""
    data, recipe = tiny_data(), quant_recipe()
    reference = pruned_shared_net()
    tu.fit(reference, data, 2, recipe, progress=False)

    def stop_before_epoch_2(epoch, masks):
        if epoch == 2:
            raise KeyboardInterrupt

    interrupted = pruned_shared_net()
    resume = tmp_path / "quant.resume.pt"
    with pytest.raises(KeyboardInterrupt):
        tu.fit(interrupted, data, 2, recipe, progress=False, resume=resume, before_epoch=stop_before_epoch_2)
    resumed = pruned_shared_net()
    tu.fit(resumed, data, 2, recipe, progress=False, resume=resume)
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_prune_by_std_against_a_reference_std():
    torch.manual_seed(0)
    net = ResNetCIFAR(num_layers=8)
    dense_std = cp.layer_stds(net)
    cp.prune_by_std(net, 1.0)
    own = cp.layer_stds(net)  # smaller once zeros are in: the same s would prune nothing more
    zeros_own = tu.sparsity(net)
    cp.prune_by_std(net, 1.0, dense_std)
    assert tu.sparsity(net) == zeros_own and all(own[n] < dense_std[n] for n in own)
    cp.prune_by_std(net, 1.5, dense_std)
    for name, layer in tu.prunable_layers(net).items():
        w = layer.weight
        assert bool((w[w != 0].abs() >= 1.5 * dense_std[name]).all())
    assert tu.sparsity(net) > zeros_own
    with pytest.raises(ValueError):
        cp.prune_by_std(net, -1)


# ============================================================================ Huffman

def random_counts(rng, n, skew=1.0):
    return {s: max(1, int(rng.paretovariate(skew) * 10)) for s in rng.sample(range(1000), n)}


def brute_force_optimum(counts):
    """Smallest sum of count x length over every length vector of a prefix code (Kraft)."""
    symbols = list(counts)
    best = math.inf
    for lengths in itertools.product(range(1, len(symbols)), repeat=len(symbols)):
        if sum(2.0 ** -l for l in lengths) <= 1:
            best = min(best, sum(counts[s] * l for s, l in zip(symbols, lengths)))
    return best


def test_huffman_is_optimal_by_brute_force_on_small_alphabets():
    rng = random.Random(0)
    for n in range(2, 7):
        for _ in range(6):
            counts = random_counts(rng, n)
            code = cp.HuffmanCode.from_counts(counts)
            assert sum(c * code.lengths[s] for s, c in counts.items()) == brute_force_optimum(counts)


def test_huffman_average_length_equals_dahuffman():
    dahuffman = pytest.importorskip("dahuffman", reason="pinned in requirements.txt: the reference Huffman coder")
    rng = random.Random(1)
    for n, skew in [(2, 1.0), (5, 0.5), (16, 1.0), (32, 2.0), (64, 0.7), (300, 1.5)]:
        counts = random_counts(rng, n, skew)
        # eof = a symbol already in the alphabet: dahuffman then adds no end-of-file symbol
        table = dahuffman.HuffmanCodec.from_frequencies(counts, eof=next(iter(counts))).get_code_table()
        reference = sum(c * table[s][0] for s, c in counts.items()) / sum(counts.values())
        assert cp.HuffmanCode.from_counts(counts).average_length(counts) == pytest.approx(reference, abs=1e-12)


def is_prefix_free(codes):
    words = sorted(codes.values())  # a prefix sorts right before the words it begins
    return all(not b.startswith(a) for a, b in zip(words, words[1:]))


def test_codes_are_prefix_free_canonical_and_within_the_entropy_bounds():
    rng = random.Random(2)
    for n in (2, 3, 8, 40, 200):
        counts = random_counts(rng, n)
        code = cp.HuffmanCode.from_counts(counts)
        strings = code.code_strings()
        assert is_prefix_free(strings) and len(set(strings.values())) == n
        assert sum(2.0 ** -len(w) for w in strings.values()) == pytest.approx(1.0)  # a full tree
        ordered = sorted(counts, key=lambda s: (code.lengths[s], s))
        assert [int(strings[s], 2) << (99 - len(strings[s])) for s in ordered] == \
            sorted(int(strings[s], 2) << (99 - len(strings[s])) for s in ordered)  # canonical order
        entropy, average = cp.entropy_bits(counts), code.average_length(counts)
        assert entropy <= average + 1e-12 and average < entropy + 1


def test_entropy_is_reached_for_dyadic_probabilities():
    counts = {0: 8, 1: 4, 2: 2, 3: 1, 4: 1}
    code = cp.HuffmanCode.from_counts(counts)
    assert code.lengths == {0: 1, 1: 2, 2: 3, 3: 4, 4: 4}
    assert code.average_length(counts) == cp.entropy_bits(counts) == 1.875


@pytest.mark.parametrize("symbols", [
    [3, 3, 3, 1, 0, 7, 7, 3, 1000, 2],
    [5] * 17,                                   # a single symbol: zero bits
    [],
    list(np.random.default_rng(0).geometric(0.3, 5000)),
    [i for i, f in enumerate([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987])
     for _ in range(f)],                        # Fibonacci counts: code lengths up to 15
])
def test_decode_inverts_encode(symbols):
    code = cp.HuffmanCode.from_symbols(symbols) if symbols else cp.HuffmanCode({})
    data, bits = code.encode(symbols)
    assert len(data) == math.ceil(bits / 8)
    assert bits == sum(code.lengths[s] for s in symbols)
    assert code.decode(data, len(symbols)) == list(symbols)


def test_single_symbol_costs_no_bits_and_bad_input_is_refused():
    code = cp.HuffmanCode.from_counts({4: 10})
    assert code.lengths == {4: 0} and code.encode([4] * 10) == (b"", 0)
    with pytest.raises(ValueError, match="no code"):
        cp.HuffmanCode.from_counts({1: 2, 2: 3}).encode([1, 5])
    with pytest.raises(ValueError, match="Kraft"):
        cp.HuffmanCode({0: 1, 1: 1, 2: 1})
    with pytest.raises(cp.CompressedFileError, match="truncated"):
        cp.HuffmanCode.from_counts({1: 2, 2: 3}).decode(b"", 3)


# ============================================================================ positions

def test_gap_symbols_by_hand():
    # gaps 1, 1, 4, 15; max gap 4: 15 = 3 fillers (12 positions) + 3
    assert cp.gap_symbols([0, 1, 5, 20], 4).tolist() == [1, 1, 4, 0, 0, 0, 3]
    assert cp.positions_from_gaps([1, 1, 4, 0, 0, 0, 3], 4).tolist() == [0, 1, 5, 20]
    assert cp.gap_symbols([7], 8).tolist() == [8] and cp.gap_symbols([8], 8).tolist() == [0, 1]
    with pytest.raises(ValueError, match="increasing"):
        cp.gap_symbols([3, 3], 4)


@pytest.mark.parametrize("max_gap", [1, 2, 16, 256])
def test_gap_symbols_round_trip_with_long_gaps(max_gap):
    rng = np.random.default_rng(max_gap)
    positions = np.sort(rng.choice(100_000, 700, replace=False))
    symbols = cp.gap_symbols(positions, max_gap)
    gaps = np.diff(positions, prepend=-1)
    assert (symbols == 0).sum() == ((gaps - 1) // max_gap).sum()
    assert symbols.max() <= max_gap
    np.testing.assert_array_equal(cp.positions_from_gaps(symbols, max_gap), positions)


def test_chosen_max_gap_gives_the_fewest_bytes():
    positions = np.sort(np.random.default_rng(0).choice(5000, 900, replace=False))
    log2_gap, code, symbols = cp.choose_max_gap(positions)

    def size(m):
        s = cp.gap_symbols(positions, 2 ** m)
        c = cp.HuffmanCode.from_symbols(s)
        return math.ceil(c.encode(s)[1] / 8) + cp.table_bytes(c)

    assert size(log2_gap) == min(size(m) for m in range(1, cp.MAX_GAP_LOG2 + 1))
    np.testing.assert_array_equal(cp.positions_from_gaps(symbols, 2 ** log2_gap), positions)


# ============================================================================ the file

@pytest.fixture(scope="module")
def resnet20_file():
    """A pruned, 4-bit shared ResNet-20 with float16-rounded floats, and its file bytes."""
    torch.manual_seed(0)
    net = randomize_batch_norm(ResNetCIFAR(num_layers=20)).eval()
    cp.prune_by_std(net, 1.0)
    cp.round_floats_to_float16_(cp.share_weights_(net, 4, "linear"))
    data, report = cp.compress(net)
    return net, data, report


def test_round_trip_is_exact_and_loads_strictly_into_resnet20(resnet20_file, tmp_path):
    net, data, _ = resnet20_file
    path = tmp_path / "model.dcmp"
    report = cp.save_compressed(net, path)
    assert path.read_bytes() == data and report["bytes"] == len(data)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    state = cp.load_compressed(path)
    decoded = ResNetCIFAR(num_layers=20).eval()
    decoded.load_state_dict(state, strict=True)
    expected = cp.plain_state_dict(net)
    assert list(state) == list(ResNetCIFAR(num_layers=20).state_dict())
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(decoded(x), net(x))  # the compressed model's outputs, exactly
        assert torch.equal(cp.load_compressed_model(path).eval()(x), net(x))


def test_where_the_bytes_go_adds_up(resnet20_file):
    net, data, report = resnet20_file
    assert sum(report["parts"].values()) == len(data)
    per_tensor = sum(sum(t.values()) for t in report["tensors"].values())
    assert per_tensor + report["parts"]["header"] + report["architecture_bytes"] == len(data)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_floats = sum(4 * m.num_features for m in norms)  # weight, bias, running mean and variance
    assert report["parts"]["batch norm"] == 2 * bn_floats + 8 * len(norms)  # float16 values, int64 counters
    codebooks = sum(len(cp.codebook_and_index(m)[0]) for m in cp.coded_layers(net).values())
    assert report["parts"]["codebooks"] == 2 * codebooks  # float16-rounded centroids
    for name, stats in report["layers"].items():
        _, index = cp.codebook_and_index(cp.coded_layers(net)[name])
        assert stats["nonzero"] == int((index != stats["clusters"]).sum())


def test_ratios_by_their_definitions(resnet20_file):
    net, data, report = resnet20_file
    r = cp.ratios(net, report, 4)
    state = ResNetCIFAR(num_layers=20).state_dict()
    floats = sum(t.numel() for t in state.values() if t.is_floating_point())
    counters = sum(k.endswith("num_batches_tracked") for k in state)
    assert r["dense_bytes"] == 4 * floats + 8 * counters
    assert r["ratio_file"] == r["dense_bytes"] / len(data)
    total = sum(m.weight.numel() for m in cp.coded_layers(net).values())
    nonzero = sum(int((m.weight != 0).sum()) for m in cp.coded_layers(net).values())
    assert r["weights"] == total and r["nonzero"] == nonzero  # no centroid is exactly 0 here
    # the seed's formula: (nonzero/total x 4/32 x huffman/4)^-1 = 32 total / (nonzero huffman)
    assert r["ratio_formula"] == pytest.approx(32 * total / (nonzero * r["huffman_bits"]))
    assert r["huffman_bits"] < 4 and r["ratio_formula"] > r["ratio_file"]


def test_a_plain_dense_model_round_trips_too():
    torch.manual_seed(0)
    net = randomize_batch_norm(ResNetCIFAR(num_layers=8)).eval()
    data, report = cp.compress(net)
    state = cp.decompress(data)
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value), key
    assert report["bytes"] > cp.dense_bytes(net)  # raw float32 weights: nothing to gain
    with torch.no_grad():
        net.head_conv[1].running_var[0] = 1 + 2 ** -20  # not a float16 value: must stay float32
    assert torch.equal(cp.decompress(cp.compress(net)[0])["head_conv.1.running_var"],
                       net.head_conv[1].running_var)


def test_truncated_files_are_refused_clearly(resnet20_file, tmp_path):
    _, data, _ = resnet20_file
    for size in (0, 7, 13, 14, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{size}.dcmp"
        path.write_bytes(data[:size])
        with pytest.raises(cp.CompressedFileError, match="truncated"):
            cp.load_compressed(path)


def test_every_flipped_byte_is_detected(resnet20_file):
    _, data, _ = resnet20_file
    rng = random.Random(0)
    positions = list(range(cp.HEADER.size + 8)) + rng.sample(range(len(data)), 300) + [len(data) - 1]
    for position in positions:
        corrupt = bytearray(data)
        corrupt[position] ^= 1 << rng.randrange(8)
        with pytest.raises(cp.CompressedFileError, match="corrupt|truncated|not a compressed|version|longer"):
            cp.decompress(bytes(corrupt))


def test_other_files_and_models_get_clear_errors(resnet20_file, tmp_path):
    _, data, _ = resnet20_file
    with pytest.raises(cp.CompressedFileError, match="longer than its header"):
        cp.decompress(data + b"\0")
    with pytest.raises(cp.CompressedFileError, match="not a compressed model"):
        cp.decompress(b"PK\x03\x04" + data[4:])
    with pytest.raises(FileNotFoundError, match="save_compressed"):
        cp.load_compressed(tmp_path / "missing.dcmp")
    with pytest.raises(TypeError, match="ResNetCIFAR"):
        cp.compress(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ============================================================================ the notebook's pipeline

@pytest.fixture
def tiny_run(tmp_path):
    """A full-mode DeepCompressionRun (stages reload) on 32 synthetic images, 1-epoch
    stages, from a random ResNet-8 saved as the 'pretrained' model."""
    torch.manual_seed(0)
    pretrained = tu.save_checkpoint(randomize_batch_norm(ResNetCIFAR(num_layers=8)), tmp_path / "pretrained.pt")
    run = cp.DeepCompressionRun.__new__(cp.DeepCompressionRun)
    run.dc = replace(cp.QUICK_DC, sensitivities=(0.0, 1.0), candidate_bits=(4,), max_quant_runs=1, val_images=8)
    run.settings = ex.Settings(False, 1, 1, 1, None, None, tmp_path / "report", tmp_path / "ckpt")
    run.settings.ckpt_dir.mkdir(parents=True)
    run.seed, run.data = 0, tu.synthetic_cifar(32, 16, device="cpu")
    run.split_validation()
    run.results = {"meta": {"pretrained": {"sha256": tu.sha256(pretrained)}}}

    def model(Nbits=None, checkpoint=None):  # Experiment.model with ResNet-8: seconds, not minutes
        net = tu.load_checkpoint(ResNetCIFAR(num_layers=8), checkpoint or pretrained)
        return tu.prepare_for_device(net, run.data.device)

    run.model = model
    return run


def run_pipeline(run):
    """The notebook's code path from the dense model to the verified file."""
    teacher = run.teacher()
    run.results["dense"] = cp.dense_summary(run)
    run.results["retrain"] = cp.retrain_all(run, teacher)
    start = run.checkpoint_of("dc_prune_s100")
    models = cp.ladder(run, start, run.results["retrain"]["1"], cp.layer_stds(run.model()), teacher)
    cands, attempts, (chosen, net) = cp.pipeline(run, models, teacher)
    return models, cands, attempts, cp.write_and_verify(run, chosen, net)


def test_pipeline_writes_a_verified_file_and_reloads_finished_stages(tiny_run, monkeypatch):
    models, cands, attempts, final = run_pipeline(tiny_run)
    assert [m["s"] for m in models] == [1.0, 1.25] and models[1]["zeros_pct"] > models[0]["zeros_pct"]
    assert final["exact_round_trip"] and final["file_bytes"] == Path(final["file"]).stat().st_size
    assert final["final_acc"] == attempts[0]["compressed_acc"]  # the decoded file scores as the model
    assert final["file_bytes"] == cands[0]["file_bytes"]  # the size was final before training
    assert sum(final["bytes"].values()) == final["file_bytes"]
    monkeypatch.setattr(tu, "fit", lambda *a, **k: pytest.fail("a finished stage was trained again"))
    again = run_pipeline(tiny_run)[3]
    assert again["sha256"] == final["sha256"]


def test_pipeline_trains_on_the_images_the_validation_split_leaves(tiny_run, monkeypatch):
    seen = []
    real_fit = tu.fit
    monkeypatch.setattr(tu, "fit", lambda net, data, *a, **k: seen.append(data) or real_fit(net, data, *a, **k))
    run_pipeline(tiny_run)
    assert seen and all(d is tiny_run.train_data for d in seen)
    assert len(tiny_run.train_data.y_train) == 24
    assert torch.equal(tiny_run.val_data.x_test, tiny_run.data.x_train[24:])  # held out, not trained on


def test_dc_validation_label_says_the_pretrained_start_model_saw_those_images(tiny_run):
    label = tiny_run.val_data.test_label
    assert label.startswith("synthetic train[24:32] (validation")          # the same 8 images
    assert "every Deep Compression retraining" in label and "pretrained" in label
    assert "held out of training" not in label
    # the split itself (tuning.py, hw4) keeps its own label: there the model never saw them
    assert tiny_run.data.split_validation(8)[1].test_label.endswith("(validation, held out of training)")
    assert torch.equal(tiny_run.val_data.x_test, tiny_run.data.split_validation(8)[1].x_test)


def test_ladder_stops_on_validation_accuracy_whatever_the_test_images_say(tiny_run):
    tiny_run.dc = replace(tiny_run.dc, max_drop=1.0)
    tiny_run.results.update(retrain={"0": {"val_acc": 50.0}}, dense={"acc": 10.0})
    start = {"final_acc": 99.0, "val_acc": 40.0, "zeros_pct": 70.0}  # test: fine; validation: too far
    models = cp.ladder(tiny_run, Path("unused.pt"), start, {}, teacher=None)
    assert [m["s"] for m in models] == [tiny_run.dc.start_s]  # no further pruning step trained


def test_pipeline_keeps_the_candidate_the_validation_images_pick(tiny_run, monkeypatch):
    tiny_run.results["retrain"] = {"0": {"val_acc": 80.0}}  # target: 79 on the validation images
    tiny_run.dc = replace(tiny_run.dc, max_drop=1.0, recoverable=100.0, max_quant_runs=2)
    fake = [{"model": name, "bits": bits, "kmeans_acc": 90.0, "kmeans_val_acc": 78.5, "ratio_file": ratio}
            for name, bits, ratio in (("larger ratio", 3, 21.0), ("smaller ratio", 5, 19.0))]
    monkeypatch.setattr(cp, "candidates", lambda run, models: [dict(c) for c in fake])
    monkeypatch.setattr(cp, "trained_quantization", lambda run, cand, teacher: (cand["model"], {}))
    test_acc = {"larger ratio": 95.0, "smaller ratio": 60.0}  # the test images would keep the first
    val_acc = {"larger ratio": 70.0, "smaller ratio": 85.0}
    monkeypatch.setattr(tiny_run, "evaluate", test_acc.get)
    monkeypatch.setattr(tiny_run, "validate", val_acc.get)
    _, attempts, (chosen, net) = cp.pipeline(tiny_run, [], teacher=None)
    assert [a["model"] for a in attempts] == ["larger ratio", "smaller ratio"]
    assert net == "smaller ratio" and chosen["compressed_acc"] == 60.0  # reported, not chosen on


def _fake_pipeline(run, monkeypatch, val_acc, field="model"):
    """pipeline() over made-up candidates: 'screened out' (21x, K-means 60 %: skipped) and
    'hopeful' (18x); trained quantization is replaced by the given validation accuracies."""
    run.results["retrain"] = {"0": {"val_acc": 80.0}}  # target: 79 on the validation images
    fake = [{"model": "screened out", "bits": 3, "kmeans_acc": 60.0, "kmeans_val_acc": 60.0, "ratio_file": 21.0},
            {"model": "hopeful", "bits": 4, "kmeans_acc": 90.0, "kmeans_val_acc": 78.5, "ratio_file": 18.0}]
    monkeypatch.setattr(cp, "candidates", lambda run, models: [dict(c) for c in fake])
    monkeypatch.setattr(cp, "trained_quantization", lambda run, cand, teacher: (cand["model"], {}))
    monkeypatch.setattr(run, "evaluate", lambda net: 90.0)
    monkeypatch.setattr(run, "validate", val_acc.get)
    _, attempts, (chosen, net) = cp.pipeline(run, [], teacher=None)
    return [a[field] for a in attempts], net


def test_each_attempt_records_why_it_was_trained(tiny_run, monkeypatch):
    tiny_run.dc = replace(tiny_run.dc, max_drop=1.0, recoverable=3.0, max_quant_runs=2)
    whys, _ = _fake_pipeline(tiny_run, monkeypatch, {"screened out": 70.0, "hopeful": 85.0}, field="why")
    assert whys == ["queue", "leftover"]
    # nothing passes the screen (78.5 < 79 - 0.1): the best K-means one is trained anyway, passes,
    # and the run left goes to the screened-out candidate of higher ratio
    tiny_run.dc = replace(tiny_run.dc, recoverable=0.1)
    whys, _ = _fake_pipeline(tiny_run, monkeypatch, {"screened out": 70.0, "hopeful": 85.0}, field="why")
    assert whys == ["fallback", "leftover"]


def test_a_leftover_run_measures_the_screened_out_candidate_and_keeps_it_only_if_it_passes(tiny_run, monkeypatch):
    tiny_run.dc = replace(tiny_run.dc, max_drop=1.0, recoverable=3.0, max_quant_runs=2)
    tried, kept = _fake_pipeline(tiny_run, monkeypatch, {"screened out": 70.0, "hopeful": 85.0})
    assert tried == ["hopeful", "screened out"] and kept == "hopeful"      # measured, failed: not kept
    tried, kept = _fake_pipeline(tiny_run, monkeypatch, {"screened out": 79.5, "hopeful": 85.0})
    assert tried == ["hopeful", "screened out"] and kept == "screened out"  # passed: the higher ratio wins
    tiny_run.dc = replace(tiny_run.dc, max_quant_runs=1)                      # no run left: screen stands
    assert _fake_pipeline(tiny_run, monkeypatch, {"screened out": 79.5, "hopeful": 85.0}) == (["hopeful"], "hopeful")


# ============================================================================ report section

def fake_results(quick=False):
    """deep_compression.json as the notebook writes it (made-up, plausible numbers)."""
    layers = {"head_conv.0.conv": 432, "body_op.0.conv1.0.conv": 2304, "final_fc.linear": 640}
    layer_stats = {n: {"nonzero": w // 4, "clusters": 32, "index_bits": 4.3, "index_entropy": 4.25,
                       "gap_bits": 2.9, "max_gap": 16, "fillers": 3} for n, w in layers.items()}
    history = {"epoch": [1, 2], "test_acc": [88.0, 89.0]}
    final = {"file": "checkpoints/dc_compressed.dcmp", "sha256": "ab" * 32, "dense_acc": 91.2,
             "final_acc": 90.4, "drop": 0.8, "target_met": True, "exact_round_trip": True,
             "compressed_acc": 90.4, "bits": 4, "s": 1.25, "model": "s=1.25 ladder", "zeros_pct": 80.1,
             "weights": 270896, "nonzero": 53900, "quant_bits": 4, "huffman_bits": 3.4,
             "ratio_formula": 47.3, "dense_bytes": 1096336, "file_bytes": 51000, "ratio_file": 21.5,
             "bytes": {"header": 13, "layout": 480, "codebooks": 700, "huffman tables": 900,
                       "indices": 23000, "positions": 19500, "batch norm": 6300, "other floats": 20},
             "layers": layer_stats}
    cand = {"model": "s=1.25 ladder", "s": 1.25, "bits": 4, "float_acc": 90.9, "zeros_pct": 80.1,
            "kmeans_acc": 89.9, "ratio_formula": 47.3, "ratio_file": 21.5, "file_bytes": 51000,
            "nonzero": 53900, "weights": 270896, "huffman_bits": 3.4}
    results = {
        "meta": {"mode": "quick" if quick else "full", "test_label": "CIFAR-10 test[0:1000]",
                 "test_images": 1000, "dc_settings": {"max_drop": 1.0}},
        "dense": {"acc": 91.2, "loss": 0.3, "weights": 270896, "dense_bytes": 1096336, "torch_save_bytes": 1130000},
        "prune_std": {s: {"acc": a, "zeros_pct": z, "layer_zeros": {n: z for n in layers}}
                      for s, a, z in [("0", 91.2, 0.0), ("0.25", 91.0, 20.5), ("0.5", 89.9, 39.7), ("1", 60.3, 69.5)]},
        "retrain": {s: {"s": float(s), "before": b, "best_acc": f + 0.2, "final_acc": f, "best_epoch": 9,
                        "epochs": 10, "zeros_pct": z, "history": history}
                    for s, b, f, z in [("0.25", 91.0, 91.3, 20.5), ("0.5", 89.9, 91.1, 39.7), ("1", 60.3, 90.7, 69.5)]},
        "kmeans": {"float_acc": 90.7, "bits": [6, 5, 4, 3],
                   "inits": {i: {str(b): {"acc": 90.7 - (6 - b) * d, "mse": 1e-6 * 4 ** (6 - b)} for b in (6, 5, 4, 3)}
                             for i, d in (("linear", 0.3), ("kmeans++", 0.4), ("random", 0.9))}},
        "huffman": {"bits": 5, "layers": layer_stats, "index_bits": 4.3, "index_entropy": 4.25, "gap_bits": 2.9,
                    "nonzero": 82000, "acc": 90.6},
        "pipeline": {"models": [{"name": "s=1 one-shot", "s": 1.0, "final_acc": 90.7, "zeros_pct": 69.5},
                                {"name": "s=1.25 ladder", "s": 1.25, "final_acc": 90.9, "zeros_pct": 80.1,
                                 "epochs": 20}],
                     "candidates": [cand, {**cand, "bits": 5, "kmeans_acc": 90.5, "ratio_file": 19.0,
                                           "ratio_formula": 40.0}],
                     "attempts": [{**cand, "compressed_acc": 90.4, "record": {"epochs": 4, "final_acc": 90.4}}],
                     "epochs": 74},
        "final": final,
        **{k: final[k] for k in ("file", "dense_acc", "final_acc", "ratio_formula", "ratio_file", "bytes")},
    }
    return results


def write_results(folder, results):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / cp.RESULTS_NAME).write_text(json.dumps(results))
    return folder


def test_section_says_not_run_without_results(tmp_path):
    text = sec.section(tmp_path)
    assert NOT_RUN in text and "deep_compression.ipynb" in text
    for key in sec.TABLES:
        assert NOT_RUN in sec.table({}, key)


def test_section_reports_the_numbers_side_by_side(tmp_path):
    folder = write_results(tmp_path / "report", fake_results())
    (folder / "dc_bytes.png").write_bytes(b"png")
    text = sec.section(folder)
    for number in ("21.5", "47.3", "90.40", "91.20", "CIFAR-10 test[0:1000]", "indices", "positions"):
        assert number in text, number
    assert "dc_bytes.png" in text and f"dc_kmeans.png: {NOT_RUN}" in text
    assert QUICK_BANNER not in text
    discussion = sec.discussion(fake_results(), "final")
    assert "0.80 points below" in discussion and "21.5" in discussion


def test_section_of_a_quick_run_carries_the_banner(tmp_path):
    text = sec.section(write_results(tmp_path, fake_results(quick=True)))
    assert QUICK_BANNER in text


def test_discussion_follows_the_numbers():
    r = fake_results()
    r["final"].update(final_acc=89.0, drop=2.2, target_met=False, ratio_file=25.0)
    text = sec.discussion(r, "final")
    assert "2.20 points below" in text and "short" in text


def screened_out_but_kept(recoverable=3.0, max_quant_runs=2):
    """fake_results where the 4-bit candidate passed first and the leftover run trained the
    3-bit one the K-means screen had skipped, which passed too and was kept."""
    r = fake_results()
    settings = r["meta"]["dc_settings"]
    settings.update({k: v for k, v in (("recoverable", recoverable), ("max_quant_runs", max_quant_runs))
                     if v is not None})
    four = {**r["pipeline"]["candidates"][0], "kmeans_val_acc": 94.9}
    three = {**four, "bits": 3, "kmeans_val_acc": 80.5, "ratio_file": 23.0, "ratio_formula": 55.0,
             "skipped": "K-means validation accuracy more than 3 points below the target"}
    r["pipeline"]["candidates"] = [three, four]
    r["pipeline"]["attempts"] = [{**four, "compressed_acc": 90.4, "compressed_val_acc": 95.1, "why": "queue"},
                                 {**three, "compressed_acc": 90.1, "compressed_val_acc": 94.7, "why": "leftover"}]
    r["final"].update(bits=3, ratio_file=23.0, ratio_formula=55.0, val_acc=94.7, reference_val_acc=95.2,
                      final_acc=90.1)
    return r


def test_final_discussion_says_when_the_kept_candidate_had_been_screened_out():
    assert "screen" not in sec.discussion(fake_results(), "final")
    text = sec.discussion(screened_out_but_kept(), "final")
    # the target on the validation images: 1.0 point below the reference's 95.2
    assert ("K-means alone left this candidate at 80.50% on the validation images, more than 3 points below "
            "the validation target (94.20%), so the screen skipped it at first.") in text
    assert ("A trained-quantization run was left after the 4-bit candidate passed; trained on it, "
            "the 3-bit candidate reached 94.70% on the validation images and passed, so the screen was too "
            "cautious.") in text
    # nothing passed the screen: the pipeline trained the best skipped candidate anyway
    r = screened_out_but_kept(recoverable=5.0)
    r["pipeline"]["attempts"] = [{**r["pipeline"]["attempts"][1], "why": "fallback"}]
    text = sec.discussion(r, "final")
    assert "more than 5 points below" in text and "after the 4-bit candidate passed" not in text
    assert "No candidate passed the screen, so the best of them was trained anyway: the 3-bit candidate" in text
    # the threshold comes from the settings; without it, no made-up number
    text = sec.discussion(screened_out_but_kept(recoverable=None, max_quant_runs=None), "final")
    assert "80.50% on the validation images, far below the validation target" in text


def test_final_discussion_states_the_target_in_full():
    r = fake_results()
    assert "within the target of at most 1.0 point below the dense model" in sec.discussion(r, "final")
    r["meta"]["dc_settings"]["max_drop"] = 2.0
    r["final"].update(final_acc=88.0, target_met=False)
    assert "short of the target of at most 2.0 points below the dense model" in sec.discussion(r, "final")
    assert "-point target" not in sec.discussion(r, "final")


def test_candidates_table_defines_skipped_and_not_trained_only_when_they_occur():
    table = sec.table(fake_results(), "pipeline")      # the kept 21.5x one trained; the 19x one not needed
    assert "*not needed*: passed that screen, but a candidate of higher file ratio kept the target" in table
    assert "*skipped*" not in table and "*not trained*" not in table
    r = screened_out_but_kept()
    r["pipeline"]["candidates"].append({**r["pipeline"]["candidates"][1], "bits": 2, "ratio_file": 30.0})
    table = sec.table(r, "pipeline")
    assert "| skipped |" not in table                  # the skipped candidate was trained after all
    r["pipeline"]["attempts"].pop()
    table = sec.table(r, "pipeline")                   # a 30x candidate above the kept 23x, never reached
    assert "| skipped |" in table and "| not trained |" in table
    assert "*skipped*: screened out and not trained, because its K-means accuracy on the validation images " \
           "was more than 3 points below the target" in table
    assert "budget of trained quantizations (2 runs) was used up" in table
    r["pipeline"]["candidates"].pop()                  # every untrained candidate now skipped
    table = sec.table(r, "pipeline")
    assert "*skipped*" in table and "*not trained*" not in table
    r["pipeline"]["attempts"] = r["pipeline"]["candidates"] = [
        {**c, "compressed_acc": 90.0, "compressed_val_acc": 95.0} for c in r["pipeline"]["candidates"]]
    table = sec.table(r, "pipeline")
    assert "*skipped*" not in table and "*not trained*" not in table   # every candidate trained: no note


def test_the_section_names_the_assignments_formula_plainly(tmp_path):
    text = sec.section(write_results(tmp_path, screened_out_but_kept()))
    assert "seed" not in text.lower()
    assert "ratio (index-only formula)" in text
    definition = "The Deep Compression assignment's compression-rate formula"
    assert text.count(definition) == 1                 # explained once, before its first use
    assert text.index(definition) < text.index("index-only formula") < text.index("ratio (index-only formula)")
    assert "counts only the Huffman-coded cluster indices" in text


def test_final_discussion_says_why_a_smaller_candidate_was_not_kept():
    r = fake_results()
    assert "A smaller file" not in sec.discussion(r, "final")     # the kept file is the smallest
    cand = r["pipeline"]["candidates"][0]
    r["pipeline"]["candidates"].append({**cand, "bits": 3, "ratio_file": 24.0, "kmeans_val_acc": 80.5,
                                        "skipped": "K-means validation accuracy more than 3 points below the target"})
    text = sec.discussion(r, "final")
    assert "s=1.25 ladder at 3 bits would give 24.0x" in text and "80.50%" in text and "not trained" in text
    r["pipeline"]["attempts"].append({**r["pipeline"]["candidates"][-1], "compressed_val_acc": 93.1,
                                      "compressed_acc": 88.8})
    r["final"]["reference_val_acc"] = 95.0
    text = sec.discussion(r, "final")
    assert "after trained quantization (a leftover run, although the K-means screen had skipped it) it scored " \
           "93.10% on the validation images, more than 1.0 point below the 95.00% of the reference " \
           "(88.80% on the test images)" in text
