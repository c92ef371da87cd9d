"""Tests for the pruning helpers in train_util.py, against torch.nn.utils.prune
(l1_unstructured / global_unstructured), numpy, and names built from the architecture."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

import train_util as tu
from resnet20 import ResNetCIFAR

QS = [0.0, 40.0, 60.0, 80.0, 100.0]  # percent, as the course starter


def random_layers():
    return [nn.Conv2d(16, 32, 3), nn.Conv2d(3, 16, 3, bias=False), nn.Linear(64, 10),
            nn.Conv2d(5, 7, 1), nn.Linear(33, 3)]  # 7*5 = 35 and 99 weights: odd counts


def expected_prunable_names(n_blocks=9):
    return (["head_conv.0.conv"]
            + [f"body_op.{b}.conv{i}.0.conv" for b in range(n_blocks) for i in (1, 2)]
            + ["final_fc.linear"])


# ----------------------------------------------------------------------------- per layer

@pytest.mark.parametrize("q", QS)
def test_prune_by_percentage_matches_torch_prune(q):
    for layer in random_layers():
        reference = copy.deepcopy(layer)
        prune.l1_unstructured(reference, "weight", amount=q / 100)
        original = layer.weight.detach().clone()
        mask = tu.prune_by_percentage(layer, q)
        assert torch.equal(mask, reference.weight_mask)
        assert torch.equal(layer.weight.detach(), original * reference.weight_mask)
        assert int((layer.weight == 0).sum()) == round(q / 100 * original.numel())


@pytest.mark.parametrize("q,message", [
    (-0.1, r"percentage in \[0, 100\]"), (100.5, r"percentage in \[0, 100\]"),
    (float("nan"), r"percentage in \[0, 100\]"),
    (0.8, r"looks like a fraction.*q=80 to prune 80 %"), (0.4, r"q=40 "),
    ("0.8", "must be a number of percent"), ("80", "must be a number of percent"),
    (None, "must be a number of percent"), (True, "must be a number of percent")])
def test_bad_q_raises_with_what_to_pass(q, message):
    with pytest.raises(ValueError, match=message):
        tu.prune_by_percentage(nn.Linear(4, 4), q)
    with pytest.raises(ValueError, match=message):
        tu.global_prune_by_percentage(ResNetCIFAR(8), q)


def test_integer_and_edge_percentages_are_accepted():
    for q in (0, 1, 1.0, 80, 100):
        tu.prune_by_percentage(nn.Linear(10, 10), q)


def test_prune_by_std_matches_numpy():
    for s in (0.0, 0.25, 0.5, 1.0):
        for layer in random_layers():
            w = layer.weight.detach().numpy().copy()
            # population standard deviation (ddof=0), as np.std
            threshold = s * np.std(w.astype(np.float64), ddof=0)
            # no weight within float32 rounding of the threshold: the data is unambiguous
            assert not (np.abs(np.abs(w) - threshold) < 1e-6 * max(threshold, 1e-12)).any()
            tu.prune_by_std(layer, s)
            expected = np.where(np.abs(w) < threshold, 0.0, w)
            np.testing.assert_array_equal(layer.weight.detach().numpy(), expected)
            if s == 1.0:  # roughly half of uniform weights lie within one std of 0
                assert 0.3 < (expected == 0).mean() < 0.8
            if s == 0.0:
                assert (expected != 0).all()


def test_prune_by_std_convention_and_bad_s():
    # w = (1, -1, 1, -3): population std (ddof=0) 1.658, sample std (ddof=1) 1.915.
    # With s between 1/1.915 and 1/1.658 the two conventions disagree about |w| = 1; the
    # kit uses the population standard deviation (np.std), whose threshold is below 1.
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -3.0]]))
    w = layer.weight.detach().numpy().ravel().astype(np.float64)
    s = 0.5 * (1 / np.std(w, ddof=0) + 1 / np.std(w, ddof=1))
    assert s * np.std(w, ddof=0) < 1.0 < s * np.std(w, ddof=1)
    with pytest.raises(ValueError):
        tu.prune_by_std(layer, -0.1)
    tu.prune_by_std(layer, s)
    np.testing.assert_array_equal(layer.weight.detach().numpy().ravel(), [1, -1, 1, -3])


# ----------------------------------------------------------------------------- whole network

def test_prunable_layers_of_resnet20():
    layers = tu.prunable_layers(ResNetCIFAR(20))
    assert list(layers) == expected_prunable_names()
    assert len(layers) == 20
    assert not any("id_mapping" in n for n in layers)
    assert isinstance(layers["final_fc.linear"], nn.Linear)
    assert all(isinstance(layers[n], nn.Conv2d) for n in expected_prunable_names()[:-1])


@pytest.mark.parametrize("q", [40.0, 80.0])
def test_global_prune_matches_torch_global_unstructured(q):
    net = ResNetCIFAR(20)
    reference = copy.deepcopy(net)
    ref_layers = tu.prunable_layers(reference)
    prune.global_unstructured([(m, "weight") for m in ref_layers.values()],
                              pruning_method=prune.L1Unstructured, amount=q / 100)
    originals = {n: m.weight.detach().clone() for n, m in tu.prunable_layers(net).items()}
    masks = tu.global_prune_by_percentage(net, q)
    assert list(masks) == expected_prunable_names()
    total = sum(w.numel() for w in originals.values())
    zeros = 0
    for name, layer in tu.prunable_layers(net).items():
        ref_mask = ref_layers[name].weight_mask
        assert torch.equal(masks[name], ref_mask), name
        assert torch.equal(layer.weight.detach(), originals[name] * ref_mask), name
        zeros += int((layer.weight == 0).sum())
    assert zeros == round(q / 100 * total)
    per_layer = tu.layer_zeros(net)
    assert max(per_layer.values()) - min(per_layer.values()) > 5  # layers differ


def test_sparsity_helpers_and_table():
    net = ResNetCIFAR(20)
    tu.prune_layers_by_percentage(net, 50.0)
    with torch.no_grad():
        net.final_fc.linear.weight[:3] = 0.0       # make one layer different
    layers = tu.prunable_layers(net)
    rows = tu.sparsity_table(net)
    assert [r["layer"] for r in rows] == expected_prunable_names() + ["total"]
    for row in rows[:-1]:
        w = layers[row["layer"]].weight.detach().numpy()
        assert row["shape"] == w.shape
        assert row["weights"] == w.size
        assert row["zeros"] == int((w == 0).sum())
        assert row["zeros_pct"] == pytest.approx(100.0 * (w == 0).sum() / w.size)
    total = rows[-1]
    assert total["weights"] == sum(r["weights"] for r in rows[:-1])
    assert total["zeros"] == sum(r["zeros"] for r in rows[:-1])
    assert total["zeros_pct"] == pytest.approx(100.0 * total["zeros"] / total["weights"])
    assert tu.sparsity(net) == pytest.approx(total["zeros_pct"])
    assert tu.layer_zeros(net)["final_fc.linear"] == pytest.approx(rows[-2]["zeros_pct"])
    text = tu.format_sparsity_table(rows)
    assert "total" in text and "final_fc.linear" in text


# ----------------------------------------------------------------------------- finetuning

# A large lr with momentum and weight decay: if pruned weights leaked, they would move.
LEAKY = tu.Recipe(lr=0.2, momentum=0.9, weight_decay=5e-4, batch_size=16)


@pytest.fixture(scope="module")
def tiny_data():
    return tu.synthetic_cifar(n_train=64, n_test=32, device="cpu")


def pruned_net(q=70.0, depth=8):
    torch.manual_seed(11)
    net = ResNetCIFAR(depth)
    tu.prune_layers_by_percentage(net, q)
    return net


def snapshot(net):
    return {n: m.weight.detach().clone() for n, m in tu.prunable_layers(net).items()}


def test_finetune_masked_keeps_zeros(tiny_data):
    net = pruned_net()
    before = snapshot(net)
    record = tu.finetune_masked(net, epochs=1, data=tiny_data, recipe=LEAKY, progress=False)
    assert len(record["history"]["test_acc"]) == 1
    after = snapshot(net)
    for name, w0 in before.items():
        pruned = w0 == 0
        assert 0.6 < pruned.float().mean() < 0.8
        assert torch.equal(after[name][pruned], torch.zeros(int(pruned.sum()))), name
        assert (after[name][~pruned] != w0[~pruned]).all(), name   # the rest trained
    assert record["history"]["zeros_pct"] == [pytest.approx(tu.sparsity(net))]


def test_plain_finetune_revives_pruned_weights(tiny_data):
    # Control for the test above: without masks the same zeros do not survive.
    net = pruned_net()
    before = snapshot(net)
    tu.finetune(net, epochs=1, data=tiny_data, recipe=LEAKY, progress=False, save_best=None)
    after = snapshot(net)
    revived = sum(int((after[n][w0 == 0] != 0).sum()) for n, w0 in before.items())
    pruned = sum(int((w0 == 0).sum()) for w0 in before.values())
    assert revived > 0.5 * pruned


def test_finetune_masked_explicit_masks(tiny_data):
    # Masks given explicitly (not inferred from zeros): masked weights become and stay 0.
    torch.manual_seed(2)
    net = ResNetCIFAR(8)
    masks = {n: (torch.rand_like(m.weight) > 0.5).float() for n, m in tu.prunable_layers(net).items()}
    tu.finetune_masked(net, epochs=1, data=tiny_data, recipe=LEAKY, masks=masks, progress=False)
    for name, m in tu.prunable_layers(net).items():
        assert torch.equal(m.weight.detach()[masks[name] == 0], torch.zeros(int((masks[name] == 0).sum())))


def test_iterative_prune_schedule():
    assert tu.iterative_prune_schedule(80.0, 10) == pytest.approx([8.0 * e for e in range(1, 11)])
    assert tu.iterative_prune_schedule(50.0, 1) == pytest.approx([50.0])


def test_iterative_prune_bad_epochs(tiny_data):
    with pytest.raises(ValueError):
        tu.iterative_prune(ResNetCIFAR(8), 80.0, prune_epochs=4, epochs=3, data=tiny_data)


RECIPE_32 = tu.Recipe(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32)


def test_iterative_prune_per_layer(tiny_data):
    torch.manual_seed(4)
    net = ResNetCIFAR(20)
    record = tu.iterative_prune(net, final_q=80.0, prune_epochs=2, epochs=3, data=tiny_data,
                                recipe=RECIPE_32, progress=False)
    assert record["prune_schedule"] == pytest.approx([40.0, 80.0])
    for name, layer in tu.prunable_layers(net).items():
        n = layer.weight.numel()
        assert int((layer.weight == 0).sum()) == round(0.8 * n), name
    zeros = record["history"]["zeros_pct"]
    assert len(zeros) == 3
    # before the final step pruned weights may recover (epoch 1 trains without a mask) ...
    assert zeros[0] < 5.0
    # ... from the final step on the mask is fixed
    assert zeros[1] == pytest.approx(80.0, abs=0.1) and zeros[2] == pytest.approx(80.0, abs=0.1)
    # the best accuracy is one of a model at the final sparsity, never of the denser epoch 1
    accs = record["history"]["test_acc"]
    assert record["best_epoch"] >= 2 and record["best_acc"] == max(accs[1:])


def test_iterative_prune_global(tiny_data):
    torch.manual_seed(4)
    net = ResNetCIFAR(20)
    tu.iterative_prune(net, final_q=80.0, prune_epochs=2, epochs=3, use_global=True,
                       data=tiny_data, recipe=RECIPE_32, progress=False)
    layers = tu.prunable_layers(net)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros == round(0.8 * total)
    per_layer = [100.0 * float((m.weight == 0).float().mean()) for m in layers.values()]
    assert max(per_layer) - min(per_layer) > 5


# ----------------------------------------------------------------------------- storage size

from FP_layers import FP_Linear  # noqa: E402


def linear_with_zeros(zeros, Nbits):
    layer = FP_Linear(4, 2, Nbits=Nbits)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.arange(1.0, 9.0).view(2, 4))
        layer.linear.weight.view(-1)[:zeros] = 0
    return layer


@pytest.mark.parametrize("zeros,Nbits,expected", [
    # 8 weights, bias of 2 floats (64 bits); quantized layers add alpha, beta (64 bits).
    (0, None, 8 * 32 + 64),
    (6, None, (2 * 32 + 8) + 64),           # sparse: 2 values + 8-bit bitmap < 256
    (3, 2, 8 * 2 + 64 + 64),                # sparse 5*2 + 8 = 18 > dense 16: stays dense
    (7, 2, (1 * 2 + 8) + 64 + 64),          # sparse 1*2 + 8 = 10 < 16
    (8, 4, (0 + 8) + 64 + 64),
])
def test_storage_bits_closed_form(zeros, Nbits, expected):
    assert tu.storage_bits(linear_with_zeros(zeros, Nbits)) == expected


def reference_storage_bits(net, body_bits):
    """By state-dict name: residual-block conv weights (shortcuts too) at body_bits, the
    first conv and the classifier in float32, dense or bitmap-sparse, whichever is smaller;
    every other floating-point entry in float32; the batch counters are not stored."""
    total = 0
    for key, t in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith(("conv.weight", "linear.weight")):
            width = body_bits if key.startswith("body_op") and body_bits else 32
            n, nnz = t.numel(), int((t != 0).sum())
            total += min(n * width, nnz * width + n) + (64 if width != 32 else 0)
        else:
            total += 32 * t.numel()
    return total


@pytest.mark.parametrize("Nbits,q", [(None, 0.0), (None, 80.0), (4, 0.0), (4, 80.0), (2, 50.0)])
def test_storage_bits_of_resnet20_by_name(Nbits, q):
    torch.manual_seed(0)
    net = ResNetCIFAR(20, Nbits=Nbits)
    if q:
        tu.prune_layers_by_percentage(net, q)
    assert tu.storage_bits(net) == reference_storage_bits(net, Nbits)


def test_dense_float_resnet20_is_its_float_count_times_32():
    net = ResNetCIFAR(20)
    floats = sum(t.numel() for k, t in net.state_dict().items() if t.is_floating_point())
    assert tu.storage_bits(net) == 32 * floats
    assert tu.storage_kib(net) == pytest.approx(32 * floats / 8 / 1024)
    assert 1.0e3 < tu.storage_kib(net) < 1.2e3   # ResNet-20: about 0.27 M parameters
