"""CycleGAN learns photo -> label maps on the synthetic scenes, and only with all its losses.

The score is the per-pixel accuracy of G_A(photo), read back to classes by nearest palette colour,
against the scenes' true class maps on held-out test scenes. The untrained model and the identity
(copying the photo) both score low; a briefly trained CycleGAN scores far higher.
"""

import dataclasses

import torch

from conftest import tiny_config
from translate.data import build_dataset
from translate.data.scenes import SCENE_CLASSES, colors_to_classes
from translate.eval.segmentation import score_label_maps
from translate.methods import build_method
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train

STEPS = 500


def photo_to_label_accuracy(cfg, generator) -> float:
    test_cfg = dataclasses.replace(cfg.data, scenes_count=64)
    test_set = build_dataset(test_cfg, "test", paired=True, train=False)
    generator.eval()
    return score_label_maps(generator, test_set, colors_to_classes, len(SCENE_CLASSES))["pixel_accuracy"]


def trained_accuracy(tmp_path, **overrides) -> tuple[float, float]:
    cfg = tiny_config(tmp_path, data__scenes_count=400, train__batch_size=4, train__epochs=4,
                      train__epochs_decay=1, train__max_steps=STEPS, train__log_every=100,
                      train__save_every=STEPS, train__image_every=STEPS, model__ngf=16, model__ndf=16,
                      runtime__deterministic=False, **overrides)
    untrained = build_method(cfg)  # the same seed, so the same initial weights as the run
    before = photo_to_label_accuracy(cfg, untrained.generator("AtoB"))
    run_dir = train(cfg, "learn")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = build_method(cfg)
    for name, net in method.nets.items():
        net.load_state_dict(state["nets"][name])
    return before, photo_to_label_accuracy(cfg, method.generator("AtoB"))


def test_identity_scores_low():
    cfg = tiny_config(__import__("pathlib").Path("."))
    accuracy = photo_to_label_accuracy(cfg, torch.nn.Identity())
    assert accuracy < 0.35


def test_cyclegan_learns_photo_to_labels(tmp_path):
    before, after = trained_accuracy(tmp_path)
    print(f"photo -> label pixel accuracy: untrained {before:.3f}, trained {after:.3f}")
    assert before < 0.35
    assert after > 0.6 and after > before + 0.3
