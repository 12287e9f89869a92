"""Does the fast mode train as well as fp32? The learning checks of the test suite, run in both
precisions (and several seeds for the noise), with their metrics side by side.

    python benchmarks/fast_mode_quality.py [--methods cyclegan,pix2pix,stargan] [--precision fp32,bf16]
                                           [--seeds 0] [--threads 1] [--channels-last]

Each run is the learning test's own run, through translate.train.loop.train, scored with the
test's own helpers (imported from tests/, so both judge the same way):
  cyclegan  recipe cyclegan_synthetic, 600 steps: photo -> label pixel accuracy on held-out scenes
            (higher is better; the test wants > 0.42) and the cycle L1 (lower is better)
  pix2pix   recipe pix2pix_synthetic, 600 steps: L1 of G(label map) to its photo (lower; test < 0.34)
            and to another scene's photo (should stay well above)
  stargan   recipe stargan_synthetic, 500 steps at batch 8: per attribute, the share of held-out faces
            whose asked-for change the world's oracle sees (test: mean >= 0.85) and the share of the
            other attributes kept (test: min >= 0.85); the table shows the means over attributes.
The table is printed and written as fast_mode_quality.csv / .md to --output. One run takes one to
a few minutes on one core.

--int8 also scores each fp32-trained model with its generators quantised as `translate-infer
precision=int8` quantises them (translate/quantize.py: calibrated on 8 training inputs, the norm
mode each check uses: train-mode statistics for StarGAN, eval mode for pix2pix's batch norm),
in rows "fp32 -> int8", with the mean difference of the int8 and fp32 generators' outputs on
held-out inputs. Needs torchao (pip install ".[int8]").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import report, run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_cyclegan_learns import scores as cyclegan_scores  # noqa: E402
from test_pix2pix import photo_errors  # noqa: E402
from test_stargan import transfer_scores  # noqa: E402

from translate import config  # noqa: E402
from translate.data import build_dataset  # noqa: E402
from translate.methods import build_method, method_from_checkpoint  # noqa: E402
from translate.train.checkpoint import latest_checkpoint  # noqa: E402
from translate.train.loop import train  # noqa: E402

RECIPES = {
    "cyclegan": ("cyclegan_synthetic", []),
    "pix2pix": ("pix2pix_synthetic", []),
    "stargan": ("stargan_synthetic", ["train.iterations=500", "train.iterations_decay=150", "train.batch_size=8"]),
}


def measure(cfg: config.RunConfig, method_name: str, method) -> dict[str, float]:
    if method_name == "cyclegan":
        accuracy, cycle = cyclegan_scores(cfg, method)
        return {"pixel accuracy (up)": accuracy, "cycle L1 (down)": cycle}
    if method_name == "pix2pix":
        own, other = photo_errors(cfg, method.generator())
        return {"L1 to own photo (down)": own, "L1 to other photo (up)": other}
    scores = transfer_scores(cfg, method.generator())
    return {"change shown (up)": sum(v[0] for v in scores.values()) / len(scores),
            "change shown, worst attribute (up)": min(v[0] for v in scores.values()),
            "others kept (up)": sum(v[1] for v in scores.values()) / len(scores)}


def generator_inputs(cfg: config.RunConfig, method_name: str, split: str, count: int) -> dict[str, list]:
    """Per generator of the method, the inputs (tuples of batches of 1) of the first `count` samples
    of `split` that it translates."""
    dataset = build_dataset(cfg.data, split, paired=method_name == "pix2pix", train=False)
    samples = [dataset[i] for i in range(count)]
    if method_name == "stargan":
        return {"G": [(s["image"][None], s["label"][None]) for s in samples]}
    sides = {"G_A": "A", "G_B": "B"} if method_name == "cyclegan" else {"G": "A"}  # pix2pix: A is its input
    return {name: [(s[side][None],) for s in samples] for name, side in sides.items()}


@torch.no_grad()
def quantise_generators(cfg: config.RunConfig, method_name: str, method) -> float:
    """Replace the trained method's generators by their int8 versions, each calibrated on the first
    8 training inputs it translates, in the norm mode its check runs it in (train-mode statistics
    for StarGAN, eval mode otherwise). Returns the mean |int8 - fp32| of their outputs on 16
    held-out inputs, in grey levels."""
    from translate.quantize import CALIBRATION_IMAGES, quantize_generator

    eval_mode = method_name != "stargan"
    calibration = generator_inputs(cfg, method_name, "train", CALIBRATION_IMAGES)
    differences = []
    for name, held_out in generator_inputs(cfg, method_name, "test", 16).items():
        fp32 = method.nets[name].train(not eval_mode)
        int8 = quantize_generator(fp32, calibration[name], eval_mode=eval_mode)
        differences += [float((int8(*x) - fp32(*x)).abs().mean()) * 127.5 for x in held_out]
        method.nets[name] = int8
    return sum(differences) / len(differences)


def one_run(method_name: str, precision: str, seed: int, args: argparse.Namespace, tmp: Path) -> list[dict]:
    recipe, extra = RECIPES[method_name]
    cfg, _ = config.load(recipe, [
        f"output_dir={tmp}", "data.num_workers=0", "train.log_every=100", f"train.seed={seed}",
        f"data.scenes_seed={seed}", f"runtime.precision={precision}", f"runtime.threads={args.threads}",
        f"runtime.channels_last={args.channels_last}", *extra, *args.set])
    start = time.perf_counter()
    run_dir = train(cfg, f"{method_name}-{precision}-{seed}")
    minutes = (time.perf_counter() - start) / 60
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state) if method_name != "stargan" else build_method(cfg)
    if method_name == "stargan":
        method.nets["G"].load_state_dict(state["nets"]["G"])
    rows = [{"method": method_name, "precision": precision, "seed": seed, "train minutes": minutes,
             **measure(cfg, method_name, method)}]
    if args.int8 and precision == "fp32":
        grey_levels = quantise_generators(cfg, method_name, method)
        rows.append({**rows[0], "precision": "fp32 -> int8", **measure(cfg, method_name, method),
                     "int8 - fp32 outputs (grey levels)": grey_levels})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", default="cyclegan,pix2pix,stargan")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (more: the noise)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="also runtime.channels_last=true")
    parser.add_argument("--int8", action="store_true", help="also score fp32 models quantised to int8")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run, e.g. runtime.winograd_min_channels=1 (repeatable)")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fast_mode_quality-") as tmp:
        for method_name in args.methods.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for precision in args.precision.split(","):
                    torch.manual_seed(seed)
                    for row in one_run(method_name, precision, seed, args, Path(tmp)):
                        rows.append(row)
                        print(row, flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    for method_name, table in pd.DataFrame(rows).groupby("method", sort=False):
        report(table.dropna(axis=1, how="all"), f"{method_name}: fp32 against the fast mode",
               args.output / f"fast_mode_quality_{method_name}.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
