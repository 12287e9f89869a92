"""The training loop shared by every method: build, (resume,) step, log, checkpoint.

Reads top to bottom: `start_run` makes or reopens the run folder, `Trainer` builds the method,
data and optimisers, and `fit` runs steps until the schedule ends, writing checkpoints that hold
everything needed to continue exactly where it stopped.
"""

from __future__ import annotations

import datetime
import re
import signal
import sys
import warnings
from itertools import chain
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from translate import config as config_mod
from translate.config import RunConfig
from translate.data import build_dataset
from translate.data.sampler import GlobalBatchSampler, make_loader
from translate.errors import UserError
from translate.methods import METHODS, build_method
from translate.train.checkpoint import (
    first_sentence,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
    write_atomically,
)
from translate.train.logging import RunLogger, visuals_from_state, visuals_state
from translate.train.runtime import Runtime, load_rng_state, rank_seed, rng_state, seed_everything, unwrap


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class LinearDecay:
    """The official CycleGAN/pix2pix schedule: the initial rate for `constant` epochs, then a linear
    decay over `decay` epochs (epoch e, counted from 0, trains at 1 - max(0, e+1-constant)/(decay+1)).
    Called with the step count, so the scheduler can step every iteration.

    With steps_per_epoch=1 it counts steps: the schedule of train.iterations (StarGAN: constant
    for iterations - iterations_decay steps, then linearly down to 1/(decay+1) of the rate on the
    last step). The official StarGAN code instead subtracts lr/num_iters_decay every 1000 steps,
    which leaves 99.9% of the rate at the end; this follows the paper's linear decay to zero."""

    def __init__(self, constant: int, decay: int, steps_per_epoch: int):
        self.constant, self.decay, self.steps_per_epoch = constant, decay, steps_per_epoch

    def __call__(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        return 1.0 - max(0, epoch + 1 - self.constant) / float(self.decay + 1)


def start_run(cfg: RunConfig, recipe_name: str, runtime: Runtime) -> Path:
    """A new run folder, never an existing one: NAME-YYYYmmdd-HHMMSS[-N]."""
    path = None
    if runtime.is_main:
        root = Path(cfg.output_dir)
        stem = f"{cfg.name or recipe_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                path = root / (stem if n == 1 else f"{stem}-{n}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            write_atomically(path / "config.toml", config_mod.to_toml(cfg).encode())
        except OSError as e:
            raise UserError(f"cannot create the run folder under {root}: {e.strerror}; "
                            f"set output_dir to a writable folder") from None
    return Path(runtime.broadcast(str(path)))


def load_run_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The config a run was started with, plus overrides (e.g. more epochs)."""
    path = run_dir / "config.toml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.toml); pass resume=runs/NAME")
    values = config_mod.read_toml(path)
    return config_mod.from_dict(config_mod.merge(values, config_mod.parse_overrides(overrides)))


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, runtime: Runtime, dataset: Dataset):
        self.cfg, self.run_dir, self.runtime, self.dataset = cfg, run_dir, runtime, dataset
        t = cfg.train
        seed_everything(t.seed)  # the same initial weights on every rank
        self.method = build_method(cfg)
        unknown = sorted(set(runtime.channels_last_nets) - set(self.method.nets))
        if unknown:
            raise UserError(f"runtime.channels_last_nets names {', '.join(unknown)}, which {cfg.method} does not "
                            f"have; its networks are {', '.join(self.method.nets)}")
        for name in list(self.method.nets):
            self.method.nets[name] = runtime.wrap(self.method.nets[name], name)
        if runtime.rank:  # the same weights, then a random stream of this rank's own
            seed_everything(rank_seed(t.seed, runtime.rank))

        if t.batch_size % runtime.world_size:
            raise UserError(f"train.batch_size={t.batch_size} does not divide among "
                            f"{runtime.world_size} processes; make it a multiple of {runtime.world_size}")
        self.steps_per_epoch = len(self.dataset) // t.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"the dataset has {len(self.dataset)} samples, fewer than "
                            f"train.batch_size={t.batch_size}; lower the batch size or add images")
        self.total_steps = (t.epochs + t.epochs_decay) * self.steps_per_epoch
        schedule = LinearDecay(t.epochs, t.epochs_decay, self.steps_per_epoch)
        if t.iterations:
            self.total_steps = t.iterations
            schedule = LinearDecay(t.iterations - t.iterations_decay, t.iterations_decay, 1)
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps) if self.total_steps else t.max_steps

        self.optimizers, self.schedulers, self.scalers = {}, {}, {}
        for name, net_names in self.method.optimizer_nets().items():
            params = chain.from_iterable(unwrap(self.method.nets[n]).parameters() for n in net_names)
            opt = runtime.adam(params, lr=t.lr, betas=(t.beta1, t.beta2))
            self.optimizers[name] = opt
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
            self.scalers[name] = runtime.grad_scaler()

        self.step = 0
        self.logger = RunLogger(run_dir, self.total_steps, enabled=runtime.is_main)
        self.stop_signal: str | None = None
        self.skipped_files: set[str] = set()
        self.evaluation = None  # eval.every: periodic evaluation, kept apart in translate/eval/evaluate.py
        if cfg.eval.every:
            from translate.eval.evaluate import TrainingEvaluation
            self.evaluation = TrainingEvaluation(cfg, run_dir, runtime)

    # -- the contract with the method (see methods/base.py: StepContext) --------------------------

    def autocast(self):
        return self.runtime.autocast()

    def optimize(self, name: str, loss: Tensor) -> None:
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        # Spent once the step is taken: freed now, not at this optimiser's next zero_grad, they
        # stay out of the rest of the iteration (pix2pix: G's 218 MB through the next G forward
        # and D's whole step, at the iteration's peak in memory).
        opt.zero_grad(set_to_none=True)

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self, rng_ranks: list[dict] | None = None) -> dict:
        """The run's state; `rng_ranks`: every rank's random state (default: this process's)."""
        return {
            "step": self.step,
            "config": config_mod.to_dict(self.cfg),
            "method": self.cfg.method,
            "nets": {k: unwrap(v).state_dict() for k, v in self.method.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items() if v is not None},
            "extra": self.method.extra_state(),
            "rng": rng_ranks or [rng_state()],
            "visuals": visuals_state(self.method.visuals()),
            "eval_best": self.evaluation.state_dict() if self.evaluation else {},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.cfg.method:
            raise UserError(f"the checkpoint is from a {state.get('method')} run, not {self.cfg.method}")
        for k, net in self.method.nets.items():
            try:
                unwrap(net).load_state_dict(state["nets"][k])
            except (KeyError, RuntimeError) as e:
                raise UserError(f"the checkpoint's network {k} does not fit this model "
                                f"({str(e).splitlines()[0][:100]}); resume with the run's own config") from None
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        for k, scaler in self.scalers.items():
            if scaler is not None and k in state["scalers"]:
                scaler.load_state_dict(state["scalers"][k])
        self.method.load_extra_state(state["extra"])
        self._load_rng(state["rng"], state["step"])
        self.method.restore_visuals(visuals_from_state(state.get("visuals", {})))  # see logging.py
        self.step = state["step"]
        if self.evaluation:
            self.evaluation.load_state_dict(state.get("eval_best", {}))

    def _load_rng(self, saved: list[dict] | dict, step: int) -> None:
        """Each rank continues its own random stream. Resumed with more processes than were saved
        (or from a checkpoint of one state per run, before per-rank streams), a rank without one
        starts a fresh stream of its own from the seed, the rank and the step."""
        saved = saved if isinstance(saved, list) else [saved]
        rank = self.runtime.rank
        if rank < len(saved):
            load_rng_state(saved[rank])
        else:
            seed_everything(rank_seed(self.cfg.train.seed + step, rank))

    def resume(self) -> bool:
        folder = self.run_dir / "checkpoints"
        found = latest_checkpoint(folder, map_location=self.runtime.device)
        if found is None:
            broken = list_checkpoints(folder)
            if broken:  # starting over would also let pruning delete each new checkpoint (older steps)
                raise UserError(f"none of the {len(broken)} checkpoint(s) in {folder} is readable (see the "
                                f"warnings above); move them elsewhere to start this run over from step 0")
            return False
        state, path = found
        self.load_state_dict(state)
        self.logger.message(f"resumed from {path} at step {self.step}")
        return True

    def save(self) -> Path | None:
        if not self.runtime.all_true(self.logger.interval_finite()):
            self._diverged()
        path = None
        rng_ranks = self.runtime.gather(rng_state())
        if self.runtime.is_main:
            path = save_checkpoint(self.state_dict(rng_ranks), self.run_dir / "checkpoints", self.step,
                                   self.cfg.train.keep_checkpoints)
        self.runtime.barrier()
        return path

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> None:
        t, runtime = self.cfg.train, self.runtime
        self.logger.message(f"run folder {self.run_dir}: {self.total_steps} steps "
                            f"({self.steps_per_epoch} per epoch), {len(self.dataset)} samples, "
                            f"device {runtime.device}, {runtime.precision}, {runtime.world_size} process(es)")
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.logger.start_clock(self.step)
            while self.step < self.total_steps:
                epoch, first_batch = divmod(self.step, self.steps_per_epoch)
                sampler = GlobalBatchSampler(len(self.dataset), t.batch_size, t.seed, runtime.rank,
                                             runtime.world_size, start_epoch=epoch, start_batch=first_batch)
                loader = make_loader(self.dataset, sampler, self.cfg.data.num_workers,
                                     pin_memory=runtime.device.type == "cuda")
                stopping = False
                for batch in loader:
                    self._train_step(batch, epoch)
                    stopping = self._stop_requested()
                    if self.step >= self.total_steps or stopping:
                        break
                if stopping:
                    path = self.save()
                    self.logger.message(f"stopped by {self.stop_signal} at step {self.step}; "
                                        f"checkpoint {path}; continue with translate-train resume={self.run_dir}")
                    return
            path = self.save()
            self.logger.message(f"done: {self.step} steps; checkpoint {path}")
        finally:
            # A rank failing in a distributed run keeps the flag-setting handlers: torchrun's agent
            # sends SIGTERM to the other ranks as soon as one dies, and the default action would end
            # this one before it reports the lost peer (its process ends right after the report).
            if sys.exc_info()[0] is None or not runtime.distributed:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            self.logger.close()

    def _train_step(self, batch: dict, epoch: int) -> None:
        t = self.cfg.train
        if batch.get("skipped"):
            self._note_skipped(batch["skipped"])
        batch = self.runtime.to_device(batch)
        self.method.train()
        losses = self.method.training_step(batch, self)
        lrs = {k: opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()}  # this step's
        with warnings.catch_warnings():
            # The schedule counts loop steps, also for an optimiser the method skipped on this
            # step (StarGAN's G, every n_critic-th step only); torch would warn about that.
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            for sched in self.schedulers.values():
                sched.step()
        self.step += 1
        self.logger.accumulate(losses)
        if self.step % t.log_every == 0 or self.step == self.total_steps:
            if not self.runtime.all_true(self.logger.interval_finite()):
                self._diverged()
            self.logger.log_scalars(self.step, epoch, lrs)
        if self.step % t.image_every == 0:
            self.logger.log_images(self.step, self.method.visuals())
        if self.evaluation and self.step % self.cfg.eval.every == 0:
            self.evaluation(self)  # before the save: the checkpoint then holds the best value so far
        if self.step % t.save_every == 0 and self.step < self.total_steps:
            self.save()

    def _diverged(self):
        found = sorted((self.run_dir / "checkpoints").glob("step_*.pt"))
        kept = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
        raise TrainingDiverged(f"a loss became NaN or infinite before step {self.step}; {kept}; "
                               f"lower train.lr or use runtime.precision=fp32, then resume")

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name

    def _stop_requested(self) -> bool:
        if not self.runtime.distributed:
            return self.stop_signal is not None
        # All ranks must stop at the same step; agree at the logging cadence.
        if self.step % self.cfg.train.log_every:
            return False
        return not self.runtime.all_true(self.stop_signal is None)

    def _note_skipped(self, skipped: list[str]) -> None:
        new = {p for joined in skipped for p in joined.split("|") if p} - self.skipped_files
        if new:
            self.skipped_files |= new
            self.logger.warn(f"skipped {len(new)} unreadable file(s) ({len(self.skipped_files)} so far): "
                             + ", ".join(sorted(new)[:3]))


def train(cfg: RunConfig, recipe_name: str, resume_dir: Path | None = None) -> Path:
    runtime = Runtime.setup(cfg.runtime)
    run_dir = None
    try:
        # The data first: a wrong path fails before anything is written.
        dataset = build_dataset(cfg.data, "train", paired=METHODS[cfg.method].paired, train=True)
        run_dir = resume_dir if resume_dir else start_run(cfg, recipe_name, runtime)
        if resume_dir and runtime.is_main:
            write_atomically(run_dir / "config.toml", config_mod.to_toml(cfg).encode())
        trainer = Trainer(cfg, run_dir, runtime, dataset)
        if resume_dir:
            if not trainer.resume():
                trainer.logger.message(f"no checkpoint in {run_dir}/checkpoints yet; starting from step 0")
            trainer.logger.resume_at(trainer.step)
        trainer.fit()
        return run_dir
    except RuntimeError as e:
        if runtime.lost_peer(e):
            gist = re.sub(r"\[\S+\.cc:\d+\] ", "", first_sentence(e))  # gloo's source location
            raise UserError(f"process {runtime.rank} of {runtime.world_size} lost contact with the others "
                            f"({gist}); one has probably died (see its log); continue with "
                            f"translate-train resume={run_dir or 'RUN_FOLDER'}") from None
        raise
    finally:
        runtime.close()
