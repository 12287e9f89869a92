"""pix2pix on the real facades, label maps -> photos: L1, PSNR and SSIM on held-out images,
before and after a short training run.

    python benchmarks/pix2pix_facades.py [--root DIR] [--steps 600] [--size 128] [--threads 1] [--precision fp32]

Trains the pix2pix_facades recipe (U-Net, batch norm, dropout, vanilla GAN + 100 x L1, batch 1,
direction BtoA) for --steps steps at the initial learning rate on all but the last --holdout
training images by sorted name (data.holdout), then translates the held-out label maps and scores
them against their photos, in both inference modes of translate-infer: as the official test script
does (batch norm on each image's own statistics, dropout on) and in eval mode. The table is printed
and written as holdout_scores.csv in the run folder. The default run takes about 10 minutes on one
core of a laptop-class CPU. Without the data it prints why and exits 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from common import SHARED_DATA, add_run_arguments, report, run
from torch import nn
from torch.utils.data import Dataset

from translate import config
from translate.data import HOLDOUT, build_dataset
from translate.eval.paired import PairedScores
from translate.methods import build_method, method_from_checkpoint
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train
from translate.train.runtime import Runtime, seed_everything

DEFAULT_ROOT = SHARED_DATA / "facades"
GENERATOR_FOR_SIZE = {128: "unet_128", 256: "unet_256"}  # a U-Net's depth takes its side down to 1x1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="facades in the aligned layout (ROOT/train)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batch 1)")
    parser.add_argument("--size", type=int, default=128, choices=sorted(GENERATOR_FOR_SIZE),
                        help="crop size; images are loaded at size * 286/256 as the recipe's 286 -> 256")
    parser.add_argument("--holdout", type=int, default=40, help="the last N training images, never trained on")
    add_run_arguments(parser)
    return parser.parse_args()


@torch.no_grad()
def score(generator: nn.Module, holdout: Dataset, official_mode: bool, device: torch.device) -> dict[str, float]:
    """Mean L1, PSNR (dB) and SSIM of G(label map) against the photo over the held-out images, one
    image at a time (translate/eval/paired.py, the `paired` metric of translate-eval). official_mode:
    norm layers use each image's own statistics and dropout acts, as the official test script runs
    without --eval (dropout seeded, so a rerun gives the same)."""
    generator.train(official_mode)
    torch.manual_seed(0)
    scores = PairedScores(device)
    for i in range(len(holdout)):
        sample = holdout[i]  # direction BtoA: A is the label map, B the photo
        scores.update(generator(sample["A"][None].to(device)), sample["B"][None].to(device))
    return scores.compute()


def score_both_modes(generator: nn.Module, holdout: Dataset, stage: str, device: torch.device) -> list[dict]:
    # Eval mode first: the official mode runs batch norm in training mode, which moves its running stats.
    return [{"model": stage, "inference": "eval=true", **score(generator, holdout, False, device)},
            {"model": stage, "inference": "eval=false (official)", **score(generator, holdout, True, device)}]


def main() -> int:
    args = parse_args()
    if not (args.root / "train").is_dir():
        print(f"skipped: no facades at {args.root} (expected {args.root}/train/*.jpg, photo|labels side by side); "
              f"pass --root DIR")
        return 0
    load_size = round(args.size * 286 / 256)
    cfg, name = config.load("pix2pix_facades", [
        f"data.root={args.root}", f"data.holdout={args.holdout}", f"data.crop_size={args.size}",
        f"data.load_size={load_size}", f"model.generator={GENERATOR_FOR_SIZE[args.size]}",
        "data.num_workers=1", f"train.max_steps={args.steps}", "train.log_every=50",
        f"train.save_every={args.steps}", f"train.image_every={args.steps}", f"runtime.threads={args.threads}",
        f"runtime.precision={args.precision}", f"runtime.device={args.device}", f"output_dir={args.output_dir}",
    ])
    device = Runtime.setup(cfg.runtime).device  # also sets the threads
    holdout = build_dataset(cfg.data, HOLDOUT, paired=True, train=False)

    seed_everything(cfg.train.seed)  # the run's own initial weights, as the trainer builds them
    untrained = build_method(cfg).generator().to(device)
    rows = score_both_modes(untrained, holdout, "untrained", device)

    run_dir = train(cfg, f"{name}-benchmark")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state)
    rows += score_both_modes(method.generator().to(device), holdout, f"trained {args.steps} steps", device)

    table = pd.DataFrame(rows)
    report(table, f"pix2pix facades labels -> photos, {len(holdout)} held-out images at {args.size} px "
                  f"(L1 on a 0-1 scale, PSNR in dB):", run_dir / "holdout_scores.csv")
    return 0


if __name__ == "__main__":
    run(main)
