"""translate-infer with official generator checkpoints and translate checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from conftest import REFERENCE, tiny_config
from translate.config import InferConfig
from translate.errors import UserError
from translate.infer import translate_folder
from translate.methods import method_from_checkpoint
from translate.nets import ResnetGenerator
from translate.nets.matmul_conv import MatmulConv2d
from translate.nets.norm import GroupInstanceNorm2d
from translate.nets.thin_conv import RowSplitConv2d
from translate.nets.winograd import WinogradConv2d
from translate.train.checkpoint import list_checkpoints
from translate.train.loop import train
from translate.train.runtime import Runtime


def smooth_images(folder, count, size, seed=0):
    """Photo-like test inputs: smooth colour fields (random noise would be unlike any photo)."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        low = torch.rand(3, 6, 6, generator=g)
        img = torch.nn.functional.interpolate(low[None], size=size, mode="bicubic", align_corners=False)[0]
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")


def official_test_output(net: torch.nn.Module, path, size: int) -> np.ndarray:
    """What the official test script computes for one image (written out here from its steps):
    RGB, resize to size x size (bicubic), ToTensor, Normalize(0.5), G, tensor2im (truncating)."""
    tf = transforms.Compose([transforms.Resize([size, size], transforms.InterpolationMode.BICUBIC),
                             transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        y = net(x)[0].float().numpy()
    return ((np.transpose(y, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/fixtures/reference not found")
def test_official_cyclegan_checkpoint_matches_official_test_script(tmp_path):
    fixture = torch.load(REFERENCE / "cyclegan_resnet9_G.pt", weights_only=True)
    official = tmp_path / "latest_net_G_A.pth"
    torch.save(fixture["state_dict"], official)
    smooth_images(tmp_path / "testA", 3, (300, 260))  # not square: the resize must match too
    count, out = translate_folder(InferConfig(checkpoint=str(official), input=str(tmp_path / "testA"),
                                              output=str(tmp_path / "out"), size=256))
    assert count == 3
    reference = ResnetGenerator(3, 3, 64, "instance", False, n_blocks=9)
    reference.load_state_dict(fixture["state_dict"])
    for i in range(3):
        ours = np.asarray(Image.open(out / f"img{i}.png"))
        theirs = official_test_output(reference, tmp_path / "testA" / f"img{i}.png", 256)
        assert ours.shape == (256, 256, 3)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_translate_checkpoint_both_directions(tmp_path):
    cfg = tiny_config(tmp_path, train__max_steps=2)
    run_dir = train(cfg, "tiny")
    (checkpoint,) = list_checkpoints(run_dir / "checkpoints")
    smooth_images(tmp_path / "in", 5, (32, 32))
    method = method_from_checkpoint(torch.load(checkpoint, weights_only=True))
    for direction, net_name in (("AtoB", "G_A"), ("BtoA", "G_B")):
        out_dir = tmp_path / direction
        translate_folder(InferConfig(checkpoint=str(checkpoint), input=str(tmp_path / "in"),
                                     output=str(out_dir), direction=direction, size=32, batch_size=2))
        net = method.nets[net_name]
        for i in range(5):
            ours = np.asarray(Image.open(out_dir / f"img{i}.png"))
            theirs = official_test_output(net, tmp_path / "in" / f"img{i}.png", 32)
            assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_infer_refuses_to_write_into_its_input(tmp_path):
    smooth_images(tmp_path / "in", 1, (32, 32))
    with pytest.raises(UserError, match="inside input"):
        translate_folder(InferConfig(checkpoint="x.pth", input=str(tmp_path / "in"),
                                     output=str(tmp_path / "in" / "out")))


def test_infer_rejects_a_discriminator_checkpoint(tmp_path):
    from translate.nets import NLayerDiscriminator
    path = tmp_path / "latest_net_D_A.pth"
    torch.save(NLayerDiscriminator(3, 8, 3, "instance").state_dict(), path)
    smooth_images(tmp_path / "in", 1, (32, 32))
    with pytest.raises(UserError, match="latest_net_D_A.pth"):
        translate_folder(InferConfig(checkpoint=str(path), input=str(tmp_path / "in"), output=str(tmp_path / "o")))


def test_plain_layers_leave_out_the_cpu_reformulations_and_agree(tmp_path, monkeypatch):
    wrapped = []
    wrap = Runtime.wrap
    monkeypatch.setattr(Runtime, "wrap", lambda self, net: wrapped.append(wrap(self, net)) or wrapped[-1])
    torch.manual_seed(0)
    official = tmp_path / "latest_net_G_A.pth"  # 256-channel blocks: Winograd's by default
    torch.save(ResnetGenerator(3, 3, 64, "instance", False, n_blocks=2).state_dict(), official)
    smooth_images(tmp_path / "testA", 2, (40, 36))
    outputs = {}
    for plain in (False, True):
        _, outputs[plain] = translate_folder(InferConfig(
            checkpoint=str(official), input=str(tmp_path / "testA"), output=str(tmp_path / f"out-{plain}"),
            size=32, workers=0, plain_layers=plain))
    ours, plain = ({type(m) for m in net.modules()} for net in wrapped)
    assert {WinogradConv2d, RowSplitConv2d, GroupInstanceNorm2d} <= ours
    assert not plain & {WinogradConv2d, RowSplitConv2d, GroupInstanceNorm2d, MatmulConv2d}  # the official layers
    for i in range(2):
        a, b = (np.asarray(Image.open(outputs[p] / f"img{i}.png")).astype(int) for p in (False, True))
        assert np.abs(a - b).max() <= 1
