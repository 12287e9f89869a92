"""Datasets of image pairs (or unpaired A and B images), one class per on-disk format.

Every dataset takes (cfg: DataConfig, split, paired, train) and is indexed by a key
(index, seed), or a plain index; a sample is a dict with "A", "B" (float CxHxW in [-1, 1]),
"A_path", "B_path", "skipped", and for datasets with ground-truth classes "A_classes" and
"B_classes" (int64 HxW, 255 = ignore). See base.py for how keys make samples reproducible.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.aligned import AlignedDataset
from translate.data.cityscapes import CityscapesDataset
from translate.data.folders import DomainFoldersDataset, list_domains
from translate.data.holdout import HOLDOUT, split_off
from translate.data.images import IMG_EXTENSIONS, BadImageError, list_images, load_image
from translate.data.sampler import GlobalBatchSampler, make_loader
from translate.data.transforms import AugmentParams, sample_params, transform_classes, transform_image
from translate.data.unaligned import UnalignedDataset
from translate.errors import UserError

__all__ = [
    "HOLDOUT", "IMG_EXTENSIONS", "AlignedDataset", "AugmentParams", "BadImageError", "CityscapesDataset",
    "DomainFoldersDataset", "GlobalBatchSampler", "UnalignedDataset", "build_dataset", "list_domains",
    "list_images", "load_image", "make_loader", "sample_params", "transform_classes", "transform_image",
]

FILE_FORMATS: dict[str, type[Dataset]] = {
    "unaligned": UnalignedDataset,
    "aligned": AlignedDataset,
    "folders": DomainFoldersDataset,
    "cityscapes": CityscapesDataset,
}


def build_dataset(cfg: DataConfig, split: str, paired: bool, train: bool) -> Dataset:
    """The dataset of `cfg.format` for `split` ("train", "test", ...; "holdout": see holdout.py)."""
    if split == HOLDOUT or (split == "train" and cfg.holdout):
        return split_off(_format_dataset(cfg, "train", paired, train), cfg.holdout, split)
    return _format_dataset(cfg, split, paired, train)


def _format_dataset(cfg: DataConfig, split: str, paired: bool, train: bool) -> Dataset:
    if cfg.format == "scenes":
        # Imported here: the synthetic world is a module of its own, needed only for this format.
        from translate.data.scenes import ScenesDataset
        return ScenesDataset(cfg, split, paired, train)
    if cfg.format not in FILE_FORMATS:
        raise UserError(f"data.format={cfg.format} is unknown; use one of {', '.join(FILE_FORMATS)}, scenes")
    return FILE_FORMATS[cfg.format](cfg, split, paired, train)
