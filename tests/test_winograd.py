"""3x3 convolutions by Winograd's F(2x2, 3x3) (translate/nets/winograd.py): the convolution's
values and derivatives in float64, within a small multiple of the direct convolution's rounding
in bf16, and switched in by the runtime only where it pays."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from translate.config import RuntimeConfig
from translate.nets import ResnetGenerator, StarGANGenerator
from translate.nets.matmul_conv import MatmulConv2d
from translate.nets.winograd import WinogradConv2d, is_winograd, use_winograd, winograd_input, winograd_kernel
from translate.train.runtime import Runtime


def pair(*args, **kwargs) -> tuple[nn.Conv2d, WinogradConv2d]:
    torch.manual_seed(0)
    conv = nn.Conv2d(*args, **kwargs)
    return conv, use_winograd(copy.deepcopy(conv), 1)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias,size", [(True, (12, 14)), (True, (6, 4)), (False, (4, 4)), (False, (20, 10))])
def test_float64_values_and_gradients_are_the_convolutions(memory_format, bias, size):
    conv, winograd = pair(6, 5, 3, bias=bias)
    conv, winograd = conv.double(), winograd.double()
    assert type(winograd) is WinogradConv2d
    x = torch.randn(3, 6, *size, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    expected, got = conv(x), winograd(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got.is_contiguous(memory_format=memory_format)  # as torch's layer returns it
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, *conv.parameters()], grad)
    got_grads = torch.autograd.grad(got, [x, *winograd.parameters()], grad)
    assert got_grads[0].is_contiguous(memory_format=memory_format)
    for a, b in zip(expected_grads, got_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_second_derivatives_refused():
    _, winograd = pair(2, 3, 3)
    winograd = winograd.double()
    x = torch.randn(1, 2, 6, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(winograd, (x,))
    (grad_x,) = torch.autograd.grad(winograd(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward"):
        grad_x.sum().backward()  # no network that takes it needs it (StarGAN's penalty is D's)


def test_each_2x2_block_is_the_kernel_dot_its_3x3_patches():
    # by hand: the transforms are a known identity, checked here at one position of one tile
    x = torch.randn(1, 2, 6, 6, dtype=torch.double)
    weight = torch.randn(1, 2, 3, 3, dtype=torch.double)
    tiles = winograd_input(x)  # 16 x (tiles) x C_in
    kernel = winograd_kernel(weight)  # 16 x C_out x C_in
    assert tiles.shape == (16, 4, 2) and kernel.shape == (16, 1, 2)
    products = (tiles * kernel[:, 0][:, None, :]).sum(-1)  # 16 x tiles
    a_t = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.double)
    tile = 3  # the bottom-right tile: outputs (2..3, 2..3)
    block = a_t @ products[:, tile].reshape(4, 4) @ a_t.t()
    expected = torch.stack([torch.stack([(x[0, :, r:r + 3, c:c + 3] * weight[0]).sum() for c in (2, 3)])
                            for r in (2, 3)])
    torch.testing.assert_close(block, expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bf16_error_is_a_small_multiple_of_the_direct_convolutions(memory_format):
    conv, winograd = pair(64, 64, 3)
    x = torch.randn(2, 64, 18, 18).contiguous(memory_format=memory_format)
    exact = conv.double()(x.double()).float()
    conv.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct, got = conv(x), winograd(x)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=memory_format)
    direct_error = (direct.float() - exact).abs().mean()
    error = (got.float() - exact).abs().mean()
    assert error > 0  # bf16 products, not a float32 fallback
    assert error < 4 * direct_error  # measured: about 2x (tiles rounded to bf16 before the products)
    grad = torch.randn_like(exact)
    for out in (direct, got):
        out.float().backward(grad)
    for a, b in zip(conv.parameters(), winograd.parameters(), strict=True):
        assert b.grad.dtype == torch.float32
        assert (b.grad - a.grad).abs().mean() < 0.02 * a.grad.abs().mean()


def test_kernel_is_transformed_once_per_update_and_follows_fused_optimiser_steps():
    conv, winograd = pair(32, 32, 3)
    optimizers = [torch.optim.Adam(net.parameters(), lr=0.01, fused=True) for net in (conv, winograd)]
    x = torch.randn(2, 32, 10, 10)
    start = conv.weight.detach().clone()
    for _ in range(3):
        for net, optimizer in zip((conv, winograd), optimizers, strict=True):
            kernels = []
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = 0
                for k in (1.0, 0.5, -2.0):  # three uses in one step, as a CycleGAN generator's
                    loss = loss + net(k * x).float().square().mean()
                    kernels.append(getattr(net, "_cast", (None, None))[1])
            if net is winograd:
                assert kernels[0] is kernels[1] is kernels[2] and kernels[0].dtype == torch.bfloat16
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # the same steps to bf16 rounding (which Adam turns into +-lr on near-zero gradients)
        moved = (conv.weight - start).abs().mean()
        assert (winograd.weight - conv.weight).abs().mean() < 0.1 * moved
        expected = winograd_kernel(winograd.weight.detach())  # the fused step's new weights, not stale ones
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(winograd._weight_matrix().float(), expected, rtol=0.02, atol=2e-3)


def test_only_3x3_stride_1_layers_wide_enough_are_switched_and_keys_stay():
    assert is_winograd(nn.Conv2d(256, 256, 3), 256)  # after a reflection pad
    assert not is_winograd(nn.Conv2d(128, 256, 3), 256)  # narrower: slower with it
    assert not is_winograd(nn.Conv2d(256, 256, 3, padding=1), 1)  # StarGAN's: no faster
    assert not is_winograd(nn.Conv2d(256, 256, 3, stride=2), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 4), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 3, dilation=2), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 3, groups=2), 1)
    for net, residual_convs in ((ResnetGenerator(3, 3, 8, n_blocks=2), 4), (StarGANGenerator(8, 5, 2), 0)):
        torch.manual_seed(0)
        plain = copy.deepcopy(net)
        use_winograd(net, 32)  # the blocks' 4 * 8 = 32 channels
        assert sum(type(m) is WinogradConv2d for m in net.modules()) == residual_convs
        assert net.state_dict().keys() == plain.state_dict().keys()
        x = torch.randn(2, 3, 32, 32)
        args = (x, torch.rand(2, 5)) if isinstance(net, StarGANGenerator) else (x,)
        torch.testing.assert_close(net(*args), plain(*args), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_odd_maps_and_traced_graphs_take_the_convolution():
    conv, winograd = pair(4, 4, 3)
    x = torch.randn(1, 4, 9, 8)  # an odd output height: no whole 2x2 blocks
    assert torch.equal(winograd(x), conv(x))
    traced = torch.jit.trace(winograd, torch.randn(1, 4, 10, 10))
    assert "aten::_convolution" in str(traced.graph) and torch.equal(traced(x), conv(x))


def test_runtime_switches_resnet_blocks_on_the_cpu_before_the_small_map_switch():
    for enabled in (True, False):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", winograd=enabled, winograd_min_channels=32,
                                              keep_freed_memory=False))
        net = runtime.wrap(ResnetGenerator(3, 3, 8, n_blocks=1))
        kinds = [type(m) for m in net.modules()
                 if type(m) in (WinogradConv2d, MatmulConv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1)]
        assert kinds == [WinogradConv2d if enabled else MatmulConv2d] * 2
    default = Runtime.setup(RuntimeConfig(device="cpu", keep_freed_memory=False))
    assert default.winograd and default.winograd_min_channels == 256
    narrow = default.wrap(ResnetGenerator(3, 3, 8, n_blocks=1))  # 32-channel blocks: left as they are
    assert not any(type(m) is WinogradConv2d for m in narrow.modules())
    assert not Runtime(torch.device("cpu")).winograd  # GPUs (cuDNN picks) and torchrun ranks


def test_a_resnet_generator_trains_as_with_the_direct_convolution_in_float32():
    # the same function to float32 rounding: a few Adam steps end where the direct ones do
    torch.manual_seed(0)
    plain = ResnetGenerator(3, 3, 8, n_blocks=2)
    winograd = use_winograd(copy.deepcopy(plain), 32)
    x, target = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    losses = {}
    for net in (plain, winograd):
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
        losses[net] = []
        for _ in range(5):
            loss = F.l1_loss(net(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[net].append(loss.item())
    assert losses[plain][-1] < losses[plain][0]
    torch.testing.assert_close(losses[winograd], losses[plain], rtol=1e-4, atol=1e-5)


def test_uses_in_one_step_share_one_transformed_kernel_in_float_too():
    # made and saved for backward once per update, not once per use (108 uses of 4 MB each in a
    # CycleGAN step at 128 px in fp32)
    conv, winograd = pair(8, 8, 3)
    conv, winograd = conv.double(), winograd.double()
    x = torch.randn(2, 8, 10, 10, dtype=torch.double)
    kernels = []
    for net in (conv, winograd):
        loss = 0
        for k in (1.0, 0.5, -2.0):
            loss = loss + net(k * x).square().mean()
            if net is winograd:
                kernels.append(winograd._cast[1])
        loss.backward()
    assert kernels[0] is kernels[1] is kernels[2]
    assert winograd._cast is None  # let go once backward reached it
    for a, b in zip(conv.parameters(), winograd.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # an update in place: the next forward transforms the new weights
        winograd.weight.mul_(0.5)
    torch.testing.assert_close(winograd(x), F.conv2d(x, winograd.weight, winograd.bias))


def test_copies_and_pickles_leave_the_kernel_behind():
    _, winograd = pair(8, 8, 3)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        y = winograd(x)  # keeps a kernel without a graph
    assert winograd._cast is not None
    for clone in (copy.deepcopy(winograd), pickle.loads(pickle.dumps(winograd))):
        assert getattr(clone, "_cast", None) is None
        torch.testing.assert_close(clone(x), y)
