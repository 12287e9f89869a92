"""Metric tables: printed for people, written as CSV for programs and markdown for READMEs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def format_table(table: pd.DataFrame, digits: int = 4) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")


def write_table(table: pd.DataFrame, csv_path: Path, digits: int = 4) -> list[Path]:
    """`csv_path` and the same table as markdown beside it (NAME.md); returns both paths."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    md_path = csv_path.with_suffix(".md")
    md_path.write_text(table.to_markdown(index=False, floatfmt=f".{digits}f") + "\n")
    return [csv_path, md_path]
