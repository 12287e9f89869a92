"""pix2pix on the shared spine: its losses and step order, recipes, official checkpoints, and that it learns."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE, RecordingContext
from PIL import Image
from test_infer import official_test_output, smooth_images

from translate import config
from translate.config import InferConfig
from translate.data import build_dataset
from translate.errors import UserError
from translate.infer import translate_folder
from translate.methods import build_method, method_from_checkpoint
from translate.methods.pix2pix import Pix2Pix
from translate.nets import UnetGenerator
from translate.train.checkpoint import latest_checkpoint, list_checkpoints
from translate.train.loop import train


def synthetic_config(tmp_path, *overrides: str) -> config.RunConfig:
    cfg, _ = config.load("pix2pix_synthetic", [f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", *overrides])
    return cfg


def paired_batch(cfg: config.RunConfig, size: int = 2) -> dict:
    dataset = build_dataset(cfg.data, "train", paired=True, train=True)
    return {key: torch.stack([dataset[i][key] for i in range(size)]) for key in ("A", "B")}


# ---------------------------------------------------------------------------------------------
# The method


def test_discriminator_sees_input_and_output_side_by_side(tmp_path):
    cfg = synthetic_config(tmp_path)
    method = build_method(cfg)
    assert isinstance(method, Pix2Pix) and Pix2Pix.paired
    assert method.nets["D"].model[0].in_channels == 6
    seen = []
    method.nets["D"].register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    batch = paired_batch(cfg)
    method.train()
    method.training_step(batch, RecordingContext(method))
    assert len(seen) == 3  # fake and real for D's step, fake again for G's
    for inputs in seen:
        assert inputs.shape == (2, 6, 32, 32)
        assert torch.equal(inputs[:, :3], batch["A"])  # conditioned on the input
    assert torch.equal(seen[1][:, 3:], batch["B"])


def test_losses_and_step_order_are_the_official_ones(tmp_path):
    cfg = synthetic_config(tmp_path)
    method = build_method(cfg)
    before = copy.deepcopy(method)
    batch = paired_batch(cfg)
    ctx = RecordingContext(method)
    method.train()
    torch.manual_seed(1)  # the same dropout masks in G below
    losses = method.training_step(batch, ctx)
    assert ctx.order == ["D", "G"]
    assert set(losses) == {"D", "G_GAN", "G_L1"}

    A, B = batch["A"], batch["B"]
    before.train()
    torch.manual_seed(1)
    fake_B = before.nets["G"](A)
    assert torch.allclose(fake_B, method.visuals()["fake_B"], atol=1e-6)
    bce = F.binary_cross_entropy_with_logits
    D_old, D_new = before.nets["D"], method.nets["D"]
    with torch.no_grad():
        pred_fake, pred_real = D_old(torch.cat([A, fake_B], 1)), D_old(torch.cat([A, B], 1))
        expected_D = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
        # G's step judges its output with the D that has just stepped
        pred_G = D_new(torch.cat([A, fake_B], 1))
    assert torch.allclose(losses["D"], expected_D, rtol=1e-5)
    assert torch.allclose(losses["G_GAN"], bce(pred_G, torch.ones_like(pred_G)), rtol=1e-5)
    assert torch.allclose(losses["G_L1"], 100.0 * (fake_B - B).abs().mean(), rtol=1e-5)
    assert list(method.visuals()) == ["real_A", "fake_B", "real_B"]
    for name in ("G", "D"):  # both stepped
        pairs = zip(method.nets[name].parameters(), before.nets[name].parameters())
        assert all(not torch.equal(p, q) for p, q in pairs), name


# ---------------------------------------------------------------------------------------------
# Config and recipes


def test_recipes_are_the_paper_settings():
    for name in ("pix2pix_facades", "pix2pix_cityscapes"):
        cfg, _ = config.load(name, [])
        assert cfg.method == "pix2pix" and cfg.data.direction == "BtoA"
        m = cfg.model
        assert (m.generator, m.discriminator, m.norm, m.dropout, m.ngf, m.ndf) == ("unet_256", "basic", "batch",
                                                                                True, 64, 64)
        assert (cfg.pix2pix.gan_mode, cfg.pix2pix.lambda_L1) == ("vanilla", 100.0)
        assert (cfg.train.epochs, cfg.train.epochs_decay, cfg.train.batch_size) == (100, 100, 1)
        assert (cfg.data.preprocess, cfg.data.load_size, cfg.data.crop_size) == ("resize_and_crop", 286, 256)
    assert config.load("pix2pix_facades", [])[0].data.format == "aligned"
    assert config.load("pix2pix_cityscapes", [])[0].data.format == "cityscapes"
    assert config.RunConfig().pix2pix == config.Pix2PixConfig("vanilla", 100.0)


@pytest.mark.parametrize("override, message", [
    ("pix2pix.lambda_L1=-1", "pix2pix.lambda_L1 must not be negative"),
    ("pix2pix.gan_mode=vanila", "did you mean vanilla?"),
    ("pix2pix.lambda_l1=10", "did you mean pix2pix.lambda_L1?"),
])
def test_bad_pix2pix_options_are_one_line_errors(override, message):
    with pytest.raises(UserError) as e:
        config.load("pix2pix_synthetic", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unet_32_keeps_32_px():
    cfg, _ = config.load("pix2pix_synthetic", [])
    G = build_method(cfg).generator()
    assert isinstance(G, UnetGenerator) and G.num_downs == 5
    assert G(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_cli_mismatched_pair_folders_is_one_line_exit_2(tmp_path):
    for folder, names in (("trainA", ("1", "2")), ("trainB", ("1",))):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (8, 8)).save(tmp_path / "data" / folder / f"{name}.png")
    r = subprocess.run([sys.executable, "-m", "translate.cli", "recipe=pix2pix_facades", "data.format=unaligned",
                        f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and str(tmp_path / "data" / "trainA" / "2") in r.stderr
    assert "no partner" in r.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# Inference: official pix2pix generators and translate's own checkpoints


@pytest.fixture
def official_unet(tmp_path):
    if not REFERENCE.is_dir():
        pytest.skip("../shared/fixtures/reference not found")
    state = torch.load(REFERENCE / "pix2pix_unet256_G.pt", weights_only=True)["state_dict"]
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    reference = UnetGenerator(3, 3, 8, ngf=16, norm="batch", dropout=True)  # the fixture's options (KEYS.md)
    reference.load_state_dict(state)
    return path, reference


def test_official_pix2pix_checkpoint_in_eval_mode_matches_official_test_script(tmp_path, official_unet):
    path, reference = official_unet
    smooth_images(tmp_path / "testB", 3, (300, 260))
    count, out = translate_folder(InferConfig(checkpoint=str(path), input=str(tmp_path / "testB"),
                                              output=str(tmp_path / "out"), size=256, eval=True))
    assert count == 3
    reference.eval()
    for i in range(3):
        ours = np.asarray(Image.open(out / f"img{i}.png"))
        theirs = official_test_output(reference, tmp_path / "testB" / f"img{i}.png", 256)
        assert ours.shape == (256, 256, 3)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_official_pix2pix_checkpoint_in_train_mode_runs_image_by_image(tmp_path, official_unet):
    """The official default: batch norm on each image's own statistics, dropout on. Each image must
    go through alone, so its output cannot depend on the other images in the folder."""
    path, _ = official_unet
    smooth_images(tmp_path / "three", 3, (64, 48))
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "img0.png").write_bytes((tmp_path / "three" / "img0.png").read_bytes())
    outputs = {}
    for folder in ("three", "one"):
        torch.manual_seed(0)  # the same dropout masks for img0, the first image in both folders
        count, out = translate_folder(InferConfig(checkpoint=str(path), input=str(tmp_path / folder),
                                                  output=str(tmp_path / f"out_{folder}"), size=256, batch_size=8))
        outputs[folder] = [np.asarray(Image.open(out / f"img{i}.png")) for i in range(count)]
    assert len(outputs["three"]) == 3
    assert np.array_equal(outputs["three"][0], outputs["one"][0])
    translate_folder(InferConfig(checkpoint=str(path), input=str(tmp_path / "one"), output=str(tmp_path / "eval"),
                                 size=256, eval=True))
    in_eval_mode = np.asarray(Image.open(tmp_path / "eval" / "img0.png"))
    for image in outputs["three"]:
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        # Batch statistics normalise every layer: far livelier than the untrained eval-mode output.
        assert image.std() > 4 * in_eval_mode.std()


def test_translate_pix2pix_checkpoint_in_translate_infer(tmp_path):
    cfg = synthetic_config(tmp_path, "train.max_steps=2")
    run_dir = train(cfg, "tiny")
    (checkpoint,) = list_checkpoints(run_dir / "checkpoints")
    smooth_images(tmp_path / "labels", 3, (32, 32))
    translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "labels"),
                                 output=str(tmp_path / "out"), size=32, eval=True))
    method = method_from_checkpoint(torch.load(checkpoint, weights_only=True))
    G = method.generator().eval()
    for i in range(3):
        ours = np.asarray(Image.open(tmp_path / "out" / f"img{i}.png"))
        theirs = official_test_output(G, tmp_path / "labels" / f"img{i}.png", 32)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------
# It learns: label maps -> photos of the synthetic scenes


@torch.no_grad()
def photo_errors(cfg: config.RunConfig, generator: torch.nn.Module) -> tuple[float, float]:
    """Mean L1 (in [-1, 1] units) between G(label map) and the scene's own photo, and between
    G(label map) and the photo of another scene, over held-out test scenes."""
    test_set = build_dataset(dataclasses.replace(cfg.data, scenes_count=64), "test", paired=True, train=False)
    labels = torch.stack([s["A"] for s in test_set])  # direction BtoA: A is the label map
    photos = torch.stack([s["B"] for s in test_set])
    fakes = generator.eval()(labels)
    return float((fakes - photos).abs().mean()), float((fakes - photos.roll(1, 0)).abs().mean())


def test_pix2pix_learns_labels_to_photos(tmp_path):
    cfg = synthetic_config(tmp_path, "train.log_every=100")  # the recipe as it is: 600 steps
    untrained, _ = photo_errors(cfg, build_method(cfg).generator())
    run_dir = train(cfg, "learn")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state)
    trained, other_scene = photo_errors(cfg, method.generator())
    print(f"label -> photo L1: untrained {untrained:.3f}, trained {trained:.3f} (vs another scene's photo "
          f"{other_scene:.3f})")
    assert untrained > 0.4
    assert trained < 0.34 and trained < untrained - 0.08
    # It draws the scene it was given, not an average street: another scene's photo is much further away.
    assert other_scene > trained + 0.06
