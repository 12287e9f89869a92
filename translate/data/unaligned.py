"""The official `unaligned` layout: ROOT/{split}A and ROOT/{split}B.

Unpaired, the two folders are two unrelated collections (CycleGAN). Paired ("paired
folders"), a file in {split}A goes with the file of the same name in {split}B (pix2pix
without the side-by-side A|B files).
"""

from __future__ import annotations

from pathlib import Path

from translate.config import DataConfig
from translate.data.base import TwoListDataset, first_n
from translate.data.images import list_images
from translate.errors import UserError

LAYOUT = "unaligned: ROOT/trainA, ROOT/trainB, ROOT/testA, ROOT/testB"
PAIRED_LAYOUT = "paired folders: ROOT/trainA and ROOT/trainB (and testA, testB) holding files of the same names"


def _by_name(paths: list[Path], folder: Path) -> dict[str, Path]:
    """Files keyed by their path inside `folder` without the extension ("sub/001" for sub/001.png)."""
    named: dict[str, Path] = {}
    for path in paths:
        name = path.relative_to(folder).with_suffix("").as_posix()
        if name in named:
            raise UserError(f"{named[name]} and {path} have the same name, so neither has a clear partner; "
                            f"rename or remove one")
        named[name] = path
    return named


def _examples(names: list[str], folder: Path) -> str:
    shown = ", ".join(str(folder / n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def match_pairs(a_paths: list[Path], a_folder: Path, b_paths: list[Path], b_folder: Path
                ) -> tuple[list[Path], list[Path]]:
    """The A and B files that share a name, in sorted order; any file without a partner is an error."""
    a_named, b_named = _by_name(a_paths, a_folder), _by_name(b_paths, b_folder)
    only_a = sorted(set(a_named) - set(b_named))
    only_b = sorted(set(b_named) - set(a_named))
    if only_a or only_b:
        problems = []
        if only_a:
            problems.append(f"{len(only_a)} file(s) in {a_folder} have no partner in {b_folder} "
                            f"({_examples(only_a, a_folder)})")
        if only_b:
            problems.append(f"{len(only_b)} file(s) in {b_folder} have no partner in {a_folder} "
                            f"({_examples(only_b, b_folder)})")
        raise UserError("; ".join(problems) + "; paired folders need the same file names on both sides")
    names = sorted(a_named)
    return [a_named[n] for n in names], [b_named[n] for n in names]


class UnalignedDataset(TwoListDataset):
    layout = LAYOUT

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        super().__init__(cfg, split, paired, train)
        layout = PAIRED_LAYOUT if paired else LAYOUT
        a_folder, b_folder = self.root / f"{split}A", self.root / f"{split}B"
        a_paths, b_paths = list_images(a_folder, layout), list_images(b_folder, layout)
        if paired:
            a_paths, b_paths = match_pairs(a_paths, a_folder, b_paths, b_folder)
        self.a_paths = first_n(a_paths, cfg.max_size)
        self.b_paths = first_n(b_paths, cfg.max_size)
