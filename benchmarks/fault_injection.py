"""Fault injection: many trials per method of kill / interrupt / resume, compared with an
uninterrupted run.

    python benchmarks/fault_injection.py --trials 5 --seed 0

Each trial starts a tiny run of the method's synthetic recipe (tests/faults.py: 32 px, 8-channel
networks, 12 steps, a checkpoint after every step, deterministic on one CPU thread) through the
command line, with an evaluation every 3 steps (FID on tiny features, 8 images), sends it 2-4
faults drawn at random (SIGKILL at a random moment, SIGKILL while a checkpoint is being written,
SIGKILL during an evaluation, SIGINT, SIGTERM), one per process, resumes with `resume=RUN` after
each, and lets the last process finish. It then checks that the final weights and optimiser
states equal the uninterrupted run's bit for bit, that no checkpoint left on disk was ever
unreadable, and that losses.csv, metrics.csv, the sample grids and the kept checkpoints are the
same. Kills are classified from the disk and the output afterwards: in a save when a checkpoint's
temporary file was left, in an evaluation when the last step evaluates and printed no result.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import report, run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import faults  # noqa: E402 - the harness the tests use

FAULT_CHOICES = ["SIGKILL", "SIGKILL", "SIGKILL_IN_SAVE", "SIGKILL_IN_EVAL", "SIGINT", "SIGTERM"]


def agreed_reference(method: str, folder: Path) -> tuple[Path, int, int]:
    """An uninterrupted run to compare with, checked against a second one: two runs of the same
    config must agree bit for bit, else a difference after a fault says nothing about the fault.
    When they disagree, a third decides (and the table says so)."""
    runs = [faults.reference_run(method, folder / f"reference{i}", faults.EVAL) for i in range(2)]
    if not faults.differences(runs[0], runs[1]):
        return runs[0], 2, 2
    runs.append(faults.reference_run(method, folder / "reference2", faults.EVAL))
    for run_dir in runs:
        agreeing = sum(not faults.differences(run_dir, other) for other in runs)
        if agreeing >= 2:
            return run_dir, agreeing, 3
    return runs[0], 1, 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="cyclegan,pix2pix,stargan")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/fault_injection.csv"),
                        help="where the table goes (CSV, and markdown beside it)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault_injection-") as tmp:
        for method in args.methods.split(","):
            start = time.monotonic()
            reference, agreeing, references = agreed_reference(method, Path(tmp) / method)
            steps = faults.total_steps(reference)
            trials = []
            for t in range(args.trials):
                chosen = [rng.choice(FAULT_CHOICES) for _ in range(rng.randint(2, 4))]
                trial = faults.drive(method, Path(tmp) / method / f"trial{t}", chosen, rng, steps, faults.EVAL)
                trial.problems += faults.differences(trial.run_dir, reference)
                trials.append(trial)
                print(f"{method} trial {t}: faults {','.join(chosen)}; kills {trial.kills} ({trial.kills_in_save} "
                      f"in a save, {trial.kills_in_eval} in an evaluation); problems: {trial.problems or 'none'}",
                      flush=True)
            equal = sum(not any("tensors" in p for p in tr.problems) for tr in trials)
            rows.append({
                "method": method, "trials": len(trials), "steps per run": steps,
                "kills": sum(tr.kills for tr in trials),
                "kills in a step": sum(tr.kills_in_step for tr in trials),
                "kills in a save": sum(tr.kills_in_save for tr in trials),
                "kills in an evaluation": sum(tr.kills_in_eval for tr in trials),
                "SIGINT/SIGTERM (saved, exit 0)": sum(tr.interrupts for tr in trials),
                "resumes": sum(tr.resumes for tr in trials),
                "final weights equal": f"{equal}/{len(trials)}",
                "unreadable checkpoints": sum(len(tr.unreadable) for tr in trials),
                "other differences": sum(len(tr.problems) for tr in trials) - (len(trials) - equal),
                "uninterrupted runs agreeing": f"{agreeing}/{references}",
                "minutes": round((time.monotonic() - start) / 60, 1),
            })
    table = pd.DataFrame(rows)
    report(table, f"Fault injection: {args.trials} trial(s) per method, seed {args.seed}", args.out)
    failed = table["unreadable checkpoints"].sum() + table["other differences"].sum()
    return 1 if failed or any(r["final weights equal"] != f"{r['trials']}/{r['trials']}" for r in rows) else 0


if __name__ == "__main__":
    run(main)
