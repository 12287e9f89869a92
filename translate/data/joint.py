"""Several labelled datasets at once, for StarGAN's mask vectors (paper section 3.2).

data.format = "joint" with data.joint = ["celeba", "labelled_folders"] (or the synthetic
["faces", "expressions"]) builds each dataset from the same data section with its own format
(and its entry of data.joint_roots / data.joint_center_crops when set). A sample holds one
sample of EACH dataset, {"image_0", "label_0", "path_0", "image_1", "label_1", ...}, so one
training step is one iteration of the official train_multi, which visits every dataset in turn.
Each label_k is the dataset's own label; the method widens it to the joint label
[c_0, c_1, ..., mask], the other datasets' parts zero and the mask one-hot on dataset k.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.base import split_key
from translate.errors import UserError

JOINABLE = ("celeba", "labelled_folders", "faces", "expressions")


def part_configs(cfg: DataConfig) -> list[DataConfig]:
    """The data section of each dataset of a joint format."""
    if len(cfg.joint) < 2 or any(f not in JOINABLE for f in cfg.joint):
        raise UserError(f"data.format=joint needs data.joint to name at least two of {', '.join(JOINABLE)}, "
                        f"got [{', '.join(cfg.joint)}]; e.g. data.joint=faces,expressions")
    for key in ("joint_roots", "joint_center_crops"):
        values = getattr(cfg, key)
        if values and len(values) != len(cfg.joint):
            raise UserError(f"data.{key} has {len(values)} entries for the {len(cfg.joint)} datasets of "
                            f"data.joint; give one per dataset or none")
    for k, fmt in enumerate(cfg.joint):
        if cfg.joint_roots and not cfg.joint_roots[k] and fmt in ("celeba", "labelled_folders"):
            raise UserError(f"data.joint_roots entry {k + 1} ({fmt}) is empty; set the folders of the datasets "
                            f"in the order of data.joint, e.g. data.joint_roots=/data/celeba,/data/rafd")
    return [dataclasses.replace(cfg, format=fmt, joint=[], joint_roots=[], joint_center_crops=[],
                                root=cfg.joint_roots[k] if cfg.joint_roots else cfg.root,
                                center_crop=cfg.joint_center_crops[k] if cfg.joint_center_crops else cfg.center_crop)
            for k, fmt in enumerate(cfg.joint)]


class JointDataset(Dataset):
    """Item i holds item i (modulo its length) of every dataset; as long as the longest."""

    def __init__(self, parts: list[Dataset]):
        self.parts = parts

    def __len__(self) -> int:
        return max(len(p) for p in self.parts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside a joint dataset of {len(self)} samples")
        sample: dict[str, Any] = {}
        skipped = []
        for k, part in enumerate(self.parts):
            # Each dataset its own augmentation draw, from the same sampler seed.
            item = part[(index % len(part), seed * len(self.parts) + k)]
            sample.update({f"image_{k}": item["image"], f"label_{k}": item["label"], f"path_{k}": item["path"]})
            if item.get("skipped"):
                skipped.append(item["skipped"])
        sample["skipped"] = "|".join(skipped)
        return sample
