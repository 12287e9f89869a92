"""Cityscapes in its own layout: photos (A) and label maps drawn in the official colours (B).

ROOT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png goes with
ROOT/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png. The label table below is the official
one from cityscapesScripts (cityscapesscripts/helpers/labels.py): name, id, trainId, colour.
Split "test" has no public labels (its label files are blank), so it is read as "val", the
split papers evaluate on.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from translate.config import DataConfig
from translate.data.base import FileDataset, first_n
from translate.data.images import BadImageError, list_images, load_image, open_image
from translate.data.transforms import AugmentParams, sample_params, to_tensor, transform_classes, transform_image
from translate.errors import UserError

PHOTO_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
IGNORE = 255  # the trainId of classes left out of training and evaluation
LAYOUT = ("cityscapes: ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
          "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png")
NOT_FOUND = ("Cityscapes not found at {root}: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
             "from https://www.cityscapes-dataset.com and unzip both into {root} (expected "
             "{root}/leftImg8bit/train/<city>/*_leftImg8bit.png and {root}/gtFine/train/<city>/*_gtFine_labelIds.png)")


class CityscapesLabel(NamedTuple):
    name: str
    id: int  # the value in *_gtFine_labelIds.png; -1: never drawn in label images
    train_id: int  # one of the 19 training classes, or 255 (ignored)
    color: tuple[int, int, int]  # as in *_gtFine_color.png


CITYSCAPES_LABELS = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
    CityscapesLabel("license plate", -1, -1, (0, 0, 142)),
)

# Lookup tables over every possible 8-bit label id; ids outside the table are drawn black
# and ignored, like "unlabeled".
_ID_TO_COLOR = np.zeros((256, 3), dtype=np.uint8)
_ID_TO_TRAIN_ID = np.full(256, IGNORE, dtype=np.uint8)
for _label in CITYSCAPES_LABELS:
    if _label.id >= 0:
        _ID_TO_COLOR[_label.id] = _label.color
        _ID_TO_TRAIN_ID[_label.id] = _label.train_id if _label.train_id >= 0 else IGNORE

# The colour of each of the 19 training classes, row = trainId.
TRAINID_COLORS = np.array([next(lb.color for lb in CITYSCAPES_LABELS if lb.train_id == t) for t in range(19)],
                          dtype=np.uint8)
TRAINID_COLORS.flags.writeable = False


def _as_lookup_index(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"Cityscapes label ids lie in 0..255, got {ids.min()}..{ids.max()}")
    return ids.astype(np.intp)


def labelids_to_colors(ids: np.ndarray) -> np.ndarray:
    """An HxW map of label ids as an HxWx3 uint8 image in the official colours."""
    return _ID_TO_COLOR[_as_lookup_index(ids)]


def labelids_to_trainids(ids: np.ndarray) -> np.ndarray:
    """An HxW map of label ids as uint8 trainIds: 0..18, and 255 for the ignored classes."""
    return _ID_TO_TRAIN_ID[_as_lookup_index(ids)]


def colors_to_trainids(images: torch.Tensor) -> torch.Tensor:
    """The trainId whose colour is nearest to each pixel of 3xHxW or Bx3xHxW images in [-1, 1].

    For scoring generated label maps: every pixel is given one of the 19 classes (no 255), as
    pixels that are ignored in the ground truth do not count anyway.
    """
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected 3xHxW or Bx3xHxW RGB images, got shape {tuple(images.shape)}")
    rgb = (images.float().clamp(-1, 1) + 1) * 127.5
    palette = torch.tensor(TRAINID_COLORS, dtype=torch.float32, device=images.device)
    # One class at a time with a running minimum: memory of one map, not of 19.
    best = torch.full(rgb[..., 0, :, :].shape, float("inf"), device=images.device)
    classes = torch.zeros(best.shape, dtype=torch.int64, device=images.device)
    for train_id, color in enumerate(palette):
        distance = ((rgb - color.view(3, 1, 1)) ** 2).sum(dim=-3)
        closer = distance < best
        classes[closer] = train_id
        best = torch.where(closer, distance, best)
    return classes


def _train_id_tensor(ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labelids_to_trainids(ids).astype(np.int64))


class CityscapesDataset(FileDataset):
    """A = the photo, B = its label map in the official colours; A_classes/B_classes = trainIds.

    Paired: photo and labels of one scene, with the same crop and flip. Unpaired (CycleGAN):
    B is the label map of another scene drawn from the seed in training (of the same scene in
    evaluation); each side's classes are those of its own scene. Label maps are resized with
    nearest neighbours, so B only ever holds exact class colours. Split "test" reads "val":
    the public test labels are blank.
    """

    layout = LAYOUT
    source = ("download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
              "https://www.cityscapes-dataset.com")

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        super().__init__(cfg, split, paired, train)
        root = self.root
        if not (root / "leftImg8bit").is_dir() or not (root / "gtFine").is_dir():
            raise UserError(NOT_FOUND.format(root=root))
        self.split = "val" if split == "test" else split
        photo_folder = root / "leftImg8bit" / self.split
        label_folder = root / "gtFine" / self.split
        photos = [p for p in list_images(photo_folder, LAYOUT) if p.name.endswith(PHOTO_SUFFIX)]
        if not photos:
            raise UserError(f"no *{PHOTO_SUFFIX} files in {photo_folder}; expected the layout {LAYOUT}")
        self.photos = first_n(photos, cfg.max_size)
        self.labels = []
        for photo in self.photos:
            stem = photo.name[: -len(PHOTO_SUFFIX)]
            label = label_folder / photo.parent.relative_to(photo_folder) / (stem + LABEL_SUFFIX)
            if not label.is_file():
                raise UserError(f"{photo} has no label file {label}; unzip gtFine_trainvaltest.zip into {root}")
            self.labels.append(label)

    def __len__(self) -> int:
        return len(self.photos)

    def _read_label_ids(self, i: int) -> np.ndarray:
        path = self.labels[i]
        img = open_image(path)
        if img.mode not in ("L", "P"):
            raise BadImageError(f"label file {path} has mode {img.mode}, not single-channel label ids; "
                                f"use the *{LABEL_SUFFIX} files of gtFine", path)
        return np.asarray(img)

    def _read_scene(self, i: int) -> tuple[Image.Image, np.ndarray]:
        photo = load_image(self.photos[i])
        ids = self._read_label_ids(i)
        if ids.shape != (photo.height, photo.width):
            raise UserError(f"{self.photos[i]} is {photo.width}x{photo.height} but its labels {self.labels[i]} "
                            f"are {ids.shape[1]}x{ids.shape[0]}; re-extract both from the official zips")
        return photo, ids

    def _labels_side(self, ids: np.ndarray, params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
        """B (the colour label map) and the trainIds, both resized, cropped and flipped by `params`."""
        ids = transform_classes(ids, params).numpy()
        colors = Image.fromarray(labelids_to_colors(ids))
        return to_tensor(colors, self.cfg.grayscale), _train_id_tensor(ids)

    def make_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        count = len(self.photos)
        what = f"Cityscapes scenes in {self.root}"
        if self.paired:
            (photo, ids), pos = self.first_readable(count, index, self._read_scene, skipped, what)
            params = sample_params(self.cfg, photo.size, rng, self.train)
            b, classes = self._labels_side(ids, params)
            return {"A": transform_image(photo, params, self.cfg.grayscale), "B": b,
                    "A_classes": classes, "B_classes": classes.clone(),
                    "A_path": str(self.photos[pos]), "B_path": str(self.labels[pos])}
        b_start = rng.randrange(count) if self.train else index
        (photo, a_ids), a_pos = self.first_readable(count, index, self._read_scene, skipped, what)
        b_ids, b_pos = self.first_readable(count, b_start, self._read_label_ids, skipped, what)
        a_params = sample_params(self.cfg, photo.size, rng, self.train)
        b_params = sample_params(self.cfg, (b_ids.shape[1], b_ids.shape[0]), rng, self.train)
        a_classes = _train_id_tensor(transform_classes(a_ids, a_params).numpy())
        b, b_classes = self._labels_side(b_ids, b_params)
        return {"A": transform_image(photo, a_params, self.cfg.grayscale), "B": b,
                "A_classes": a_classes, "B_classes": b_classes,
                "A_path": str(self.photos[a_pos]), "B_path": str(self.labels[b_pos])}
