"""Full-state checkpoints, written atomically and read without executing code.

A checkpoint is `checkpoints/step_00001234.pt` in the run folder: a plain dict of tensors, numbers
and strings (networks, optimisers, schedulers, scalers, image pools, RNG states, step, config),
so `torch.load(weights_only=True)` reads it and no pickled code is ever run. It is written to a
temporary file, flushed to disk, then renamed into place: a kill during a save leaves the
previous checkpoints as they were and at most a stray temporary file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from translate.errors import UserError

FORMAT = "translate-checkpoint-v1"
NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """The run's checkpoints, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state: dict, folder: Path, step: int, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    try:
        save_atomically({"format": FORMAT, **state}, path)
    except OSError as e:
        raise UserError(f"could not write checkpoint {path}: {e.strerror or e}; free disk space or "
                        f"check permissions, then resume (earlier checkpoints are intact)") from None
    for old in list_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary beside it, flushed to disk and renamed
    into place when the block ends; removed if the block fails, so a kill or a full disk mid-write
    leaves any earlier `path` whole and no stray temporary."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomically(obj, path: Path) -> None:
    """torch.save `obj` to `path` atomically (checkpoints, judge files)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (run folders' config.toml and losses.csv)."""
    with atomic_file(path) as f:
        f.write(data)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A translate checkpoint's state; a missing, broken or foreign file is a UserError naming it."""
    state = load_state_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a translate checkpoint; pass a checkpoint from a run's "
                        f"checkpoints/ folder")
    return state


def load_state_file(path: Path, map_location: str | torch.device = "cpu"):
    """torch.load with weights_only=True (never executes pickled code) and one-line errors."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint file; pass the file itself")
    damaged = _failed_checksum(path)
    if damaged:
        raise UserError(f"{path} is corrupt: {damaged}; the file was damaged after it was written")
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch.save's zip) makes torch warn about its protocol before
            # refusing it; the refusal below says it on one line.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses pickled Python objects (and bytes that are no pickle at all)
        raise UserError(f"{path} is not a plain state dict of tensors (it holds other Python objects "
                        f"or is not a PyTorch file); loading never runs code from a checkpoint") from None
    except Exception as e:  # a damaged file fails in many ways: zip, EOF, storage, key errors
        raise UserError(f"cannot read {path} as a PyTorch checkpoint ({first_sentence(e)}); "
                        f"it may be truncated or corrupt") from None


def _failed_checksum(path: Path) -> str | None:
    """The first record of a (zip) PyTorch file whose bytes do not match their stored CRC-32.
    torch.load does not check these: flipped bits in a tensor would load as wrong weights."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return None  # not a whole zip (truncated, or the legacy format): torch.load says why
    with archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, NotImplementedError) as e:
            return f"its records are damaged ({first_sentence(e)})"
    return f"its record {bad} fails its CRC-32 checksum" if bad else None


def first_sentence(error: Exception) -> str:
    """The gist of an exception on one line: torch's messages run to several sentences."""
    text = " ".join(str(error).split())
    gist = text.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {gist}" if gist else type(error).__name__


def latest_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
    """The newest readable checkpoint; a broken newer one is reported and passed over."""
    for path in list_checkpoints(folder):
        try:
            return load_checkpoint(path, map_location), path
        except UserError as e:
            print(f"warning: {e}; falling back to the previous checkpoint", file=sys.stderr)
    return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
