"""Tests for resnet20.py against a key/shape table written from the architecture
description (He et al. 2016, sec. 4.2, and the course's starter layout), not from the code."""
import copy

import pytest
import torch
import torch.nn as nn

from FP_layers import FP_Conv, FP_Linear
from resnet20 import ResNetCIFAR

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn_entries(prefix, c):
    return {f"{prefix}.{k}": ((c,) if k != "num_batches_tracked" else ()) for k in BN_KEYS}


def expected_table():
    """{state-dict key: shape} of ResNet-20: head conv 3->16, 3 stages x 3 blocks with
    16/32/64 channels, stride-2 1x1 shortcut (id_mapping) at blocks 3 and 6, FC 64->10."""
    table = {"head_conv.0.conv.weight": (16, 3, 3, 3)}
    table.update(bn_entries("head_conv.1", 16))
    in_c = 16
    for b in range(9):
        out_c = (16, 32, 64)[b // 3]
        p = f"body_op.{b}"
        table[f"{p}.conv1.0.conv.weight"] = (out_c, in_c, 3, 3)
        table.update(bn_entries(f"{p}.conv1.1", out_c))
        table[f"{p}.conv2.0.conv.weight"] = (out_c, out_c, 3, 3)
        table.update(bn_entries(f"{p}.conv2.1", out_c))
        if b in (3, 6):
            table[f"{p}.id_mapping.0.conv.weight"] = (out_c, in_c, 1, 1)
            table.update(bn_entries(f"{p}.id_mapping.1", out_c))
        in_c = out_c
    table["final_fc.linear.weight"] = (10, 64)
    table["final_fc.linear.bias"] = (10,)
    return table


def is_trainable(key):
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_state_dict_keys_and_shapes():
    expected = expected_table()
    assert len(expected) == 128
    state = ResNetCIFAR(20).state_dict()
    assert len(state) == 128
    assert set(state) == set(expected)
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


def test_state_dict_from_table_loads_strict():
    g = torch.Generator().manual_seed(3)
    state = {}
    for key, shape in expected_table().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(5)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    net = ResNetCIFAR(20)
    net.load_state_dict(state, strict=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_parameter_count():
    expected = sum(torch.Size(s).numel() for k, s in expected_table().items() if is_trainable(k))
    net = ResNetCIFAR(20)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert round(expected / 1e6, 2) == 0.27  # the paper's 0.27M


def test_forward_shape():
    net = ResNetCIFAR(20)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_spatial_sizes_per_stage():
    net = ResNetCIFAR(20).eval()
    sizes = {}
    for i, block in enumerate(net.body_op):
        block.register_forward_hook(lambda m, inp, out, i=i: sizes.__setitem__(i, tuple(out.shape)))
    head = []
    net.head_conv.register_forward_hook(lambda m, inp, out: head.append(tuple(out.shape)))
    net(torch.randn(2, 3, 32, 32))
    assert head == [(2, 16, 32, 32)]
    for i in range(9):
        c, s = [(16, 32), (32, 16), (64, 8)][i // 3]
        assert sizes[i] == (2, c, s, s), i


def test_nbits_only_in_residual_blocks():
    net = ResNetCIFAR(20, Nbits=4)
    fp_layers = {n: m for n, m in net.named_modules() if isinstance(m, (FP_Conv, FP_Linear))}
    body = [n for n in fp_layers if n.startswith("body_op.")]
    assert len(body) == 9 * 2 + 2   # 18 3x3 convs + 2 shortcut convs
    for name, m in fp_layers.items():
        expected = 4 if name.startswith("body_op.") else None
        assert m.Nbits == expected, name
    assert net.head_conv[0].Nbits is None and net.final_fc.Nbits is None
    assert set(fp_layers) - set(body) == {"head_conv.0", "final_fc"}


@pytest.mark.parametrize("bad", [21, 19, 2, 0, -4])
def test_bad_depth_raises(bad):
    with pytest.raises(ValueError):
        ResNetCIFAR(bad)


def test_other_depths():
    # 6n+2: n blocks per stage
    net = ResNetCIFAR(8)
    assert len(net.body_op) == 3
    net = ResNetCIFAR(32)
    assert len(net.body_op) == 15


def fake_quant(w, bit):
    """Independent quantizer (torch.fake_quantize on w - min, see test_fp_layers.py)."""
    n = 2 ** bit - 1
    beta = w.min()
    return torch.fake_quantize_per_tensor_affine(w - beta, (w.max() - beta).item() / n, 0, 0, n) + beta


def test_quantized_model_equals_float_model_with_quantized_body_weights():
    torch.manual_seed(5)
    qnet = ResNetCIFAR(20, Nbits=4).eval()
    fnet = ResNetCIFAR(20).eval()
    # non-trivial BN statistics so that every layer matters
    for m in qnet.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    fnet.load_state_dict(qnet.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out_q = qnet(x)
        out_f = fnet(x)
        assert not torch.allclose(out_q, out_f, atol=1e-3)
        # replace only the residual-block conv weights by their 4-bit versions
        composed = copy.deepcopy(fnet)
        for name, m in composed.named_modules():
            if isinstance(m, nn.Conv2d) and name.startswith("body_op."):
                m.weight.copy_(fake_quant(m.weight, 4))
        torch.testing.assert_close(out_q, composed(x), rtol=1e-4, atol=1e-4)
        # quantizing the head conv or the FC as well gives something else
        also_head = copy.deepcopy(composed)
        also_head.head_conv[0].conv.weight.copy_(fake_quant(also_head.head_conv[0].conv.weight, 4))
        assert not torch.allclose(out_q, also_head(x), atol=1e-3)
