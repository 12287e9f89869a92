"""Fault injection for training runs: kill `translate-train` at random moments, resume it until it
is done, and compare what is left on disk with an uninterrupted run.

Used by tests/test_faults.py (a few faults per method) and benchmarks/fault_injection.py (many).
Everything goes through the real command line in a subprocess, as a user's run would: a kill is a
SIGKILL of that process (no clean-up runs), an interrupt a SIGINT or SIGTERM (the run saves and
exits). A kill is timed by the run's own progress lines: after the line of a randomly chosen step,
it waits a random part of a step's duration, so it lands anywhere in the next step, in the
logging, or, with train.save_every=1, inside a checkpoint write. Whether it did is read from the
disk afterwards: a checkpoint's temporary file left behind means the kill cut a save short.
"""

from __future__ import annotations

import csv
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from translate.errors import UserError
from translate.train import checkpoint as ckpt

# Each method's synthetic recipe at test size: 32 px, 8-channel networks, a handful of steps,
# a checkpoint after every step (so kills often land in a save), deterministic on one thread.
COMMON = ["data.num_workers=0", "train.log_every=1", "train.save_every=1", "train.keep_checkpoints=3",
          "runtime.deterministic=true", "runtime.threads=1", "runtime.device=cpu"]
RECIPES: dict[str, tuple[str, list[str]]] = {
    "cyclegan": ("cyclegan_synthetic", [
        "data.scenes_size=36", "data.preprocess=crop", "data.crop_size=32", "data.load_size=36",
        "data.scenes_count=8", "model.generator=resnet_6blocks", "model.ngf=8", "model.ndf=8", "train.batch_size=2",
        "train.epochs=2", "train.epochs_decay=1", "train.image_every=3"]),
    "pix2pix": ("pix2pix_synthetic", [
        "data.scenes_count=8", "model.ngf=8", "model.ndf=8", "train.batch_size=2", "train.epochs=2",
        "train.epochs_decay=1", "train.image_every=3"]),
    "stargan": ("stargan_synthetic", [
        "data.scenes_count=16", "stargan.n_critic=2", "stargan.conv_dim=8", "stargan.d_conv_dim=8",
        "stargan.g_repeat_num=1", "stargan.d_repeat_num=5", "train.batch_size=4", "train.iterations=12",
        "train.iterations_decay=6", "train.image_every=3"]),
}
# Periodic evaluation (eval.every) with the tiny FID features: kills can then land in an evaluation.
EVAL_EVERY = 3
EVAL = [f"eval.every={EVAL_EVERY}", "eval.metrics=fid", "eval.features=tiny", "eval.max_images=8"]
TIMEOUT = 300  # seconds any one process may take: a hang fails the test instead of stalling it


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "translate.cli", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def new_run(method: str, output_dir: Path, *extra: str) -> list[str]:
    """The command line of a new tiny run of `method` under `output_dir`."""
    recipe, overrides = RECIPES[method]
    return command(f"recipe={recipe}", f"output_dir={output_dir}", *overrides, *COMMON, *extra)


def run_folder(output_dir: Path) -> Path:
    (run_dir,) = [p for p in Path(output_dir).iterdir() if p.is_dir()]
    return run_dir


@dataclass
class Outcome:
    """One process: how it ended and what it printed."""

    returncode: int
    stdout: str
    stderr: str
    fault: str = ""  # "" (ran to the end), SIGKILL, SIGINT or SIGTERM
    last_step: int = 0  # the last step it reported


FAULTS = ("SIGKILL", "SIGKILL_IN_SAVE", "SIGKILL_IN_EVAL", "SIGINT", "SIGTERM")


def run_until(cmd: list[str], fault: str, after_step: int | None, rng: random.Random,
              output_dir: Path | None = None) -> Outcome:
    """Run `cmd`; once it has reported step `after_step` (0: once it has started training), send
    `fault`: SIGKILL, SIGINT or SIGTERM a random fraction of a step later, or SIGKILL_IN_SAVE: a
    SIGKILL as soon as a checkpoint's temporary file is seen under `output_dir`/*/checkpoints (a
    save is being written), or SIGKILL_IN_EVAL: a SIGKILL a random fraction of a step after the
    line of a step that evaluates (runs with EVAL). `after_step=None` lets it run to its end."""
    errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=environment())
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)])
    reader.start()
    seen, sent, last_step, last_time, step_time, due_at = [], "", 0, None, 0.05, None
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            while not lines.empty():
                line = lines.get()
                if line is None:
                    continue
                seen.append(line)
                now = time.monotonic()
                if line.startswith("step "):
                    last_step = int(line.split()[1].split("/")[0])
                    step_time = now - last_time if last_time is not None else step_time
                    last_time = now
                started = line.startswith(("run folder", "resumed from")) or line.startswith("step ")
                if fault == "SIGKILL_IN_EVAL" and not (line.startswith("step ") and last_step % EVAL_EVERY == 0):
                    continue
                if after_step is not None and due_at is None and started and last_step >= after_step:
                    due_at = now + (0 if fault == "SIGKILL_IN_SAVE" else rng.uniform(0, 1.2 * step_time))
            if proc.poll() is not None:
                break
            if due_at is not None and not sent and time.monotonic() >= due_at:
                if fault != "SIGKILL_IN_SAVE" or saving(output_dir):
                    proc.send_signal(getattr(signal, fault.split("_IN_")[0]))
                    sent = fault
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(cmd)} took more than {TIMEOUT} s")
            time.sleep(0.0005 if due_at is not None and not sent else 0.01)
        proc.wait(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
        while not lines.empty():
            line = lines.get()
            seen += [line] if line is not None else []
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        errors.seek(0)
        stderr = errors.read()
        errors.close()
    return Outcome(proc.returncode, "".join(seen), stderr, sent, last_step)


def saving(output_dir: Path) -> bool:
    """Whether a checkpoint is being written in a run under `output_dir` (its temporary file exists)."""
    for run in os.scandir(output_dir):
        folder = Path(run.path) / "checkpoints"
        if folder.is_dir() and any(e.name.startswith(".step_") for e in os.scandir(folder)):
            return True
    return False


def readable_checkpoints(folder: Path) -> tuple[list[Path], list[Path]]:
    """The run's checkpoints that load, and those that do not."""
    good, bad = [], []
    for path in ckpt.list_checkpoints(folder):
        try:
            ckpt.load_checkpoint(path)
            good.append(path)
        except UserError:
            bad.append(path)
    return good, bad


def stray_temporaries(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob(".*.tmp"))


def losses(run_dir: Path, name: str = "losses.csv") -> list[dict[str, str]]:
    path = run_dir / name
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint's networks and optimisers, by a flat name."""
    state, _ = ckpt.latest_checkpoint(run_dir / "checkpoints")
    flat = {}
    for part in ("nets", "optimizers"):
        for name, sd in state[part].items():
            if part == "optimizers":
                sd = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
            flat.update({f"{part}.{name}.{k}": v for k, v in sd.items() if torch.is_tensor(v)})
    return flat


def in_evaluation(stdout: str) -> bool:
    """Whether a killed process was evaluating: its last step evaluates and printed no result."""
    lines = stdout.splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("step ")]
    if not steps:
        return False
    step = int(lines[steps[-1]].split()[1].split("/")[0])
    return step % EVAL_EVERY == 0 and not any(line.startswith("eval at step") for line in lines[steps[-1]:])


def differences(run_dir: Path, reference: Path) -> list[str]:
    """What differs between a run that was interrupted and the uninterrupted reference: final
    weights and optimiser states (bit for bit), losses.csv and metrics.csv rows, sample grids,
    checkpoint names."""
    found = []
    a, b = final_state(run_dir), final_state(reference)
    if a.keys() != b.keys():
        found.append("the checkpoints hold different tensors")
    unequal = [k for k in a.keys() & b.keys() if not torch.equal(a[k], b[k])]
    if unequal:
        found.append(f"{len(unequal)} tensors differ, e.g. {sorted(unequal)[0]}")
    for name in ("losses.csv", "metrics.csv"):
        if losses(run_dir, name) != losses(reference, name):
            steps = [r["step"] for r in losses(run_dir, name)]
            found.append(f"{name} differs (steps {','.join(steps)})")
    samples = {p.name: p.read_bytes() for p in sorted((run_dir / "samples").glob("*.png"))}
    expected = {p.name: p.read_bytes() for p in sorted((reference / "samples").glob("*.png"))}
    if samples != expected:
        found.append(f"samples differ: {sorted(samples)} vs {sorted(expected)}")
    names = [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")]
    if names != [p.name for p in ckpt.list_checkpoints(reference / "checkpoints")]:
        found.append(f"other checkpoints are kept: {names}")
    if stray_temporaries(run_dir):
        found.append(f"temporary files left: {stray_temporaries(run_dir)}")
    return found


@dataclass
class Trial:
    """One run of a method driven to its end through faults."""

    method: str
    kills: int = 0
    kills_in_step: int = 0
    kills_in_save: int = 0
    kills_in_eval: int = 0
    interrupts: int = 0  # SIGINT / SIGTERM that saved, said where, and exited 0
    resumes: int = 0
    unreadable: list[str] = field(default_factory=list)  # checkpoints that failed to load after a fault
    problems: list[str] = field(default_factory=list)  # anything else that went wrong
    run_dir: Path | None = None


def check_interrupt(out: Outcome, run_dir: Path, trial: Trial) -> None:
    """A SIGINT/SIGTERM run must exit 0 after saving a checkpoint and printing its path."""
    said = [line for line in out.stdout.splitlines() if line.startswith(f"stopped by {out.fault}")]
    newest = ckpt.list_checkpoints(run_dir / "checkpoints")[:1]
    if out.returncode != 0 or not said or not newest or str(newest[0]) not in said[0]:
        trial.problems.append(f"{out.fault}: exit {out.returncode}, said {said}, newest {newest}, "
                              f"stderr {out.stderr[-300:]!r}")


def drive(method: str, output_dir: Path, faults: list[str], rng: random.Random, total_steps: int,
          extra: list[str] = ()) -> Trial:
    """Start a run of `method` (with `extra` overrides), send it `faults` (FAULTS) one per process
    at random steps, resuming after each, then resume once more to let it finish."""
    trial = Trial(method)
    output_dir.mkdir(parents=True, exist_ok=True)
    for fault in faults + [""]:
        run_dir = trial.run_dir
        if run_dir is None:
            cmd = new_run(method, output_dir, *extra)
        else:
            cmd = command(f"resume={run_dir}")
            trial.resumes += 1
        # A fault is due after a step of the first half: the process must not finish before it.
        out = run_until(cmd, fault, rng.randint(0, total_steps // 2) if fault else None, rng, output_dir)
        if trial.run_dir is None and any(output_dir.iterdir()):
            trial.run_dir = run_folder(output_dir)
        if not out.fault:  # it finished before the fault was due, or it was meant to finish
            if out.returncode != 0:
                trial.problems.append(f"exit {out.returncode}: {out.stderr[-500:]}")
            if fault:
                continue
            break
        if out.fault.startswith("SIGKILL"):
            trial.kills += 1
            in_save = trial.run_dir is not None and any((trial.run_dir / "checkpoints").glob(".step_*.tmp"))
            in_eval = not in_save and in_evaluation(out.stdout) and any("eval.every" in e for e in extra)
            trial.kills_in_save += in_save
            trial.kills_in_eval += in_eval
            trial.kills_in_step += not in_save and not in_eval
        else:
            trial.interrupts += 1
            check_interrupt(out, trial.run_dir, trial)
        if trial.run_dir is not None:
            _, bad = readable_checkpoints(trial.run_dir / "checkpoints")
            trial.unreadable += [str(p) for p in bad]
    return trial


def reference_run(method: str, output_dir: Path, extra: list[str] = ()) -> Path:
    """An uninterrupted run of `method`."""
    out = run_until(new_run(method, output_dir, *extra), "", None, random.Random(0))
    if out.returncode != 0:
        raise RuntimeError(f"the reference run of {method} failed: {out.stderr[-2000:]}")
    return run_folder(output_dir)


def total_steps(reference: Path) -> int:
    return int(losses(reference)[-1]["step"])
