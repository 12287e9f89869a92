"""Runtime precision: bf16 autocast with the weights cast again in backward (runtime.recast_saved_weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from translate.losses import gradient_penalty
from translate.nets import StarGANDiscriminator, UnetGenerator
from translate.nets.matmul_conv import use_matmul_for_small_maps
from translate.train import runtime as runtime_mod
from translate.train.runtime import Runtime


def unet() -> torch.nn.Module:  # 32 px to 1x1: its inner layers take the matrix-product path
    torch.manual_seed(0)
    return use_matmul_for_small_maps(UnetGenerator(3, 3, num_downs=5, ngf=8))


def stargan_d() -> torch.nn.Module:  # 32 px to 2x2 and 1x1
    torch.manual_seed(0)
    return use_matmul_for_small_maps(StarGANDiscriminator(image_size=32, conv_dim=8, c_dim=3, repeat_num=4))


def bf16_step(net: torch.nn.Module, x: torch.Tensor, recast: bool, penalty: bool):
    """One loss and its parameter gradients under the runtime's bf16 autocast."""
    runtime = Runtime(torch.device("cpu"), precision="bf16", recast_saved_weights=recast)
    net.zero_grad(set_to_none=True)
    with runtime.autocast():
        out = net(x)
        loss = sum(o.float().square().mean() for o in (out if isinstance(out, tuple) else (out,)))
        if penalty:  # a double backward through the saved weights (StarGAN's gradient penalty)
            loss = loss + gradient_penalty(net, x, x.flip(0))
    assert all(getattr(m, "_cast", None) is None or not recast for m in net.modules())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize(("make", "penalty", "memory_format"), [
    (unet, False, torch.contiguous_format),
    (unet, False, torch.channels_last),  # the weights' casts keep their strides
    (stargan_d, True, torch.contiguous_format),
])
def test_recast_weights_give_the_same_gradients_bit_for_bit(make, penalty, memory_format, monkeypatch):
    def make_net():
        return make().to(memory_format=memory_format)

    x = torch.randn(2, 3, 32, 32).to(memory_format=memory_format)
    kept_loss, kept_grads = bf16_step(make_net(), x, recast=False, penalty=penalty)

    recast = set()
    unpack = runtime_mod._unpack_weight_cast

    def counting_unpack(packed):
        if isinstance(packed, runtime_mod._SavedCast):
            recast.add(id(packed.weight))
        return unpack(packed)

    monkeypatch.setattr(runtime_mod, "_unpack_weight_cast", counting_unpack)
    net = make_net()
    loss, grads = bf16_step(net, x, recast=True, penalty=penalty)
    assert torch.equal(loss, kept_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, kept_grads, strict=True))
    # every convolution's weight (plain, matrix-product and transposed) was cast again in backward
    # (and the gradient penalty's interpolate, a leaf too); channels-last matrix-product layers
    # reshape their cast into a copy, which is kept as it is
    recast_kinds = (nn.Conv2d, nn.ConvTranspose2d) if memory_format == torch.contiguous_format else ()
    assert {id(m.weight) for m in net.modules()
            if type(m) in (nn.Conv2d, nn.ConvTranspose2d) or isinstance(m, recast_kinds)} <= recast


def test_a_weight_changed_between_forward_and_backward_is_refused():
    net = unet()
    with Runtime(torch.device("cpu"), precision="bf16", recast_saved_weights=True).autocast():
        loss = net(torch.randn(1, 3, 32, 32)).float().mean()
    with torch.no_grad():
        next(net.parameters()).mul_(2)
    with pytest.raises(RuntimeError, match="modified in place between its forward and its backward"):
        loss.backward()


def test_fp32_and_the_default_keep_autograd_as_it_is(monkeypatch):
    packed = []
    monkeypatch.setattr(runtime_mod, "_pack_weight_cast", lambda t: packed.append(t) or t)
    net, x = unet(), torch.randn(1, 3, 32, 32)
    for runtime in (Runtime(torch.device("cpu")), Runtime(torch.device("cpu"), precision="bf16")):
        with runtime.autocast():
            net(x).float().mean().backward()
    assert packed == []
