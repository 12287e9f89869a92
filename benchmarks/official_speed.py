"""Training speed of the OFFICIAL CycleGAN/pix2pix and StarGAN code on this machine: the "official"
column of benchmarks/train_speed.py, measured the same way as the toolkit's own rows.

    python benchmarks/official_speed.py --cyclegan-repo PATH --stargan-repo PATH
        [--configs cyclegan256,cyclegan128,pix2pix256,stargan16,stargan4] [--threads 0]
        [--warmup 3] [--iters 10] [--output DIR]
    python benchmarks/train_speed.py --official DIR/official_speed.json   # the toolkit beside these figures

The official repositories are NOT part of this project (nothing of them is vendored or copied here);
clone them and pass their folders:

    git clone https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix
    git clone https://github.com/yunjey/stargan

Their code runs unchanged with this script's Python (sys.executable), which needs what they import:
torch, torchvision, numpy and Pillow (already the toolkit's dependencies). Each configuration runs in
a child process of its own that puts the repository first on sys.path and imports nothing from this
project, so its peak memory is the official code's. The configurations correspond to the official
command lines (CPU, everything else at the official defaults):

    cyclegan256  python train.py --dataroot DATA --model cycle_gan --load_size 286 --crop_size 256 --gpu_ids -1
    cyclegan128  python train.py --dataroot DATA --model cycle_gan --load_size 143 --crop_size 128 --gpu_ids -1
                 (resnet_9blocks G, basic D, instance norm, lsgan, identity loss 0.5, batch 1, 4 data workers)
    pix2pix256   python train.py --dataroot DATA --model pix2pix --direction BtoA --gpu_ids -1
                 (unet_256 G with dropout, basic D, batch norm, vanilla GAN, L1 100, batch 1, 4 data workers)
    stargan16    python main.py --mode train --dataset CelebA --image_size 128 --c_dim 5 --batch_size 16
                     --selected_attrs Black_Hair Blond_Hair Brown_Hair Male Young --use_tensorboard False
    stargan4     the same with --batch_size 4  (n_critic 5, crop 178, 1 data worker)

How each is timed:
- CycleGAN/pix2pix: train.py itself also opens a visualizer (visdom/HTML), so the child runs its
  training loop with the official modules in train.py's order instead: TrainOptions().parse(),
  data.create_dataset, models.create_model, model.setup, then for each batch model.set_input and
  model.optimize_parameters, noting when each step ends. s/iter is the median of the intervals from
  one step's end to the next after the warm-up, so waiting for data counts; "optimize s" is the median
  of set_input + optimize_parameters alone (train.py's t_comp), "data wait s" the rest.
- StarGAN: the child runs the official main.py with the command line above (log, sample and save steps
  pushed past the run), so Solver.train() is the official one; only the loader is wrapped to note when
  each iteration asks for its batch. StarGAN updates G on every 5th iteration, so s/iter is the median
  over whole 5-iteration cycles (4 D steps + 1 D+G step) of the cycle time / 5; --warmup and --iters
  count whole cycles there.
- Peak RSS: VmHWM of the child (the training process; data workers are separate processes).
- Threads: --threads 0 leaves torch's default (the number of cores; what issue 6's official figures
  used, since neither official repository sets it); --threads N calls torch.set_num_threads(N) in the child.

Data: the same synthetic JPEGs as train_speed.py (its write_dataset), written to a temporary folder
in the official layouts: trainA/trainB (unaligned), train/ with A|B pairs (aligned) and CelebA's
images/ + list_attr_celeba.txt. The official CelebA loader shuffles the attribute list (seed 1234)
and keeps the first 1999 entries for its test split, so the list gets 1999 more names than training
reads, as hard links to the written images. On a shared machine the timings are noisy: the load
average is recorded with each row. Writes official_speed.csv, .md and .json to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from translate.errors import UserError

CYCLEGAN_URL = "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix"
STARGAN_URL = "https://github.com/yunjey/stargan"
# files a clone must have, checked before anything runs
REPO_FILES = {
    "cyclegan": ("models/cycle_gan_model.py", "models/pix2pix_model.py", "options/train_options.py",
                 "data/unaligned_dataset.py", "data/aligned_dataset.py"),
    "stargan": ("solver.py", "main.py", "data_loader.py", "model.py"),
}
# name: (repository, data layout, batch, official command-line options beyond the data and output folders)
CONFIGS = {
    "cyclegan256": ("cyclegan", "unaligned", 1, ("--model", "cycle_gan", "--load_size", "286", "--crop_size", "256")),
    "cyclegan128": ("cyclegan", "unaligned", 1, ("--model", "cycle_gan", "--load_size", "143", "--crop_size", "128")),
    "pix2pix256": ("cyclegan", "aligned", 1, ("--model", "pix2pix", "--direction", "BtoA")),
    "stargan16": ("stargan", "celeba", 16, ("--batch_size", "16")),
    "stargan4": ("stargan", "celeba", 4, ("--batch_size", "4")),
}
CELEBA_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
STARGAN_CYCLE = 5  # the official n_critic: D steps per G step
CELEBA_TEST_SPLIT = 1999  # attribute-list entries the official CelebA loader keeps for testing
NEVER = "100000000"  # a log/sample/save period no timing run reaches


def peak_rss_mb() -> float:
    """VmHWM of this process: the most resident memory it has had."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this measurement needs Linux)")


def median_from(values: list[float], first: int) -> float:
    return statistics.median(values[first:])


# -- in the child: CycleGAN / pix2pix ----------------------------------------------------------------


def time_cyclegan(name: str, args: argparse.Namespace) -> dict:
    """The official train.py loop, step by step, with the official modules."""
    from data import create_dataset
    from models import create_model
    from options.train_options import TrainOptions

    _, layout, _, options = CONFIGS[name]
    sys.argv = ["train.py", "--dataroot", str(args.data / layout), "--name", name, "--gpu_ids", "-1",
                "--checkpoints_dir", str(Path.cwd() / "checkpoints"), *options, *workers_option(args, "--num_threads")]
    opt = TrainOptions().parse()
    dataset = create_dataset(opt)
    model = create_model(opt)
    model.setup(opt)

    steps = args.warmup + args.iters + 1  # the first timed interval starts at the end of the last warm-up step
    ends, optimize, data_wait = [], [], []
    while len(ends) < steps:  # epochs, as train.py (the data written covers one; a rerun with more steps may not)
        asked = time.perf_counter()
        for batch in dataset:
            arrived = time.perf_counter()
            model.set_input(batch)
            model.optimize_parameters()
            ends.append(time.perf_counter())
            optimize.append(ends[-1] - arrived)
            data_wait.append(arrived - asked)
            if len(ends) == steps:
                break
            asked = time.perf_counter()
    intervals = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    official = {key: getattr(opt, key) for key in ("netG", "netD", "norm", "gan_mode", "load_size", "crop_size",
                                                   "batch_size", "num_threads", "pool_size")}
    official["dropout"] = not opt.no_dropout
    if opt.model == "cycle_gan":
        official["lambda_identity"] = opt.lambda_identity
    else:
        official["lambda_L1"] = opt.lambda_L1
    official["input"] = list(model.real_A.shape)
    return {
        "s_per_iter": median_from(intervals, args.warmup),
        "optimize_s": median_from(optimize[1:], args.warmup),  # the step that closes each interval
        "data_wait_s": median_from(data_wait[1:], args.warmup),
        "intervals_s": intervals,
        "workers": opt.num_threads,
        "official": official,
    }


# -- in the child: StarGAN --------------------------------------------------------------------------


class MarkingLoader:
    """Wraps the official StarGAN DataLoader and notes the time whenever training asks for a batch.
    Solver.train() starts the loader over when an epoch ends; that request belongs to the same iteration."""

    def __init__(self, loader):
        self.loader = loader
        self.asked: list[float] = []
        self.exhausted = False

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            if not self.exhausted:
                self.asked.append(time.perf_counter())
            try:
                batch = next(batches)
            except StopIteration:
                self.exhausted = True
                return
            self.exhausted = False
            yield batch


def time_stargan(name: str, args: argparse.Namespace) -> dict:
    """The official main.py, whose Solver.train() gets the marking loader."""
    import solver

    made = []

    class MarkedSolver(solver.Solver):
        def __init__(self, celeba_loader, rafd_loader, config):
            made.append((MarkingLoader(celeba_loader), config))
            super().__init__(made[-1][0], rafd_loader, config)

    solver.Solver = MarkedSolver  # main.py's `from solver import Solver` takes this one
    cycles = args.warmup + args.iters
    celeba = args.data / "celeba"
    sys.argv = ["main.py", "--mode", "train", "--dataset", "CelebA", "--image_size", "128", "--c_dim", "5",
                "--selected_attrs", *CELEBA_ATTRIBUTES, "--use_tensorboard", "False", *CONFIGS[name][3],
                "--num_iters", str(cycles * STARGAN_CYCLE), "--celeba_image_dir", str(celeba / "images"),
                "--attr_path", str(celeba / "list_attr_celeba.txt"), "--log_step", NEVER, "--sample_step", NEVER,
                "--model_save_step", NEVER, *workers_option(args, "--num_workers")]
    for folder in ("log_dir", "model_save_dir", "sample_dir", "result_dir"):
        sys.argv += [f"--{folder}", str(Path.cwd() / folder)]
    runpy.run_path(str(args.repo / "main.py"), run_name="__main__")
    finished = time.perf_counter()

    loader, config = made[0]
    if config.n_critic != STARGAN_CYCLE:
        raise RuntimeError(f"the official n_critic is {config.n_critic}, this script counts cycles of {STARGAN_CYCLE}")
    starts = loader.asked[1:]  # the first request is the fixed debugging batch, before the loop
    if len(starts) != config.num_iters:
        raise RuntimeError(f"{len(starts)} batch requests for {config.num_iters} iterations")
    bounds = [*starts, finished]
    steps = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    cycle_s = [sum(steps[k:k + STARGAN_CYCLE]) for k in range(0, len(steps), STARGAN_CYCLE)]
    timed = steps[args.warmup * STARGAN_CYCLE:]
    return {
        "s_per_iter": median_from(cycle_s, args.warmup) / STARGAN_CYCLE,
        "d_step_s": statistics.median(s for i, s in enumerate(timed) if (i + 1) % STARGAN_CYCLE),
        "dg_step_s": statistics.median(timed[STARGAN_CYCLE - 1::STARGAN_CYCLE]),
        "cycles_s": cycle_s,
        "workers": config.num_workers,
        "official": {"batch_size": config.batch_size, "n_critic": config.n_critic, "image_size": config.image_size,
                     "crop": config.celeba_crop_size, "train_images": len(loader.loader.dataset),
                     "lambda_gp": config.lambda_gp, "selected_attrs": config.selected_attrs},
    }


def workers_option(args: argparse.Namespace, option: str) -> list[str]:
    """The official option for its data workers, where --workers asks for a number of them."""
    return [option, str(args.workers)] if args.workers is not None else []


def child(args: argparse.Namespace) -> int:
    """One configuration, in this fresh process: its measurements go to args.result as JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.repo))
    measure = time_stargan if CONFIGS[args.child][0] == "stargan" else time_cyclegan
    result = measure(args.child, args)
    result.update(name=args.child, batch=CONFIGS[args.child][2], threads=torch.get_num_threads(),
                  torch=torch.__version__, peak_rss_mb=peak_rss_mb(), warmup=args.warmup, iters=args.iters)
    args.result.write_text(json.dumps(result))
    return 0


# -- in the parent ----------------------------------------------------------------------------------


def check_repo(path: Path | None, option: str, kind: str, url: str, names: list[str]) -> Path:
    if path is None:
        raise UserError(f"{option} is needed for {', '.join(names)}: the folder of a clone of {url} "
                        f"(git clone {url})")
    if not path.is_dir():
        raise UserError(f"{option} {path}: no such folder; expected a clone of {url} (git clone {url})")
    for file in REPO_FILES[kind]:
        if not (path / file).is_file():
            raise UserError(f"{option} {path}: no {file} there; expected a clone of {url} (git clone {url})")
    return path.resolve()


def write_official_data(layouts: set[str], root: Path, images: int, celeba_images: int) -> None:
    """train_speed.py's synthetic JPEGs under root/LAYOUT, in the official folder layouts."""
    from train_speed import write_dataset  # the toolkit's benchmark: same images as the toolkit's rows

    for layout in sorted(layouts - {"celeba"}):  # trainA + trainB, or train/ with A|B pairs: as the official reads
        write_dataset(layout, root / layout, images)
    if "celeba" in layouts:
        celeba = root / "celeba"
        write_dataset("celeba", celeba, celeba_images)
        attributes = celeba / "list_attr_celeba.txt"
        count, header, *rows = attributes.read_text().splitlines()
        if header.split() != list(CELEBA_ATTRIBUTES):
            raise RuntimeError(f"train_speed.write_dataset wrote the attributes {header}, expected {CELEBA_ATTRIBUTES}")
        extra = []
        for i in range(CELEBA_TEST_SPLIT):  # the official test split: names only, linked to written images
            source, labels = rows[i % len(rows)].split(maxsplit=1)
            linked = f"test{i:06d}.jpg"
            os.link(celeba / "images" / source, celeba / "images" / linked)
            extra.append(f"{linked} {labels}")
        attributes.write_text("\n".join([str(len(rows) + len(extra)), header, *rows, *extra]) + "\n")


def run_config(name: str, repo: Path, data: Path, workdir: Path, args: argparse.Namespace) -> dict | None:
    result_file = workdir / "result.json"
    command = [sys.executable, __file__, "--child", name, "--repo", str(repo), "--data", str(data),
               "--result", str(result_file), "--threads", str(args.threads), "--warmup", str(args.warmup),
               "--iters", str(args.iters), *(["--workers", str(args.workers)] if args.workers is not None else [])]
    load = os.getloadavg()[0]
    print(f"\n== {name} (official code from {repo}, {sys.executable})", flush=True)
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if done.returncode or not result_file.exists():
        print("".join((done.stdout + done.stderr).splitlines(keepends=True)[-40:]))
        print(f"failed: {name} (exit status {done.returncode})", flush=True)
        return None
    result = json.loads(result_file.read_text())
    result["load"] = load
    print(f"{result['s_per_iter']:.3f} s/iter, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"{result['threads']} threads, {result['workers']} data workers; official settings "
          f"{json.dumps(result['official'])}", flush=True)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cyclegan-repo", type=Path, help=f"a clone of {CYCLEGAN_URL} (CycleGAN and pix2pix)")
    parser.add_argument("--stargan-repo", type=Path, help=f"a clone of {STARGAN_URL}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, of: " + ", ".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, as issue 6)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data workers (--num_threads of CycleGAN/pix2pix, --num_workers of StarGAN; "
                             "default: the official defaults, 4 and 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (StarGAN: whole cycles)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (StarGAN: whole 5-step cycles)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="processes per configuration: s/iter is their median, min and max beside it")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"), help="where the CSV and JSON go")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, in a process of its own
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main(args: argparse.Namespace) -> int:
    import pandas as pd
    from common import combine_repeats, report

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        raise UserError(f"--configs {args.configs}: unknown {', '.join(unknown) or 'empty'}; "
                        f"choose from {', '.join(CONFIGS)}")
    if args.warmup < 0 or args.iters < 1:
        raise UserError(f"--warmup {args.warmup} --iters {args.iters}: need warmup >= 0 and iters >= 1")
    repos = {}
    for kind, path, option, url in (("cyclegan", args.cyclegan_repo, "--cyclegan-repo", CYCLEGAN_URL),
                                    ("stargan", args.stargan_repo, "--stargan-repo", STARGAN_URL)):
        needing = [n for n in names if CONFIGS[n][0] == kind]
        if needing:
            repos[kind] = check_repo(path, option, kind, url, needing)

    images = args.warmup + args.iters + 2  # one epoch covers every CycleGAN/pix2pix step
    stargan_batch = max((CONFIGS[n][2] for n in names if CONFIGS[n][0] == "stargan"), default=0)
    # the fixed debugging batch, then one batch per iteration, all within one epoch
    celeba_images = ((args.warmup + args.iters) * STARGAN_CYCLE + 2) * stargan_batch
    results = []
    with tempfile.TemporaryDirectory(prefix="official_speed-") as tmp:
        data = Path(tmp) / "data"
        write_official_data({CONFIGS[n][1] for n in names}, data, images, celeba_images)
        for name in names:
            repeats = []
            for k in range(max(args.repeat, 1)):
                workdir = Path(tmp) / name / str(k)
                workdir.mkdir(parents=True)
                result = run_config(name, repos[CONFIGS[name][0]], data, workdir, args)
                if result:
                    repeats.append(result)
            if repeats:
                timings = ("s_per_iter", "optimize_s", "data_wait_s", "d_step_s", "dg_step_s", "load")
                results.append(combine_repeats(repeats, tuple(t for t in timings if t in repeats[0]),
                                               ("peak_rss_mb",)))
    if not results:
        return 1
    nan = float("nan")  # a figure the other official code has no counterpart of
    table = pd.DataFrame([{
        "config": r["name"], "batch": r["batch"], "threads": r["threads"], "data workers": r["workers"],
        "runs": r["runs"], "s/iter": r["s_per_iter"], "s/iter min": r["s_per_iter_min"],
        "s/iter max": r["s_per_iter_max"], "images/s": r["batch"] / r["s_per_iter"],
        "optimize s": r.get("optimize_s", nan), "data wait s": r.get("data_wait_s", nan),
        "D step s": r.get("d_step_s", nan), "D+G step s": r.get("dg_step_s", nan),
        "peak RSS GB": r["peak_rss_mb"] * 2**20 / 1e9, "load": r["load"],  # as train_speed.py's column
    } for r in results])
    args.output.mkdir(parents=True, exist_ok=True)
    report(table, f"Official code, training speed ({os.cpu_count()} CPUs, torch {results[0]['torch']}; "
                  f"median of {args.iters} timed after {args.warmup} warm-up, StarGAN in whole 5-step cycles / 5; "
                  f"the median of {max(args.repeat, 1)} process(es))",
           args.output / "official_speed.csv", digits=3)
    json_path = args.output / "official_speed.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {json_path} (python benchmarks/train_speed.py --official {json_path})")
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        sys.exit(child(arguments))
    from common import run

    run(lambda: main(arguments))
