"""Fixed-point layers: a straight-through-estimator (STE) weight quantizer and the
`FP_Conv` / `FP_Linear` wrappers used by `resnet20.py` (Lab 3 of hw4).

The quantizer is the linear quantizer with *dynamic scaling* of lecture 15: per tensor,

    alpha = max(w) - min(w),  beta = min(w)
    w_s   = (w - beta) / alpha                     # scaled to [0, 1]
    w_q   = round(w_s * (2^bit - 1)) / (2^bit - 1) # 2^bit levels
    out   = w_q * alpha + beta                     # back to the weight range

so the smallest and largest weights are always representable. Rounding is torch.round,
i.e. round-half-to-even, the same convention as torch.fake_quantize_per_tensor_affine.
The backward pass is the identity: the gradient reaches the float weight unchanged.

Zero-preserving mode (Lab 3 bonus d/e): exact zeros are pruned weights, so they stay
exactly zero and alpha/beta are taken over the non-zero elements only.
"""
from numbers import Integral

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_BITS = 32
# The starter's module-level device: `from FP_layers import *` gives it to the course notebook.
device = "cuda" if torch.cuda.is_available() else "cpu"


def check_bits(bit):
    """Return `bit` if it is a valid bit width (None, or an integer 0..32); raise otherwise."""
    if bit is None:
        return None
    if isinstance(bit, bool) or not isinstance(bit, Integral):
        raise ValueError(f"Nbits must be None (float) or an integer 0..{MAX_BITS}, got {bit!r}")
    if not 0 <= bit <= MAX_BITS:
        raise ValueError(f"Nbits must be between 0 and {MAX_BITS} (or None for float), got {bit}")
    return int(bit)


def linear_quantize(w, bit, zero_preserving=False):
    """Quantize `w` to 2^bit levels spanning [min(w), max(w)] (see the module docstring).

    Pure tensor code without host synchronisation, so it can run inside a CUDA graph.
    A constant tensor (alpha = 0) is returned unchanged instead of dividing by zero.
    """
    bit = check_bits(bit)
    if bit is None:
        return w
    if bit == 0:
        return torch.zeros_like(w)
    if zero_preserving:
        keep = w != 0
        # Range over the kept (non-zero) weights only; +-inf marks the others.
        w_min = torch.where(keep, w, torch.full_like(w, float("inf"))).min()
        w_max = torch.where(keep, w, torch.full_like(w, float("-inf"))).max()
        # All-zero tensor: no finite range; any finite value works since nothing is kept.
        w_min = torch.where(torch.isfinite(w_min), w_min, torch.zeros_like(w_min))
        w_max = torch.where(torch.isfinite(w_max), w_max, torch.zeros_like(w_max))
    else:
        w_min, w_max = w.min(), w.max()
    alpha = w_max - w_min
    beta = w_min
    safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    steps = 2 ** bit - 1
    w_scaled = (w - beta) / safe_alpha
    w_q = torch.round(w_scaled * steps) / steps
    # alpha = 0 (constant tensor): w_q = 0, so out = beta = w exactly.
    out = w_q * safe_alpha + beta
    if zero_preserving:
        out = torch.where(keep, out, torch.zeros_like(out))
    return out


class STE(torch.autograd.Function):
    """Straight-through estimator: quantized forward, identity backward.

    Use as `STE.apply(w, bit)` or `STE.apply(w, bit, zero_preserving)`.
    bit=None leaves `w` unchanged, bit=0 gives zeros.
    """

    @staticmethod
    def forward(ctx, w, bit, zero_preserving=False):
        return linear_quantize(w, bit, zero_preserving)

    @staticmethod
    def backward(ctx, grad_output):
        # Straight through: d(quantized)/d(w) is treated as 1 everywhere.
        return grad_output, None, None


class FP_Conv(nn.Module):
    """Conv2d whose weight goes through the STE quantizer in forward (Nbits=None: float)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=False, Nbits=None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=bias)
        self.Nbits = check_bits(Nbits)
        self.zero_preserving = False

    def forward(self, x):
        w = STE.apply(self.conv.weight, self.Nbits, self.zero_preserving)
        return F.conv2d(x, w, self.conv.bias, self.conv.stride, self.conv.padding)

    def extra_repr(self):
        return f"Nbits={self.Nbits}, zero_preserving={self.zero_preserving}"


class FP_Linear(nn.Module):
    """Linear layer whose weight goes through the STE quantizer in forward (Nbits=None: float)."""

    def __init__(self, in_features, out_features, Nbits=None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.Nbits = check_bits(Nbits)
        self.zero_preserving = False

    def forward(self, x):
        w = STE.apply(self.linear.weight, self.Nbits, self.zero_preserving)
        return F.linear(x, w, self.linear.bias)

    def extra_repr(self):
        return f"Nbits={self.Nbits}, zero_preserving={self.zero_preserving}"


def set_zero_preserving(net, enabled=True):
    """Switch every FP layer of `net` to (or from) the zero-preserving quantizer."""
    for module in net.modules():
        if isinstance(module, (FP_Conv, FP_Linear)):
            module.zero_preserving = enabled
    return net
