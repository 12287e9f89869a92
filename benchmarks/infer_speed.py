"""Inference speed of translate-infer: images per second on a folder of 256x256 images, batched
and in the fast mode, against a batch-1 fp32 baseline like the official test script's.

    python benchmarks/infer_speed.py [--images 64] [--threads 0] [--generator resnet_9blocks]

Writes --images JPEGs (256x256) to a temporary folder and a CycleGAN generator (resnet_9blocks,
instance norm, the official test default; or pix2pix's unet_256) as an official-style state
dict, then runs translate.infer.translate_folder, the function behind `translate-infer`, in each
mode: decoding, resizing, the network and writing the PNGs all count. The baseline is what the
official test.py does: one image at a time, fp32, decoding in the main process (num_threads=0),
torch's own layers (plain_layers=true; the last row is the same with the CPU layer
reformulations, translate-infer's default).
Each mode first translates a few images untimed (oneDNN builds its kernels on first use; for
int8, inductor builds its own, cached on disk). Prints the table (and writes infer_speed.csv /
.md to --output) with the speed-up over the baseline and the load average; on a machine shared
with other jobs the figures are noisy.

int8 (needs pip install ".[int8]") quantises and compiles the generator at the start of each
folder: "setup s" is that time (with no quantised graph kept from an earlier run: int8_cache is
off here), "images/s" and the speed-up leave it out (the rate on a large folder), "images/s
with setup" keep it (the rate on this folder). "grey levels from row 1" is the
mean difference of each mode's PNGs from the first mode's.
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
from PIL import Image
from train_speed import smooth_image

from translate import quantize
from translate.config import InferConfig, ModelConfig
from translate.errors import UserError
from translate.infer import translate_folder
from translate.nets import build_generator

MODES = [  # (name, batch_size, precision, channels_last, workers, plain_layers)
    ("baseline: batch 1, fp32, no workers, torch's layers (official test.py)", 1, "fp32", False, 0, True),
    ("batch 1, fp32, 2 workers", 1, "fp32", False, 2, False),
    ("batch 8, fp32, 2 workers", 8, "fp32", False, 2, False),
    ("batch 1, bf16, 2 workers", 1, "bf16", False, 2, False),
    ("batch 8, bf16, 2 workers", 8, "bf16", False, 2, False),
    ("batch 8, bf16, channels_last, 2 workers", 8, "bf16", True, 2, False),
    ("batch 1, bf16, channels_last, 2 workers", 1, "bf16", True, 2, False),
    ("batch 1, int8, 2 workers", 1, "int8", False, 2, False),
    ("batch 8, int8, 2 workers", 8, "int8", False, 2, False),
    ("batch 1, int8, 1 worker", 1, "int8", False, 1, False),
    ("batch 1, fp32, no workers (the baseline with the CPU layers)", 1, "fp32", False, 0, False),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images in the folder")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--generator", default="resnet_9blocks",
                        choices=("resnet_6blocks", "resnet_9blocks", "unet_256"),
                        help="unet_256: pix2pix's (batch norm, dropout; run in train mode as the official test)")
    parser.add_argument("--modes", default="all", help="comma-separated mode numbers (0 = baseline), or all")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"), help="where the CSV goes")
    return parser.parse_args()


def timed(module, name: str) -> list[float]:
    """Replace module.name by a wrapper that appends each call's duration to the returned list."""
    durations, function = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - start)
    setattr(module, name, wrapper)
    return durations


def grey_level_difference(folder: Path, reference: Path) -> float:
    """Mean |difference| between the PNGs of two output folders, in grey levels (0-255)."""
    total = [np.abs(np.asarray(Image.open(f), dtype=np.int16) - np.asarray(Image.open(reference / f.name),
                                                                           dtype=np.int16)).mean()
             for f in sorted(folder.iterdir())]
    return float(np.mean(total))


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = MODES if args.modes == "all" else [MODES[int(i)] for i in args.modes.split(",")]
    try:
        quantize.check_int8_available()
    except UserError as e:  # the other rows still mean something
        print(f"int8 rows left out: {e}", flush=True)
        modes = [mode for mode in modes if mode[2] != "int8"]
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
        pix2pix = args.generator.startswith("unet")
        model = ModelConfig(generator=args.generator, norm="batch" if pix2pix else "instance", dropout=pix2pix)
        torch.save(build_generator(model, 3, 3).state_dict(), checkpoint)
        setup = timed(quantize, "quantize_generator")  # int8's quantising and compiling, once per folder
        first_out = None
        for name, batch, precision, channels_last, workers, plain in modes:
            def translate(folder: str, batch=batch, precision=precision, channels_last=channels_last,
                          workers=workers, plain=plain) -> tuple[int, float, Path]:
                out = tmp / f"out-{batch}-{precision}-{channels_last}-{workers}-{plain}-{folder}"
                shutil.rmtree(out, ignore_errors=True)
                setup.clear()
                start = time.perf_counter()
                count, _ = translate_folder(InferConfig(
                    checkpoint=str(checkpoint), input=str(tmp / folder), output=str(out), batch_size=batch,
                    precision=precision, channels_last=channels_last, workers=workers, device="cpu",
                    plain_layers=plain, int8_cache=""))  # setup s: a first run's, no graph kept from the last
                return count, time.perf_counter() - start, out

            translate("warmup")  # oneDNN's kernels; for int8 also inductor's, cached on disk
            count, seconds, out = translate("images")
            first_out = first_out or out
            rows.append({"mode": name, "batch": batch, "precision": precision, "channels_last": channels_last,
                         "workers": workers, "images/s": count / (seconds - sum(setup)),
                         "setup s": sum(setup), "images/s with setup": count / seconds,
                         "grey levels from row 1": grey_level_difference(out, first_out),
                         "load": os.getloadavg()[0]})
            print(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else str(v) for k, v in rows[-1].items()),
                  flush=True)
    table = pd.DataFrame(rows)
    table["speed-up"] = table["images/s"] / table["images/s"].iloc[0]
    args.output.mkdir(parents=True, exist_ok=True)
    report(table, f"translate-infer, {args.generator} on {args.images} images of 256x256, "
                  f"{torch.get_num_threads()} threads; speed-up over the first row",
           args.output / "infer_speed.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
