"""StarGAN's generator and discriminator (Choi et al. 2018), keyed like the official `model.py`.

Both keep PyTorch's default initialisation, as the official code does. The generator's
instance norms are affine and track running statistics, so in eval mode they normalise with
those statistics, not the image's own: that is the official behaviour and what its
checkpoints were tested with.
"""

from __future__ import annotations

import torch
from torch import nn

from translate.errors import UserError


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)


class StarGANResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _instance_norm(dim), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _instance_norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class StarGANGenerator(nn.Module):
    """G(x, c): an RGB image and a target-domain vector c of c_dim values to an RGB image."""

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        layers = [nn.Conv2d(3 + c_dim, conv_dim, 7, padding=3, bias=False), _instance_norm(conv_dim),
                  nn.ReLU(True)]
        dim = conv_dim
        for _ in range(2):  # downsampling
            layers += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1, bias=False),
                       _instance_norm(dim * 2), nn.ReLU(True)]
            dim *= 2
        layers += [StarGANResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):  # upsampling
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, stride=2, padding=1, bias=False),
                       _instance_norm(dim // 2), nn.ReLU(True)]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # The domain label becomes c_dim constant image planes stacked onto the input.
        planes = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, planes], dim=1))


class StarGANDiscriminator(nn.Module):
    """D(x) -> (out_src [N,1,h,w] PatchGAN real/fake scores, out_cls [N,c_dim] domain logits)."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        # The classifier's kernel covers the whole final feature map, one logit per domain;
        # sized, as officially, by flooring image_size / 2**repeat_num.
        cls_kernel = image_size // 2 ** repeat_num
        if cls_kernel < 1:
            raise UserError(f"the StarGAN discriminator with repeat_num={repeat_num} needs images of at "
                            f"least {2 ** repeat_num} pixels, got image_size={image_size}")
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(dim, c_dim, cls_kernel, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        out_cls = self.conv2(h)
        return self.conv1(h), out_cls.reshape(out_cls.shape[0], out_cls.shape[1])
