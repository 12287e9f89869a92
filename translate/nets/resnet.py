"""The CycleGAN ResNet generator (Johnson et al.): downsample twice, residual blocks, upsample twice.

Layer order and attribute names follow the official `ResnetGenerator`, so its state-dict keys
(`model.1.weight`, `model.10.conv_block.1.weight`, ...) load here unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from translate.errors import UserError
from translate.nets.norm import conv_bias, norm_layer
from translate.nets.padding import ReflectionPad2d

PADDINGS = ("reflect", "replicate", "zero")


def padded_conv3x3(dim: int, padding_type: str, bias: bool) -> list[nn.Module]:
    """A size-keeping 3x3 conv: an explicit pad layer before it, or zero padding inside it."""
    if padding_type == "reflect":
        return [ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=bias)]
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=bias)]
    if padding_type == "zero":
        return [nn.Conv2d(dim, dim, 3, padding=1, bias=bias)]
    raise UserError(f"unknown padding type {padding_type!r}; choose one of {', '.join(PADDINGS)}")


class ResnetBlock(nn.Module):
    """x + (pad, conv, norm, relu, [dropout], pad, conv, norm)(x)."""

    def __init__(self, dim: int, padding_type: str, norm: str, dropout: bool, bias: bool):
        super().__init__()
        make_norm = norm_layer(norm)
        layers = [*padded_conv3x3(dim, padding_type, bias), make_norm(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*padded_conv3x3(dim, padding_type, bias), make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "instance",
                 dropout: bool = False, n_blocks: int = 9, padding_type: str = "reflect"):
        super().__init__()
        if n_blocks < 0:
            raise UserError(f"a ResNet generator needs n_blocks >= 0, got {n_blocks}")
        make_norm = norm_layer(norm)
        bias = conv_bias(norm)

        layers = [ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=bias),
                  make_norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings, doubling the width each time
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       make_norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, padding_type, norm, dropout, bias) for _ in range(n_blocks)]
        for mult in (4, 2):  # and back up; output_padding=1 restores even sizes exactly
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       make_norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
