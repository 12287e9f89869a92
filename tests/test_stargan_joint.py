"""StarGAN on several datasets at once with mask vectors (data.format=joint; paper section 3.2):
the joint label layout, the data, that the unknown part of a label gets no classification
gradient, the recipes, and that joint training on faces + expressions learns both label sets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import RecordingContext
from PIL import Image
from test_stargan import transfer_scores

from translate import config
from translate.data import build_dataset, domain_labels
from translate.data.faces import EXPRESSIONS, FACE_ATTRIBUTES, expression_oracle
from translate.data.joint import JointDataset, part_configs
from translate.data.transforms import to_tensor
from translate.errors import UserError
from translate.methods import build_method, method_from_checkpoint
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train


def tiny_config(tmp_path, *overrides: str) -> config.RunConfig:
    cfg, _ = config.load("stargan_synthetic_joint", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", "data.scenes_count=16", "stargan.n_critic=5",
        "stargan.conv_dim=8", "stargan.d_conv_dim=8", "stargan.g_repeat_num=1", "stargan.d_repeat_num=5",
        "train.batch_size=4", "train.iterations=6", "train.iterations_decay=2", "train.log_every=1",
        "train.image_every=5", "train.save_every=5", "runtime.deterministic=true", *overrides])
    return cfg


def joint_batch(cfg: config.RunConfig, size: int = 4) -> dict:
    dataset = build_dataset(cfg.data, "train", paired=False, train=True)
    keys = ("image_0", "label_0", "image_1", "label_1")
    return {key: torch.stack([dataset[i][key] for i in range(size)]) for key in keys}


def test_joint_label_is_both_label_sets_then_the_mask(tmp_path):
    cfg = tiny_config(tmp_path)
    labels = domain_labels(cfg.data)
    assert labels.names == [*FACE_ATTRIBUTES, *EXPRESSIONS, "mask:faces", "mask:expressions"]
    assert labels.class_names == [*FACE_ATTRIBUTES, *EXPRESSIONS]
    assert [p.multi_label for p in labels.parts] == [True, False]
    method = build_method(cfg)
    assert method.nets["G"].main[0].in_channels == 3 + 5 + 4 + 2  # c_dim + c2_dim + 2, as the official
    _, out_cls = method.nets["D"](torch.zeros(2, 3, 32, 32))
    assert out_cls.shape == (2, 5 + 4)  # D's head: c_dim + c2_dim, no mask
    face = torch.tensor([[1.0, 0, 0, 1, 0]])
    assert method.labels.widen(face, 0).tolist() == [[1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]]
    assert method.labels.widen(torch.tensor([[0.0, 0, 1, 0]]), 1).tolist() == [[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]]


def test_joint_dataset_gives_one_sample_of_each(tmp_path):
    cfg = tiny_config(tmp_path, "data.attributes=Male,Young")
    dataset = build_dataset(cfg.data, "train", paired=False, train=True)
    assert isinstance(dataset, JointDataset) and len(dataset) == 16
    sample = dataset[(3, 7)]
    assert sample["image_0"].shape == sample["image_1"].shape == (3, 32, 32)
    assert sample["label_0"].shape == (2,) and sample["label_1"].sum() == 1 and sample["label_1"].shape == (4,)
    assert sample["path_0"] == "faces/train/3" and sample["path_1"] == "expressions/train/3"
    faces, expressions = (build_dataset(c, "train", paired=False, train=True) for c in part_configs(cfg.data))
    assert torch.equal(sample["label_0"], faces[3]["label"]) and torch.equal(sample["label_1"], expressions[3]["label"])
    assert torch.equal(dataset[(3, 7)]["image_0"], sample["image_0"])  # reproducible from the key


@pytest.mark.parametrize("overrides, message", [
    (["data.joint=faces"], "data.format=joint needs data.joint to name at least two"),
    (["data.joint=faces,scenes"], "data.format=joint needs data.joint to name at least two"),
    (["data.joint_roots=a"], "data.joint_roots has 1 entries for the 2 datasets"),
])
def test_joint_mistakes_are_one_line_errors(tmp_path, overrides, message):
    cfg = tiny_config(tmp_path, *overrides)
    with pytest.raises(UserError) as e:
        build_dataset(cfg.data, "train", paired=False, train=True)
    assert message in str(e.value) and "\n" not in str(e.value)


class GradientContext(RecordingContext):
    """Records the gradient of D's classification head at each D step, without stepping, so
    every D step of a joint step sees the same D."""

    def __init__(self, method, step: int = 0):
        super().__init__(method, step)
        self.head_grads: list[torch.Tensor] = []

    def optimize(self, name: str, loss) -> None:
        self.order.append(name)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if name == "D":
            self.head_grads.append(self.method_head.weight.grad.clone())


def test_the_unknown_part_of_the_label_gets_no_classification_gradient(tmp_path):
    """The whole D step on faces leaves the cls-head rows of the expressions exactly untouched,
    and the other way round (official: out_cls[:, :c_dim] for CelebA, [:, c_dim:] for RaFD)."""
    cfg = tiny_config(tmp_path)
    method = build_method(cfg).train()
    ctx = GradientContext(method, step=0)
    ctx.method_head = method.nets["D"].conv2  # the 1-output-per-class convolution
    losses = method.training_step(joint_batch(cfg), ctx)
    assert ctx.order == ["D", "D"]
    assert {"D/loss_cls_faces", "D/loss_cls_expressions", "D/loss_gp_faces"} <= set(losses)
    faces_step, expressions_step = ctx.head_grads
    assert faces_step.shape[0] == 9
    assert torch.count_nonzero(faces_step[5:]) == 0 and faces_step[:5].abs().sum() > 0
    assert torch.count_nonzero(expressions_step[:5]) == 0 and expressions_step[5:].abs().sum() > 0


def test_joint_step_losses_by_hand(tmp_path):
    """Dataset by dataset: BCE over the attribute outputs on faces, cross-entropy over the
    expression outputs on expressions; G's targets are the permuted labels with the mask set."""
    cfg = tiny_config(tmp_path)
    method = build_method(cfg).train()
    batch = joint_batch(cfg)
    ctx = GradientContext(method, step=4)  # no step: every loss sees the initial nets
    ctx.method_head = method.nets["D"].conv2
    torch.manual_seed(3)
    losses = method.training_step(batch, ctx)
    assert ctx.order == ["D", "G", "D", "G"]  # as train_multi: per dataset, D then (every n_critic) G
    G, D = method.nets["G"], method.nets["D"]
    torch.manual_seed(3)
    for k, (fmt, columns) in enumerate((("faces", slice(0, 5)), ("expressions", slice(5, 9)))):
        x, c = batch[f"image_{k}"], batch[f"label_{k}"]
        c_trg = c[torch.randperm(4)]
        torch.rand(4, 1, 1, 1)  # the penalty's interpolation weights
        with torch.no_grad():
            cls_real = D(x)[1][:, columns]
            fake = G(x, method.labels.widen(c_trg, k))
            cls_fake = D(fake)[1][:, columns]
            rec = G(fake, method.labels.widen(c, k))
        if k == 0:
            d_cls = F.binary_cross_entropy_with_logits(cls_real, c, reduction="sum") / 4
            g_cls = F.binary_cross_entropy_with_logits(cls_fake, c_trg, reduction="sum") / 4
        else:
            d_cls, g_cls = F.cross_entropy(cls_real, c.argmax(1)), F.cross_entropy(cls_fake, c_trg.argmax(1))
        assert losses[f"D/loss_cls_{fmt}"].item() == pytest.approx(d_cls.item(), rel=1e-5)
        assert losses[f"G/loss_cls_{fmt}"].item() == pytest.approx(g_cls.item(), rel=1e-5)
        assert losses[f"G/loss_rec_{fmt}"].item() == pytest.approx((rec - x).abs().mean().item(), rel=1e-5)
    assert method.visuals()["fake"].shape[0] == 8  # both datasets' translations in the grid


def test_joint_training_runs_and_logs_both_datasets(tmp_path):
    run_dir = train(tiny_config(tmp_path), "joint")
    header = (run_dir / "losses.csv").read_text().splitlines()[0]
    assert "D/loss_cls_faces" in header and "G/loss_cls_expressions" in header
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    assert state["step"] == 6


def test_joint_recipes():
    cfg, _ = config.load("stargan_celeba_rafd", [])
    d = cfg.data
    assert (d.format, d.joint, d.joint_center_crops, d.crop_size) == (
        "joint", ["celeba", "labelled_folders"], [178, 256], 128)
    assert d.attributes == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    assert cfg.stargan == config.StarGANConfig()
    t = cfg.train
    assert (t.iterations, t.iterations_decay, t.batch_size, t.lr) == (200000, 100000, 16, 1e-4)
    with pytest.raises(UserError, match="data.joint_roots entry 1 .celeba. is empty"):
        build_dataset(d, "train", paired=False, train=True)
    rafd, celeba = part_configs(dataclasses.replace(d, joint_roots=["/c", "/r"]))[1], part_configs(
        dataclasses.replace(d, joint_roots=["/c", "/r"]))[0]
    assert (celeba.format, celeba.root, celeba.center_crop) == ("celeba", "/c", 178)
    assert (rafd.format, rafd.root, rafd.center_crop) == ("labelled_folders", "/r", 256)
    synthetic, _ = config.load("stargan_synthetic_joint", [])
    assert synthetic.data.joint == ["faces", "expressions"] and domain_labels(synthetic.data).image_size == 32


# ---------------------------------------------------------------------------------------------
# It learns both label sets, each judged by its world's oracle


class PartGenerator(torch.nn.Module):
    """A joint G seen as a generator of dataset k's labels alone (the mask set to k)."""

    def __init__(self, method, k: int):
        super().__init__()
        self.G, self.widen, self.k = method.nets["G"], method.labels.widen, k

    def forward(self, x, c):
        return self.G(x, self.widen(c, self.k))


@torch.no_grad()
def expression_scores(cfg: config.RunConfig, G: torch.nn.Module, count: int = 200) -> float:
    """How often G(x, another expression) shows the asked-for expression per the oracle."""
    test = build_dataset(dataclasses.replace(cfg.data, scenes_count=count), "test", paired=False, train=False)
    x = torch.stack([s["image"] for s in test])
    shown = torch.stack([s["label"] for s in test]).argmax(1)
    wanted = (shown + 1 + torch.arange(count) % (len(EXPRESSIONS) - 1)) % len(EXPRESSIONS)
    G.train()  # as transfer_scores: instance norm on each image's own statistics
    out = expression_oracle(G(x, F.one_hot(wanted, len(EXPRESSIONS)).float()))
    return (out == wanted).float().mean().item()


def joint_scores(cfg: config.RunConfig, method) -> dict[str, float]:
    faces_cfg, expressions_cfg = part_configs(cfg.data)
    faces = transfer_scores(dataclasses.replace(cfg, data=faces_cfg), PartGenerator(method, 0))
    scores = {f"{name} shows": hit for name, (hit, _) in faces.items()}
    scores.update({f"{name} others kept": kept for name, (_, kept) in faces.items()})
    scores["expression shows"] = expression_scores(dataclasses.replace(cfg, data=expressions_cfg),
                                                   PartGenerator(method, 1))
    return scores


def test_translate_infer_takes_the_labels_of_one_dataset(tmp_path):
    from test_infer import smooth_images

    from translate.config import InferConfig
    from translate.infer import load_translator, translate_folder
    run_dir = train(tiny_config(tmp_path, "train.iterations=1", "train.iterations_decay=0"), "tiny")
    _, checkpoint = latest_checkpoint(run_dir / "checkpoints")
    label = load_translator(checkpoint, "AtoB", ["happy"]).label
    assert label.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    label = load_translator(checkpoint, "AtoB", ["Blond_Hair", "Young"]).label
    assert label.tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    with pytest.raises(UserError, match=r"target= must name labels of one dataset .*Black_Hair.*; neutral"):
        load_translator(checkpoint, "AtoB", ["happy", "Young"])
    smooth_images(tmp_path / "faces", 2, (32, 32))
    translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "faces"),
                                 output=str(tmp_path / "out"), size=32, target=["surprised"]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]

    # target=all: the official test_multi row, the faces' targets (from their own attributes), then
    # each expression, every label with the other dataset's part zero and its own mask set.
    method = method_from_checkpoint(latest_checkpoint(run_dir / "checkpoints")[0])
    attributes = tmp_path / "attrs.txt"
    attributes.write_text(f"2\n{' '.join(FACE_ATTRIBUTES)}\nimg0.png 1 -1 -1 1 1\nimg1.png -1 -1 1 -1 -1\n")
    translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "faces"),
                                 output=str(tmp_path / "rows"), size=32, target=["all"], labels=str(attributes)))
    row = torch.from_numpy(np.asarray(Image.open(tmp_path / "rows" / "img1.png")).astype(int))
    assert row.shape == (32, 32 * (1 + 5 + len(EXPRESSIONS)), 3)
    x = to_tensor(Image.open(tmp_path / "faces" / "img1.png"))[None]
    G = method.nets["G"].train()
    for column, label in ((4, [0, 0, 1, 1, 0] + [0] * len(EXPRESSIONS) + [1, 0]),   # Male flipped
                          (6, [0] * 5 + [1] + [0] * (len(EXPRESSIONS) - 1) + [0, 1])):  # the first expression
        with torch.no_grad():
            expected = G(x, torch.tensor([label], dtype=torch.float32))[0]
        expected = ((expected.permute(1, 2, 0) + 1) / 2 * 255).to(torch.uint8).int()
        assert (row[:, 32 * column:32 * (column + 1)] - expected).abs().max() <= 1


@pytest.mark.parametrize("seed", [0])
def test_joint_training_learns_attributes_and_expressions(tmp_path, seed):
    """500 joint steps (about 80 s on one core) at twice the recipe's rate and lambda_cls=3 (so
    that D learns the small mouths within the budget): G changes the faces' attributes and the
    expressions as asked, per each world's oracle, with one model. (The recipe itself, 1000 steps
    at 4e-4 and lambda_cls=1, reached faces 0.98-1.00 and expressions 0.67-0.79 on seed 0.)"""
    cfg, _ = config.load("stargan_synthetic_joint", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", f"train.seed={seed}", f"data.scenes_seed={seed}",
        "train.iterations=500", "train.iterations_decay=150", "train.lr=0.0008", "stargan.lambda_cls=3",
        "train.log_every=50"])
    torch.manual_seed(seed)
    untrained = joint_scores(cfg, build_method(cfg))
    state, _ = latest_checkpoint(train(cfg, "learn") / "checkpoints")
    method = build_method(cfg)
    method.nets["G"].load_state_dict(state["nets"]["G"])
    trained = joint_scores(cfg, method)
    for name in trained:
        print(f"{name}: {untrained[name]:.2f} -> {trained[name]:.2f}")
    shows = [trained[f"{name} shows"] for name in cfg.data.attributes]
    kept = [trained[f"{name} others kept"] for name in cfg.data.attributes]
    # Bounds with room for seeds: at 400-500 steps seeds 0-2 gave attributes 0.81-0.99 and
    # expressions 0.47-0.92 (0.67 on seed 0 here); untrained 0.30-0.50 and 0.21.
    assert min(shows) >= 0.6 and sum(shows) / 5 >= 0.7
    assert min(kept) >= 0.85
    assert trained["expression shows"] >= 0.4 and untrained["expression shows"] <= 0.35  # chance: 0.25


def test_translate_eval_scores_a_joint_model_on_one_dataset_with_its_mask(tmp_path):
    """eval.dataset picks one dataset of a joint model: its split and labels, and G's targets are
    that dataset's (one-hot domains in turn, or the official attribute flips) widened with its mask,
    as the official test_multi; without it, one line saying what to set."""
    from click.testing import CliRunner

    from translate.cli import evaluate as evaluate_cli
    from translate.eval.attributes import target_labels
    from translate.eval.evaluate import Evaluator
    from translate.train.runtime import Runtime
    cfg = tiny_config(tmp_path, "train.iterations=2", "train.iterations_decay=0", "train.save_every=2")
    run = train(cfg, "joint")
    generator = method_from_checkpoint(latest_checkpoint(run / "checkpoints")[0]).generator()
    width = len(FACE_ATTRIBUTES) + len(EXPRESSIONS) + 2

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.G, self.labels = generator, []

        def forward(self, x, c):
            self.labels.append(c.clone())
            return self.G(x, c)

    for dataset, names in (("expressions", EXPRESSIONS), ("1", FACE_ATTRIBUTES)):
        eval_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
            cfg.eval, dataset=dataset, metrics=["fid"], features="tiny", max_images=6, batch_size=3))
        evaluator = Evaluator(eval_cfg, Runtime.setup(eval_cfg.runtime), progress=False)
        recording = Recording()
        results, count = evaluator.run(recording)
        assert count == 6 and math.isfinite(results["fid"])
        assert len(recording.labels) == 2 * len(names)  # two batches, one target per label
        own = torch.stack([evaluator.dataset[i]["label"] for i in range(3)]).float()
        for i, c in enumerate(recording.labels[:len(names)]):  # the first batch's targets
            assert c.shape == (3, width)
            if dataset == "expressions":
                assert torch.equal(c[:, :5], torch.zeros(3, 5)) and torch.equal(c[:, 5:9], F.one_hot(
                    torch.full((3,), i), 4).float()) and torch.equal(c[:, 9:], torch.tensor([[0.0, 1]] * 3))
            else:
                assert torch.equal(c[:, :5], target_labels(own, names)[i]) and torch.equal(c[:, 5:9], torch.zeros(3, 4))
                assert torch.equal(c[:, 9:], torch.tensor([[1.0, 0]] * 3))

    result = CliRunner().invoke(evaluate_cli, [f"run={run}", "metrics=fid", "features=tiny", "dataset=expressions",
                                               "max_images=6"])
    assert result.exit_code == 0, result.output
    assert (run / "eval" / "step_00000002" / "metrics.csv").exists()
    for bad, says in (([], "set eval.dataset to the dataset to score"), (["dataset=celeba"], "is not one of its datasets")):
        result = CliRunner().invoke(evaluate_cli, [f"run={run}", "metrics=fid", "features=tiny", *bad])
        assert result.exit_code == 2 and says in result.output and "faces, expressions, 1, 2" in result.output
        assert "Traceback" not in result.output
