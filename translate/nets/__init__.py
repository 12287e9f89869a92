"""Generators and discriminators, keyed like the official repositories so their checkpoints load as-is.

Build from the config through the registries: `build_generator(cfg.model)` and
`build_discriminator(cfg.model, input_nc)`. Adding an architecture is one entry in
GENERATORS or DISCRIMINATORS: a function of (ModelConfig, input_nc[, output_nc]) returning the
uninitialised module. StarGAN's nets are plain classes until their config section exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from translate.config import ModelConfig
from translate.errors import UserError
from translate.nets.norm import init_weights, norm_layer
from translate.nets.official import infer_generator, load_generator_checkpoint
from translate.nets.patchgan import NLayerDiscriminator, PixelDiscriminator
from translate.nets.resnet import ResnetGenerator
from translate.nets.stargan import StarGANDiscriminator, StarGANGenerator
from translate.nets.unet import UnetGenerator

GENERATORS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "resnet_6blocks": lambda cfg, i, o: ResnetGenerator(i, o, cfg.ngf, cfg.norm, cfg.dropout, n_blocks=6),
    "resnet_9blocks": lambda cfg, i, o: ResnetGenerator(i, o, cfg.ngf, cfg.norm, cfg.dropout, n_blocks=9),
    "unet_32": lambda cfg, i, o: UnetGenerator(i, o, 5, cfg.ngf, cfg.norm, cfg.dropout),  # small synthetic runs
    "unet_128": lambda cfg, i, o: UnetGenerator(i, o, 7, cfg.ngf, cfg.norm, cfg.dropout),
    "unet_256": lambda cfg, i, o: UnetGenerator(i, o, 8, cfg.ngf, cfg.norm, cfg.dropout),
}

DISCRIMINATORS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "basic": lambda cfg, i: NLayerDiscriminator(i, cfg.ndf, 3, cfg.norm),
    "n_layers": lambda cfg, i: NLayerDiscriminator(i, cfg.ndf, cfg.n_layers_D, cfg.norm),
    "pixel": lambda cfg, i: PixelDiscriminator(i, cfg.ndf, cfg.norm),
}


def _lookup(registry: dict, name: str, key: str):
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"{key}={name} is not one of {', '.join(registry)}; {hint}".rstrip("; "))
    return registry[name]


def build_generator(cfg: ModelConfig, input_nc: int | None = None, output_nc: int | None = None) -> nn.Module:
    """The generator `cfg.generator`, initialised by `cfg.init` (channels default to cfg's)."""
    build = _lookup(GENERATORS, cfg.generator, "model.generator")
    net = build(cfg, cfg.input_nc if input_nc is None else input_nc,
                cfg.output_nc if output_nc is None else output_nc)
    return init_weights(net, cfg.init, cfg.init_gain)


def build_discriminator(cfg: ModelConfig, input_nc: int) -> nn.Module:
    """The discriminator `cfg.discriminator` on input_nc channels (pix2pix: input + output)."""
    build = _lookup(DISCRIMINATORS, cfg.discriminator, "model.discriminator")
    return init_weights(build(cfg, input_nc), cfg.init, cfg.init_gain)


__all__ = [
    "DISCRIMINATORS", "GENERATORS", "NLayerDiscriminator", "PixelDiscriminator", "ResnetGenerator",
    "StarGANDiscriminator", "StarGANGenerator", "UnetGenerator", "build_discriminator",
    "build_generator", "infer_generator", "init_weights", "load_generator_checkpoint", "norm_layer",
]
