"""StarGAN on the shared spine: its losses and cadence, the labelled data formats, the
iteration schedule, resume, and that it learns on the synthetic faces."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, RecordingContext
from PIL import Image
from test_infer import smooth_images
from test_training import free_port

from translate import config
from translate.config import InferConfig
from translate.data import build_dataset, domain_labels
from translate.data.attributes import read_attribute_file
from translate.data.faces import face_oracle
from translate.data.transforms import to_tensor
from translate.errors import UserError
from translate.infer import translate_folder
from translate.methods import build_method
from translate.methods.stargan import StarGAN, classification_loss
from translate.nets import StarGANDiscriminator, StarGANGenerator
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import LinearDecay, Trainer, load_run_config, train
from translate.train.runtime import Runtime

CELEBA = SHARED / "data" / "celeba"
NAMES = ["5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Male", "Young"]


def tiny_config(tmp_path, *overrides: str) -> config.RunConfig:
    """StarGAN on 32 px synthetic faces with 8-channel networks (a step takes milliseconds), with
    the official n_critic=5; D's five strided convs end on 1x1."""
    cfg, _ = config.load("stargan_synthetic", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", "data.scenes_count=16", "stargan.n_critic=5",
        "stargan.conv_dim=8", "stargan.d_conv_dim=8", "stargan.g_repeat_num=1", "stargan.d_repeat_num=5",
        "train.batch_size=4",
        "train.iterations=12", "train.iterations_decay=6", "train.log_every=1", "train.image_every=5",
        "train.save_every=5", "runtime.deterministic=true", *overrides])
    return cfg


def faces_batch(cfg: config.RunConfig, size: int = 4) -> dict:
    dataset = build_dataset(cfg.data, "train", paired=False, train=True)
    return {key: torch.stack([dataset[i][key] for i in range(size)]) for key in ("image", "label")}


# ---------------------------------------------------------------------------------------------
# The method


def test_nets_and_label_size_come_from_the_config_and_data(tmp_path):
    cfg = tiny_config(tmp_path)
    method = build_method(cfg)
    assert isinstance(method, StarGAN) and not StarGAN.paired
    G, D = method.nets["G"], method.nets["D"]
    assert isinstance(G, StarGANGenerator) and isinstance(D, StarGANDiscriminator)
    assert G.main[0].in_channels == 3 + 5  # the five attributes tiled onto the image
    out_src, out_cls = D(torch.zeros(2, 3, 32, 32))
    assert out_src.shape == (2, 1, 1, 1) and out_cls.shape == (2, 5)
    cfg = tiny_config(tmp_path, "data.attributes=Male,Young")
    assert build_method(cfg).nets["G"].main[0].in_channels == 5


def test_classification_loss_is_bce_summed_over_attributes_or_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    by_hand = 0.0
    for row_logits, row_labels in zip(logits.tolist(), labels.tolist(), strict=True):
        for x, y in zip(row_logits, row_labels, strict=True):
            p = 1 / (1 + torch.exp(torch.tensor(-x)))
            by_hand += float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    assert classification_loss(logits, labels, multi_label=True).item() == pytest.approx(by_hand / 2, rel=1e-5)
    one_hot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = F.cross_entropy(logits, torch.tensor([2, 1]))
    assert classification_loss(logits, one_hot, multi_label=False).item() == pytest.approx(expected.item())


def test_d_step_losses_by_hand(tmp_path):
    """Real and fake WGAN terms, BCE on the real labels, and the penalty at interpolates of real
    and G(x, permuted labels), all with D before its step."""
    cfg = tiny_config(tmp_path)
    method = build_method(cfg).train()
    before = copy.deepcopy(method)
    batch = faces_batch(cfg)
    x, c = batch["image"], batch["label"]
    torch.manual_seed(3)
    losses = method.training_step(batch, RecordingContext(method, step=0, lr=1e-4))
    assert set(losses) == {"D/loss_real", "D/loss_fake", "D/loss_cls", "D/loss_gp"}

    torch.manual_seed(3)  # the same draws: the permutation, then the interpolation weights
    c_trg = c[torch.randperm(4)]
    G, D = before.nets["G"], before.nets["D"]
    with torch.no_grad():
        fake = G(x, c_trg)
    alpha = torch.rand(4, 1, 1, 1)
    mixed = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(mixed)[0].sum(), mixed)
    with torch.no_grad():
        src_real, cls_real = D(x)
        src_fake, _ = D(fake)
    assert losses["D/loss_real"].item() == pytest.approx(-src_real.mean().item(), rel=1e-5)
    assert losses["D/loss_fake"].item() == pytest.approx(src_fake.mean().item(), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits(cls_real, c, reduction="sum") / 4
    assert losses["D/loss_cls"].item() == pytest.approx(bce.item(), rel=1e-5)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert losses["D/loss_gp"].item() == pytest.approx(gp.item(), rel=1e-4)
    assert not torch.equal(c_trg, c)  # the seed gives a real permutation


def test_g_steps_every_n_critic_steps(tmp_path):
    cfg = tiny_config(tmp_path)
    method = build_method(cfg).train()
    batch = faces_batch(cfg)
    ctx = RecordingContext(method, lr=1e-4)
    g_keys = {"G/loss_fake", "G/loss_rec", "G/loss_cls"}
    with_g, g_calls = [], []
    method.nets["G"].register_forward_hook(lambda *_: g_calls.append(torch.is_grad_enabled()))
    for step in range(10):
        ctx.step = step
        with_g.append(bool(set(method.training_step(batch, ctx)) & g_keys))
    assert ctx.order == ["D"] * 4 + ["D", "G"] + ["D"] * 4 + ["D", "G"]
    assert with_g == [False] * 4 + [True] + [False] * 4 + [True]
    # one translation per step for D, reused by G's step (with its graph), and G's reconstruction
    cycle = [False] * 4 + [True, True]
    assert g_calls == cycle + cycle


def test_g_step_losses_by_hand(tmp_path):
    """Fool the just-stepped D, be classified as the target, and come back to x from the fake
    with the original label (L1)."""
    cfg = tiny_config(tmp_path)
    method = build_method(cfg).train()
    before = copy.deepcopy(method)
    batch = faces_batch(cfg)
    x, c = batch["image"], batch["label"]
    torch.manual_seed(5)
    losses = method.training_step(batch, RecordingContext(method, step=4, lr=1e-4))

    torch.manual_seed(5)
    c_trg = c[torch.randperm(4)]
    G, D = before.nets["G"], method.nets["D"]  # G before its step; D after its own (G's leaves it)
    with torch.no_grad():
        fake = G(x, c_trg)
        src, cls = D(fake)
        rec = G(fake, c)
    assert losses["G/loss_fake"].item() == pytest.approx(-src.mean().item(), rel=1e-4)
    bce = F.binary_cross_entropy_with_logits(cls, c_trg, reduction="sum") / 4
    assert losses["G/loss_cls"].item() == pytest.approx(bce.item(), rel=1e-4)
    assert losses["G/loss_rec"].item() == pytest.approx((rec - x).abs().mean().item(), rel=1e-4)
    assert list(method.visuals()) == ["real", "fake", "rec"]


def test_single_label_domains_use_cross_entropy(tmp_path):
    cfg = tiny_config(tmp_path, "data.format=expressions")
    method = build_method(cfg)
    assert not method.labels.multi_label and len(method.labels.names) >= 2
    batch = faces_batch(cfg)
    assert torch.equal(batch["label"].sum(1), torch.ones(4))
    losses = method.train().training_step(batch, RecordingContext(method, step=4, lr=1e-4))
    assert all(torch.isfinite(v) for v in losses.values()) and "G/loss_cls" in losses


# ---------------------------------------------------------------------------------------------
# CelebA attributes and labelled folders


def write_celeba(root, rows: int, newline: str = "\n", names=NAMES) -> list[list[int]]:
    """A tiny CelebA: list_attr_celeba.txt and images/NNNNNN.jpg; returns each row's values."""
    (root / "images").mkdir(parents=True)
    values = [[1 if (i >> j) & 1 else -1 for j in range(len(names))] for i in range(rows)]
    lines = [str(rows), " ".join(names) + " "]
    for i, row in enumerate(values):
        name = f"{i + 1:06d}.jpg"
        ramp = np.tile(np.linspace(0, 255, 20, dtype=np.uint8)[None, :, None], (24, 1, 3))  # not mirror-symmetric
        ramp[..., 1] = i * 7 % 256
        Image.fromarray(ramp).save(root / "images" / name, quality=100)
        lines.append(name + " " + " ".join(f"{v:2d}" for v in row))
    (root / "list_attr_celeba.txt").write_bytes((newline.join(lines) + newline).encode())
    return values


def celeba_data(root, **extra) -> config.DataConfig:
    values = {"format": "celeba", "root": str(root), "attributes": ["Blond_Hair", "Young"], "test_size": 3,
              "center_crop": 16, "crop_size": 8, "load_size": 8, **extra}
    return config.build(config.DataConfig, values)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_celeba_attribute_file_and_official_hold_out(tmp_path, newline):
    values = write_celeba(tmp_path, 10, newline)
    names, rows = read_attribute_file(tmp_path / "list_attr_celeba.txt")
    assert names == NAMES and len(rows) == 10
    assert rows[5] == ("000006.jpg", [v == 1 for v in values[5]])

    import random
    shuffled = [f"{i + 1:06d}.jpg" for i in range(10)]
    random.seed(1234)  # the official loader's order
    random.shuffle(shuffled)
    test = build_dataset(celeba_data(tmp_path), "test", paired=False, train=False)
    trainset = build_dataset(celeba_data(tmp_path), "train", paired=False, train=True)
    assert [p.name for p in test.paths] == shuffled[:3] and [p.name for p in trainset.paths] == shuffled[3:]
    sample = test[0]
    row = int(shuffled[0][:6]) - 1
    assert torch.equal(sample["label"], torch.tensor([float(values[row][2] == 1), float(values[row][4] == 1)]))
    assert sample["image"].shape == (3, 8, 8) and sample["path"].endswith(shuffled[0])
    assert domain_labels(celeba_data(tmp_path)).names == ["Blond_Hair", "Young"]


def test_celeba_flip_center_crop_then_bilinear_resize(tmp_path):
    write_celeba(tmp_path, 4)
    dataset = build_dataset(celeba_data(tmp_path, test_size=1), "test", paired=False, train=False)
    img = Image.open(dataset.paths[0]).convert("RGB")  # 20x24: torchvision's centre box is (2, 4, 18, 20)
    expected = img.crop((2, 4, 18, 20)).resize((8, 8), Image.Resampling.BILINEAR)
    as_tensor = torch.from_numpy(np.asarray(expected, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(dataset[0]["image"], as_tensor, atol=1e-6)
    flipped = build_dataset(celeba_data(tmp_path, test_size=1), "train", paired=False, train=True)
    sides = {bool(torch.equal(flipped[(0, seed)]["image"], flipped[(0, 0)]["image"])) for seed in range(20)}
    assert sides == {True, False}  # flipped for some seeds only


@pytest.mark.parametrize("extra, message", [
    ({"attributes": ["Blond_Hair", "Blonde_Hair"]}, "Blonde_Hair not among the attributes (5_o_Clock_Shadow, "),
    ({"attributes": []}, "data.attributes is empty"),
    ({"test_size": 10}, "data.test_size=10 leaves nothing to train on"),
    ({"image_dir": "nope"}, "data.image_dir"),
])
def test_celeba_mistakes_are_one_line_errors(tmp_path, extra, message):
    write_celeba(tmp_path, 10)
    with pytest.raises(UserError) as e:
        build_dataset(celeba_data(tmp_path, **extra), "train", paired=False, train=True)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_real_celeba_subset_loads():
    if not (CELEBA / "list_attr_celeba.txt").is_file():
        pytest.skip(f"{CELEBA} (the shared 1,500-face CelebA subset) not found")
    cfg = config.load("stargan_celeba", [f"data.root={CELEBA}", "data.image_dir=img_align_celeba_89x109",
                                         "data.center_crop=89", "data.crop_size=64", "data.test_size=100"])[0]
    trainset = build_dataset(cfg.data, "train", paired=False, train=True)
    test = build_dataset(cfg.data, "test", paired=False, train=False)
    assert (len(trainset), len(test)) == (1400, 100)
    names, rows = read_attribute_file(CELEBA / "list_attr_celeba.txt")
    by_name = dict(rows)
    columns = [names.index(a) for a in cfg.data.attributes]
    for dataset in (trainset, test):
        for i in (0, 7, len(dataset) - 1):
            sample = dataset[i]
            assert sample["image"].shape == (3, 64, 64) and -1 <= sample["image"].min() < sample["image"].max() <= 1
            flags = by_name[sample["path"].rsplit("/", 1)[-1]]
            assert sample["label"].tolist() == [float(flags[c]) for c in columns]


def test_labelled_folders_give_one_hot_labels_in_folder_order(tmp_path):
    for domain, count in (("angry", 2), ("happy", 3), ("sad", 1)):
        (tmp_path / domain).mkdir()
        for i in range(count):
            Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(tmp_path / domain / f"{i}.png")
    data = config.build(config.DataConfig, {"format": "labelled_folders", "root": str(tmp_path), "center_crop": 12,
                                            "crop_size": 8, "load_size": 8})
    dataset = build_dataset(data, "train", paired=False, train=False)
    assert len(dataset) == 6 and domain_labels(data).names == ["angry", "happy", "sad"]
    assert not domain_labels(data).multi_label
    assert dataset[2]["label"].tolist() == [0.0, 1.0, 0.0] and "/happy/" in dataset[2]["path"]
    data = dataclasses.replace(data, domains=["sad", "angry"])
    dataset = build_dataset(data, "train", paired=False, train=False)
    assert len(dataset) == 3 and dataset[0]["label"].tolist() == [1.0, 0.0]
    with pytest.raises(UserError, match="data.domains must name at least two"):
        build_dataset(dataclasses.replace(data, domains=["sad", "glad"]), "train", paired=False, train=False)


def test_labelled_formats_refuse_paired_methods(tmp_path):
    data = tiny_config(tmp_path).data
    with pytest.raises(UserError, match="use it with method=stargan"):
        build_dataset(data, "train", paired=True, train=True)


# ---------------------------------------------------------------------------------------------
# Recipes, the iteration schedule, the loop


def test_recipes_are_the_official_settings():
    for name, fmt in (("stargan_celeba", "celeba"), ("stargan_rafd", "labelled_folders")):
        cfg, _ = config.load(name, [])
        assert cfg.method == "stargan" and cfg.data.format == fmt and cfg.data.crop_size == 128
        assert cfg.stargan == config.StarGANConfig()  # the defaults are the official ones
        s = cfg.stargan
        assert (s.conv_dim, s.d_conv_dim, s.g_repeat_num, s.d_repeat_num) == (64, 64, 6, 6)
        assert (s.lambda_cls, s.lambda_rec, s.lambda_gp, s.n_critic) == (1.0, 10.0, 10.0, 5)
        t = cfg.train
        assert (t.iterations, t.iterations_decay, t.batch_size, t.lr, t.beta1, t.beta2) == (
            200000, 100000, 16, 1e-4, 0.5, 0.999)
    celeba, _ = config.load("stargan_celeba", [])
    assert celeba.data.attributes == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    assert (celeba.data.center_crop, celeba.data.test_size) == (178, 1999)
    assert config.load("stargan_rafd", [])[0].data.center_crop == 256
    with pytest.raises(UserError, match="data.root is not set"):
        build_dataset(celeba.data, "train", paired=False, train=True)
    with pytest.raises(UserError, match="train.iterations_decay .* is more than train.iterations"):
        config.load("stargan_synthetic", ["train.iterations=10", "train.iterations_decay=11"])


def test_iterations_replace_epochs_and_decay_linearly_over_the_last_steps(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=50")
    trainer = Trainer(cfg, tmp_path, Runtime(torch.device("cpu")), build_dataset(cfg.data, "train", False, True))
    assert trainer.total_steps == 12
    factors = [trainer.schedulers["G"].lr_lambdas[0](step) for step in range(12)]
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([1 - k / 7 for k in range(1, 7)])
    assert LinearDecay(6, 6, 1)(11) == pytest.approx(1 / 7)
    trainer.logger.close()


def test_stargan_resumes_exactly_and_logs_g_losses_on_g_steps(tmp_path):
    whole = train(tiny_config(tmp_path / "a"), "whole")
    part = train(tiny_config(tmp_path / "b", "train.max_steps=7"), "part")
    train(load_run_config(part, ["train.max_steps=0"]), "part", resume_dir=part)

    def rows(run_dir):
        with open(run_dir / "losses.csv") as f:
            return list(csv.DictReader(f))
    a, b = rows(whole), rows(part)
    assert [int(r["step"]) for r in a] == list(range(1, 13))
    assert a == b
    assert [bool(r["G/loss_rec"]) for r in a] == [s % 5 == 0 for s in range(1, 13)]
    assert all(r["D/loss_gp"] for r in a)
    wa, wb = (latest_checkpoint(r / "checkpoints")[0]["nets"] for r in (whole, part))
    assert all(torch.equal(wa[n][k], wb[n][k]) for n in wa for k in wa[n])
    assert sorted(p.name for p in (whole / "samples").iterdir()) == ["step_00000005.png", "step_00000010.png"]


TORCHRUN_STARGAN = ["data.num_workers=0", "data.scenes_count=16", "stargan.conv_dim=8", "stargan.d_conv_dim=8",
                    "stargan.g_repeat_num=1", "stargan.d_repeat_num=5", "stargan.n_critic=2", "train.batch_size=4",
                    "train.iterations=6", "train.iterations_decay=2", "runtime.threads=1",
                    "runtime.deterministic=true"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={free_port()}", "--master_addr=127.0.0.1", *args],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_stargan_under_torchrun_keeps_every_rank_in_step(tmp_path):
    """2 gloo processes: the gradient penalty's autograd.grad (create_graph) through a DDP-wrapped
    D and the alternating D/G steps still average gradients, so ranks fed different samples end
    with the same parameters, bit for bit; each rank draws its own random numbers."""
    r = torchrun(str(Path(__file__).with_name("ddp_worker.py")), "recipe=stargan_synthetic",
                 f"output_dir={tmp_path / 'runs'}", *TORCHRUN_STARGAN)
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["steps"] == 6 and report["ranks_saw_different_samples"]
    assert report["max_weight_difference"] == 0.0
    assert report["ranks_drew_differently"]  # else both ranks mix real and fake alike, permute alike
    assert "G/loss_rec" in r.stdout and "D/loss_gp" in r.stdout  # both kinds of step ran


def test_stargan_under_torchrun_resumes_every_rank_s_random_stream(tmp_path):
    """Stopped at step 4 and resumed, 2 ranks end where an uninterrupted run does, bit for bit:
    the checkpoint holds each rank's random state (rank 1's gradient-penalty mixes and target
    orders after the resume are its own stream's, not rank 0's)."""
    torchrun("-m", "translate.cli", "recipe=stargan_synthetic", f"output_dir={tmp_path / 'whole'}",
             *TORCHRUN_STARGAN)
    torchrun("-m", "translate.cli", "recipe=stargan_synthetic", f"output_dir={tmp_path / 'part'}",
             *TORCHRUN_STARGAN, "train.max_steps=4")
    (part,) = list((tmp_path / "part").iterdir())
    state, _ = latest_checkpoint(part / "checkpoints")
    assert state["step"] == 4 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    torchrun("-m", "translate.cli", f"resume={part}", "train.max_steps=0")
    (whole,) = list((tmp_path / "whole").iterdir())
    wa, wb = (latest_checkpoint(r / "checkpoints")[0] for r in (whole, part))
    assert wa["step"] == wb["step"] == 6
    assert all(torch.equal(wa["nets"][n][k], wb["nets"][n][k]) for n in wa["nets"] for k in wa["nets"][n])


# ---------------------------------------------------------------------------------------------
# translate-infer with a target label


def test_translate_infer_sets_the_named_target_labels(tmp_path):
    run_dir = train(tiny_config(tmp_path, "train.iterations=5", "train.iterations_decay=0"), "tiny")
    state, checkpoint = latest_checkpoint(run_dir / "checkpoints")
    smooth_images(tmp_path / "faces", 2, (32, 32))
    G = StarGANGenerator(8, 5, 1)
    G.load_state_dict(state["nets"]["G"])
    official = tmp_path / "5-G.ckpt"
    torch.save(state["nets"]["G"], official)
    names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    for source, extra in ((checkpoint, {}), (official, {"attributes": names})):
        out = tmp_path / f"out_{source.stem}"
        translate_folder(InferConfig(checkpoint=str(source), input=str(tmp_path / "faces"), output=str(out),
                                     size=32, target=["Blond_Hair", "Young"], **extra))
        for i in range(2):
            x = to_tensor(Image.open(tmp_path / "faces" / f"img{i}.png"))[None]
            with torch.no_grad():
                expected = G.train()(x, torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]]))[0]
            expected = ((expected.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)
            ours = np.asarray(Image.open(out / f"img{i}.png"))
            assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    for source, extra, message in (
            (checkpoint, {}, "target= is required for a StarGAN generator; name the labels Black_Hair, "),
            (checkpoint, {"target": ["Blonde_Hair"]}, "Blonde_Hair not among the labels"),
            (official, {"target": ["Male"]}, "StarGAN generator of 5 labels; name them in order with attributes=")):
        with pytest.raises(UserError) as e:
            translate_folder(InferConfig(checkpoint=str(source), input=str(tmp_path / "faces"),
                                         output=str(tmp_path / "bad"), size=32, **extra))
        assert message in str(e.value) and "\n" not in str(e.value)


def test_translate_infer_all_targets_writes_the_official_test_row(tmp_path):
    """target=all: per input [x, G(x, c_1), ..., G(x, c_5)] side by side, each c_k built from the
    input's own attributes as the official create_labels (hair colour set exclusively, others flipped)."""
    run_dir = train(tiny_config(tmp_path, "train.iterations=5", "train.iterations_decay=0"), "tiny")
    state, checkpoint = latest_checkpoint(run_dir / "checkpoints")
    G = StarGANGenerator(8, 5, 1).train()
    G.load_state_dict(state["nets"]["G"])
    smooth_images(tmp_path / "faces", 2, (32, 32))
    labels = tmp_path / "list_attr.txt"
    labels.write_text("2\r\nBlack_Hair Blond_Hair Brown_Hair Male Young Bald\r\n"
                      "img0.png -1  1 -1  1 -1 -1\r\nimg1.png  1 -1 -1 -1  1  1\r\n")
    translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "faces"),
                                 output=str(tmp_path / "rows"), size=32, target=["all"], labels=str(labels)))
    expected_targets = {  # by hand from the file: Black, Blond, Brown set alone; Male, Young flipped
        "img0": [[1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 1, 0, 1, 1]],
        "img1": [[1, 0, 0, 0, 1], [0, 1, 0, 0, 1], [0, 0, 1, 0, 1], [1, 0, 0, 1, 1], [1, 0, 0, 0, 0]]}
    for name, targets in expected_targets.items():
        row = np.asarray(Image.open(tmp_path / "rows" / f"{name}.png")).astype(int)
        assert row.shape == (32, 32 * 6, 3)
        x = to_tensor(Image.open(tmp_path / "faces" / f"{name}.png"))[None]
        columns = [x[0]] + [G(x, torch.tensor([c], dtype=torch.float32))[0].detach() for c in targets]
        for k, image in enumerate(columns):
            expected = ((image.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8).astype(int)
            assert np.abs(row[:, 32 * k:32 * (k + 1)] - expected).max() <= 1, (name, k)

    # An official checkpoint without labels= is read as one-hot domains (RaFD-style): one column each.
    official = tmp_path / "5-G.ckpt"
    torch.save(state["nets"]["G"], official)
    translate_folder(InferConfig(checkpoint=str(official), input=str(tmp_path / "faces"),
                                 output=str(tmp_path / "onehot"), size=32, target=["all"],
                                 attributes=["a", "b", "c", "d", "e"]))
    row = np.asarray(Image.open(tmp_path / "onehot" / "img0.png")).astype(int)
    x = to_tensor(Image.open(tmp_path / "faces" / "img0.png"))[None]
    expected = G(x, torch.tensor([[0.0, 0, 1, 0, 0]]))[0].detach()
    expected = ((expected.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8).astype(int)
    assert row.shape == (32, 32 * 6, 3) and np.abs(row[:, 96:128] - expected).max() <= 1

    # center_crop: the official loader's CenterCrop then a bilinear Resize, before G.
    translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "faces"),
                                 output=str(tmp_path / "crop"), size=32, center_crop=20, target=["Male"]))
    img = Image.open(tmp_path / "faces" / "img0.png").crop((6, 6, 26, 26)).resize((32, 32), Image.Resampling.BILINEAR)
    expected = G(to_tensor(img)[None], torch.tensor([[0.0, 0, 0, 1, 0]]))[0].detach()
    expected = ((expected.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "crop" / "img0.png")).astype(int) - expected).max() <= 1

    labels.write_text("1\nBlack_Hair Blond_Hair Brown_Hair Male Young\nimg0.png -1 1 -1 1 -1\n")
    for extra, message in (({}, "target=all needs each input's own attributes (Black_Hair, Blond_Hair"),
                           ({"labels": str(labels)}, "has no row for img1.png")):
        with pytest.raises(UserError, match=re.escape(message)):
            translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "faces"),
                                         output=str(tmp_path / "bad"), size=32, target=["all"], **extra))
    assert not (tmp_path / "bad").exists()  # the mistake is found before anything is written


# ---------------------------------------------------------------------------------------------
# It learns: attribute transfer on the synthetic faces, judged by the world's oracle


@torch.no_grad()
def transfer_scores(cfg: config.RunConfig, G: torch.nn.Module, count: int = 200) -> dict[str, tuple[float, float]]:
    """Per attribute: how often G(x, label with that attribute changed) shows the change per the
    oracle, and how often the attributes not asked to change keep the oracle's reading of x."""
    test = build_dataset(dataclasses.replace(cfg.data, scenes_count=count), "test", paired=False, train=False)
    x = torch.stack([s["image"] for s in test])
    c = torch.stack([s["label"] for s in test])
    seen = face_oracle(x)
    # Training mode, as the official test: instance norm on each image's own statistics. (The
    # running averages of eval mode lag far behind a network trained for a few hundred steps.)
    G.train()
    scores = {}
    for k, name in enumerate(cfg.data.attributes):
        target = c.clone()
        if k < 3:  # another hair colour: the hair group is one-hot
            target[:, :3] = 0
            target[torch.arange(count), (c[:, :3].argmax(1) + 1 + torch.arange(count) % 2) % 3] = 1
        else:
            target[:, k] = 1 - c[:, k]
        chosen = (target[:, k] != c[:, k])
        out = face_oracle(G(x[chosen], target[chosen]))
        others = [j for j in range(5) if j != k and not (k < 3 and j < 3)]
        hair = [j for j in range(3)] if k < 3 else [k]
        hit = (out[:, hair] == target[chosen][:, hair]).all(1).float().mean().item()
        kept = (out[:, others] == seen[chosen][:, others]).float().mean().item()
        scores[name] = (hit, kept)
    return scores


# bf16: the fast mode (autocast) must learn as well, gradient penalty and all; the other methods'
# fast-mode runs are in benchmarks/fast_mode_quality.py, which keeps this suite short.
@pytest.mark.parametrize("seed, precision", [(0, "fp32"), (0, "bf16")])
def test_stargan_learns_attribute_transfer_on_synthetic_faces(tmp_path, seed, precision):
    cfg, _ = config.load("stargan_synthetic", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", f"train.seed={seed}", f"data.scenes_seed={seed}",
        "train.iterations=500", "train.iterations_decay=150", "train.batch_size=8", "train.log_every=100",
        f"runtime.precision={precision}"])
    torch.manual_seed(seed)  # the run's seed: its initial weights
    untrained = transfer_scores(cfg, build_method(cfg).generator())
    run_dir = train(cfg, "learn")
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = build_method(cfg)
    method.nets["G"].load_state_dict(state["nets"]["G"])
    trained = transfer_scores(cfg, method.generator())
    for name in cfg.data.attributes:
        print(f"{name}: asked-for change shows {untrained[name][0]:.2f} -> {trained[name][0]:.2f}, "
              f"other attributes kept {untrained[name][1]:.2f} -> {trained[name][1]:.2f}")
    hits = [trained[name][0] for name in cfg.data.attributes]
    kept = [trained[name][1] for name in cfg.data.attributes]
    assert min(hits) >= 0.75 and sum(hits) / 5 >= 0.85
    assert min(kept) >= 0.85
    # An untrained G draws no face at all: the oracle reads the same blur whatever was asked.
    assert sum(untrained[name][0] for name in cfg.data.attributes) / 5 <= 0.6
