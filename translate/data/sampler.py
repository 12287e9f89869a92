"""The order of samples in training, identical whatever the number of processes.

Each epoch is one permutation of the dataset, cut into global batches; every process takes
its slice of each global batch. A sample's key is (index, sample seed), and the seed depends
only on the run seed, the epoch and the sample's position in the epoch: one process with
batch 2 and two processes with batch 1 see the same samples with the same augmentation, and
a run resumed mid-epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

from translate.errors import UserError

SampleKey = tuple[int, int]


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from `parts`, the same on every machine, process and Python run.

    (Python's hash() of a tuple is only stable for ints; a cryptographic hash of the text
    also spreads neighbouring seeds apart.)
    """
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class GlobalBatchSampler(Sampler[list[SampleKey]]):
    """One epoch of this process's batches of keys; use as DataLoader(dataset, batch_sampler=...).

    `set_epoch(e)` chooses the epoch. `start_batch` skips the first batches of `start_epoch`
    only, to resume mid-epoch. Without drop_last and with several processes, the last global
    batch is filled up with samples from the start of the epoch, so that every process runs
    the same number of equally sized steps.
    """

    def __init__(self, dataset_len: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True, start_epoch: int = 0, start_batch: int = 0):
        if global_batch % world_size:
            raise UserError(f"train.batch_size={global_batch} does not divide among {world_size} processes; "
                            f"make the batch size a multiple of {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        if dataset_len <= 0:
            raise UserError("the dataset is empty; check data.root and data.format")
        self.dataset_len = dataset_len
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.start_epoch = start_epoch
        self.start_batch = start_batch
        self.epoch = start_epoch
        if self.batches_per_epoch == 0:
            raise UserError(f"the dataset has {dataset_len} samples, fewer than one batch of {global_batch}; "
                            f"lower train.batch_size")
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise UserError(f"resuming at batch {start_batch} of an epoch of {self.batches_per_epoch} batches; "
                            f"the dataset changed size since the checkpoint, so the run cannot resume exactly")

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.dataset_len, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _first_batch(self) -> int:
        return self.start_batch if self.epoch == self.start_epoch else 0

    def __len__(self) -> int:
        return self.batches_per_epoch - self._first_batch()

    def epoch_order(self) -> list[int]:
        """The dataset indices of this epoch, in order (the same on every process)."""
        if not self.shuffle:
            return list(range(self.dataset_len))
        generator = torch.Generator().manual_seed(mix_seed("order", self.seed, self.epoch))
        return torch.randperm(self.dataset_len, generator=generator).tolist()

    def sample_seed(self, position: int) -> int:
        return mix_seed("sample", self.seed, self.epoch, position)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = self.epoch_order()
        for batch in range(self._first_batch(), self.batches_per_epoch):
            start = batch * self.global_batch + self.rank * self.local_batch
            positions = range(start, start + self.local_batch)
            if self.world_size == 1:  # a last, partial batch stays partial
                positions = range(start, min(start + self.local_batch, self.dataset_len))
            # Positions past the end wrap around to the start of the epoch (padding, see above).
            yield [(order[p % self.dataset_len], self.sample_seed(p)) for p in positions]


def _worker_error_message(error: UserError) -> str:
    """The original one-line message of a UserError that PyTorch re-raised from a worker.

    PyTorch rewrites it as "Caught X in DataLoader worker process N. Original Traceback ..."
    whose last line is "module.X: <the original message>".
    """
    text = str(error)
    if "\n" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


class _Loader(DataLoader):
    """A DataLoader whose UserErrors from worker processes keep their one-line message."""

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except UserError as e:
                raise type(e)(_worker_error_message(e)) from None
            yield batch


def make_loader(dataset: Dataset, sampler: GlobalBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over `sampler`'s batches.

    Workers are not persistent: the trainer builds a loader per epoch (and on resume), and
    since every sample is fully determined by its key, fresh workers change nothing. The
    default collate stacks tensors and keeps strings (paths, "skipped") as lists.

    The loader draws its workers' base seed from a generator of its own: drawn from torch's
    global generator, it would shift the random numbers a method draws (StarGAN's target
    labels, dropout) whenever a loader starts, which happens at other steps after a resume.
    """
    return _Loader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                   persistent_workers=False, collate_fn=default_collate, generator=torch.Generator())
