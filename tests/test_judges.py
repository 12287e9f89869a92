"""Judge networks: the FCN-score (translate/eval/fcn_score.py), the judge file format and
translate-judge (translate/eval/judges.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from translate.cli import judge
from translate.config import DataConfig
from translate.data import build_dataset
from translate.data.scenes import SCENE_CLASSES
from translate.errors import UserError
from translate.eval.attributes import TinyClassifier
from translate.eval.fcn_score import FCNScore, Segmenter, build_segmenter, score_real_photos, train_segmenter
from translate.eval.judges import class_names, load_judge, save_judge

K = len(SCENE_CLASSES)


def one_hot_photos(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Photos that spell out their classes: channel k is +1 where the class is k, -1 elsewhere
    (ignored pixels, 255, are -1 everywhere), so an identity 'segmenter' reads them back exactly."""
    known = torch.where(classes == 255, num_classes, classes)
    return F.one_hot(known, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).float() * 2 - 1


def test_fcn_score_of_the_ground_truth_is_one():
    truth = torch.randint(0, 3, (2, 8, 8))
    truth[0, :2] = 255  # ignored pixels do not count
    score = FCNScore(nn.Identity(), num_classes=3)
    score.update(one_hot_photos(truth, 3), truth)
    assert score.compute() == {"pixel_accuracy": 1.0, "class_accuracy": 1.0, "class_iou": 1.0}


def test_fcn_score_follows_the_definitions_on_a_hand_made_case():
    # Ten pixels over two batches: truth 0 0 0 0 1 1 2 2 (and two ignored), predicted 0 0 0 1 1 0 2 0.
    truth = torch.tensor([[[0, 0, 0, 0, 1]], [[1, 2, 2, 255, 255]]])
    predicted = torch.tensor([[[0, 0, 0, 1, 1]], [[0, 2, 0, 1, 2]]])
    score = FCNScore(nn.Identity(), num_classes=3)
    for b in range(2):
        score.update(one_hot_photos(predicted[b:b + 1], 3), truth[b:b + 1])
    assert score.confusion.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]]
    s = score.compute()
    assert s["pixel_accuracy"] == pytest.approx(5 / 8)
    assert s["class_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    # IoU = TP / (TP + FP + FN): class 0: 3 / (3 + 2 + 1); class 1: 1 / (1 + 1 + 1); class 2: 1 / (1 + 0 + 1)
    assert s["class_iou"] == pytest.approx((3 / 6 + 1 / 3 + 1 / 2) / 3)
    score.reset()
    score.update(one_hot_photos(truth[:1], 3), truth[:1])
    assert score.compute()["pixel_accuracy"] == 1.0


def test_fcn_score_resizes_to_the_judges_size_and_back():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return x

    truth = torch.zeros(1, 16, 16, dtype=torch.long)
    truth[:, :, 8:] = 1  # two halves: still exact after a 16 -> 8 -> 16 round trip
    score = FCNScore(Spy(), num_classes=2, image_size=8)
    score.update(one_hot_photos(truth, 2), truth)
    assert seen == [(8, 8)]
    assert score.compute()["pixel_accuracy"] == 1.0


def scenes(split: str, count: int, train: bool) -> torch.utils.data.Dataset:
    cfg = DataConfig(format="scenes", scenes_size=36, preprocess="crop", load_size=36, crop_size=32,
                     scenes_count=count, num_workers=0)
    return build_dataset(cfg, split, paired=True, train=train)


def test_segmenter_shapes_and_timm_backbones():
    x = torch.zeros(2, 3, 32, 32)
    assert build_segmenter("tiny", 5)(x).shape == (2, 5, 32, 32)
    assert build_segmenter("resnet10t", 7).eval()(x).shape == (2, 7, 32, 32)  # timm, features_only


def test_a_trained_segmenter_beats_an_untrained_one_on_held_out_scenes():
    heldout = scenes("test", 48, train=False)
    torch.manual_seed(0)
    untrained, _ = score_real_photos(build_segmenter("tiny", K).eval(), heldout, K, batch_size=48)
    net = train_segmenter(scenes("train", 200, train=True), K, steps=30, batch_size=8, arch="tiny", lr=3e-3, seed=0)
    assert not net.training
    trained, count = score_real_photos(net, heldout, K, batch_size=48)
    assert count == 48
    # Measured: pixel accuracy 0.17 -> 0.78-0.87, class IoU 0.05 -> 0.50-0.62 (seeds 0, 1).
    assert trained["pixel_accuracy"] >= untrained["pixel_accuracy"] + 0.35, (untrained, trained)
    assert trained["pixel_accuracy"] >= 0.65, trained
    assert trained["class_iou"] >= untrained["class_iou"] + 0.2, (untrained, trained)


def test_save_and_load_give_identical_outputs(tmp_path):
    torch.manual_seed(0)
    net = Segmenter("tiny", K)
    net.train()(torch.randn(4, 3, 32, 32))  # running statistics away from their initial values
    net.eval()
    meta = {"task": "segmentation", "arch": "tiny", "num_classes": K, "classes": list(SCENE_CLASSES),
            "image_size": [32, 32], "heldout": {"pixel_accuracy": 0.5}}
    path = save_judge(net, tmp_path / "sub" / "judge.pt", meta)
    assert [p.name for p in path.parent.iterdir()] == ["judge.pt"]  # no temporary left behind
    loaded, loaded_meta = load_judge(path, task="segmentation")
    assert loaded_meta == meta
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))

    classifier = TinyClassifier(2).eval()
    save_judge(classifier, tmp_path / "attr.pt", {"task": "attributes", "arch": "tiny", "attributes": ["a", "b"]})
    loaded, _ = load_judge(tmp_path / "attr.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), classifier(x))
    with pytest.raises(UserError, match="is a attributes judge, not a segmentation one"):
        load_judge(tmp_path / "attr.pt", task="segmentation")


def test_save_judge_refuses_meta_that_would_not_load(tmp_path):
    with pytest.raises(ValueError, match="plain values"):
        save_judge(TinyClassifier(1), tmp_path / "j.pt", {"task": "attributes", "arch": "tiny",
                                                            "attributes": ["a"], "root": tmp_path})
    with pytest.raises(ValueError, match="num_classes"):
        save_judge(TinyClassifier(1), tmp_path / "j.pt", {"task": "segmentation", "arch": "tiny"})
    assert not (tmp_path / "j.pt").exists()


def test_load_judge_refuses_other_files_with_one_line(tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), weights)  # a plain state dict, not a judge
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    wrong = tmp_path / "wrong.pt"
    save_judge(TinyClassifier(3), wrong, {"task": "segmentation", "arch": "tiny", "num_classes": 3})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(wrong.read_bytes()[:300])
    for path, message in ((weights, "not a translate judge file"), (garbage, "not a plain state dict"),
                          (truncated, "cannot read"), (tmp_path / "missing.pt", "does not exist"),
                          (wrong, "weights do not fit")):
        with pytest.raises(UserError, match=message) as err:
            load_judge(path)
        assert "\n" not in str(err.value)


def test_cityscapes_judges_know_the_19_train_ids():
    names = class_names(DataConfig(format="cityscapes"))
    assert len(names) == 19 and names[0] == "road" and names[13] == "car" and names[18] == "bicycle"


def test_translate_judge_on_a_cityscapes_layout(tmp_path):
    from test_data import make_cityscapes  # two 8x8 scenes per split in Cityscapes' own layout
    make_cityscapes(tmp_path / "cityscapes", "train")
    make_cityscapes(tmp_path / "cityscapes", "val")
    result = CliRunner().invoke(judge, [
        "task=segmentation", "recipe=pix2pix_cityscapes", f"data.root={tmp_path / 'cityscapes'}",
        "data.load_size=8", "data.crop_size=8", f"output={tmp_path / 'fcn.pt'}", "steps=2", "arch=tiny",
        "batch_size=2", "data.num_workers=0", "log_every=0"])
    assert result.exit_code == 0, result.output
    assert "real, held-out test (Cityscapes: val)" in result.output
    _, meta = load_judge(tmp_path / "fcn.pt", task="segmentation")
    assert meta["num_classes"] == 19 and meta["image_size"] == [8, 8] and meta["heldout"]["images"] == 2
    assert meta["data"]["direction"] == "AtoB"  # pix2pix_cityscapes trains BtoA; the judge reads the photos


def test_translate_judge_end_to_end(tmp_path):
    output = tmp_path / "judges" / "scenes_fcn.pt"
    result = CliRunner().invoke(judge, [
        "task=segmentation", "recipe=cyclegan_synthetic", f"output={output}", "steps=12", "arch=tiny",
        "batch_size=8", "lr=0.003", "data.scenes_count=64", "data.num_workers=0", "heldout_max=16", "log_every=0",
        "data.direction=BtoA"])  # a direction the judge overrides: it reads the photos
    assert result.exit_code == 0, result.output
    assert "real, held-out test" in result.output and "pixel_accuracy" in result.output
    net, meta = load_judge(output, task="segmentation")
    assert meta["num_classes"] == K and meta["classes"] == list(SCENE_CLASSES)
    assert meta["image_size"] == [32, 32] and meta["steps"] == 12 and meta["recipe"] == "cyclegan_synthetic"
    assert meta["data"]["format"] == "scenes" and meta["data"]["direction"] == "AtoB"
    assert meta["heldout"]["images"] == 16
    # The printed figure is the saved one, and it is what the loaded judge scores again.
    again, _ = score_real_photos(net, scenes("test", 16, train=False), K)
    assert again["pixel_accuracy"] == pytest.approx(meta["heldout"]["pixel_accuracy"])
    assert f"{meta['heldout']['pixel_accuracy']:.4f}" in result.output

    output = tmp_path / "faces.pt"
    result = CliRunner().invoke(judge, [
        "task=attributes", "recipe=stargan_synthetic", f"output={output}", "steps=5", "arch=tiny",
        "data.scenes_count=32", "data.num_workers=0", "heldout_max=20", "log_every=0"])
    assert result.exit_code == 0, result.output
    net, meta = load_judge(output, task="attributes")
    for name in meta["attributes"]:
        assert name in result.output
    assert meta["heldout"]["images"] == 20 and set(meta["heldout"]["accuracy"]) == set(meta["attributes"])


@pytest.mark.parametrize("args, message", [
    (["task=segmentaton", "output=x.pt"], "did you mean segmentation"),
    (["task=segmentation"], "output= is required"),
    (["output=x.pt", "arch=resnet181"], "not a timm model"),
    (["output=x.pt", "stepz=3"], "unknown key stepz; did you mean steps"),
    (["output=x.pt", "steps=0"], "steps must be greater than 0"),
    (["output=x.pt", "data.format=faces"], "gives no class maps"),
    (["output=x.pt", "data.format=scenez"], "data.format=scenez is not one of"),
    (["output=x.pt", "recipe=nope"], "unknown recipe nope"),
    (["output=x.pt", "recipe=cyclegan_cityscapes", "data.root=nowhere"], "nowhere"),
])
def test_translate_judge_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(judge, args + ["data.num_workers=0"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
