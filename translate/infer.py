"""Translate a folder of images with a translate checkpoint or an official generator checkpoint.

Preprocessing and output follow the official test script: resize to size x size (bicubic),
normalise to [-1, 1], run the generator, map back with (x + 1) / 2 * 255 truncated to uint8, save
PNG. Like the official script, norm and dropout layers stay in training mode unless `eval=true`;
in that mode each image goes through alone, since batch statistics would mix images.

A StarGAN generator also takes the target label: `target=Blond_Hair,Young` names the entries set
to 1 (the rest are 0). The names come from a translate checkpoint's run config, or, for an
official N-G.ckpt, from `attributes=` (in the order it was trained with, e.g. the five of
`stargan_celeba`). A joint model (data.format=joint, mask vectors) takes names of one of its
datasets' labels, e.g. `target=happy`: that part of the label is set, the others stay 0, and the
mask marks that dataset.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from translate.config import DataConfig, InferConfig, RuntimeConfig
from translate.data import DomainLabels
from translate.data.images import list_images, load_image
from translate.data.transforms import sample_params, transform_image
from translate.errors import UserError
from translate.methods import method_from_checkpoint
from translate.nets import StarGANGenerator
from translate.nets.official import infer_generator
from translate.train.checkpoint import FORMAT, load_state_file
from translate.train.runtime import Runtime


class TargetedGenerator(nn.Module):
    """A StarGAN generator with its target label fixed, so it translates an image alone."""

    def __init__(self, generator: nn.Module, label: torch.Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("label", label)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x, self.label.expand(x.size(0), -1))


def target_label(names: list[str], target: list[str]) -> torch.Tensor:
    """1 for each name in `target`, 0 for the others, in the order of `names`."""
    unknown = [t for t in target if t not in names]
    if not target or unknown:
        what = f"{', '.join(unknown)} not among" if unknown else "target= is required for a StarGAN generator; name"
        raise UserError(f"{what} the labels {', '.join(names)}; e.g. target={names[0]}")
    return torch.tensor([1.0 if name in target else 0.0 for name in names])


def joint_target_label(labels: DomainLabels, target: list[str]) -> torch.Tensor:
    """A joint model's label: the part of the dataset whose labels `target` names, plus its mask."""
    for k, part in enumerate(labels.parts):
        if target and all(t in part.names for t in target):
            known = target_label(list(part.names), target)
            start = sum(len(p.names) for p in labels.parts[:k])
            label = torch.zeros(len(labels.names))
            label[start:start + len(known)] = known
            label[len(labels.class_names) + k] = 1
            return label
    sets = "; ".join(", ".join(p.names) for p in labels.parts)
    raise UserError(f"target= must name labels of one dataset of this joint model, got [{', '.join(target)}]; "
                    f"the datasets' labels: {sets}")


def load_translator(path: Path, direction: str, target: list[str] = (), attributes: list[str] = ()) -> nn.Module:
    """The generator in a translate checkpoint (by direction) or an official state dict; a StarGAN
    generator comes with the label of `target` fixed."""
    state = load_state_file(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        method = method_from_checkpoint(state)
        generator = method.generator(direction)
        names = list(method.labels.names) if isinstance(generator, StarGANGenerator) else []
        if isinstance(generator, StarGANGenerator) and method.labels.parts:
            return TargetedGenerator(generator, joint_target_label(method.labels, list(target)))
    else:
        if not isinstance(state, dict):
            raise UserError(f"{path} holds a {type(state).__name__}, not a checkpoint or a state dict")
        generator, spec = infer_generator(state, source=str(path))
        names = list(attributes)
        if spec["arch"] == "stargan" and len(names) != spec["c_dim"]:
            raise UserError(f"{path} is a StarGAN generator of {spec['c_dim']} labels; name them in order with "
                            f"attributes=A,B,... (got {len(names)})")
    if not isinstance(generator, StarGANGenerator):
        if target:
            raise UserError(f"target= is for StarGAN generators; {path} translates between two domains only")
        return generator
    return TargetedGenerator(generator, target_label(names, list(target)))


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Bx3xHxW in [-1, 1] to BxHxWx3 uint8, truncating as the official tensor2im does."""
    arr = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    return ((arr + 1) / 2.0 * 255.0).astype(np.uint8)


def _has_batch_statistics(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def translate_folder(cfg: InferConfig) -> tuple[int, Path]:
    for key in ("checkpoint", "input", "output"):
        if not getattr(cfg, key):
            raise UserError(f"{key}= is required: translate-infer checkpoint=PATH input=DIR output=DIR")
    if cfg.direction not in ("AtoB", "BtoA"):
        raise UserError(f"direction={cfg.direction} is not AtoB or BtoA")
    src, dst = Path(cfg.input).resolve(), Path(cfg.output).resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"output={cfg.output} is inside input={cfg.input}; choose another output folder "
                        f"so the inputs stay untouched")
    runtime = Runtime.setup(RuntimeConfig(device=cfg.device, precision=cfg.precision))
    net = load_translator(Path(cfg.checkpoint), cfg.direction, cfg.target, cfg.attributes).to(runtime.device)
    net.train(not cfg.eval)
    batch_size = 1 if (not cfg.eval and _has_batch_statistics(net)) else cfg.batch_size
    paths = list_images(src, "a folder of images, e.g. testA/*.jpg")
    shape = DataConfig(preprocess="resize_and_crop" if cfg.size else "none",
                       load_size=cfg.size or 1, crop_size=cfg.size or 1, flip=False)
    dst.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        with torch.no_grad(), runtime.autocast():
            out = net(torch.stack([t for _, t in pending]).to(runtime.device))
        for (p, _), arr in zip(pending, tensor_to_uint8(out)):
            target = dst / p.relative_to(src).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(target)
        pending.clear()

    for p in paths:
        img = load_image(p)
        tensor = transform_image(img, sample_params(shape, img.size, random.Random(0), train=False))
        if pending and (len(pending) == batch_size or pending[0][1].shape != tensor.shape):
            flush()
        pending.append((p, tensor))
    if pending:
        flush()
    return len(paths), dst
