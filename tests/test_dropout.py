"""Dropout with uniform draws (translate/nets/dropout.py): torch's layer, with a faster CPU mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from translate.config import RuntimeConfig
from translate.nets import UnetGenerator
from translate.nets.dropout import UniformDropout, use_uniform_dropout
from translate.train.runtime import Runtime


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_keeps_one_minus_p_scaled_and_backpropagates_through_the_mask(p):
    layer = use_uniform_dropout(nn.Sequential(nn.Dropout(p)))[0]
    assert type(layer) is UniformDropout and isinstance(layer, nn.Dropout)
    x = (torch.rand(64, 32, 16, 16) + 0.5).requires_grad_()  # no zeros of its own
    y = layer(x)
    kept = y != 0
    share = kept.float().mean().item()
    assert abs(share - (1 - p)) < 0.005  # 524,288 draws: 0.005 is over 7 standard deviations
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    (y * 3).sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 3 / (1 - p))


def test_same_seed_same_mask_and_bf16_stays_bf16():
    layer = UniformDropout(0.5)
    x = torch.ones(4, 8, 8, 8, dtype=torch.bfloat16)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first) and first.dtype == torch.bfloat16
    assert set(first.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(layer(x), first)  # the stream moves on


def test_eval_mode_zero_p_and_inplace_are_torchs():
    x = torch.randn(2, 4, 8, 8)
    layer = UniformDropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(UniformDropout(0.0)(x), x)
    torch.manual_seed(0)
    expected = nn.Dropout(0.5, inplace=True)(x.clone())
    torch.manual_seed(0)
    assert torch.equal(UniformDropout(0.5, inplace=True)(x.clone()), expected)


def test_runtime_switches_the_unets_dropout_on_the_cpu_keys_unchanged():
    torch.manual_seed(0)
    net = UnetGenerator(3, 3, num_downs=6, ngf=4, norm="batch", dropout=True)
    keys = set(net.state_dict())
    assert any(type(m) is nn.Dropout for m in net.modules())
    runtime = Runtime.setup(RuntimeConfig(device="cpu", keep_freed_memory=False))
    net = runtime.wrap(net)
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is UniformDropout for m in dropouts)
    assert set(net.state_dict()) == keys
