"""The methods: each says only what its paper adds (networks, losses, one training step)."""

from __future__ import annotations

from translate.config import RunConfig
from translate.methods.base import Method
from translate.methods.cyclegan import CycleGAN
from translate.methods.pix2pix import Pix2Pix
from translate.methods.stargan import StarGAN

METHODS: dict[str, type[Method]] = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix, "stargan": StarGAN}


def build_method(cfg: RunConfig) -> Method:
    return METHODS[cfg.method](cfg)
