"""Labelled images for multi-domain translation (StarGAN): a sample is {"image", "label", "path"}.

celeba: ROOT/list_attr_celeba.txt (first line the row count, second line the 40 attribute names,
then `NAME.jpg v1 ... v40` with +1/-1) and the images in ROOT/<image_dir>. The label is the
chosen attributes (data.attributes) as 0/1 floats: several may hold at once (multi-label).
As the official loader, the rows are shuffled with seed 1234 and the first 1999 form the test
split (data.test_size).

labelled_folders: ROOT/<domain>/* (or ROOT/<split>/<domain>/*), one domain per folder as RaFD's
expressions; the label is the one-hot vector of the image's folder (single-label).

Both preprocess as the official StarGAN loader: a random horizontal flip in training, a centre
crop (data.center_crop), a bilinear resize to data.crop_size, then [-1, 1].
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from translate.config import DataConfig
from translate.data.base import FileDataset, first_n
from translate.data.folders import domains_folder, list_domains
from translate.data.images import list_images
from translate.data.transforms import to_tensor
from translate.errors import UserError

CELEBA_LAYOUT = "celeba: ROOT/list_attr_celeba.txt and ROOT/<image_dir>/NAME.jpg (image_dir: images or img_align_celeba)"
FOLDERS_LAYOUT = "labelled_folders: ROOT/<domain>/* or ROOT/<split>/<domain>/*, one sub-folder of images per domain"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
IMAGE_DIRS = ("images", "img_align_celeba")  # the official layout's name, then CelebA's own
SHUFFLE_SEED = 1234  # the official loader's: it decides which rows are the test split


def read_attribute_file(path: Path) -> tuple[list[str], list[tuple[str, list[bool]]]]:
    """The attribute names and, per row, (file name, whether each attribute holds)."""
    try:
        lines = [line.split() for line in Path(path).read_text().splitlines()]
    except OSError as e:
        raise UserError(f"cannot read the CelebA attribute file {path}: {e.strerror}; expected {CELEBA_LAYOUT}") from None
    lines = [line for line in lines if line]  # CRLF or LF, and a blank last line, read the same
    if len(lines) < 2 or not lines[0][0].isdigit():
        raise UserError(f"{path} is not a CelebA attribute file: it should start with the row count and a line "
                        f"of attribute names")
    names = lines[1]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{path} names the attribute {repeated[0]} twice on line 2; each attribute once")
    rows = []
    for number, fields in enumerate(lines[2:], start=3):
        if len(fields) != len(names) + 1:
            raise UserError(f"{path} line {number} should be a file name and {len(names)} values of 1 or -1, "
                            f"got {len(fields)} fields")
        wrong = next(((name, v) for name, v in zip(names, fields[1:], strict=True) if v not in ("1", "-1")), None)
        if wrong:
            raise UserError(f"{path} line {number} ({fields[0]}): {wrong[0]} is {wrong[1]!r}; the values must "
                            f"be 1 or -1")
        rows.append((fields[0], [v == "1" for v in fields[1:]]))
    if int(lines[0][0]) != len(rows):
        raise UserError(f"{path} says it has {lines[0][0]} rows but has {len(rows)}; the file is cut short "
                        f"or its first line is wrong")
    files = [name for name, _ in rows]
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise UserError(f"{path} has two rows for {twice}; give each image one row")
    return names, rows


def check_attributes(chosen: list[str], valid: list[str]) -> None:
    if not chosen:
        raise UserError("data.attributes is empty; name the attributes that form the label, e.g. "
                        "data.attributes=Black_Hair,Blond_Hair,Brown_Hair,Male,Young")
    unknown = [a for a in chosen if a not in valid]
    if unknown:
        raise UserError(f"data.attributes: {', '.join(unknown)} not among the attributes ({', '.join(valid)})")


def center_crop_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom) of a crop x crop square."""
    w, h = size
    left, top = round((w - crop) / 2.0), round((h - crop) / 2.0)
    return left, top, left + crop, top + crop


def stargan_transform(img: Image.Image, cfg: DataConfig, flip: bool, path: Path) -> torch.Tensor:
    """Flip, centre crop, bilinear resize to crop_size (the official transform), then [-1, 1]."""
    if img.width < cfg.center_crop or img.height < cfg.center_crop:
        raise UserError(f"image {path} is {img.width}x{img.height}, smaller than data.center_crop="
                        f"{cfg.center_crop}; lower data.center_crop")
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.crop(center_crop_box(img.size, cfg.center_crop))
    if img.size != (cfg.crop_size, cfg.crop_size):
        img = img.resize((cfg.crop_size, cfg.crop_size), Image.Resampling.BILINEAR)
    return to_tensor(img, cfg.grayscale)


class LabelledDataset(FileDataset):
    """Base of the labelled formats: subclasses fill `paths` and `labels` (one float vector each)."""

    paths: list[Path]
    labels: list[torch.Tensor]

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        super().__init__(cfg, split, paired=False, train=train)

    def __len__(self) -> int:
        return len(self.paths)

    def make_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        img, pos = self.first_readable(len(self.paths), index, lambda i: self.load(self.paths[i]), skipped,
                                       f"images ({self.paths[0].parent})")
        flip = self.train and self.cfg.flip and rng.random() < 0.5
        return {"image": stargan_transform(img, self.cfg, flip, self.paths[pos]),
                "label": self.labels[pos].clone(), "path": str(self.paths[pos])}


class CelebADataset(LabelledDataset):
    layout = CELEBA_LAYOUT
    source = "CelebA: mmlab.ie.cuhk.edu.hk/projects/CelebA.html, or the official StarGAN download.sh"

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        super().__init__(cfg, split, train)
        if split not in ("train", "test"):
            raise UserError(f"the celeba format has the splits train and test, not {split}")
        names, rows = read_attribute_file(self.root / ATTRIBUTE_FILE)
        check_attributes(cfg.attributes, names)
        if cfg.test_size >= len(rows):
            raise UserError(f"data.test_size={cfg.test_size} leaves nothing to train on: {ATTRIBUTE_FILE} has "
                            f"{len(rows)} rows; lower data.test_size")
        random.Random(SHUFFLE_SEED).shuffle(rows)  # as official random.seed(1234); random.shuffle(lines)
        rows = rows[:cfg.test_size] if split == "test" else first_n(rows[cfg.test_size:], cfg.max_size)
        columns = [names.index(a) for a in cfg.attributes]
        folder = self.image_folder()
        self.paths = [folder / name for name, _ in rows]
        self.labels = [torch.tensor([float(values[c]) for c in columns]) for _, values in rows]

    def image_folder(self) -> Path:
        if self.cfg.image_dir:
            folder = self.root / self.cfg.image_dir
            if not folder.is_dir():
                raise UserError(f"data.image_dir: {folder} is not a folder; expected {CELEBA_LAYOUT}")
            return folder
        for name in IMAGE_DIRS:
            if (self.root / name).is_dir():
                return self.root / name
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        raise UserError(f"no image folder ({' or '.join(IMAGE_DIRS)}) in {self.root}; set data.image_dir "
                        f"(folders there: {', '.join(found) or 'none'})")


def folder_domains(cfg: DataConfig, split: str = "train") -> list[str]:
    """The domains of labelled_folders: data.domains when set, else every sub-folder."""
    return list(cfg.domains) or list_domains(domains_folder(Path(cfg.root), split))


class LabelledFoldersDataset(LabelledDataset):
    layout = FOLDERS_LAYOUT

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        super().__init__(cfg, split, train)
        folder = domains_folder(self.root, split)
        found = list_domains(folder)
        domains = folder_domains(cfg, split)
        missing = [d for d in domains if d not in found]
        if len(domains) < 2 or missing:
            raise UserError(f"data.domains must name at least two of the domain folders in {folder} "
                            f"({', '.join(found) or 'none found'}), got [{', '.join(domains)}]")
        self.paths, self.labels = [], []
        for i, domain in enumerate(domains):
            paths = first_n(list_images(folder / domain, FOLDERS_LAYOUT), cfg.max_size)
            self.paths += paths
            self.labels += [torch.nn.functional.one_hot(torch.tensor(i), len(domains)).float()] * len(paths)
