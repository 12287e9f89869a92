"""What every benchmark script shares: where the shared data lives, how a table is reported, and
how a user error ends the script (one line, exit status 2), as the CLI does.

Scripts run as `python benchmarks/NAME.py`, which puts this folder on sys.path: `from common import ...`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from translate.errors import UserError

if TYPE_CHECKING:  # pandas is imported where a table is made: train_speed's measured children never load it
    import pandas as pd

# ../shared/data beside the repository: small real datasets (facades, a CelebA subset).
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that trains a run: threads, precision, device, run folder."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a CPU shared with other jobs, more threads can run slower)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="runs", help="where the run folder goes")


def report(table: pd.DataFrame, title: str, csv_path: Path | None = None, digits: int = 4) -> None:
    """Print `table` under `title`; also write it as CSV and markdown (NAME.csv, NAME.md)."""
    from translate.eval.report import format_table, write_table
    print(f"\n{title}")
    print(format_table(table, digits))
    if csv_path is not None:
        written = write_table(table, csv_path, digits)
        print("written to " + " and ".join(str(p) for p in written))


def combine_repeats(runs: list[dict], timings: tuple[str, ...], peaks: tuple[str, ...] = ()) -> dict:
    """One result from the same measurement repeated in separate processes: the median of each
    timing, with its spread as KEY_min and KEY_max, the largest of each peak, the rest as in the
    first run, and `runs`. On this machine a process runs fast or 5-10% slower for its whole life
    (seen in our runs and the official code's alike), so one process is one sample."""
    combined = {**runs[0], "runs": len(runs)}
    for key in timings:
        values = [r[key] for r in runs]
        combined.update({key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)})
    for key in peaks:
        combined[key] = max(r[key] for r in runs)
    return combined


def run(main: Callable[[], int]) -> None:
    """Run a benchmark's main(): its return value is the exit status; a UserError is one line, exit 2."""
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
