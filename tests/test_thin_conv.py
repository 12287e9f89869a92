"""Thin, tall-kernel convolutions computed row by row of the kernel (translate/nets/thin_conv.py):
the same numbers and derivatives as nn.Conv2d, the same checkpoints, only the layers it pays for."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_layer_matches
from torch import nn

from translate.config import RuntimeConfig
from translate.nets import ResnetGenerator, StarGANGenerator
from translate.nets.matmul_conv import MatmulConv2d
from translate.nets.norm import GroupInstanceNorm2d
from translate.nets.thin_conv import RowSplitConv2d, is_thin, split_thin_convs
from translate.train.runtime import Runtime


def pair(**kwargs) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs).double()
    split = copy.deepcopy(conv)
    split_thin_convs(split)
    assert type(split) is RowSplitConv2d
    return conv, split


@pytest.mark.parametrize("kwargs,size", [
    ({"in_channels": 6, "out_channels": 3, "kernel_size": 7}, 12),  # the ResNet generator's last layer
    ({"in_channels": 6, "out_channels": 3, "kernel_size": 7, "padding": 3, "bias": False}, 9),  # StarGAN's
    ({"in_channels": 5, "out_channels": 1, "kernel_size": (5, 3), "padding": (1, 2)}, (8, 6)),  # not square
])
def test_row_split_matches_the_convolution_with_first_and_second_derivatives(kwargs, size):
    conv, split = pair(**kwargs)
    h, w = (size, size) if isinstance(size, int) else size
    assert_layer_matches(conv, split, torch.randn(2, kwargs["in_channels"], h, w, dtype=torch.double))


def test_row_split_under_bf16_autocast_gives_bf16_within_its_rounding():
    conv, split = pair(in_channels=64, out_channels=3, kernel_size=7)
    conv, split = conv.float(), split.float()
    x = torch.randn(2, 64, 20, 20).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = conv(x), split(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert got.is_contiguous(memory_format=torch.channels_last)
    scale = expected.float().abs().max()
    assert (got.float() - expected.float()).abs().max() < 0.02 * scale


def test_only_thin_tall_kernel_layers_are_split():
    assert is_thin(nn.Conv2d(64, 3, 7))
    assert not is_thin(nn.Conv2d(64, 8, 7))  # enough outputs to fill oneDNN's vectors
    assert not is_thin(nn.Conv2d(64, 3, 3))  # short kernel: little to gain
    assert not is_thin(nn.Conv2d(64, 3, 7, stride=2))
    assert not is_thin(nn.Conv2d(64, 3, 7, padding=3, padding_mode="reflect"))
    for net in (ResnetGenerator(3, 3, 8, n_blocks=1), StarGANGenerator(8, 5, 1)):
        torch.manual_seed(0)
        plain = copy.deepcopy(net)
        split_thin_convs(net)
        switched = [name for name, m in net.named_modules() if type(m) is RowSplitConv2d]
        assert len(switched) == 1  # the 7x7 layer to 3 channels at the end
        assert net.state_dict().keys() == plain.state_dict().keys()
        x = torch.randn(2, 3, 32, 32)
        args = (x, torch.rand(2, 5)) if isinstance(net, StarGANGenerator) else (x,)
        torch.testing.assert_close(net(*args), plain(*args), rtol=1e-5, atol=1e-5)


def test_runtime_splits_on_the_cpu_before_the_small_map_switch():
    for enabled in (True, False):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", split_thin_convs=enabled, group_instance_norm=enabled,
                                              keep_freed_memory=False))
        net = runtime.wrap(ResnetGenerator(3, 3, 8, n_blocks=1))
        kinds = [type(m) for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert kinds[-1] is (RowSplitConv2d if enabled else MatmulConv2d)
        assert all(k is MatmulConv2d for k in kinds[:-1])
        norms = {type(m) for m in net.modules() if isinstance(m, nn.InstanceNorm2d)}
        assert norms == ({GroupInstanceNorm2d} if enabled else {nn.InstanceNorm2d})
    plain = Runtime(torch.device("cpu"))  # GPUs and torchrun ranks: the plain layers
    assert not plain.split_thin_convs and not plain.group_instance_norm
