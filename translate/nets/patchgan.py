"""PatchGAN discriminators: a map of real/fake scores, one per overlapping patch (or pixel).

Layer order and attribute names follow the official `NLayerDiscriminator` and
`PixelDiscriminator`, so their checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from translate.errors import UserError
from translate.nets.norm import conv_bias, norm_layer


class NLayerDiscriminator(nn.Module):
    """n_layers=3 is the 70x70 PatchGAN: each output score sees a 70x70 patch of the input."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 0:
            raise UserError(f"a PatchGAN discriminator needs n_layers >= 0, got {n_layers}")
        make_norm = norm_layer(norm)
        bias = conv_bias(norm)

        # The first conv has no norm after it, so it keeps its bias whatever the norm.
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):  # stride-2 convs, the width doubling up to 8*ndf
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       make_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """A 1x1 PatchGAN: one score per pixel, judging colour statistics only."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        bias = conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(norm)(ndf * 2), nn.LeakyReLU(0.2, True),
            # officially this last conv follows the same bias rule although no norm comes after it
            nn.Conv2d(ndf * 2, 1, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
