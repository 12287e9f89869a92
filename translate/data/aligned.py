"""The official `aligned` layout: ROOT/{split}/*.jpg, each file A and B side by side (A|B)."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from translate.config import DataConfig
from translate.data.base import FileDataset, first_n
from translate.data.images import list_images
from translate.data.transforms import sample_params, transform_image
from translate.errors import UserError

LAYOUT = "aligned: ROOT/train/*.jpg and ROOT/test/*.jpg, each image the A and B halves side by side"


def halves(img: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The left (A) and right (B) halves of an A|B image.

    Both are w // 2 wide: on an odd width the last column is dropped, so that paired halves
    have the same size and can share one crop (the official loader gives B the extra column).
    """
    half = img.width // 2
    return img.crop((0, 0, half, img.height)), img.crop((half, 0, 2 * half, img.height))


class AlignedDataset(FileDataset):
    """Paired: A and B are the two halves of one file, with the same crop and flip.

    Unpaired (CycleGAN on an aligned set): A is the left half of file `index`, B the right half
    of another file drawn from the seed in training (of the same file in evaluation), and each
    gets its own crop and flip.
    """

    layout = LAYOUT

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        super().__init__(cfg, split, paired, train)
        self.paths = first_n(list_images(self.root / split, LAYOUT), cfg.max_size)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> Image.Image:
        img = self.load(self.paths[i])
        if img.width < 2:
            raise UserError(f"{self.paths[i]} is {img.width} pixel wide, too narrow to hold A and B side "
                            f"by side; the aligned format needs A|B images")
        return img

    def _read_from(self, start: int, skipped: list[str]) -> tuple[Image.Image, int]:
        return self.first_readable(len(self.paths), start, self._read, skipped, f"images in {self.root / self.split}")

    def make_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        grayscale = self.cfg.grayscale
        if self.paired:
            img, pos = self._read_from(index, skipped)
            a_img, b_img = halves(img)
            params = sample_params(self.cfg, a_img.size, rng, self.train)
            return {"A": transform_image(a_img, params, grayscale), "B": transform_image(b_img, params, grayscale),
                    "A_path": str(self.paths[pos]), "B_path": str(self.paths[pos])}
        b_start = self._other_index(index, rng) if self.train else index
        a_img, a_pos = self._read_from(index, skipped)
        b_img, b_pos = self._read_from(b_start, skipped)
        a_half, b_half = halves(a_img)[0], halves(b_img)[1]
        a_params = sample_params(self.cfg, a_half.size, rng, self.train)
        b_params = sample_params(self.cfg, b_half.size, rng, self.train)
        return {"A": transform_image(a_half, a_params, grayscale), "B": transform_image(b_half, b_params, grayscale),
                "A_path": str(self.paths[a_pos]), "B_path": str(self.paths[b_pos])}

    def _other_index(self, index: int, rng: random.Random) -> int:
        """A uniformly random index other than `index` (itself when there is only one file)."""
        if len(self.paths) == 1:
            return index
        other = rng.randrange(len(self.paths) - 1)
        return other + 1 if other >= index else other
