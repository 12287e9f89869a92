"""Dropout with its mask drawn from uniform numbers: the same layer, faster on a CPU.

torch's dropout on a CPU draws its mask with bernoulli_, one number at a time: for the U-Net's
512 x 16 x 16 map (pix2pix's dropout, bf16) forward and backward took 1.6 ms, against 0.6 with
the mask compared from torch.rand's vectorised uniform numbers; 1.3 ms of a pix2pix step over its
three dropout layers (benchmarks/PERFORMANCE.md). `use_uniform_dropout(net)` switches a network's
nn.Dropout layers in place: a subclass without parameters, so keys, checkpoints and the
isinstance checks elsewhere (nets/norm.py) are unchanged. Off the CPU it is torch's own layer.
"""

from __future__ import annotations

import torch
from torch import nn


class UniformDropout(nn.Dropout):
    """nn.Dropout whose CPU mask keeps each element where a uniform draw in [0, 1) is at least p
    (probability 1 - p, as torch's), scaling what it keeps by 1 / (1 - p)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        # the draws in float32 whatever x's dtype: bf16's 8-bit uniforms would bend p
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * (keep.to(x.dtype) * (1 / (1 - self.p)))


def use_uniform_dropout(net: nn.Module) -> nn.Module:
    """Switch net's plain nn.Dropout layers to UniformDropout in place."""
    for module in net.modules():
        if type(module) is nn.Dropout:
            module.__class__ = UniformDropout
    return net
