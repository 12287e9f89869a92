"""3x3 convolutions by Winograd's F(2x2, 3x3) and F(4x4, 3x3) (translate/nets/winograd.py): the
convolution's values and derivatives in float64, within a small multiple of the direct
convolution's rounding in bf16, and switched in by the runtime only where it pays."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from translate.config import RuntimeConfig
from translate.errors import UserError
from translate.nets import ResnetGenerator, StarGANGenerator
from translate.nets import winograd as winograd_module
from translate.nets.matmul_conv import MatmulConv2d
from translate.nets.winograd import (WinogradConv2d, _toom_cook, is_winograd, output_tile_for, use_winograd,
                                     winograd_input, winograd_kernel)
from translate.train import runtime as runtime_module
from translate.train.runtime import Runtime


def pair(*args, output_tile: int = 2, **kwargs) -> tuple[nn.Conv2d, WinogradConv2d]:
    torch.manual_seed(0)
    conv = nn.Conv2d(*args, **kwargs)
    return conv, use_winograd(copy.deepcopy(conv), 1, output_tile)


@pytest.mark.parametrize("transpose_first", [True, False])  # NCHW maps made channels-last first, or read as they are
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("bias,padding,blocks", [(True, 0, (3, 4)), (True, 1, (1, 2)), (False, 0, (1, 1)),
                                                 (False, 1, (5, 2))])
def test_float64_values_and_gradients_are_the_convolutions(memory_format, tile, bias, padding, blocks,
                                                           transpose_first, monkeypatch):
    monkeypatch.setattr(winograd_module, "TRANSPOSE_FIRST_PIXELS", 0 if transpose_first else 10 ** 9)
    conv, winograd = pair(6, 5, 3, bias=bias, padding=padding, output_tile=tile)
    conv, winograd = conv.double(), winograd.double()
    assert type(winograd) is WinogradConv2d and winograd.output_tile == tile
    size = [tile * b + 2 - 2 * padding for b in blocks]  # whole tile x tile output blocks
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


@pytest.mark.parametrize("m", [2, 4])
def test_toom_cook_matrices_give_the_one_dimensional_correlation(m):
    b_t, g, a_t = _toom_cook(m)
    d, k = torch.randn(m + 2, dtype=torch.double), torch.randn(3, dtype=torch.double)
    expected = torch.stack([(d[i:i + 3] * k).sum() for i in range(m)])
    torch.testing.assert_close(a_t @ ((g @ k) * (b_t @ d)), expected)
    if m == 2:  # Lavin and Gray's F(2, 3), up to the sign of the row for infinity
        torch.testing.assert_close(b_t[:3, :3].abs(), torch.tensor([[1, 0, 1], [0, 1, 1], [0, 1, 1]],
                                                                  dtype=torch.double))
        torch.testing.assert_close(g.abs(), torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, .5, .5], [0, 0, 1]],
                                                         dtype=torch.double))


@pytest.mark.parametrize("m", [2, 4])
def test_each_output_block_is_the_kernel_dot_its_3x3_patches(m):
    # by hand: the 2-d transforms are the 1-d ones on rows and columns, checked at the last tile
    size = 2 * m + 2
    x = torch.randn(1, 2, size, size, dtype=torch.double)
    weight = torch.randn(1, 2, 3, 3, dtype=torch.double)
    tiles = winograd_input(x, m)  # (m + 2)^2 x (tiles) x C_in
    kernel = winograd_kernel(weight, m)  # (m + 2)^2 x C_out x C_in
    assert tiles.shape == ((m + 2) ** 2, 4, 2) and kernel.shape == ((m + 2) ** 2, 1, 2)
    products = (tiles * kernel[:, 0][:, None, :]).sum(-1)  # (m + 2)^2 x tiles
    _, _, a_t = _toom_cook(m)
    block = a_t @ products[:, 3].reshape(m + 2, m + 2) @ a_t.t()  # the bottom-right tile
    expected = torch.stack([torch.stack([(x[0, :, r:r + 3, c:c + 3] * weight[0]).sum() for c in range(m, 2 * m)])
                            for r in range(m, 2 * m)])
    torch.testing.assert_close(block, expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("tile,bound", [(2, 4), (4, 10)])
def test_bf16_error_is_a_small_multiple_of_the_direct_convolutions(memory_format, tile, bound):
    conv, winograd = pair(64, 64, 3, output_tile=tile)
    x = torch.randn(2, 64, 18, 18).contiguous(memory_format=memory_format)
    grad = torch.randn(2, 64, 16, 16)
    exact_conv = copy.deepcopy(conv).double()
    exact = exact_conv(x.double())
    (exact * grad.double()).sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct, got = conv(x), winograd(x)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=memory_format)
    for out in (direct, got):
        out.float().backward(grad)

    def error(value: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return (value.double() - truth).abs().mean()

    # measured: 2x the direct convolution's error for F(2x2), 7-8x for F(4x4), in the values and
    # the weight's gradient alike (transformed tiles and kernels rounded to bf16 before the products)
    assert 0 < error(got, exact) < bound * error(direct, exact)  # > 0: bf16 products, not a float32 fallback
    assert winograd.weight.grad.dtype == torch.float32
    assert error(winograd.weight.grad, exact_conv.weight.grad) < bound * error(conv.weight.grad, exact_conv.weight.grad)
    # the bias: the same bf16 gradient summed (in float32 here)
    assert error(winograd.bias.grad, exact_conv.bias.grad) <= 2 * error(conv.bias.grad, exact_conv.bias.grad)


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
    assert is_winograd(nn.Conv2d(256, 256, 3, padding=1), 1)  # StarGAN's (where F(4x4) computes them)
    assert not is_winograd(nn.Conv2d(256, 256, 3, padding=1), 1, zero_padded=False)
    assert not is_winograd(nn.Conv2d(256, 256, 3, padding=1, padding_mode="reflect"), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 3, stride=2), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 4), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 3, dilation=2), 1)
    assert not is_winograd(nn.Conv2d(256, 256, 3, groups=2), 1)
    for net, residual_convs, zero_padded in ((ResnetGenerator(3, 3, 8, n_blocks=2), 4, False),
                                             (StarGANGenerator(8, 5, 2), 4, True), (StarGANGenerator(8, 5, 2), 0, False)):
        torch.manual_seed(0)
        plain = copy.deepcopy(net)
        use_winograd(net, 32, zero_padded=zero_padded)  # the blocks' 4 * 8 = 32 channels
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
    for precision, tile, padded_switched in (("fp32", 0, True), ("bf16", 0, False), ("bf16", 4, True),
                                             ("fp32", 2, False)):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", precision=precision, winograd_min_channels=32,
                                              winograd_output_tile=tile, keep_freed_memory=False))
        stargan = runtime.wrap(StarGANGenerator(8, 5, 1))  # zero-padded residual layers
        assert any(type(m) is WinogradConv2d for m in stargan.modules()) == padded_switched
    with pytest.raises(UserError, match="winograd_output_tile=3 .* use 0 \\(automatic\\), 2 or 4"):
        Runtime.setup(RuntimeConfig(device="cpu", winograd_output_tile=3, keep_freed_memory=False))


@pytest.mark.parametrize("matrix_units", [False, True])
def test_automatic_tile_leaves_bf16_layers_to_onednn_on_cpus_with_bf16_matrix_units(monkeypatch, matrix_units):
    # with AMX, oneDNN's direct bf16 layers are faster than Winograd's; an explicit tile still switches them
    monkeypatch.setattr(runtime_module, "has_bf16_matrix_units", lambda: matrix_units)
    for precision, tile, switched in (("bf16", 0, not matrix_units), ("bf16", 2, True), ("bf16", 4, True),
                                      ("fp32", 0, True)):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", precision=precision, winograd_min_channels=8,
                                              winograd_output_tile=tile, keep_freed_memory=False))
        net = runtime.wrap(ResnetGenerator(3, 3, 8, n_blocks=1))
        assert any(type(m) is WinogradConv2d for m in net.modules()) == switched, (precision, tile)


def test_automatic_tile_is_4x4_for_large_float32_maps_and_keeps_a_kernel_per_tile():
    assert output_tile_for(torch.float32, 64 * 64) == 4 and output_tile_for(torch.float32, 16 * 32 * 32) == 4
    assert output_tile_for(torch.float32, 32 * 32) == 2
    assert output_tile_for(torch.bfloat16, 16 * 64 * 64) == 2  # rounding: F(4x4) is 4x F(2x2)'s error in bf16
    conv, winograd = pair(4, 4, 3, padding=1, output_tile=0)
    conv, winograd = conv.double(), winograd.double()
    for size, tile in ((8, 2), (64, 4), (6, 2), (8, 2)):  # one update: the kept kernel follows the tile
        x = torch.randn(1, 4, size, size, dtype=torch.double)
        torch.testing.assert_close(winograd(x), conv(x), rtol=1e-10, atol=1e-12)
        assert winograd._cast[1].shape[0] == (tile + 2) ** 2
    x = torch.randn(1, 4, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        winograd.float()(x)
    assert winograd._cast[1].shape[0] == 16


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
