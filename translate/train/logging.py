"""What a run reports: TensorBoard events, a console progress line, losses.csv, image grids."""

from __future__ import annotations

import csv
import io
import math
import re
import sys
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image

from translate.train.checkpoint import write_atomically

SAMPLE = re.compile(r"^step_(\d{8,})\.png$")


def image_grid(visuals: dict[str, Tensor], max_rows: int = 4) -> Tensor:
    """One row per batch item (up to `max_rows`), one column per visual; values in [0, 1]."""
    columns = [v[:max_rows].detach().float().cpu() for v in visuals.values()]
    columns = [c.expand(-1, 3, -1, -1) if c.size(1) == 1 else c[:, :3] for c in columns]
    rows = torch.stack(columns, 1).flatten(0, 1)  # item-major: each row holds one item's visuals
    return make_grid((rows + 1) / 2, nrow=len(columns), padding=2).clamp(0, 1)


def visuals_state(visuals: dict[str, Tensor], max_rows: int = 4) -> dict[str, Tensor]:
    """The rows of the visuals a grid shows, as the 8-bit values a PNG grid stores: kept in a
    checkpoint, a resumed run draws the same grids (StarGAN's come from its last G step, which
    may lie before the checkpoint)."""
    return {k: ((v[:max_rows].detach().float().cpu() + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
            for k, v in visuals.items()}


def visuals_from_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() / 255 * 2 - 1 for k, v in state.items()}


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def truncate_csv(path: Path, step: int) -> None:
    """Keep the header and the rows of steps up to `step` (the first column) of a per-step CSV
    log; a last line cut short by a kill goes too, and a file without a whole header is removed."""
    whole = path.read_bytes().decode()  # not read_text: it would turn csv's \r\n into \n
    text = whole[:whole.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        path.unlink()
        return
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    if kept != rows or text != whole:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(kept)
        write_atomically(path, out.getvalue().encode())


class RunLogger:
    """Rank 0's view of a run. Losses arrive as device tensors and are averaged over the
    logging interval; they reach the host only at `log_every`, so the loop stays free of syncs.
    A loss may come only on some steps (StarGAN's G losses, every n_critic-th step): each is
    averaged over the steps that reported it."""

    def __init__(self, run_dir: Path, total_steps: int, enabled: bool = True):
        self.run_dir = run_dir
        self.total_steps = total_steps
        self.enabled = enabled
        self._writer: SummaryWriter | None = None
        self.purge_step: int | None = None
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.clock = time.perf_counter()
        self.clock_step: int | None = None
        self.csv_path = run_dir / "losses.csv"
        self.csv_columns: list[str] | None = None

    @property
    def writer(self) -> SummaryWriter | None:
        """Opened on first use, so that a resumed run can first say from which step on to purge."""
        if self.enabled and self._writer is None:
            self._writer = SummaryWriter(str(self.run_dir), purge_step=self.purge_step)
        return self._writer

    def resume_at(self, step: int) -> None:
        """Forget what a killed run logged after its last checkpoint (`step`): those steps run
        again. TensorBoard hides its events from `step + 1` on (SummaryWriter's purge_step);
        losses.csv loses the rows, samples/ the grids, of those steps."""
        if not self.enabled:
            return
        self.purge_step = step + 1
        # metrics.csv: periodic evaluation's (translate/eval/evaluate.py), also one row per step.
        for path in (self.csv_path, self.run_dir / "metrics.csv"):
            if path.exists():
                truncate_csv(path, step)
        for png in (self.run_dir / "samples").glob("step_*.png"):
            if (m := SAMPLE.match(png.name)) and int(m.group(1)) > step:
                png.unlink()

    def accumulate(self, losses: dict[str, Tensor]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def interval_finite(self) -> bool:
        """Whether every loss since the last log was finite (one host sync)."""
        if not self.sums:
            return True
        return bool(torch.isfinite(torch.stack([v.float() for v in self.sums.values()])).all())

    def log_scalars(self, step: int, epoch: int, lrs: dict[str, float]) -> dict[str, float]:
        means = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        now = time.perf_counter()
        rate = None
        if self.clock_step is not None and step > self.clock_step:
            rate = (step - self.clock_step) / (now - self.clock)
        self.clock, self.clock_step = now, step
        if not self.enabled:
            return means
        for k, v in means.items():
            self.writer.add_scalar(f"loss/{k}", v, step)
        for k, v in lrs.items():
            self.writer.add_scalar(f"lr/{k}", v, step)
        self._append_csv(step, epoch, means)
        parts = [f"step {step}/{self.total_steps}", f"epoch {epoch}"]
        parts += [" ".join(f"{k} {v:.3f}" for k, v in means.items())]
        if rate:
            eta = (self.total_steps - step) / rate
            parts += [f"{rate:.2f} it/s", f"ETA {format_duration(eta)}"]
        print(" | ".join(parts), flush=True)
        return means

    def start_clock(self, step: int) -> None:
        self.clock, self.clock_step = time.perf_counter(), step

    def log_images(self, step: int, visuals: dict[str, Tensor]) -> None:
        if not self.enabled or not visuals:
            return
        grid = image_grid(visuals)
        self.writer.add_image("samples/" + ",".join(visuals), grid, step)
        samples = self.run_dir / "samples"
        samples.mkdir(exist_ok=True)
        save_image(grid, samples / f"step_{step:08d}.png")

    def log_metrics(self, step: int, metrics: dict[str, float], prefix: str = "eval") -> None:
        if self.enabled:
            for k, v in metrics.items():
                if math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        if self.enabled:
            print(f"warning: {text}", file=sys.stderr, flush=True)

    def _append_csv(self, step: int, epoch: int, means: dict[str, float]) -> None:
        row = {"step": step, "epoch": epoch, **{k: f"{v:.8g}" for k, v in means.items()}}
        if self.csv_columns is None:  # first write of this process: continue a resumed run's file
            self.csv_columns = []
            if self.csv_path.exists():
                with open(self.csv_path, newline="") as f:
                    self.csv_columns = next(csv.reader(f), [])
        if set(row) - set(self.csv_columns):
            # A loss seen for the first time (e.g. one reported only every few steps): rewrite the
            # file once with a column for it; earlier rows leave it empty.
            rows = []
            if self.csv_path.exists():
                with open(self.csv_path, newline="") as f:
                    rows = list(csv.DictReader(f))
            self.csv_columns += [k for k in row if k not in self.csv_columns]
            out = io.StringIO()
            w = csv.DictWriter(out, self.csv_columns)
            w.writeheader()
            w.writerows(rows)
            write_atomically(self.csv_path, out.getvalue().encode())
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, self.csv_columns).writerow(row)

    def close(self) -> None:
        if self._writer:
            self._writer.flush()
            self._writer.close()
