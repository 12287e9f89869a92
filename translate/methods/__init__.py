"""The methods: each says only what its paper adds (networks, losses, one training step)."""

from __future__ import annotations

from translate import config
from translate.config import RunConfig
from translate.errors import UserError
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
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("nets"), dict):
        raise UserError("the checkpoint has no run config or networks; pass a checkpoint from a run's "
                        "checkpoints/ folder")
    method = build_method(config.from_dict(state["config"]))
    for name, net in method.nets.items():
        try:
            net.load_state_dict(state["nets"][name])
        except (KeyError, RuntimeError) as e:
            raise UserError(f"the checkpoint's network {name} does not match its own config "
                            f"({str(e).splitlines()[0][:100]}); the file was edited or mixed up") from None
    return method
