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


def one_run(method_name: str, precision: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    recipe, extra = RECIPES[method_name]
    cfg, _ = config.load(recipe, [
        f"output_dir={tmp}", "data.num_workers=0", "train.log_every=100", f"train.seed={seed}",
        f"data.scenes_seed={seed}", f"runtime.precision={precision}", f"runtime.threads={args.threads}",
        f"runtime.channels_last={args.channels_last}", *extra])
    start = time.perf_counter()
    run_dir = train(cfg, f"{method_name}-{precision}-{seed}")
    minutes = (time.perf_counter() - start) / 60
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state) if method_name != "stargan" else build_method(cfg)
    if method_name == "stargan":
        method.nets["G"].load_state_dict(state["nets"]["G"])
    return {"method": method_name, "precision": precision, "seed": seed, "train minutes": minutes,
            **measure(cfg, method_name, method)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", default="cyclegan,pix2pix,stargan")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (more: the noise)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="also runtime.channels_last=true")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fast_mode_quality-") as tmp:
        for method_name in args.methods.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for precision in args.precision.split(","):
                    torch.manual_seed(seed)
                    rows.append(one_run(method_name, precision, seed, args, Path(tmp)))
                    print(rows[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    for method_name, table in pd.DataFrame(rows).groupby("method", sort=False):
        report(table.dropna(axis=1, how="all"), f"{method_name}: fp32 against the fast mode",
               args.output / f"fast_mode_quality_{method_name}.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
