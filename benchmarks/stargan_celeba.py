"""StarGAN on the real CelebA subset: the paper's attribute-classification accuracy on held-out
faces, before and after a short training run.

    python benchmarks/stargan_celeba.py [--root DIR] [--iterations 2000] [--batch-size 16] [--size 32] [--conv-dim 32]
        [--classifier-steps 200] [--threads 1] [--precision fp32]

Trains the stargan_celeba recipe (hair colour, Male, Young) on the shared subset of 1,500 faces
stored at 89x109 (img_align_celeba_89x109): the official CenterCrop(178) -> Resize(128) becomes
CenterCrop(89) -> 64 px, or 32 px by default to train on a CPU in minutes. The first --test-size
rows of the official seed-1234 shuffle are held out (data.test_size). The networks are narrowed
(--conv-dim, for G and D) to fit a CPU; the losses, n_critic and the rates are the recipe's. A timm
classifier (--classifier-arch, random init) is trained on the real training attributes, then
scores, per attribute: its accuracy on the real held-out faces, and how often it finds the target
attribute (the official test's flipped attribute or chosen hair colour,
translate/eval/attributes.py) in G's translations of the held-out faces, for the untrained G and
after training. G runs in training mode (instance norm on each image's own statistics) as the
official test does. The table is printed and written as attribute_accuracy.csv in the run folder.
The default run takes about 25 minutes on one core. Without the data it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from common import SHARED_DATA, add_run_arguments, report, run

from translate import config
from translate.data import build_dataset
from translate.eval.attributes import attribute_accuracy, train_attribute_classifier
from translate.methods import build_method, method_from_checkpoint
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train
from translate.train.runtime import Runtime, seed_everything

DEFAULT_ROOT = SHARED_DATA / "celeba"
IMAGE_DIR = "img_align_celeba_89x109"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"list_attr_celeba.txt and {IMAGE_DIR}/ (or --image-dir)")
    parser.add_argument("--image-dir", default=IMAGE_DIR)
    parser.add_argument("--center-crop", type=int, default=89, help="the official 178 at half size")
    parser.add_argument("--size", type=int, default=32, help="crop size (the official 128 is 64 at half size)")
    parser.add_argument("--test-size", type=int, default=100, help="held-out rows (data.test_size)")
    parser.add_argument("--iterations", type=int, default=2000, help="StarGAN training steps (D updates)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--conv-dim", type=int, default=32, help="G's and D's first layer width (official 64)")
    parser.add_argument("--classifier-arch", default="resnet18", help="a timm model name, or tiny")
    parser.add_argument("--classifier-steps", type=int, default=200)
    parser.add_argument("--classifier-batch-size", type=int, default=32)
    add_run_arguments(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not (args.root / "list_attr_celeba.txt").is_file() or not (args.root / args.image_dir).is_dir():
        print(f"skipped: no CelebA at {args.root} (expected {args.root}/list_attr_celeba.txt and "
              f"{args.root}/{args.image_dir}/*.jpg); pass --root DIR")
        return 0
    cfg, name = config.load("stargan_celeba", [
        f"data.root={args.root}", f"data.image_dir={args.image_dir}", f"data.center_crop={args.center_crop}",
        f"data.crop_size={args.size}", f"data.load_size={args.size}", f"data.test_size={args.test_size}",
        "data.num_workers=1", f"stargan.conv_dim={args.conv_dim}", f"stargan.d_conv_dim={args.conv_dim}",
        # D's strided convs halve the side: 6 of them end on 1x1 at 64 px (2x2 at the official 128), 5 at 32 px
        f"stargan.d_repeat_num={min(6, args.size.bit_length() - 1)}",
        f"train.iterations={args.iterations}", "train.iterations_decay=0", f"train.batch_size={args.batch_size}",
        "train.log_every=50", f"train.save_every={args.iterations}", f"train.image_every={args.iterations}",
        f"runtime.threads={args.threads}", f"runtime.precision={args.precision}", f"runtime.device={args.device}",
        f"output_dir={args.output_dir}",
    ])
    device = Runtime.setup(cfg.runtime).device  # also sets the threads
    names = list(cfg.data.attributes)
    test = build_dataset(cfg.data, "test", paired=False, train=False)

    start = time.time()
    classifier = train_attribute_classifier(
        build_dataset(cfg.data, "train", paired=False, train=True), len(names), args.classifier_steps,
        args.classifier_batch_size, arch=args.classifier_arch, seed=cfg.train.seed, device=device, log_every=50)
    print(f"classifier trained in {time.time() - start:.0f} s")

    def score(generator: torch.nn.Module) -> pd.DataFrame:
        generator.to(device).train()  # as the official test: instance norm on each image's own statistics
        return attribute_accuracy(classifier, generator, test, names, batch_size=16, device=device)

    seed_everything(cfg.train.seed)  # the run's own initial weights, as the trainer builds them
    before = score(build_method(cfg).generator())

    run_dir = train(cfg, f"{name}-benchmark")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state)
    after = score(method.generator())

    table = pd.DataFrame({
        "attribute": before["attribute"], "classifier_real": before["real_accuracy"],
        "target_found_untrained": before["target_found"],
        f"target_found_{args.iterations}_steps": after["target_found"],
    })
    report(table, f"StarGAN CelebA attribute accuracy, {len(test)} held-out faces at {args.size} px "
                  f"({args.classifier_arch} classifier, {args.classifier_steps} steps on the training faces):",
           run_dir / "attribute_accuracy.csv", digits=3)
    return 0


if __name__ == "__main__":
    run(main)
