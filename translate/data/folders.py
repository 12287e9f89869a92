"""One folder per domain: ROOT/<domain>/*, or ROOT/{split}/<domain>/* when ROOT/{split} exists.

Two domains (data.domains=A_name,B_name) make an unpaired two-domain dataset; `list_domains`
lists every domain for multi-domain use.
"""

from __future__ import annotations

from pathlib import Path

from translate.config import DataConfig
from translate.data.base import TwoListDataset, first_n
from translate.data.images import list_images
from translate.errors import UserError

LAYOUT = "folders: ROOT/<domain>/* or ROOT/<split>/<domain>/*, one sub-folder of images per domain"


def domains_folder(root: Path, split: str) -> Path:
    """ROOT/{split} when the data is split into train and test folders, else ROOT itself."""
    root = Path(root).expanduser()
    return root / split if (root / split).is_dir() else root


def list_domains(root: Path, split: str | None = None) -> list[str]:
    """The sorted domain (sub-folder) names under `root`, or under ROOT/{split} when given and present."""
    folder = domains_folder(root, split) if split else Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; expected the layout {LAYOUT}")
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class DomainFoldersDataset(TwoListDataset):
    """Unpaired images of two domains, A from data.domains[0] and B from data.domains[1]."""

    layout = LAYOUT

    def __init__(self, cfg: DataConfig, split: str, paired: bool, train: bool):
        if paired:
            raise UserError("the folders format has no pairs (one folder per domain, unrelated images); "
                            "use format=unaligned with matching file names, or format=aligned, for a paired method")
        super().__init__(cfg, split, paired, train)
        folder = domains_folder(self.root, split)
        found = list_domains(folder)
        if len(cfg.domains) != 2 or any(d not in found for d in cfg.domains):
            raise UserError(f"data.domains must name two of the domain folders in {folder} "
                            f"({', '.join(found) or 'none found'}), got [{', '.join(cfg.domains)}]; "
                            f"set e.g. data.domains={','.join(found[:2]) or 'A,B'}")
        a_name, b_name = cfg.domains
        self.a_paths = first_n(list_images(folder / a_name, LAYOUT), cfg.max_size)
        self.b_paths = first_n(list_images(folder / b_name, LAYOUT), cfg.max_size)
