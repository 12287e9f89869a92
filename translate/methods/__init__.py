"""The methods: each says only what its paper adds (networks, losses, one training step)."""

from __future__ import annotations

from translate import config
from translate.config import RunConfig
from translate.methods.base import Method
from translate.methods.cyclegan import CycleGAN
from translate.methods.pix2pix import Pix2Pix
from translate.methods.stargan import StarGAN

METHODS: dict[str, type[Method]] = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix, "stargan": StarGAN}


def build_method(cfg: RunConfig) -> Method:
    return METHODS[cfg.method](cfg)


def method_from_checkpoint(state: dict) -> Method:
    """The method of a translate checkpoint's state: built from the run's own config, with the
    checkpoint's weights."""
    method = build_method(config.from_dict(state["config"]))
    for name, net in method.nets.items():
        net.load_state_dict(state["nets"][name])
    return method
