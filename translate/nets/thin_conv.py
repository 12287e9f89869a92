"""Convolutions with a few output channels and a tall kernel, computed row by row of the kernel.

oneDNN's direct convolution on a CPU vectorises over output channels in blocks of 16. The ResNet
generators (CycleGAN's and StarGAN's) end in a 7x7 convolution from 64 channels to 3 on the full
image, which fills 3 of every 16 lanes: it ran at 65-80 GFLOP/s forward and 35-70 backward,
against 400+ for the 3x3 layers beside it, and cost 5% of a CycleGAN generator's step.

A k x k convolution is the sum, over its k kernel rows, of 1 x k convolutions shifted down by the
row's index. All k of them are one 1 x k convolution with k * C_out output channels (7 * 3 = 21),
whose slices, shifted, are summed. Measured on this CPU (2 threads, forward and backward): 1.9x
faster in bf16 and 2.3-2.6x in fp32 at 256 px, batch 1, and at 128 px, batch 16.

`split_thin_convs(net)` switches the plain nn.Conv2d layers of a network that qualify (stride 1,
undilated, ungrouped, zero padding, at most MAX_OUT_CHANNELS outputs, a kernel of at least
MIN_KERNEL_ROWS rows) to RowSplitConv2d in place: same parameters and state_dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from translate.nets.matmul_conv import like_input

MAX_OUT_CHANNELS = 4
MIN_KERNEL_ROWS = 5


class RowSplitConv2d(nn.Conv2d):
    """nn.Conv2d that computes a thin, tall-kernel layer as one 1 x k convolution of k * C_out
    channels and a sum of k shifted slices (the same result to float rounding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        rows, cols = self.kernel_size
        pad_h, pad_w = self.padding
        # weight C_out x C_in x rows x cols -> (row, C_out) x C_in x 1 x cols
        row_weight = self.weight.permute(2, 0, 1, 3).reshape(rows * self.out_channels, self.in_channels, 1, cols)
        # Zero padding of the rows too, so that every shifted slice below is in bounds, done here
        # rather than inside the convolution: a 1 x k kernel padded by 3 rows is more padding
        # than kernel, which oneDNN's fast kernels refuse; its fallback made StarGAN's layer
        # (padding 3, batch 16, bf16) slower than the plain convolution (258 against 201 ms
        # forward and backward; 92 ms padded here).
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        parts = F.conv2d(x, row_weight)
        out_h = parts.shape[2] - rows + 1
        c = self.out_channels
        shifted = torch.stack([parts[:, r * c:(r + 1) * c, r:r + out_h] for r in range(rows)])
        # summed in float32 at least, as the convolution accumulates, then in the convolution's dtype
        total = torch.promote_types(parts.dtype, torch.float32)
        y = shifted.sum(0, dtype=total)
        if self.bias is not None:
            y = y + self.bias.to(total).reshape(1, -1, 1, 1)
        return like_input(y.to(parts.dtype), x)


def is_thin(conv: nn.Conv2d) -> bool:
    """Whether the row split computes `conv` (and pays: a few outputs, a tall kernel)."""
    return (conv.groups == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.out_channels <= MAX_OUT_CHANNELS and conv.kernel_size[0] >= MIN_KERNEL_ROWS)


def split_thin_convs(net: nn.Module) -> nn.Module:
    """Switch net's thin nn.Conv2d layers to RowSplitConv2d in place (parameters and keys unchanged)."""
    for module in net.modules():
        if type(module) is nn.Conv2d and is_thin(module):
            module.__class__ = RowSplitConv2d
    return net
