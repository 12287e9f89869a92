"""CycleGAN learns photo -> label maps on the synthetic scenes, and only with all its losses.

It trains the README's main job (recipe cyclegan_synthetic, 600 steps at 32 px) and scores
G_A(photo), read back to classes by nearest palette colour, against the true class maps of
held-out test scenes. Measured while writing this test (pixel accuracy / cycle L1 on the test
photos): untrained 0.20 / 0.47, identity (copying the photo) 0.30; trained 0.52-0.58 / 0.24-0.27;
with the generators' adversarial loss switched off 0.28 (it never learns the label colours);
with the cycle loss off 0.46 / 0.42 (labels of a sort, but not of the input it was given).
"""

import dataclasses

import torch

from translate import config
from translate.data import build_dataset
from translate.data.scenes import SCENE_CLASSES, colors_to_classes
from translate.eval.segmentation import score_label_maps
from translate.methods import build_method, method_from_checkpoint
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train


def held_out_scenes(cfg):
    test_cfg = dataclasses.replace(cfg.data, scenes_count=64)
    return build_dataset(test_cfg, "test", paired=True, train=False)


@torch.no_grad()
def scores(cfg, method) -> tuple[float, float]:
    """(photo -> label pixel accuracy, mean |G_B(G_A(photo)) - photo|) on the test scenes."""
    method.eval()
    test_set = held_out_scenes(cfg)
    accuracy = score_label_maps(method.generator("AtoB"), test_set, colors_to_classes,
                                len(SCENE_CLASSES))["pixel_accuracy"]
    photos = torch.stack([test_set[i]["A"] for i in range(len(test_set))])
    cycle = (method.nets["G_B"](method.nets["G_A"](photos)) - photos).abs().mean()
    return accuracy, float(cycle)


def test_copying_the_photo_scores_low(tmp_path):
    cfg, _ = config.load("cyclegan_synthetic", [])
    accuracy = score_label_maps(torch.nn.Identity(), held_out_scenes(cfg), colors_to_classes,
                                len(SCENE_CLASSES))["pixel_accuracy"]
    assert accuracy < 0.35


def test_cyclegan_learns_photo_to_labels(tmp_path):
    cfg, _ = config.load("cyclegan_synthetic", [f"output_dir={tmp_path}", "data.num_workers=0",
                                                "train.log_every=100"])
    torch.manual_seed(cfg.train.seed)
    before_accuracy, before_cycle = scores(cfg, build_method(cfg))  # the run's initial weights

    run_dir = train(cfg, "learn")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state)
    accuracy, cycle = scores(cfg, method)
    print(f"pixel accuracy {before_accuracy:.3f} -> {accuracy:.3f}; cycle L1 {before_cycle:.3f} -> {cycle:.3f}")

    assert before_accuracy < 0.3
    assert accuracy > 0.42 and accuracy > before_accuracy + 0.2  # needs the adversarial loss
    assert cycle < 0.7 * before_cycle  # needs the cycle loss
