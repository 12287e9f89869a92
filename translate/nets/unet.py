"""The pix2pix U-Net generator: an encoder-decoder with a skip connection at every scale.

Built, as officially, from nested blocks, each holding the next one inside its Sequential, so the
keys are `model.model.1.model.3.model...`: `model.model.0` is the first conv, every `.1.model.`
or `.3.model.` step goes one scale deeper.
"""

from __future__ import annotations

import torch
from torch import nn

from translate.errors import UserError
from translate.nets.norm import conv_bias, norm_layer


class UnetSkipBlock(nn.Module):
    """down -> [inner block] -> up, with the block's input concatenated to its output.

    The outermost block has no skip (it returns the image), the innermost no inner block.
    """

    def __init__(self, outer_nc: int, inner_nc: int, norm: str, input_nc: int | None = None,
                 submodule: UnetSkipBlock | None = None, outermost: bool = False, dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        make_norm = norm_layer(norm)
        bias = conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        down_conv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        # The innermost up conv sees only its down conv's output; every other one also gets
        # the inner block's skip, concatenated: twice the channels.
        up_in = inner_nc if submodule is None else inner_nc * 2

        if outermost:
            layers = [down_conv, submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_nc, 4, stride=2, padding=1), nn.Tanh()]
        elif submodule is None:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_nc, 4, stride=2, padding=1, bias=bias),
                      make_norm(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, make_norm(inner_nc), submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_nc, 4, stride=2, padding=1, bias=bias),
                      make_norm(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # self.model opens with an in-place LeakyReLU, so by the time cat reads x it holds the
        # activated input: the skip carries LeakyReLU(x), as in the official code (and weights).
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """`num_downs` stride-2 downsamplings: 7 takes 128x128 to 1x1 at the bottleneck, 8 does 256x256."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = False):
        super().__init__()
        if num_downs < 5:
            raise UserError(f"a U-Net generator needs num_downs >= 5, got {num_downs}")
        self.num_downs = num_downs
        # Built inside out, as officially: the widest blocks (ngf*8) first, dropout only in
        # those between the innermost one and the four outer scales.
        block = UnetSkipBlock(ngf * 8, ngf * 8, norm)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, norm, submodule=block, dropout=dropout)
        for outer, inner in ((4, 8), (2, 4), (1, 2)):
            block = UnetSkipBlock(ngf * outer, ngf * inner, norm, submodule=block)
        self.model = UnetSkipBlock(output_nc, ngf, norm, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2 ** self.num_downs
        if x.shape[-2] % side or x.shape[-1] % side:
            raise UserError(f"a U-Net with {self.num_downs} downsamplings needs image sides that are "
                            f"multiples of {side}, got {x.shape[-2]}x{x.shape[-1]}; "
                            f"change the crop size or the generator")
        return self.model(x)
