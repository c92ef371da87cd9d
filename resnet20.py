"""ResNet-20 for CIFAR-10 (He et al., 2016, section 4.2), with fixed-point residual blocks.

Layout and names follow the course's starter code, so its `pretrained_model.pt` loads
with `strict=True` (128 state-dict keys):

    head_conv      FP_Conv 3->16 (float) + BN + ReLU
    body_op.0..8   ResNet_Block: 3 stages x 3 blocks, 16/32/64 channels, stride 2 at
                   the first block of stages 2 and 3 (body_op.3, body_op.6), where a
                   1x1 FP_Conv + BN shortcut (`id_mapping`) matches the shape
    avg_pool       global average pool
    final_fc       FP_Linear 64->10 (float)

`Nbits` quantizes every conv inside the residual blocks (shortcuts included); the first
conv and the final FC stay floating point. Depth: num_layers = 6n + 2 (20 -> n = 3,
0.27 M parameters).
"""
import torch.nn as nn

from FP_layers import FP_Conv, FP_Linear, check_bits

STAGE_CHANNELS = (16, 32, 64)


class ResNet_Block(nn.Module):
    """Basic residual block: conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1 shortcut."""

    def __init__(self, in_chs, out_chs, strides, Nbits=None):
        super().__init__()
        self.conv1 = nn.Sequential(
            FP_Conv(in_chs, out_chs, 3, stride=strides, padding=1, bias=False, Nbits=Nbits),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(),
        )
        self.conv2 = nn.Sequential(
            FP_Conv(out_chs, out_chs, 3, stride=1, padding=1, bias=False, Nbits=Nbits),
            nn.BatchNorm2d(out_chs),
        )
        if strides != 1 or in_chs != out_chs:
            self.id_mapping = nn.Sequential(
                FP_Conv(in_chs, out_chs, 1, stride=strides, padding=0, bias=False, Nbits=Nbits),
                nn.BatchNorm2d(out_chs),
            )
        else:
            self.id_mapping = None
        self.final_activation = nn.ReLU()

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        shortcut = x if self.id_mapping is None else self.id_mapping(x)
        return self.final_activation(out + shortcut)


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet of depth `num_layers` (6n+2); residual-block convs use `Nbits`."""

    def __init__(self, num_layers=20, Nbits=None, num_classes=10):
        super().__init__()
        if num_layers < 8 or (num_layers - 2) % 6:
            raise ValueError(f"num_layers must be 6n+2 with n >= 1 (e.g. 20), got {num_layers}")
        self.num_layers = num_layers
        self.Nbits = check_bits(Nbits)
        self.head_conv = nn.Sequential(
            FP_Conv(3, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False, Nbits=None),
            nn.BatchNorm2d(STAGE_CHANNELS[0]),
            nn.ReLU(),
        )
        blocks_per_stage = (num_layers - 2) // 6
        blocks, in_chs = [], STAGE_CHANNELS[0]
        for stage, out_chs in enumerate(STAGE_CHANNELS):
            for i in range(blocks_per_stage):
                strides = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResNet_Block(in_chs, out_chs, strides, Nbits=Nbits))
                in_chs = out_chs
        self.body_op = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.final_fc = FP_Linear(in_chs, num_classes, Nbits=None)

    def forward(self, x):
        out = self.body_op(self.head_conv(x))
        return self.final_fc(self.avg_pool(out).flatten(1))
