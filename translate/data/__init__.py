"""Datasets of image pairs (or unpaired A and B images), one class per on-disk format.

Every dataset takes (cfg: DataConfig, split, paired, train) and is indexed by a key
(index, seed), or a plain index; a sample is a dict with "A", "B" (float CxHxW in [-1, 1]),
"A_path", "B_path", "skipped", and for datasets with ground-truth classes "A_classes" and
"B_classes" (int64 HxW, 255 = ignore). See base.py for how keys make samples reproducible.

The labelled formats (LABELLED_FORMATS, for StarGAN) take (cfg, split, train) and give
{"image", "label" (float: multi-label 0/1 or one-hot), "path"}; `domain_labels` says what
their labels mean without loading any image. "joint" (data.joint: several labelled formats, for
StarGAN's mask vectors) gives {"image_0", "label_0", "path_0", "image_1", ...}, one of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.aligned import AlignedDataset
from translate.data.attributes import CelebADataset, LabelledFoldersDataset, folder_domains
from translate.data.cityscapes import CityscapesDataset
from translate.data.folders import DomainFoldersDataset, list_domains
from translate.data.holdout import HOLDOUT, split_off
from translate.data.images import IMG_EXTENSIONS, BadImageError, list_images, load_image
from translate.data.sampler import GlobalBatchSampler, make_loader
from translate.data.transforms import AugmentParams, sample_params, transform_classes, transform_image
from translate.data.unaligned import UnalignedDataset
from translate.errors import UserError

__all__ = [
    "HOLDOUT", "IMG_EXTENSIONS", "LABELLED_FORMATS", "AlignedDataset", "AugmentParams", "BadImageError",
    "CelebADataset", "CityscapesDataset", "DomainFoldersDataset", "DomainLabels", "GlobalBatchSampler",
    "LabelledFoldersDataset", "UnalignedDataset", "build_dataset", "domain_labels", "list_domains",
    "list_images", "load_image", "make_loader", "sample_params", "transform_classes", "transform_image",
]

FILE_FORMATS: dict[str, type[Dataset]] = {
    "unaligned": UnalignedDataset,
    "aligned": AlignedDataset,
    "folders": DomainFoldersDataset,
    "cityscapes": CityscapesDataset,
}
LABELLED_FORMATS = ("celeba", "labelled_folders", "faces", "expressions", "joint")


@dataclass(frozen=True)
class DomainLabels:
    names: list[str]  # what each entry of a label stands for
    multi_label: bool  # several may hold at once (attributes) or exactly one (one-hot domains)
    image_size: int  # the side of the (square) images the dataset gives
    # joint format: each dataset's own labels, in order. The joint label (G's input) is their
    # parts one after another, then the one-hot mask of which dataset's part is known; `names`
    # lists all of it, the mask entries as "mask:<format>". multi_label is then per part.
    parts: tuple[DomainLabels, ...] = ()

    @property
    def class_names(self) -> list[str]:
        """What D's classification head outputs: every part's names, without the mask."""
        return [n for p in self.parts for n in p.names] if self.parts else list(self.names)

    def part_slice(self, k: int) -> slice:
        """Where dataset k's own labels sit in a joint label (and in D's classification outputs)."""
        start = sum(len(p.names) for p in self.parts[:k])
        return slice(start, start + len(self.parts[k].names))

    def widen(self, label: torch.Tensor, k: int) -> torch.Tensor:
        """Dataset k's own labels (B x its names) as joint labels: the other parts zero, mask on k."""
        full = label.new_zeros(label.size(0), len(self.names))
        full[:, self.part_slice(k)] = label
        full[:, len(self.class_names) + k] = 1
        return full


def domain_labels(cfg: DataConfig) -> DomainLabels:
    """The label layout of a labelled format, from the config (and, for folders, the folder names)."""
    if cfg.format == "joint":
        from translate.data.joint import part_configs
        parts = tuple(domain_labels(c) for c in part_configs(cfg))
        if len({p.image_size for p in parts}) > 1:
            raise UserError(f"data.joint: the datasets give images of {', '.join(str(p.image_size) for p in parts)} "
                            f"px; one model needs one size (data.crop_size)")
        names = [n for p in parts for n in p.names] + [f"mask:{f}" for f in cfg.joint]
        return DomainLabels(names, False, parts[0].image_size, parts)
    if cfg.format == "celeba":  # the names are checked against the attribute file by the dataset
        return DomainLabels(list(cfg.attributes), True, cfg.crop_size)
    if cfg.format == "labelled_folders":
        return DomainLabels(folder_domains(cfg), False, cfg.crop_size)
    if cfg.format in ("faces", "expressions"):
        from translate.data.faces import EXPRESSIONS, FACE_ATTRIBUTES
        # The worlds draw scenes_size images, then preprocess them like files (preprocess=none keeps the size).
        size = cfg.scenes_size if cfg.preprocess == "none" else cfg.crop_size
        if cfg.format == "expressions":
            return DomainLabels(list(EXPRESSIONS), False, size)
        return DomainLabels(list(cfg.attributes or FACE_ATTRIBUTES), True, size)
    raise UserError(f"data.format={cfg.format} has no domain labels; StarGAN needs one of {', '.join(LABELLED_FORMATS)}")


def build_dataset(cfg: DataConfig, split: str, paired: bool, train: bool) -> Dataset:
    """The dataset of `cfg.format` for `split` ("train", "test", ...; "holdout": see holdout.py)."""
    if split == HOLDOUT or (split == "train" and cfg.holdout):
        return split_off(_format_dataset(cfg, "train", paired, train), cfg.holdout, split)
    return _format_dataset(cfg, split, paired, train)


def _format_dataset(cfg: DataConfig, split: str, paired: bool, train: bool) -> Dataset:
    if cfg.format in LABELLED_FORMATS:
        if paired:
            raise UserError(f"data.format={cfg.format} gives labelled single images, not pairs; "
                            f"use it with method=stargan")
        return _labelled_dataset(cfg, split, train)
    if cfg.format == "scenes":
        # Imported here: the synthetic world is a module of its own, needed only for this format.
        from translate.data.scenes import ScenesDataset
        return ScenesDataset(cfg, split, paired, train)
    if cfg.format not in FILE_FORMATS:
        raise UserError(f"data.format={cfg.format} is unknown; use one of {', '.join(FILE_FORMATS)}, scenes")
    return FILE_FORMATS[cfg.format](cfg, split, paired, train)


def _labelled_dataset(cfg: DataConfig, split: str, train: bool) -> Dataset:
    if cfg.format == "celeba":
        return CelebADataset(cfg, split, train)
    if cfg.format == "labelled_folders":
        return LabelledFoldersDataset(cfg, split, train)
    if cfg.format == "joint":
        from translate.data.joint import JointDataset, part_configs
        return JointDataset([_labelled_dataset(c, split, train) for c in part_configs(cfg)])
    # Imported here, as the scenes: the synthetic face worlds are needed only for these formats.
    from translate.data.faces import ExpressionsDataset, FacesDataset
    if cfg.format == "faces":
        return FacesDataset(cfg, split, train, attributes=list(domain_labels(cfg).names))
    return ExpressionsDataset(cfg, split, train)
