"""Reflection padding in the input's precision with a sliced backward (translate/nets/padding.py):
the same numbers and derivatives as nn.ReflectionPad2d, and under bf16 autocast the same
generator outputs and gradients, bit for bit, as with the float32 pad that autocast ran before."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_layer_matches
from torch import nn

from translate.nets import ResnetGenerator
from translate.nets.padding import ReflectionPad2d


@pytest.mark.parametrize("padding,size", [
    ((1, 1, 1, 1), (9, 11)),  # before every residual 3x3 convolution
    ((3, 3, 3, 3), (7, 8)),  # before the 7x7 input and output layers
    ((3, 3, 3, 3), (4, 4)),  # a map so small that the reflected border strips overlap
    ((2, 1, 3, 0), (10, 12)),  # uneven
])
def test_reflection_pad_matches_torch_with_first_and_second_derivatives(padding, size):
    x = torch.randn(2, 3, *size, dtype=torch.double)
    assert_layer_matches(nn.ReflectionPad2d(padding), ReflectionPad2d(padding), x)


@pytest.mark.parametrize("size", [16, 4])
def test_bf16_pad_stays_bf16_and_its_gradient_is_the_float32_sum_rounded_once(size):
    x = torch.randn(2, 5, size, size).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ReflectionPad2d(3)(x)
    assert y.dtype == torch.bfloat16  # autocast would have made it float32
    assert torch.equal(y, F.pad(x.detach(), (3, 3, 3, 3), mode="reflect"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference
        inferred = ReflectionPad2d(3)(x)
    assert inferred.dtype == torch.bfloat16 and torch.equal(inferred, y)
    grad = torch.randn_like(y)
    y.backward(grad)
    expected = torch.ops.aten.reflection_pad2d_backward(grad.float(), x.detach().float(), [3, 3, 3, 3])
    assert torch.equal(x.grad, expected.bfloat16())


def test_resnet_generator_under_autocast_gives_the_same_outputs_and_gradients_as_with_float32_pads():
    torch.manual_seed(0)
    ours = ResnetGenerator(3, 3, 8, n_blocks=2)
    assert sum(type(m) is ReflectionPad2d for m in ours.modules()) == 2 + 2 * 2
    plain = copy.deepcopy(ours)
    for module in plain.modules():
        if type(module) is ReflectionPad2d:
            module.__class__ = nn.ReflectionPad2d
    x = torch.randn(2, 3, 24, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = plain(x), ours(x)
    # the convolutions see the same bf16 values: padding copies them exactly in either precision
    assert torch.equal(got, expected)
    for net, out in ((plain, expected), (ours, got)):
        out.float().square().mean().backward()
    for a, b in zip(plain.parameters(), ours.parameters(), strict=True):
        assert torch.equal(b.grad, a.grad)
