"""translate-infer precision=int8: generators quantised after training, calibrated on the folder's
first images and compiled by inductor (translate/quantize.py)."""

from __future__ import annotations

import importlib.util
import logging
from copy import deepcopy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from test_infer import smooth_images
from translate import quantize
from translate.config import InferConfig
from translate.errors import UserError
from translate.infer import translate_folder
from translate.nets import ResnetGenerator, StarGANGenerator, UnetGenerator
from translate.nets.norm import inference_copy


def _compiler_found() -> bool:
    try:
        quantize.check_int8_available()
    except UserError:
        return False
    return True


needs_int8 = pytest.mark.skipif(importlib.util.find_spec("torchao") is None or not _compiler_found(),
                                reason='precision=int8 needs torchao (pip install ".[int8]", in the test extra) '
                                       'and a C++ compiler')


def translate_both(tmp_path, checkpoint, **options) -> dict[str, np.ndarray]:
    """The folder translated in fp32 and in int8: precision -> the outputs as one int array."""
    outputs = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"out-{precision}"
        options.setdefault("int8_cache", str(tmp_path / "int8-cache"))  # not the user's own
        count, _ = translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "in"),
                                                output=str(out), size=32, precision=precision, workers=0,
                                                device="cpu", **options))
        files = sorted(out.iterdir())
        assert count == len(files)
        outputs[precision] = np.stack([np.asarray(Image.open(f)).astype(int) for f in files])
    return outputs


def convs(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in net.modules())


def quantised_weights(int8: quantize.Int8Generator) -> int:
    """Weights the converted graph stores as int8 (each dequantised per output channel)."""
    dequantize = torch.ops.quantized_decomposed.dequantize_per_channel.default
    return sum(node.target == dequantize for node in int8.graph.graph.nodes)


@needs_int8
def test_int8_translates_a_folder_as_fp32_does(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, 8, "instance", False, n_blocks=2)
    checkpoint = tmp_path / "latest_net_G_A.pth"
    torch.save(net.state_dict(), checkpoint)
    smooth_images(tmp_path / "in", 5, (40, 36))  # batches of 2, 2 and 1: the batch stays dynamic
    made = []
    monkeypatch.setattr("translate.quantize.Int8Generator.__init__", _recording(made))
    outputs = translate_both(tmp_path, checkpoint, batch_size=2)
    assert outputs["int8"].shape == outputs["fp32"].shape == (5, 32, 32, 3)
    difference = np.abs(outputs["int8"] - outputs["fp32"])
    # int8 rounding moves outputs by a few grey levels, not more (measured: 1.4 mean, 8 at most)
    assert difference.mean() < 3 and difference.max() <= 24
    assert difference.max() > 0  # it did not run the float network
    # every convolution (not the transposed ones) stored as int8
    assert len(made) == 1 and quantised_weights(made[0]) == convs(net)


def _recording(made: list):
    original = quantize.Int8Generator.__init__

    def init(self, graph):
        original(self, graph)
        made.append(self)
    return init


@needs_int8
def test_int8_stargan_row_calibrates_and_translates_every_target(tmp_path):
    torch.manual_seed(0)
    net = StarGANGenerator(conv_dim=8, c_dim=3, repeat_num=1)
    with torch.no_grad():  # running statistics unlike the per-image ones, so the modes differ
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    checkpoint = tmp_path / "200000-G.ckpt"
    torch.save(net.state_dict(), checkpoint)
    smooth_images(tmp_path / "in", 3, (32, 32))
    # target=all: [input, one image per domain], the official test's train-mode norms (eval=false)
    outputs = translate_both(tmp_path, checkpoint, target=["all"], attributes=["a", "b", "c"], batch_size=4)
    assert outputs["int8"].shape == (3, 32, 32 * 4, 3)
    difference = np.abs(outputs["int8"] - outputs["fp32"])[:, :, 32:]  # the input column is copied
    assert difference.mean() < 3 and difference.max() <= 24
    columns = [outputs["int8"][:, :, 32 * k:32 * (k + 1)] for k in (1, 2, 3)]
    assert np.abs(columns[0] - columns[1]).mean() > 3  # each column was translated to its own target


@torch.no_grad()
def unusual_batch_norms(net: nn.Module) -> None:
    """Scales, shifts and running averages unlike the defaults, so that the norm modes differ."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-1, 1)


def test_one_image_copy_runs_batch_norm_and_dropout_as_train_mode_does():
    torch.manual_seed(0)
    net = UnetGenerator(3, 3, num_downs=6, ngf=4, norm="batch", dropout=True)
    unusual_batch_norms(net)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    copy = inference_copy(net, eval_mode=False, one_image=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    with torch.no_grad():
        assert not torch.equal(copy(x), copy(x))  # dropout stays on, as in the official test
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        copy = inference_copy(net, eval_mode=False, one_image=True)
        train_mode = deepcopy(net).train()(x)
        assert torch.allclose(copy(x), train_mode, atol=1e-5)  # batch norm of one image
        assert (net.eval()(x) - train_mode).abs().max() > 0.1  # which eval mode is not
    with pytest.raises(UserError, match="BatchNorm2d layers, whose train mode .*; use eval=true"):
        inference_copy(net, eval_mode=False)  # a batch (translate-export) cannot


@needs_int8
def test_int8_pix2pix_in_train_mode_as_the_official_test(tmp_path):
    torch.manual_seed(0)
    net = UnetGenerator(3, 3, num_downs=5, ngf=4, norm="batch", dropout=False)
    unusual_batch_norms(net)
    checkpoint = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), checkpoint)
    smooth_images(tmp_path / "in", 3, (32, 32))
    outputs = translate_both(tmp_path, checkpoint)  # eval=false: each image's own batch statistics
    difference = np.abs(outputs["int8"] - outputs["fp32"])
    assert difference.mean() < 3 and difference.max() <= 24
    # A size the network cannot take is named as in fp32, not in the export's symbols.
    with pytest.raises(UserError, match="multiples of 32, got 48x48"):
        translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "in"), eval=True,
                                     output=str(tmp_path / "out"), size=48, precision="int8", device="cpu",
                                     int8_cache=""))


@needs_int8
def test_int8_cache_skips_calibration_and_gives_the_same_images(tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    checkpoint = tmp_path / "latest_net_G_A.pth"
    torch.save(ResnetGenerator(3, 3, 8, "instance", False, n_blocks=2).state_dict(), checkpoint)
    smooth_images(tmp_path / "in", 3, (32, 32))
    cache = tmp_path / "cache"

    def run(name: str, **options) -> np.ndarray:
        out = tmp_path / name
        translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "in"), output=str(out),
                                     size=32, precision="int8", workers=0, device="cpu",
                                     int8_cache=str(cache), **options))
        return np.stack([np.asarray(Image.open(f)) for f in sorted(out.iterdir())])

    first = run("first")
    (saved,) = cache.iterdir()  # the quantised graph, whole: no partial file left beside it
    assert saved.suffix == ".pt2"

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again although the graph was cached")

    with monkeypatch.context() as patch:
        patch.setattr("torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e", no_calibration)
        assert np.array_equal(run("again"), first)  # loaded, the same images bit for bit
        with pytest.raises(AssertionError, match="calibrated again"):
            run("eval", eval=True)  # another norm mode: another graph, not the one cached
    assert list(cache.iterdir()) == [saved]  # and the run that failed left nothing there

    saved.write_bytes(b"not a graph")  # a damaged cache costs time, not the run
    with caplog.at_level(logging.WARNING, logger="translate.quantize"):
        assert np.array_equal(run("damaged"), first)
    assert "could not read the cached graph" in caplog.text
    assert saved.stat().st_size > 100  # and it was saved again

    cache = tmp_path / "a file"  # a cache that cannot be written: a warning, and the images all the same
    cache.write_text("")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="translate.quantize"):
        assert np.array_equal(run("unwritable"), first)
    assert "could not save the quantised graph" in caplog.text


def test_bad_precision_is_one_line(tmp_path):
    checkpoint = tmp_path / "latest_net_G.pth"
    torch.save(UnetGenerator(3, 3, num_downs=5, ngf=4).state_dict(), checkpoint)
    smooth_images(tmp_path / "in", 2, (32, 32))
    with pytest.raises(UserError, match="precision=int4 is not one of fp32, bf16, fp16, int8"):
        translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "in"),
                                     output=str(tmp_path / "out"), precision="int4"))
    assert not (tmp_path / "out").exists()


def test_int8_without_torchao_or_a_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(UserError, match="precision=int8 is for x86 CPUs .*; this one is aarch64"):
        quantize.check_int8_available()
    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(UserError, match=r'needs torchao: pip install "\.\[int8\]"'):
        quantize.check_int8_available()
    monkeypatch.undo()
    if importlib.util.find_spec("torchao") is None:
        return

    def no_compiler():
        raise RuntimeError("Could not find a C++ compiler (tried g++)\nmore")
    monkeypatch.setattr("torch._inductor.cpp_builder.get_cpp_compiler", no_compiler)
    found = r"needs a C\+\+ compiler .*: Could not find a C\+\+ compiler \(tried g\+\+\); or use"
    with pytest.raises(UserError, match=found):
        quantize.check_int8_available()
