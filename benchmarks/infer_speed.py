"""Inference speed of translate-infer: images per second on a folder of 256x256 images, batched
and in the fast mode, against a batch-1 fp32 baseline like the official test script's.

    python benchmarks/infer_speed.py [--images 64] [--threads 0] [--generator resnet_9blocks]

Writes --images JPEGs (256x256) to a temporary folder and a CycleGAN generator (resnet_9blocks,
instance norm, the official test default) as an official-style state dict, then runs
translate.infer.translate_folder, the function behind `translate-infer`, in each mode: decoding,
resizing, the network and writing the PNGs all count. The baseline is what the official
test.py does: one image at a time, fp32, decoding in the main process (num_threads=0). Each mode
first translates a few images untimed (oneDNN builds its kernels on first use). Prints the table
(and writes infer_speed.csv / .md to --output) with the speed-up over the baseline and the load
average; on a machine shared with other jobs the figures are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import report, run
from train_speed import smooth_image

from translate.config import InferConfig, ModelConfig
from translate.infer import translate_folder
from translate.nets import build_generator

MODES = [  # (name, batch_size, precision, channels_last, workers)
    ("baseline: batch 1, fp32, no workers (official test.py)", 1, "fp32", False, 0),
    ("batch 1, fp32, 2 workers", 1, "fp32", False, 2),
    ("batch 8, fp32, 2 workers", 8, "fp32", False, 2),
    ("batch 1, bf16, 2 workers", 1, "bf16", False, 2),
    ("batch 8, bf16, 2 workers", 8, "bf16", False, 2),
    ("batch 8, bf16, channels_last, 2 workers", 8, "bf16", True, 2),
    ("batch 1, bf16, channels_last, 2 workers", 1, "bf16", True, 2),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images in the folder")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--generator", default="resnet_9blocks", choices=("resnet_6blocks", "resnet_9blocks"))
    parser.add_argument("--modes", default="all", help="comma-separated mode numbers (0 = baseline), or all")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"), help="where the CSV goes")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = MODES if args.modes == "all" else [MODES[int(i)] for i in args.modes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="infer_speed-") as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        for folder, count in (("images", args.images), ("warmup", 4)):
            (tmp / folder).mkdir()
            for i in range(count):
                smooth_image(rng, 256, 256).save(tmp / folder / f"{i:05d}.jpg", quality=90)
        torch.manual_seed(0)
        checkpoint = tmp / "latest_net_G_A.pth"
        torch.save(build_generator(ModelConfig(generator=args.generator), 3, 3).state_dict(), checkpoint)
        for name, batch, precision, channels_last, workers in modes:
            def translate(folder: str, batch=batch, precision=precision, channels_last=channels_last,
                          workers=workers) -> float:
                out = tmp / f"out-{folder}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                count, _ = translate_folder(InferConfig(
                    checkpoint=str(checkpoint), input=str(tmp / folder), output=str(out), batch_size=batch,
                    precision=precision, channels_last=channels_last, workers=workers, device="cpu"))
                return count / (time.perf_counter() - start)

            translate("warmup")
            rows.append({"mode": name, "batch": batch, "precision": precision, "channels_last": channels_last,
                         "workers": workers, "images/s": translate("images"), "load": os.getloadavg()[0]})
            print(f"{name}: {rows[-1]['images/s']:.2f} images/s (load {rows[-1]['load']:.2f})", flush=True)
    table = pd.DataFrame(rows)
    table["speed-up"] = table["images/s"] / table["images/s"].iloc[0]
    args.output.mkdir(parents=True, exist_ok=True)
    report(table, f"translate-infer, {args.generator} on {args.images} images of 256x256, "
                  f"{torch.get_num_threads()} threads; speed-up over the first row",
           args.output / "infer_speed.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
