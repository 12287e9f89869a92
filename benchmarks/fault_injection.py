"""Fault injection: many trials per method of kill / interrupt / resume, compared with an
uninterrupted run.

    python benchmarks/fault_injection.py --trials 5 --seed 0

Each trial starts a tiny run of the method's synthetic recipe (tests/faults.py: 32 px, 8-channel
networks, 12 steps, a checkpoint after every step, deterministic on one CPU thread) through the
command line, sends it 2-4 faults drawn at random (SIGKILL at a random moment, SIGKILL while a
checkpoint is being written, SIGINT, SIGTERM), one per process, resumes with `resume=RUN` after
each, and lets the last process finish. It then checks that the final weights and optimiser
states equal the uninterrupted run's bit for bit, that no checkpoint left on disk was ever
unreadable, and that losses.csv, the sample grids and the kept checkpoints are the same.
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

FAULT_CHOICES = ["SIGKILL", "SIGKILL", "SIGKILL_IN_SAVE", "SIGINT", "SIGTERM"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="cyclegan,pix2pix,stargan")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fault_injection.csv"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault_injection-") as tmp:
        for method in args.methods.split(","):
            start = time.monotonic()
            reference = faults.reference_run(method, Path(tmp) / method / "reference")
            steps = faults.total_steps(reference)
            trials = []
            for t in range(args.trials):
                chosen = [rng.choice(FAULT_CHOICES) for _ in range(rng.randint(2, 4))]
                trial = faults.drive(method, Path(tmp) / method / f"trial{t}", chosen, rng, steps)
                trial.problems += faults.differences(trial.run_dir, reference)
                trials.append(trial)
                print(f"{method} trial {t}: faults {','.join(chosen)}; kills {trial.kills} "
                      f"({trial.kills_in_save} in a save); problems: {trial.problems or 'none'}", flush=True)
            equal = sum(not any("tensors" in p for p in tr.problems) for tr in trials)
            rows.append({
                "method": method, "trials": len(trials), "steps per run": steps,
                "kills": sum(tr.kills for tr in trials),
                "kills in a step": sum(tr.kills_in_step for tr in trials),
                "kills in a save": sum(tr.kills_in_save for tr in trials),
                "SIGINT/SIGTERM (saved, exit 0)": sum(tr.interrupts for tr in trials),
                "resumes": sum(tr.resumes for tr in trials),
                "final weights equal": f"{equal}/{len(trials)}",
                "unreadable checkpoints": sum(len(tr.unreadable) for tr in trials),
                "other differences": sum(len(tr.problems) for tr in trials) - (len(trials) - equal),
                "minutes": round((time.monotonic() - start) / 60, 1),
            })
    table = pd.DataFrame(rows)
    report(table, f"Fault injection: {args.trials} trial(s) per method, seed {args.seed}", args.out)
    failed = table["unreadable checkpoints"].sum() + table["other differences"].sum()
    return 1 if failed or any(r["final weights equal"] != f"{r['trials']}/{r['trials']}" for r in rows) else 0


if __name__ == "__main__":
    run(main)
