"""`data.holdout=N`: the last N samples of the train split set aside as the split "holdout".

For scoring a model on images it never trained on when a dataset ships without a test split.
Samples keep the order of their format (sorted file names), so the hold-out set is the same in
every run. It is cut from the samples, not the files: exact for paired data; an unpaired
dataset's B images are drawn from all of its training files.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from translate.data.base import split_key
from translate.errors import UserError

HOLDOUT = "holdout"


class SampleRange(Dataset):
    """Samples `start` to `stop - 1` of another dataset, indexed from 0; a key's seed is kept."""

    def __init__(self, dataset: Dataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside a dataset of {len(self)} samples")
        return self.dataset[(self.start + index, seed)]


def split_off(train_set: Dataset, count: int, split: str) -> Dataset:
    """The split "holdout" (the last `count` samples of `train_set`) or "train" (all the others)."""
    total = len(train_set)
    if count == 0:
        raise UserError(f"the split {HOLDOUT} is empty; set data.holdout=N to hold out the last N training samples")
    if count >= total:
        raise UserError(f"data.holdout={count} leaves nothing to train on: the train split has {total} "
                        f"samples; lower data.holdout")
    if split == HOLDOUT:
        return SampleRange(train_set, total - count, total)
    return SampleRange(train_set, 0, total - count)
