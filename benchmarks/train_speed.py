"""Training speed against the official implementations: seconds per iteration, images per second,
peak memory and the share of the machine's convolution rate, for the configurations of issue 6.

    python benchmarks/train_speed.py [--configs cyclegan256,cyclegan128,pix2pix256,stargan16,stargan4]
                                     [--precision fp32,bf16] [--channels-last] [--compile] [--threads 0]
                                     [--iters 10] [--warmup 3] [--repeat 1] [--profile | --profile-shapes]
                                     [--set KEY=VALUE]
                                     [--official official_speed.json] [--output DIR]

Each configuration trains with the toolkit's own Trainer (translate/train/loop.py) on JPEG files
written to a temporary folder in the dataset's layout (trainA/trainB for CycleGAN, A|B pairs for
pix2pix, list_attr_celeba.txt + images/ for StarGAN), with the recipe's networks, losses, batch,
crop and data workers. A hook around the trainer's step records when each step ends; seconds per
iteration is the median over the timed steps after the warm-up, step end to step end, so waiting
for data counts and checkpoints, logs and image grids (all pushed past the run) do not. StarGAN
updates G on every 5th step only: its figure is the median over whole 5-step cycles, divided by 5.
"CPU s/iter" is the same median in CPU time of the training process (all its threads), which
other jobs on a shared machine disturb less than the wall clock; "data s/batch" is the time to
read, decode and augment one batch in one process (the loader's workers do it beside the steps).

Every (configuration, mode) runs in a process of its own, so its peak RSS (getrusage, the main
process; data workers are separate processes) is its own. --repeat N runs each in N processes and
reports the median of their s/iter (min and max beside it) and the largest peak: on the machine
of PERFORMANCE.md a process runs fast or 5-10% slower for its whole life, so one process is one
sample. The floating-point work per iteration is
counted with torch's FlopCounterMode over the first warm-up steps (forward and backward, all
operators it knows: convolutions, matmuls); GFLOP/s divides it by the time per iteration, and the
"of conv peak" column divides that by the rate this script measures for a 3x3 convolution at the
same precision (the better of the two memory formats). --profile prints the torch profiler's top
operators for one iteration (one 5-step cycle for StarGAN) per run; --profile-shapes one row per
operator and input shapes, which tells the layers apart (a convolution's input, weight, ...).

The official figures beside the table are issue 6's by default (the official code, torch's default
threads, on an earlier day); --official takes those benchmarks/official_speed.py measured with the
official code on this machine. On a shared machine the timings are noisy: the load average is
recorded with each row. Writes train_speed.csv and .md to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import combine_repeats, report, run
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from translate import config as config_mod
from translate.data import build_dataset
from translate.methods import METHODS
from translate.nets.winograd import WinogradConv2d
from translate.train.loop import Trainer
from translate.train.runtime import Runtime


@dataclass(frozen=True)
class Setup:
    title: str
    recipe: str
    overrides: tuple[str, ...]
    layout: str  # unaligned | aligned | celeba: which files to write
    batch: int
    cycle: int  # steps in one whole cycle of the method (StarGAN: n_critic)
    official_s: float  # official s/iter on this machine (issue 6)
    official_gb: float  # official peak RSS (GB)


CONFIGS = {
    "cyclegan256": Setup("CycleGAN resnet_9blocks, crop 256 (load 286)", "cyclegan_facades",
                         ("data.format=unaligned", "data.load_size=286", "data.crop_size=256"),
                         "unaligned", 1, 1, 7.1, 4.1),
    "cyclegan128": Setup("CycleGAN resnet_9blocks, crop 128 (load 143)", "cyclegan_facades",
                         ("data.format=unaligned", "data.load_size=143", "data.crop_size=128"),
                         "unaligned", 1, 1, 1.9, 2.0),
    "pix2pix256": Setup("pix2pix unet_256, crop 256 (load 286)", "pix2pix_facades", (), "aligned", 1, 1, 0.64, 1.9),
    "stargan16": Setup("StarGAN CelebA 128 px, batch 16", "stargan_celeba", ("train.batch_size=16",),
                       "celeba", 16, 5, 6.0, 4.2),
    "stargan4": Setup("StarGAN CelebA 128 px, batch 4", "stargan_celeba", ("train.batch_size=4",),
                      "celeba", 4, 5, 2.45, 2.5),
}
CELEBA_ATTRIBUTES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]


# -- data on disk -----------------------------------------------------------------------------------


def smooth_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like JPEG subject: smooth colour fields plus grain (pure noise would make huge files)."""
    coarse = torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    fine = fine + 0.05 * torch.from_numpy(rng.standard_normal((3, height, width), dtype=np.float32))
    pixels = (fine.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def write_dataset(layout: str, root: Path, count: int) -> list[str]:
    """`count` JPEGs in `layout` under root; returns the data.* overrides that point at them."""
    rng = np.random.default_rng(0)
    if layout == "unaligned":  # official CycleGAN sets (horse2zebra, ...): 256x256 per domain
        for side in ("trainA", "trainB"):
            (root / side).mkdir(parents=True)
            for i in range(count):
                smooth_image(rng, 256, 256).save(root / side / f"{i:05d}.jpg", quality=90)
    elif layout == "aligned":  # facades: 512x256, A|B side by side
        (root / "train").mkdir(parents=True)
        for i in range(count):
            smooth_image(rng, 512, 256).save(root / "train" / f"{i:05d}.jpg", quality=90)
    elif layout == "celeba":  # aligned CelebA: 178x218 and the attribute list
        (root / "images").mkdir(parents=True)
        names = [f"{i:06d}.jpg" for i in range(count)]
        for name in names:
            smooth_image(rng, 178, 218).save(root / "images" / name, quality=90)
        signs = rng.choice(["1", "-1"], size=(count, len(CELEBA_ATTRIBUTES)))
        rows = [f"{n} " + " ".join(s) for n, s in zip(names, signs, strict=True)]
        lines = [str(count), " ".join(CELEBA_ATTRIBUTES), *rows]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        return [f"data.root={root}", "data.test_size=1", f"data.attributes={','.join(CELEBA_ATTRIBUTES)}"]
    else:
        raise ValueError(layout)
    return [f"data.root={root}"]


# -- one configuration in one process ---------------------------------------------------------------


class GlobalCountOnly:
    """Stands in for FlopCounterMode's module tracker, whose per-module backward hooks fail under
    torch.autograd.grad (StarGAN's gradient penalty); only the global total is needed here."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalCountOnly()
    return counter


@contextmanager
def direct_convolutions(net: torch.nn.Module):
    """Winograd layers computed as the convolutions they stand for while FLOPs are counted: the
    count is the direct convolutions' arithmetic (issue 6's counted compute), so GFLOP/s and the
    share of the convolution rate compare across modes (F(2x2, 3x3) and F(4x4, 3x3) do 2.25x and
    4x fewer products)."""
    switched = [m for m in net.modules() if type(m) is WinogradConv2d]
    for module in switched:
        module.__class__ = torch.nn.Conv2d
    try:
        yield
    finally:
        for module in switched:
            module.__class__ = WinogradConv2d


class StepHook:
    """Wraps Trainer._train_step: records when each step ends, counts FLOPs over the steps
    [0, count_until), and profiles the steps [profile_from, profile_until)."""

    def __init__(self, trainer: Trainer, count_until: int, profile_from: int, profile_until: int,
                 record_shapes: bool = False):
        self.trainer, self.inner = trainer, trainer._train_step
        self.record_shapes = record_shapes
        self.count_until, self.profile_from, self.profile_until = count_until, profile_from, profile_until
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []  # CPU time of this process: less disturbed by other jobs
        self.flops: int | None = None
        self.profile: torch.profiler.profile | None = None
        self.stack = ExitStack()
        self.counter = None
        self.synchronize = torch.cuda.synchronize if trainer.runtime.device.type == "cuda" else lambda: None
        trainer._train_step = self

    def __call__(self, batch: dict, epoch: int) -> None:
        step = self.trainer.step
        if step == 0 and self.count_until:
            self.stack.enter_context(direct_convolutions(self.trainer.method))
            self.counter = self.stack.enter_context(flop_counter())
        if step == self.profile_from and self.profile_until > self.profile_from:
            self.profile = self.stack.enter_context(
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                       record_shapes=self.record_shapes))
        self.inner(batch, epoch)
        self.synchronize()
        done = self.trainer.step
        if done == self.count_until and self.counter is not None:
            self.flops = self.counter.get_total_flops()
            self.stack.close()
            self.counter = None
        if done == self.profile_until and self.profile is not None:
            self.stack.close()
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Train configuration `name` for warm-up + profile + timed steps; the measurements."""
    setup = CONFIGS[name]
    warmup = -(-max(args.warmup, 1) // setup.cycle) * setup.cycle  # whole cycles
    iters = -(-max(args.iters, 1) // setup.cycle) * setup.cycle
    profiled = setup.cycle if args.profile or args.profile_shapes else 0
    steps = warmup + profiled + iters
    count_flops = not args.compile  # counting runs eagerly; a compiled run's count comes from an eager one
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        data_overrides = write_dataset(setup.layout, Path(tmp) / "data", steps * setup.batch + setup.batch)
        cfg, _ = config_mod.load(setup.recipe, [
            *setup.overrides, *data_overrides, f"output_dir={tmp}", f"train.max_steps={steps}",
            f"train.log_every={steps + 1}", f"train.image_every={steps + 1}", f"train.save_every={steps + 1}",
            f"runtime.precision={args.precision}", f"runtime.threads={args.threads}",
            f"runtime.channels_last={args.channels_last}", f"runtime.compile={args.compile}",
            *([f"data.num_workers={args.workers}"] if args.workers is not None else []), *args.set])
        runtime = Runtime.setup(cfg.runtime)
        dataset = build_dataset(cfg.data, "train", paired=METHODS[cfg.method].paired, train=True)
        start = time.perf_counter()  # decoding + augmenting one batch in this process (workers overlap it)
        for i in range(setup.batch):
            dataset[(i, i)]
        data_s = time.perf_counter() - start
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        trainer = Trainer(cfg, run_dir, runtime, dataset)
        hook = StepHook(trainer, setup.cycle if count_flops else 0, warmup, warmup + profiled, args.profile_shapes)
        trainer.fit()

    def per_iteration(ends: list[float]) -> float:
        """Median over whole cycles of the timed steps, per step."""
        timed = ends[warmup + profiled - 1:]  # the end of the step before the first timed one, then each
        starts, stops = timed[::setup.cycle], timed[setup.cycle::setup.cycle]
        return statistics.median((b - a) / setup.cycle for a, b in zip(starts, stops, strict=False))

    result = {
        "config": name, "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "threads": torch.get_num_threads(), "s_iter": per_iteration(hook.ends),
        "cpu_s_iter": per_iteration(hook.cpu_ends), "data_s": data_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "gflop_iter": hook.flops / setup.cycle / 1e9 if hook.flops is not None else None,
        "load": os.getloadavg()[0],
    }
    if hook.profile is not None:
        if args.profile_shapes:  # one row per operator and input shapes: which layer it is
            result["profile"] = hook.profile.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=30, max_shapes_column_width=110)
        else:
            result["profile"] = hook.profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return result


# -- the machine's convolution rate -----------------------------------------------------------------


def conv_rate(dtype: torch.dtype, memory_format: torch.memory_format, seconds: float = 1.0) -> float:
    """GFLOP/s of a 3x3 convolution, 256 -> 256 channels on 64x64 (a ResNet block at 256 px)."""
    x = torch.randn(1, 256, 64, 64, dtype=dtype).to(memory_format=memory_format)
    w = torch.randn(256, 256, 3, 3, dtype=dtype).to(memory_format=memory_format)
    flops = 2 * x.numel() * w[0].numel()
    for _ in range(3):
        F.conv2d(x, w, padding=1)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def machine_rates(threads: int) -> dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    return {name: max(conv_rate(dtype, fmt) for fmt in (torch.contiguous_format, torch.channels_last))
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


# -- the table --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, of: " + ", ".join(CONFIGS))
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (autocast)")
    parser.add_argument("--channels-last", default="false",
                        help="comma-separated true/false: channels-last memory format (runtime.channels_last)")
    parser.add_argument("--compile", default="false",
                        help="comma-separated true/false: torch.compile (runtime.compile)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default, as the official runs)")
    parser.add_argument("--workers", type=int, default=None, help="data loader workers (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run, e.g. runtime.small_map_matmul=false (repeatable)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps (rounded up to whole StarGAN cycles)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (rounded up to whole cycles)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="processes per configuration and mode: s/iter is their median, min and max beside it")
    parser.add_argument("--profile", action="store_true", help="print the top operators of one iteration per run")
    parser.add_argument("--profile-shapes", action="store_true",
                        help="the same, one row per operator and input shapes (which layer), 40 rows")
    parser.add_argument("--official", type=Path,
                        help="JSON list of the official code's figures measured on this machine "
                             "([{name, s_per_iter, peak_rss_mb}], see PERFORMANCE.md); default: issue 6's")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"), help="where the CSV goes")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, in a process of its own
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def flags(text: str) -> list[bool]:
    return [v.strip().lower() in ("true", "1", "yes") for v in text.split(",") if v.strip()]


def spawn(name: str, precision: str, channels_last: bool, compile_: bool, args: argparse.Namespace) -> dict | None:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", name, "--result", out.name, "--precision", precision,
                   "--channels-last", str(channels_last), "--compile", str(compile_), "--threads", str(args.threads),
                   "--iters", str(args.iters), "--warmup", str(args.warmup)]
        command += ["--workers", str(args.workers)] if args.workers is not None else []
        command += ["--profile"] if args.profile else []
        command += ["--profile-shapes"] if args.profile_shapes else []
        command += [f"--set={override}" for override in args.set]
        print(f"\n== {name}, {precision}, channels_last={channels_last}, compile={compile_}", flush=True)
        done = subprocess.run(command)
        if done.returncode:
            print(f"failed: {name} {precision} (exit status {done.returncode})", flush=True)
            return None
        return json.loads(Path(out.name).read_text())


def main() -> int:
    args = parse_args()
    if args.child:
        args.channels_last, args.compile = flags(args.channels_last)[0], flags(args.compile)[0]
        args.result.write_text(json.dumps(run_one(args.child, args)))
        return 0
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown config {', '.join(unknown)}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    rates = machine_rates(args.threads)
    print("3x3 convolution rate of this machine (GFLOP/s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + f"; load average {os.getloadavg()[0]:.2f}")
    results = []
    for name in names:
        for precision in precisions:
            for channels_last in flags(args.channels_last):
                for compile_ in flags(args.compile):
                    repeats = []
                    for _ in range(max(args.repeat, 1)):
                        result = spawn(name, precision, channels_last, compile_, args)
                        if result:
                            if "profile" in result:
                                print(result.pop("profile"))
                            repeats.append(result)
                    if repeats:
                        results.append(combine_repeats(repeats, ("s_iter", "cpu_s_iter", "load"), ("peak_rss_gb",)))
    if not results:
        return 1
    counted = {r["config"]: r["gflop_iter"] for r in results if r["gflop_iter"] is not None}
    for name in {r["config"] for r in results} - set(counted):  # only compiled runs: count eagerly
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, __file__, "--child", name, "--result", out.name, "--iters", "1",
                            "--warmup", "1", "--precision", "fp32", "--threads", str(args.threads)], check=True)
            counted[name] = json.loads(Path(out.name).read_text())["gflop_iter"]
    official = {name: (setup.official_s, setup.official_gb) for name, setup in CONFIGS.items()}
    if args.official:
        official.update({o["name"]: (o["s_per_iter"], o["peak_rss_mb"] * 2**20 / 1e9)  # VmHWM's MiB -> GB
                         for o in json.loads(args.official.read_text())})
    rows = []
    for r in results:
        setup = CONFIGS[r["config"]]
        official_s, official_gb = official[r["config"]]
        gflops = counted[r["config"]] / r["s_iter"]
        rows.append({
            "config": setup.title, "precision": r["precision"],
            "memory format": "channels_last" if r["channels_last"] else "contiguous",
            "compile": r["compile"], "threads": r["threads"], "runs": r["runs"], "s/iter": r["s_iter"],
            "s/iter min": r["s_iter_min"], "s/iter max": r["s_iter_max"], "CPU s/iter": r["cpu_s_iter"],
            "images/s": setup.batch / r["s_iter"],
            "data s/batch": r["data_s"], "peak RSS GB": r["peak_rss_gb"],
            "GFLOP/iter": counted[r["config"]], "GFLOP/s": gflops,
            "of conv peak": gflops / rates[r["precision"]],
            "official s/iter": official_s, "speed-up": official_s / r["s_iter"],
            "official RSS GB": official_gb, "load": r["load"],
        })
    import pandas as pd  # here, not at the top: the measured children's peak RSS is translate-train's own

    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    report(table, f"Training speed, {os.cpu_count()} CPUs ({rates['fp32']:.0f} GFLOP/s fp32, "
                  f"{rates['bf16']:.0f} bf16 3x3 conv); official = "
                  + (f"{args.official}" if args.official else "issue 6's figures (--official FILE: yours)"),
           args.output / "train_speed.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
