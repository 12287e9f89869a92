"""Evaluate a generator on a split: translate it batch by batch and feed the metrics.

`Evaluator` is built once (the data, the FID extractor, the judges) and `run` scores one
generator; `translate-eval` (`evaluate_command`) uses it on a run's checkpoint and writes a table,
`TrainingEvaluation` uses it every `eval.every` steps of a training run and keeps the best
checkpoint. What each metric needs is in metrics.py.

Which images: for two domains, the input side is A for `eval.direction=AtoB` (B for BtoA; pix2pix
has one generator, its input side set by data.direction) and the real target-domain images FID
compares with are the other side of each batch. For StarGAN every test image is translated to
each target of the official test (attributes.domain_targets: each attribute flipped, or each
one-hot domain) and FID compares all translations with all real test images. A joint StarGAN
model (mask vectors) is scored on one of its datasets at a time (eval.dataset): that dataset's
split and labels, G's targets widened to the joint label with that dataset's mask, as the
official test_multi does.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from translate import config as config_mod
from translate.config import RunConfig, RuntimeConfig
from translate.data import build_dataset, domain_labels
from translate.data.joint import part_configs
from translate.errors import UserError
from translate.eval.metrics import (
    MetricContext,
    Translated,
    build_metrics,
    check_metrics,
    higher_is_better,
    metric_class,
)
from translate.eval.report import format_table, write_table
from translate.methods import METHODS, method_from_checkpoint
from translate.train.checkpoint import (
    FORMAT,
    latest_checkpoint,
    load_checkpoint,
    write_atomically,
)
from translate.train.runtime import Runtime, load_rng_state, rng_state, unwrap


def joint_part(joint: list[str], dataset: str) -> int:
    """The position in data.joint of the dataset `eval.dataset` names (a format or a position from 1)."""
    choices = ", ".join([*dict.fromkeys(joint), *(str(k + 1) for k in range(len(joint)))])
    if dataset.isdigit() and 1 <= int(dataset) <= len(joint):
        return int(dataset) - 1
    if joint.count(dataset) == 1:
        return joint.index(dataset)
    if dataset in joint:
        raise UserError(f"data.joint holds {dataset} more than once; give its position, "
                        f"eval.dataset=N (1-{len(joint)})")
    what = (f"eval.dataset={dataset} is not one of its datasets" if dataset
            else "set eval.dataset to the dataset to score")
    raise UserError(f"a joint StarGAN model (data.joint={','.join(joint)}) is scored on one dataset at a time: "
                    f"{what}; choose one of {choices}")


def _has_batch_statistics(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class Evaluator:
    """The data and metrics of one evaluation setting (cfg.eval on cfg.data), reusable for many
    generators. Everything that can fail on bad input fails here, before any translation."""

    def __init__(self, cfg: RunConfig, runtime: Runtime, progress: bool = True):
        e = cfg.eval
        self.cfg, self.runtime, self.progress = cfg, runtime, progress
        for name in e.metrics:
            metric_class(name)  # unknown names fail before the data is read
        self.stargan = cfg.method == "stargan"
        if cfg.method == "pix2pix" and e.direction == "BtoA":
            raise UserError("a pix2pix model has one generator (its input side is data.direction); "
                            "leave eval.direction at AtoB")
        self.source, self.target = ("B", "A") if e.direction == "BtoA" else ("A", "B")
        self.label_names: list[str] = []  # StarGAN: what each entry of a target label means
        self.multi_label = True  # StarGAN: attributes (flipped one at a time) or one-hot domains
        self.joint_label: Callable[[torch.Tensor], torch.Tensor] | None = None  # joint models: G's label
        data = cfg.data
        if self.stargan:
            labels = domain_labels(cfg.data)
            if labels.parts:
                k = joint_part(cfg.data.joint, e.dataset)
                data, labels, self.joint_label = part_configs(cfg.data)[k], labels.parts[k], partial(labels.widen, k=k)
            self.label_names, self.multi_label = list(labels.names), labels.multi_label
        if e.dataset and self.joint_label is None:
            raise UserError(f"eval.dataset={e.dataset} picks one dataset of a joint StarGAN model "
                            f"(data.format=joint); this is a {cfg.method} model of "
                            f"data.format={cfg.data.format}: leave it empty")
        wants_pairs = any("target" in metric_class(n).requires for n in e.metrics)
        self.paired = METHODS[cfg.method].paired or wants_pairs
        dataset = build_dataset(data, e.split, paired=self.paired, train=False)
        if e.max_images:
            dataset = Subset(dataset, range(min(e.max_images, len(dataset))))
        if len(dataset) == 0:
            raise UserError(f"the {e.split} split is empty; choose another eval.split or check data.root")
        self.dataset = dataset
        check_metrics(e.metrics, self.stargan, self._fields(dataset[0]))
        self.context = MetricContext(e, runtime.device, data.format, self.label_names)
        build_metrics(e.metrics, self.context)  # builds the extractor and judges now: their errors too

    def _fields(self, sample: dict) -> set[str]:
        if self.stargan:
            return {"target_label"}
        has = {"target"} if self.paired else set()
        return has | ({"source_classes"} if f"{self.source}_classes" in sample else set())

    @torch.no_grad()
    def run(self, generator: nn.Module) -> tuple[dict[str, float], int]:
        """The metrics of `generator` on the split, and the number of images. Runs G in training
        mode (as the official test scripts; one image at a time if it has batch norm) unless
        eval.eval_mode, with torch seeded by eval.seed: the same generator gives the same scores."""
        e = self.cfg.eval
        torch.manual_seed(e.seed)
        generator.train(not e.eval_mode)
        batch_size = 1 if not e.eval_mode and _has_batch_statistics(generator) else e.batch_size
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        metrics = build_metrics(e.metrics, self.context)
        device = self.runtime.device
        for index, batch in enumerate(loader):
            self._show_progress(index, len(loader))
            if self.stargan:
                self._stargan_batch(generator, batch, metrics)
                continue
            source = batch[self.source].to(device)
            with self.runtime.autocast():
                fake = generator(source).float()
            real = batch[self.target].to(device)
            for m in metrics:
                if m.needs_real:
                    m.update_real(real)
            classes = batch.get(f"{self.source}_classes")
            translated = Translated(source=source, fake=fake, target=real if self.paired else None,
                                    source_classes=classes.to(device) if classes is not None else None)
            for m in metrics:
                m.update(translated)
        results: dict[str, float] = {}
        for m in metrics:
            results.update(m.compute())
        return results, len(self.dataset)

    def _stargan_batch(self, generator: nn.Module, batch: dict, metrics: list) -> None:
        from translate.eval.attributes import domain_targets
        images, labels = batch["image"].to(self.runtime.device), batch["label"].float().to(self.runtime.device)
        for m in metrics:
            if m.needs_real:
                m.update_real(images)
        for i, c_trg in enumerate(domain_targets(labels, self.label_names, self.multi_label)):
            with self.runtime.autocast():
                fake = generator(images, self.joint_label(c_trg) if self.joint_label else c_trg).float()
            translated = Translated(source=images, fake=fake, target_label=c_trg, attribute=i)
            for m in metrics:
                m.update(translated)

    def _show_progress(self, index: int, total: int) -> None:
        """One line on stderr, rewritten per batch on a terminal; in a log, every tenth of the way."""
        if not self.progress:
            return
        done = index + 1
        text = f"evaluating {self.cfg.eval.split}: batch {done}/{total}"
        if sys.stderr.isatty():
            print("\r" + text, end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# translate-eval

EVAL_KEYS = {f.name for f in dataclasses.fields(config_mod.EvalConfig)}


def eval_overrides(overrides: list[str]) -> list[str]:
    """`split=test metrics=fid,kid` are the eval section's keys: eval.split=..., eval.metrics=..."""
    return [f"eval.{arg}" if arg.split("=", 1)[0] in EVAL_KEYS else arg for arg in overrides]


def resolve(run: str | None, checkpoint: str | None, overrides: list[str]) -> tuple[RunConfig, dict, Path, Path | None]:
    """The config, checkpoint state and path, and run folder (None: a checkpoint outside a run)."""
    if bool(run) == bool(checkpoint):
        raise UserError("give run=runs/NAME (its newest checkpoint) or checkpoint=PATH (a translate checkpoint)")
    overrides = eval_overrides(overrides)
    if run:
        run_dir = Path(run)
        from translate.train.loop import load_run_config
        cfg = load_run_config(run_dir, overrides)
        found = latest_checkpoint(run_dir / "checkpoints")
        if found is None:
            raise UserError(f"{run_dir} has no checkpoints yet (checkpoints/step_*.pt); train it longer "
                            f"or pass checkpoint=PATH")
        state, path = found
        return cfg, state, path, run_dir
    path = Path(checkpoint)
    state = load_checkpoint(path)
    cfg = config_mod.from_dict(config_mod.merge(state["config"], config_mod.parse_overrides(overrides)))
    folder = path.resolve().parent
    run_dir = folder.parent if folder.name == "checkpoints" and (folder.parent / "config.toml").is_file() else None
    return cfg, state, path, run_dir


def output_folder(output: str | None, run_dir: Path | None, checkpoint: Path, step: int) -> Path:
    """Where the results go; never over earlier results. By default RUN/eval/step_N, or step_N-2,
    -3, ... when that step was evaluated before (e.g. with other metrics)."""
    if output:
        out = Path(output).resolve()
        if out == checkpoint.resolve().parent or checkpoint.resolve().parent in out.parents:
            raise UserError(f"output={output} is inside the checkpoints folder; choose another output folder")
        if (out / "metrics.csv").exists():
            raise UserError(f"output={output} already holds results (metrics.csv); choose another folder "
                            f"or remove them")
        return out
    if run_dir is None:
        raise UserError(f"{checkpoint} is not in a run folder's checkpoints/; give output=DIR for the results")
    stem = run_dir / "eval" / f"step_{step:08d}"
    return next(out for n in range(1, 10_000)
                if not (out := stem if n == 1 else stem.with_name(f"{stem.name}-{n}")).exists())


def results_table(results: dict[str, float], names: list[str]) -> pd.DataFrame:
    known: dict[str, bool] = {}
    for name in names:
        known.update(metric_class(name).columns)
    better = ["higher" if known.get(k, True) else "lower" for k in results]
    return pd.DataFrame({"metric": list(results), "value": list(results.values()), "better": better})


def evaluate_command(own: dict[str, str], overrides: list[str]) -> tuple[pd.DataFrame, Path]:
    """translate-eval: score a run's newest (or a given) checkpoint; print and write the table."""
    cfg, state, path, run_dir = resolve(own.get("run"), own.get("checkpoint"), overrides)
    out = output_folder(own.get("output"), run_dir, path, int(state["step"]))
    runtime = Runtime.setup(RuntimeConfig(device=cfg.runtime.device, precision=cfg.runtime.precision,
                                          threads=cfg.runtime.threads))
    try:
        evaluator = Evaluator(cfg, runtime)
        method = method_from_checkpoint(state)
        generator = method.generator(cfg.eval.direction).to(runtime.device)
        results, count = evaluator.run(generator)
    finally:
        runtime.close()
    e = cfg.eval
    table = results_table(results, e.metrics)
    where = "" if cfg.method == "pix2pix" or cfg.method == "stargan" else f", {e.direction}"
    print(f"{cfg.method} {path} (step {state['step']}): {e.split} split, {count} images{where}, "
          f"features {e.features}")
    print(format_table(table))
    written = write_table(table, out / "metrics.csv")
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(out)) as writer:
        for k, v in results.items():
            if math.isfinite(v):
                writer.add_scalar(f"metrics/{k}", v, int(state["step"]))
    print("written to " + " and ".join(str(p) for p in written) + f" (and TensorBoard events in {out})")
    return table, out


# ---------------------------------------------------------------------------------------------
# Periodic evaluation in training


def append_metrics_row(path: Path, row: dict) -> None:
    """Add `row` to a run's metrics.csv; rows of this step or later (logged before a resume
    replayed those steps) are dropped first."""
    table = pd.DataFrame([row])
    if path.exists():
        old = pd.read_csv(path)
        table = pd.concat([old[old["step"] < row["step"]], table], ignore_index=True)
    # Through a temporary file and a rename: a kill mid-write leaves the previous file whole.
    write_atomically(path, table.to_csv(index=False).encode())


class TrainingEvaluation:
    """`eval.every=N` in training: rank 0 scores the generator (its norm statistics and the
    training RNG restored afterwards), logs metrics/<column> to TensorBoard, appends metrics.csv, and
    with `eval.best=<column>` writes checkpoints/best.pt whenever that column improves. The best
    value so far is part of the training state, so a resumed run goes on comparing with it."""

    def __init__(self, cfg: RunConfig, run_dir: Path, runtime: Runtime):
        e = cfg.eval
        self.cfg, self.run_dir, self.runtime = cfg, run_dir, runtime
        self.higher = higher_is_better(e.best, e.metrics) if e.best else True
        self.best: dict = {}  # {"column", "value", "step"} of the best evaluation so far
        # Only rank 0 evaluates; building the evaluator checks the metrics before step 1.
        self.evaluator = Evaluator(cfg, runtime, progress=False) if runtime.is_main else None

    def state_dict(self) -> dict:
        return dict(self.best)

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state) if state and state.get("column") == self.cfg.eval.best else {}

    def __call__(self, trainer) -> None:
        if self.evaluator is not None:
            # The generator itself (not a copy: a compiled module's copy would still call the
            # original), its buffers (batch norm's running statistics) and the RNG put back after.
            generator = unwrap(trainer.method.generator(self.cfg.eval.direction))
            saved, buffers = rng_state(), [b.clone() for b in generator.buffers()]
            try:
                results, _ = self.evaluator.run(generator)
            finally:
                load_rng_state(saved)
                with torch.no_grad():
                    for buffer, value in zip(generator.buffers(), buffers, strict=True):
                        buffer.copy_(value)
            trainer.logger.log_metrics(trainer.step, results, prefix="metrics")
            append_metrics_row(self.run_dir / "metrics.csv", {"step": trainer.step, **results})
            trainer.logger.message(f"eval at step {trainer.step}: "
                                   + " | ".join(f"{k} {v:.4f}" for k, v in results.items()))
            self._keep_best(trainer, results)
        self.runtime.barrier()

    def _keep_best(self, trainer, results: dict[str, float]) -> None:
        column = self.cfg.eval.best
        if not column:
            return
        value = results[column]
        previous = self.best.get("value")
        if not math.isfinite(value) or (previous is not None and
                                        (value <= previous if self.higher else value >= previous)):
            return
        self.best = {"column": column, "value": float(value), "step": trainer.step}
        from translate.train.checkpoint import save_atomically
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        save_atomically({"format": FORMAT, **trainer.state_dict()}, folder / "best.pt")
        trainer.logger.message(f"best {column} so far ({value:.4f}): {folder / 'best.pt'}")
