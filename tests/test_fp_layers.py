"""Tests for FP_layers.py: the STE weight quantizer and the FP_Conv / FP_Linear wrappers.

Reference: torch.fake_quantize_per_tensor_affine. Our quantizer is

    out = round((w - beta) / alpha * n) / n * alpha + beta,   n = 2^bit - 1,
    alpha = max(w) - min(w),  beta = min(w),

i.e. an affine quantizer with scale s = alpha / n. Its zero point would be -beta / s,
which is generally not an integer, but fake_quantize needs an integer zero point. So we
apply fake_quantize to (w - beta), whose minimum is exactly 0, with zero_point 0,
quant_min 0, quant_max n, and add beta back:

    ref = fake_quantize(w - beta, scale=alpha/n, zero_point=0, 0, n) + beta.

Both round half to even (torch.round and std::nearbyint), but fake_quantize multiplies by
a float32 1/s where we divide by alpha and multiply by n, so a value within ~1e-5 of a
rounding tie may land on the other level. Mismatches are therefore allowed only at
elements that sit within 1e-4 (in units of one quantization step) of a tie, and must be rare.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from FP_layers import STE, FP_Conv, FP_Linear, linear_quantize, set_zero_preserving

BITS = range(2, 9)


def fake_quant_reference(w, bit):
    """The quantizer built from torch.fake_quantize_per_tensor_affine (see module doc)."""
    n = 2 ** bit - 1
    beta = w.min()
    alpha = (w.max() - beta).item()
    return torch.fake_quantize_per_tensor_affine(w - beta, alpha / n, 0, 0, n) + beta


def distance_to_tie(w, bit):
    """|frac(v) - 0.5| of the scaled value v = (w - min) / alpha * n, in float64."""
    w = w.double()
    n = 2 ** bit - 1
    v = (w - w.min()) / (w.max() - w.min()) * n
    return ((v - v.floor()) - 0.5).abs()


def random_tensors():
    """Different shapes, scales and offsets, including all-positive and all-negative ones."""
    g = torch.Generator().manual_seed(1234)
    return [
        torch.randn(64, 3, 3, 3, generator=g) * 0.1,            # conv-like weight
        torch.randn(10, 64, generator=g),                        # linear-like weight
        torch.rand(5000, generator=g) * 7.0 + 2.0,               # all positive, offset
        -torch.rand(33, 17, generator=g) * 1e-3 - 5e-3,          # tiny, all negative
        torch.randn(16, 16, 3, 3, generator=g) * 30.0 - 11.0,    # large scale, offset
        torch.randn(7, generator=g),                             # few elements
    ]


@pytest.mark.parametrize("bit", BITS)
def test_ste_matches_fake_quantize(bit):
    checked = 0
    for w in random_tensors():
        ours = STE.apply(w, bit)
        ref = fake_quant_reference(w, bit)
        alpha = (w.max() - w.min()).item()
        # 1e-6 of the range, plus a few float32 ulps of the values themselves (offsets).
        atol = 1e-6 * alpha + 4 * torch.finfo(torch.float32).eps * w.abs().max().item()
        mismatch = (ours - ref).abs() > atol
        if mismatch.any():
            near_tie = distance_to_tie(w, bit) < 1e-4
            assert near_tie[mismatch].all(), (
                f"bit={bit}: {int(mismatch.sum())} mismatches, not all at rounding ties; "
                f"max diff {(ours - ref).abs()[mismatch & ~near_tie].max():.3g}")
            assert mismatch.sum().item() <= max(1, 1e-3 * w.numel())
            # A tie flip moves by exactly one quantization step.
            step = alpha / (2 ** bit - 1)
            torch.testing.assert_close((ours - ref).abs()[mismatch],
                                       torch.full((int(mismatch.sum()),), step),
                                       rtol=1e-4, atol=atol)
        checked += (~mismatch).sum().item()
    assert checked > 5000


def test_exact_ties_round_half_to_even():
    # bit=1: one step; (w - min) / alpha = 0.5 exactly is a tie, which goes to the even
    # level 0 (numpy and fake_quantize agree), i.e. to min(w).
    w = torch.tensor([-1.0, 0.0, 1.0])
    assert torch.equal(STE.apply(w, 1), torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.equal(fake_quant_reference(w, 1), torch.tensor([-1.0, -1.0, 1.0]))
    # bit=2: scaled values 0, 1.5, 2.5, 3 -> 0, 2, 2, 3 (half to even), as numpy.round
    w = torch.tensor([0.0, 1.5, 2.5, 3.0])
    assert torch.equal(STE.apply(w, 2), torch.tensor([0.0, 2.0, 2.0, 3.0]))


@pytest.mark.parametrize("bit", range(1, 9))
def test_levels_count_and_endpoints(bit):
    for w in random_tensors():
        q = STE.apply(w, bit)
        assert torch.unique(q).numel() <= 2 ** bit
        tol = 4 * torch.finfo(torch.float32).eps * w.abs().max().item()
        assert abs(q.min().item() - w.min().item()) <= tol
        assert abs(q.max().item() - w.max().item()) <= tol
        # every value lies on the grid min + k * alpha / n
        n = 2 ** bit - 1
        k = (q.double() - w.min().double()) / (w.max() - w.min()).double() * n
        assert (k - k.round()).abs().max() < 1e-3
    # a large dense tensor uses all 2^bit levels
    big = torch.rand(100_000)
    assert torch.unique(STE.apply(big, bit)).numel() == 2 ** bit


@pytest.mark.parametrize("bit", [1, 2, 4, 8, None, 0])
def test_gradient_is_identity(bit):
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    g = torch.randn(8, 4, 3, 3)
    (STE.apply(w, bit) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_bit_none_and_zero():
    w = torch.randn(5, 6)
    assert torch.equal(STE.apply(w, None), w)
    out = STE.apply(w, 0)
    assert out.shape == w.shape and torch.equal(out, torch.zeros_like(w))


@pytest.mark.parametrize("bit", [1, 2, 4, 8])
@pytest.mark.parametrize("zero_preserving", [False, True])
def test_constant_and_zero_tensors(bit, zero_preserving):
    const = torch.full((3, 4), 0.7)
    out = STE.apply(const, bit, zero_preserving)
    assert not torch.isnan(out).any()
    assert torch.equal(out, const)
    zeros = torch.zeros(3, 4)
    out = STE.apply(zeros, bit, zero_preserving)
    assert not torch.isnan(out).any()
    assert torch.equal(out, zeros)


@pytest.mark.parametrize("bad", [-1, 2.5, 33, True, "4"])
def test_bad_bits_raise(bad):
    w = torch.randn(4)
    with pytest.raises(ValueError):
        STE.apply(w, bad)
    with pytest.raises(ValueError):
        FP_Conv(3, 4, 3, Nbits=bad)
    with pytest.raises(ValueError):
        FP_Linear(3, 4, Nbits=bad)


def test_fp_conv_bad_nbits():
    with pytest.raises(ValueError):
        FP_Conv(3, 16, 3, Nbits=-1)


# ----------------------------------------------------------------------------- zero preserving

def pruned_tensors():
    g = torch.Generator().manual_seed(7)
    out = []
    for shape, scale, offset in [((32, 16, 3, 3), 0.1, 0.0), ((500,), 2.0, 0.3), ((10, 64), 1.0, -0.2)]:
        w = torch.randn(*shape, generator=g) * scale + offset
        w[torch.rand(*shape, generator=g) < 0.6] = 0.0      # 60 % pruned, zeros inside the range
        out.append(w)
    w = torch.rand(400, generator=g) + 0.5                   # all kept weights positive
    w[::3] = 0.0
    out.append(w)
    return out


@pytest.mark.parametrize("bit", [2, 3, 4, 8])
def test_zero_preserving_matches_quantizing_nonzeros_alone(bit):
    for w in pruned_tensors():
        keep = w != 0
        ref = torch.zeros_like(w)
        ref[keep] = STE.apply(w[keep], bit)                  # plain mode on the kept weights alone
        out = STE.apply(w, bit, True)
        assert torch.equal(out[~keep], torch.zeros_like(out[~keep]))
        assert torch.equal(out, ref)
        # and it is not what plain mode does (zeros would move to a grid level)
        plain = STE.apply(w, bit)
        assert not torch.equal(plain, out)


def test_zero_preserving_single_nonzero():
    w = torch.zeros(10)
    w[3] = -0.25
    out = STE.apply(w, 4, True)
    assert torch.equal(out, w)


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("stride,padding,bias", [(1, 1, False), (2, 1, True), (1, 0, False)])
def test_fp_conv_float_equals_conv2d(stride, padding, bias):
    layer = FP_Conv(4, 6, 3, stride=stride, padding=padding, bias=bias, Nbits=None)
    x = torch.randn(2, 4, 9, 9)
    ref = F.conv2d(x, layer.conv.weight, layer.conv.bias, stride, padding)
    assert torch.equal(layer(x), ref)
    # the wrapped module is a plain nn.Conv2d with the same settings
    torch.testing.assert_close(layer(x), layer.conv(x))


@pytest.mark.parametrize("bit", [2, 4, 6])
@pytest.mark.parametrize("stride,bias", [(1, False), (2, True)])
def test_fp_conv_quantized_equals_conv_with_reference_weight(bit, stride, bias):
    layer = FP_Conv(8, 16, 3, stride=stride, padding=1, bias=bias, Nbits=bit)
    w = layer.conv.weight.detach()
    while not (distance_to_tie(w, bit) > 1e-4).all():  # redraw: no tie flips in the reference
        nn.init.kaiming_uniform_(layer.conv.weight)
    x = torch.randn(2, 8, 10, 10)
    ref = F.conv2d(x, fake_quant_reference(w, bit), layer.conv.bias, stride, 1)
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, F.conv2d(x, w, layer.conv.bias, stride, 1), atol=1e-3)


def test_fp_conv_backward_is_straight_through():
    layer = FP_Conv(4, 5, 3, padding=1, Nbits=3)
    x = torch.randn(2, 4, 6, 6)
    g = torch.randn(2, 5, 6, 6)
    (layer(x) * g).sum().backward()
    wq = fake_quant_reference(layer.conv.weight.detach(), 3).requires_grad_()
    (F.conv2d(x, wq, None, 1, 1) * g).sum().backward()
    torch.testing.assert_close(layer.conv.weight.grad, wq.grad, rtol=1e-5, atol=1e-5)


def test_fp_conv_zero_preserving_mode():
    layer = FP_Conv(8, 8, 3, padding=1, Nbits=3)
    with torch.no_grad():
        layer.conv.weight[layer.conv.weight.abs() < 0.05] = 0.0
    set_zero_preserving(layer, True)
    w = layer.conv.weight.detach()
    keep = w != 0
    wq = torch.zeros_like(w)
    wq[keep] = fake_quant_reference(w[keep], 3)
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, wq, None, 1, 1), rtol=1e-5, atol=1e-5)
    set_zero_preserving(layer, False)
    torch.testing.assert_close(layer(x), F.conv2d(x, fake_quant_reference(w, 3), None, 1, 1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bit", [None, 2, 4, 8])
def test_fp_linear(bit):
    layer = FP_Linear(64, 10, Nbits=bit)
    x = torch.randn(3, 64)
    w = layer.linear.weight.detach()
    wq = w if bit is None else fake_quant_reference(w, bit)
    torch.testing.assert_close(layer(x), F.linear(x, wq, layer.linear.bias), rtol=1e-5, atol=1e-5)
    if bit is None:
        assert torch.equal(layer(x), F.linear(x, w, layer.linear.bias))
    assert isinstance(layer.linear, nn.Linear)


def test_linear_quantize_function_agrees_with_ste():
    w = torch.randn(100)
    assert torch.equal(linear_quantize(w, 5), STE.apply(w, 5))
