"""translate-export: TorchScript and ONNX files of trained and official generators, checked against
the PyTorch networks on batch sizes and image sides other than the traced ones."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REFERENCE, tiny_config

from translate import config, export
from translate.cli import export as export_command
from translate.config import ExportConfig
from translate.errors import UserError
from translate.export import export_generator
from translate.methods import method_from_checkpoint
from translate.nets import ResnetGenerator, UnetGenerator
from translate.train.checkpoint import latest_checkpoint
from translate.train.loop import train

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch.jit.load in the checks

TOLERANCE = 1e-4  # on outputs in [-1, 1]; measured differences are ~1e-7


def images(batch: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def run_torchscript(path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(path))(x)


@pytest.fixture(scope="module")
def cyclegan_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cyclegan")
    return train(tiny_config(tmp_path, train__max_steps=3), "tiny")


def test_trained_cyclegan_exports_and_matches_pytorch(cyclegan_run, tmp_path):
    result = CliRunner().invoke(export_command, [f"run={cyclegan_run}", f"output={tmp_path / 'out'}",
                                                 "direction=BtoA", "size=32"])
    assert result.exit_code == 0, result.output
    assert "torchscript" in result.output and "onnx" in result.output and "3x3x32x32" in result.output
    state, _ = latest_checkpoint(cyclegan_run / "checkpoints")
    G_B = method_from_checkpoint(state).nets["G_B"].eval()
    # Other batch sizes than the traced one (2), and other sides (the ResNet takes multiples of 4).
    for x in (images(5, 32), images(1, 40, seed=2), images(3, 24, seed=3)):
        with torch.no_grad():
            expected = G_B(x)
        for path, run in ((tmp_path / "out" / "generator.pt", run_torchscript),
                          (tmp_path / "out" / "generator.onnx", run_onnx)):
            got = run(path, x)
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= TOLERANCE, path
    # G_B, not G_A: the direction picked the network.
    with torch.no_grad():
        G_A_out = method_from_checkpoint(state).nets["G_A"].eval()(images(5, 32))
    assert (run_onnx(tmp_path / "out" / "generator.onnx", images(5, 32)) - G_A_out).abs().max() > 0.01
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["generator.onnx", "generator.pt"]


def test_a_failed_check_is_an_error_and_leaves_no_file(cyclegan_run, tmp_path, monkeypatch):
    def off_by_a_little(path):
        module = torch.jit.load(str(path))
        return lambda x: module(x) + 1e-3

    monkeypatch.setitem(export.RUNNERS, "torchscript", off_by_a_little)
    with pytest.raises(UserError, match="differs from the PyTorch generator by up to 0.001"):
        export_generator(ExportConfig(run=str(cyclegan_run), output=str(tmp_path / "out"), size=32,
                                      formats=["torchscript"]))
    assert list((tmp_path / "out").iterdir()) == []


def export_official(tmp_path, fixture_name: str, checkpoint_name: str, size: int, fmt: str):
    """An official reference generator saved under its official checkpoint name, then exported."""
    fixture = torch.load(REFERENCE / fixture_name, weights_only=True)
    official = tmp_path / checkpoint_name
    torch.save(fixture["state_dict"], official)
    table = export_generator(ExportConfig(checkpoint=str(official), output=str(tmp_path / "out"), size=size,
                                          formats=[fmt]))
    return fixture, table


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/fixtures/reference not found")
def test_official_cyclegan_generator_exports_and_keeps_the_official_outputs(tmp_path):
    fixture, table = export_official(tmp_path, "cyclegan_resnet9_G.pt", "latest_net_G_A.pth", 64, "onnx")
    assert table["max_abs_diff"].max() <= TOLERANCE
    # The exported graph, at the fixture's own 256 px (another side than the 64 traced), gives the
    # official network's output.
    got = run_onnx(tmp_path / "out" / "generator.onnx", fixture["input"])
    reference = fixture["output_eval"]
    assert (got - reference).abs().max() <= 1e-4 * reference.abs().max() + 1e-6
    # The claim in export.py: instance norm without running statistics is the same in train mode
    # (the official test script) and eval mode (the export); batch norm (pix2pix) is not.
    assert torch.allclose(fixture["output_train"], fixture["output_eval"], atol=1e-6)
    net = ResnetGenerator(3, 3, 64, "instance", False, n_blocks=9)
    net.load_state_dict(fixture["state_dict"])
    x = images(1, 64)
    with torch.no_grad():
        assert torch.equal(net.train()(x), net.eval()(x))
    pix2pix = torch.load(REFERENCE / "pix2pix_unet256_G.pt", weights_only=True)
    gap = (pix2pix["output_train_no_dropout"] - pix2pix["output_eval"]).abs().max()
    assert gap > 0.1 * pix2pix["output_train_no_dropout"].abs().max()


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/fixtures/reference not found")
def test_official_pix2pix_generator_exports_in_eval_mode(tmp_path):
    fixture, table = export_official(tmp_path, "pix2pix_unet256_G.pt", "latest_net_G.pth", 256, "torchscript")
    assert table["checked_on"].item() == "3x3x256x256, 1x3x512x512"  # a U-Net of 8 levels: multiples of 256
    got = run_torchscript(tmp_path / "out" / "generator.pt", fixture["input"])
    reference = fixture["output_eval"]  # the running averages, not the official test's train mode
    assert (got - reference).abs().max() <= 1e-4 * reference.abs().max() + 1e-7


def stargan_run(tmp_path):
    cfg, _ = config.load("stargan_synthetic", [
        f"output_dir={tmp_path / 'runs'}", "data.num_workers=0", "data.scenes_count=8", "stargan.conv_dim=8",
        "stargan.d_conv_dim=8", "stargan.g_repeat_num=1", "stargan.d_repeat_num=5", "train.batch_size=2",
        "train.iterations=3", "train.iterations_decay=0", "stargan.n_critic=1", "train.save_every=3"])
    return cfg, train(cfg, "stargan")


def test_stargan_exports_with_its_target_fixed(tmp_path):
    cfg, run_dir = stargan_run(tmp_path)
    state, _ = latest_checkpoint(run_dir / "checkpoints")
    method = method_from_checkpoint(state)
    names = list(method.labels.names)
    G = method.nets["G"]
    label = torch.tensor([1.0 if n == names[1] else 0.0 for n in names])
    x = images(3, 32)
    with torch.no_grad():
        running = G.eval()(x, label.expand(3, -1))
        # Train-mode forwards update the running statistics: on copies.
        per_image = copy.deepcopy(G).train()(x, label.expand(3, -1))
        other_target = copy.deepcopy(G).train()(x, torch.ones(3, len(names)))
    # eval=false: instance norm on each image's own statistics, as the official StarGAN test runs G.
    # (TorchScript here: the ONNX exporter's ~7 s per export are spent on the CycleGAN tests.)
    export_generator(ExportConfig(run=str(run_dir), output=str(tmp_path / "train_mode"), size=32,
                                  target=[names[1]], eval=False, formats=["torchscript"]))
    got = run_torchscript(tmp_path / "train_mode" / "generator.pt", x)
    assert (got - per_image).abs().max() <= TOLERANCE
    assert (got - other_target).abs().max() > 0.01  # the label is in the graph, not any label
    assert (per_image - running).abs().max() > 0.01  # the two modes differ for StarGAN's tracked norms
    # eval=true (the default): the running averages, which the export left untouched.
    export_generator(ExportConfig(run=str(run_dir), output=str(tmp_path / "eval_mode"), size=32,
                                  target=[names[1]], formats=["torchscript"]))
    assert (run_torchscript(tmp_path / "eval_mode" / "generator.pt", x) - running).abs().max() <= TOLERANCE
    # A StarGAN export needs a target.
    with pytest.raises(UserError, match="target= is required"):
        export_generator(ExportConfig(run=str(run_dir), output=str(tmp_path / "none"), size=32))


def test_eval_false_refuses_batch_norm(tmp_path):
    official = tmp_path / "latest_net_G.pth"
    torch.save(UnetGenerator(3, 3, num_downs=5, ngf=4, norm="batch", dropout=True).state_dict(), official)
    with pytest.raises(UserError, match="BatchNorm2d layers"):
        export_generator(ExportConfig(checkpoint=str(official), output=str(tmp_path / "out"), size=32, eval=False))
    with pytest.raises(UserError, match="multiples of 32"):
        export_generator(ExportConfig(checkpoint=str(official), output=str(tmp_path / "out"), size=48))


@pytest.mark.parametrize("args, message", [
    (["output=out"], "give one of checkpoint=PATH or run=runs/NAME"),
    (["checkpoint=a.pt", "run=runs/x", "output=out"], "give one of"),
    (["checkpoint=a.pt"], "output= is required"),
    (["checkpoint=a.pt", "output=out", "formats=tflite"], "use one or more of torchscript, onnx"),
    (["checkpoint=missing.pt", "output=out"], "does not exist"),
    (["run=nowhere", "output=out"], "no readable checkpoint in nowhere/checkpoints"),
    (["checkpoint=a.pt", "output=out", "sise=32"], "unknown key sise; did you mean size"),
    (["checkpoint=a.pt", "output=a.pt"], "output=a.pt is a file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.pt").write_bytes(b"")
    result = CliRunner().invoke(export_command, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_size_multiple_of_each_generator():
    assert export.size_multiple(ResnetGenerator(3, 3, 4, "instance", False, n_blocks=1)) == 4
    assert export.size_multiple(UnetGenerator(3, 3, num_downs=7, ngf=4)) == 128
    assert np.isclose(TOLERANCE, ExportConfig().tolerance)  # the tests check what the command promises
