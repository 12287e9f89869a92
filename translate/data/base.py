"""What the file-based formats share: sample keys, per-sample randomness, skipping bad files,
the A<->B direction swap, and the two-list (A files, B files) dataset behind `unaligned` and
`folders`.

A sample is drawn from a key (index, seed): every random choice for it comes from
`random.Random(seed)`, so a sample is the same whichever worker process builds it and in
whichever order, which is what makes an exact resume possible.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from torch.utils.data import Dataset

from translate.config import DataConfig
from translate.data.images import BadImageError, load_image
from translate.data.transforms import sample_params, transform_image
from translate.errors import UserError

T = TypeVar("T")


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """(index, seed) from a sampler key, or from a plain index (then the seed is the index)."""
    if isinstance(key, (tuple, list)):
        index, seed = key
        return operator.index(index), operator.index(seed)
    index = operator.index(key)
    return index, index


def swap_sides(sample: dict[str, Any]) -> dict[str, Any]:
    """Rename A <-> B in every key ("A", "A_path", "A_classes", ...), for direction=BtoA."""
    def other(key: str) -> str:
        if key[:1] in ("A", "B") and key[1:2] in ("", "_"):
            return ("B" if key[0] == "A" else "A") + key[1:]
        return key
    return {other(k): v for k, v in sample.items()}


class FileDataset(Dataset):
    """Base of the formats read from files: subclasses give `__len__` and `make_sample`."""

    layout = ""  # the expected folder layout, quoted in errors about missing files
    source = ""  # where to get the data, for a dataset that is not freely redistributed

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        if not cfg.root:
            where = f" ({self.source})" if self.source else ""
            raise UserError(f"data.root is not set; set data.root=PATH to a folder with the layout "
                            f"{self.layout}{where}")
        self.cfg = cfg
        self.split = split
        self.paired = paired
        self.train = train
        self.root = Path(cfg.root).expanduser()

    def __len__(self) -> int:
        raise NotImplementedError

    def make_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        """The sample at `index` in the A->B direction; paths of skipped bad files go to `skipped`."""
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside a dataset of {len(self)} samples")
        skipped: list[str] = []
        sample = self.make_sample(index, random.Random(seed), skipped)
        sample["skipped"] = "|".join(skipped)
        return swap_sides(sample) if self.cfg.direction == "BtoA" else sample

    def first_readable(self, count: int, start: int, read: Callable[[int], T], skipped: list[str],
                       what: str) -> tuple[T, int]:
        """`read(i)` for i = start, start + 1, ... (wrapping at count) until a file reads.

        With on_bad_file=error the first BadImageError propagates. With skip, each bad file is
        recorded in `skipped` and the next position is tried: a deterministic choice, so the
        sample still depends only on its key. `what` names the files in the error raised when
        none of them reads.
        """
        bad: list[str] = []
        for step in range(count):
            position = (start + step) % count
            try:
                return read(position), position
            except BadImageError as e:
                if self.cfg.on_bad_file != "skip":
                    raise
                bad.append(str(e.path))
                skipped.append(str(e.path))
        raise UserError(f"all {count} {what} are unreadable (e.g. {bad[0]}), so data.on_bad_file=skip "
                        f"has nothing left; fix the files or check data.root={self.cfg.root}")

    def load(self, path: Path) -> Image.Image:
        return load_image(path, self.cfg.grayscale)


class TwoListDataset(FileDataset):
    """A from one list of image files and B from another.

    Unpaired (official `unaligned`): A = A[index % nA] and B is drawn at random from the
    sample's seed in training; in evaluation B = B[index % nB], as the official test does
    with serial_batches. Each side gets its own crop and flip. Paired: A[i] and B[i] belong
    together, must be of the same size, and get the same crop and flip.

    Subclasses fill `a_paths` and `b_paths` in their constructor.
    """

    a_paths: list[Path]
    b_paths: list[Path]

    def __len__(self) -> int:
        return max(len(self.a_paths), len(self.b_paths))

    def make_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        if self.paired:
            return self._paired_sample(index, rng, skipped)
        n_a, n_b = len(self.a_paths), len(self.b_paths)
        b_start = rng.randrange(n_b) if self.train else index % n_b
        a_img, a_pos = self.first_readable(n_a, index % n_a, lambda i: self.load(self.a_paths[i]), skipped,
                                           f"A images ({self.a_paths[0].parent})")
        b_img, b_pos = self.first_readable(n_b, b_start, lambda i: self.load(self.b_paths[i]), skipped,
                                           f"B images ({self.b_paths[0].parent})")
        a_params = sample_params(self.cfg, a_img.size, rng, self.train)
        b_params = sample_params(self.cfg, b_img.size, rng, self.train)
        return {"A": transform_image(a_img, a_params, self.cfg.grayscale),
                "B": transform_image(b_img, b_params, self.cfg.grayscale),
                "A_path": str(self.a_paths[a_pos]), "B_path": str(self.b_paths[b_pos])}

    def _read_pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        a_path, b_path = self.a_paths[i], self.b_paths[i]
        a_img, b_img = self.load(a_path), self.load(b_path)
        if a_img.size != b_img.size:
            raise UserError(f"paired images differ in size: {a_path} is {a_img.width}x{a_img.height}, "
                            f"{b_path} is {b_img.width}x{b_img.height}; resize one to match the other")
        return a_img, b_img

    def _paired_sample(self, index: int, rng: random.Random, skipped: list[str]) -> dict[str, Any]:
        (a_img, b_img), pos = self.first_readable(len(self.a_paths), index, self._read_pair, skipped,
                                                  f"image pairs ({self.a_paths[0].parent})")
        params = sample_params(self.cfg, a_img.size, rng, self.train)
        return {"A": transform_image(a_img, params, self.cfg.grayscale),
                "B": transform_image(b_img, params, self.cfg.grayscale),
                "A_path": str(self.a_paths[pos]), "B_path": str(self.b_paths[pos])}


def first_n(paths: list[T], max_size: int) -> list[T]:
    """The first `max_size` entries (all when 0), as the official max_dataset_size."""
    return paths[:max_size] if max_size > 0 else paths
