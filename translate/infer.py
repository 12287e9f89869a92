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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from translate.config import DataConfig, InferConfig, RuntimeConfig
from translate.data import DomainLabels
from translate.data.attributes import check_attributes, read_attribute_file, stargan_transform
from translate.data.images import list_images, load_image
from translate.data.sampler import _Loader as Loader  # keeps a worker's UserError one line
from translate.data.transforms import sample_params, transform_image
from translate.errors import UserError
from translate.eval.attributes import domain_targets
from translate.methods import method_from_checkpoint
from translate.nets import StarGANGenerator
from translate.nets.official import infer_generator
from translate.train.checkpoint import FORMAT, load_state_file
from translate.train.runtime import Runtime

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


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
            return labels.widen(target_label(list(part.names), target)[None], k)[0]
    sets = "; ".join(", ".join(p.names) for p in labels.parts)
    raise UserError(f"target= must name labels of one dataset of this joint model, got [{', '.join(target)}]; "
                    f"the datasets' labels: {sets}")


def load_generator(path: Path, direction: str, attributes: list[str] = (),
                   multi_label: bool = False) -> tuple[nn.Module, DomainLabels | None]:
    """The generator in a translate checkpoint (by direction) or an official state dict and, for a
    StarGAN generator, the layout of its label (an official N-G.ckpt's from `attributes`, one-hot
    unless `multi_label`)."""
    state = load_state_file(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        method = method_from_checkpoint(state)
        generator = method.generator(direction)
        return generator, (method.labels if isinstance(generator, StarGANGenerator) else None)
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a checkpoint or a state dict")
    generator, spec = infer_generator(state, source=str(path))
    if spec["arch"] != "stargan":
        return generator, None
    if len(attributes) != spec["c_dim"]:
        raise UserError(f"{path} is a StarGAN generator of {spec['c_dim']} labels; name them in order with "
                        f"attributes=A,B,... (got {len(attributes)})")
    return generator, DomainLabels(list(attributes), multi_label, 0)


def load_translator(path: Path, direction: str, target: list[str] = (), attributes: list[str] = ()) -> nn.Module:
    """The generator in a translate checkpoint (by direction) or an official state dict; a StarGAN
    generator comes with the label of `target` fixed."""
    generator, labels = load_generator(path, direction, attributes)
    if labels is None:
        if target:
            raise UserError(f"target= is for StarGAN generators; {path} translates between two domains only")
        return generator
    if labels.parts:
        return TargetedGenerator(generator, joint_target_label(labels, list(target)))
    return TargetedGenerator(generator, target_label(list(labels.names), list(target)))


def row_targets(labels: DomainLabels, own: torch.Tensor | None) -> list[torch.Tensor]:
    """The target labels of the official test mode's row, one B x C batch per column: for one-hot
    domains each domain in turn; for attributes each attribute as the official `create_labels`
    (a hair colour set with the other colours cleared, any other attribute flipped), from the
    images' own labels `own` (B x attributes). A joint model's row runs over every dataset's
    targets, the other parts zero and the mask set, as the official `test_multi`."""
    parts = labels.parts or (labels,)
    batch = own.size(0) if own is not None else 1
    columns = []
    for k, part in enumerate(parts):
        if part.multi_label and own is None:
            raise UserError(f"target=all needs each input's own attributes ({', '.join(part.names)}), as the "
                            f"official test flips them: give labels=list_attr_celeba.txt listing the inputs")
        part_own = own if part.multi_label else torch.zeros(batch, len(part.names))
        part_targets = domain_targets(part_own, part.names, part.multi_label)
        columns += [labels.widen(target, k) if labels.parts else target for target in part_targets]
    return columns


def own_attributes(labels: DomainLabels, attribute_file: str, paths: list[Path]) -> torch.Tensor | None:
    """Each input's own values of the model's multi-label attributes, read from a CelebA-style
    attribute file by file name (None when the model has no multi-label part)."""
    part = next((p for p in (labels.parts or (labels,)) if p.multi_label), None)
    if part is None or not attribute_file:
        return None
    names, rows = read_attribute_file(Path(attribute_file))
    check_attributes(list(part.names), names)
    table = dict(rows)
    missing = [p.name for p in paths if p.name not in table]
    if missing:
        raise UserError(f"labels={attribute_file} has no row for {missing[0]} ({len(missing)} input(s) missing); "
                        f"list every input image in it")
    columns = [names.index(n) for n in part.names]
    return torch.tensor([[float(table[p.name][c]) for c in columns] for p in paths])


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Bx3xHxW in [-1, 1] to BxHxWx3 uint8, truncating as the official tensor2im does."""
    arr = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    return ((arr + 1) / 2.0 * 255.0).astype(np.uint8)


def _has_batch_statistics(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def output_paths(paths: list[Path], src: Path, dst: Path) -> list[Path]:
    """Where each input's result goes (dst/<its path under src>.png), checked before anything is
    written: two inputs may not share one output (a.jpg, a.png), nor may an output land among the
    inputs (an input folder inside the output folder with a like-named sub-folder)."""
    outputs, first = [], {}
    for path in paths:
        out = dst / path.relative_to(src).with_suffix(".png")
        if out in first:
            raise UserError(f"{first[out]} and {path} would both be written to {out}; rename one of them")
        if src in out.parents:
            raise UserError(f"output={dst} would write {out} inside input={src}; choose an output folder "
                            f"outside the input folder")
        first[out] = path
        outputs.append(out)
    return outputs


class InputImages(Dataset):
    """(index, image tensor) per file, preprocessed as the official test script (or StarGAN's
    loader with center_crop); a Dataset so that DataLoader workers decode while the net computes."""

    def __init__(self, paths: list[Path], shape: DataConfig, size: int, center_crop: int):
        self.paths, self.shape, self.size, self.center_crop = paths, shape, size, center_crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        img = load_image(self.paths[i])
        if self.center_crop:  # StarGAN's official loader: centre crop, then a bilinear resize
            return i, stargan_transform(img, replace(self.shape, crop_size=self.size or self.center_crop), False,
                                        self.paths[i])
        return i, transform_image(img, sample_params(self.shape, img.size, random.Random(0), train=False))


def runtime_config(cfg: InferConfig) -> RuntimeConfig:
    """The runtime translate-infer asks for: the CPU's layer reformulations unless plain_layers."""
    plain = {"winograd": False, "split_thin_convs": False, "group_instance_norm": False,
             "small_map_matmul": False} if cfg.plain_layers else {}
    return RuntimeConfig(device=cfg.device, precision=cfg.precision, channels_last=cfg.channels_last, **plain)


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
    if cfg.workers < 0:
        raise UserError(f"workers={cfg.workers} is negative; use 0 (decode in this process) or more")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision={cfg.precision} is not one of {', '.join(PRECISIONS)}")
    runtime = Runtime.setup(runtime_config(cfg))
    paths = list_images(src, "a folder of images, e.g. testA/*.jpg")
    outputs = output_paths(paths, src, dst)
    row_mode = cfg.target == ["all"]
    if row_mode:  # the official test mode: [input, G(x, c_1), ..., G(x, c_n)] side by side
        net, labels = load_generator(Path(cfg.checkpoint), cfg.direction, cfg.attributes, bool(cfg.labels))
        if labels is None:
            raise UserError(f"target=all is for StarGAN generators; {cfg.checkpoint} translates between two "
                            f"domains only")
        own = own_attributes(labels, cfg.labels, paths)
        row_targets(labels, own[:1] if own is not None else None)  # a missing labels= fails before any work
    else:
        net = load_translator(Path(cfg.checkpoint), cfg.direction, cfg.target, cfg.attributes)
    shape = DataConfig(preprocess="resize_and_crop" if cfg.size else "none", load_size=cfg.size or 1,
                       crop_size=cfg.size or 1, flip=False, center_crop=cfg.center_crop)
    images = InputImages(paths, shape, cfg.size, cfg.center_crop)
    if cfg.precision == "int8":
        from translate.quantize import CALIBRATION_IMAGES, quantize_generator

        firsts = range(min(CALIBRATION_IMAGES, len(images)))
        calibration = [(images[i][1][None],) for i in firsts]
        if row_mode:  # every target of the row, as each image will be translated
            calibration = [(x, c) for i, (x,) in zip(firsts, calibration, strict=True)
                           for c in row_targets(labels, own[i:i + 1] if own is not None else None)]
        cache = Path(cfg.int8_cache).expanduser() if cfg.int8_cache else None
        net = quantize_generator(net, calibration, eval_mode=cfg.eval, cache=cache)
    else:
        net = runtime.wrap(net).train(not cfg.eval)
    batch_size = 1 if (not cfg.eval and _has_batch_statistics(net)) else cfg.batch_size
    dst.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[int, torch.Tensor]] = []

    @torch.no_grad()
    def flush() -> None:
        x = torch.stack([t for _, t in pending]).to(runtime.device, memory_format=runtime.memory_format)
        with runtime.autocast():
            if row_mode:
                chosen = own[[i for i, _ in pending]] if own is not None else None
                targets = row_targets(labels, chosen)
                out = torch.cat([x] + [net(x, c.expand(len(x), -1).to(x.device)).float() for c in targets], dim=3)
            else:
                out = net(x)
        for (i, _), arr in zip(pending, tensor_to_uint8(out), strict=True):
            outputs[i].parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(outputs[i])
        pending.clear()

    # batch_size=None: one image at a time, in order; images of other sizes start a new batch.
    for i, tensor in Loader(images, batch_size=None, num_workers=cfg.workers if len(paths) > 1 else 0):
        if pending and (len(pending) == batch_size or pending[0][1].shape != tensor.shape):
            flush()
        pending.append((i, tensor))
    if pending:
        flush()
    return len(paths), dst
