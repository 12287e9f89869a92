"""Convolutions on small output maps as matrix products (translate/nets/matmul_conv.py), and the
runtime's CPU memory setting: same numbers, same checkpoints, and the runtime applies them."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import unittest.mock

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_layer_matches
from torch import nn

from translate.config import RuntimeConfig
from translate.nets import StarGANDiscriminator, UnetGenerator
from translate.nets.matmul_conv import (
    FLOAT32_ROWS,
    MAX_POSITIONS,
    MAX_TRANSPOSED_POSITIONS,
    THIN_OUT_CHANNELS,
    MatmulConv2d,
    MatmulConvTranspose2d,
    use_matmul_for_small_maps,
)
from translate.train.runtime import Runtime


def pair(layer=nn.Conv2d, settings: dict | None = None, **kwargs) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    conv = layer(**kwargs).double()
    matmul = layer(**kwargs).double()
    matmul.load_state_dict(conv.state_dict())
    use_matmul_for_small_maps(matmul, settings)
    return conv, matmul


@pytest.mark.parametrize("kwargs,size", [
    (dict(in_channels=6, out_channels=5, kernel_size=4, stride=2, padding=1), 8),  # 4x4 output: StarGAN D's layers
    (dict(in_channels=6, out_channels=5, kernel_size=4, stride=2, padding=1, bias=False), 4),  # 2x2
    (dict(in_channels=7, out_channels=3, kernel_size=2, bias=False), 2),  # StarGAN's classifier: 1x1 output
    (dict(in_channels=4, out_channels=2, kernel_size=3, padding=2, dilation=2), 3),  # dilation
    (dict(in_channels=4, out_channels=3, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)), (3, 5)),  # not square
])
def test_small_maps_match_the_convolution_with_first_and_second_derivatives(kwargs, size):
    conv, matmul = pair(**kwargs)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, kwargs["in_channels"], h, w, dtype=torch.double)
    out = matmul(x)
    assert out.shape[2] * out.shape[3] <= MAX_POSITIONS  # the matrix product's path
    assert_layer_matches(conv, matmul, x)


@pytest.mark.parametrize("kwargs,size", [
    (dict(in_channels=6, out_channels=5, kernel_size=4, stride=2, padding=1), 4),  # the U-Net's up layers
    (dict(in_channels=6, out_channels=5, kernel_size=4, stride=2, padding=1, bias=False), 1),  # its innermost
    (dict(in_channels=5, out_channels=4, kernel_size=3, stride=2, padding=1, output_padding=1), 8),  # ResNet's
    (dict(in_channels=4, out_channels=3, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=2), (2, 5)),
])
def test_transposed_small_maps_match_with_first_and_second_derivatives(kwargs, size):
    conv, matmul = pair(nn.ConvTranspose2d, **kwargs)
    assert type(matmul) is MatmulConvTranspose2d
    h, w = (size, size) if isinstance(size, int) else size
    assert h * w <= MAX_TRANSPOSED_POSITIONS  # the matrix product's path
    assert_layer_matches(conv, matmul, torch.randn(3, kwargs["in_channels"], h, w, dtype=torch.double))


def test_transposed_hand_check_each_input_spreads_its_patch():
    # one input position with stride 2, padding 1: its patch lands at (2i - 1, 2j - 1), clipped
    conv, matmul = pair(nn.ConvTranspose2d, in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1)
    x = torch.zeros(1, 2, 2, 2, dtype=torch.double)
    x[0, :, 1, 0] = torch.tensor([1.0, -2.0])
    patch = (matmul.weight * x[0, :, 1, 0].reshape(2, 1, 1, 1)).sum(0)  # C_out x 4 x 4
    expected = torch.zeros(3, 6, 6, dtype=torch.double)  # the 4x4 output padded by 1 on each side
    expected[:, 2:6, 0:4] = patch
    expected = expected[:, 1:5, 1:5] + matmul.bias.reshape(3, 1, 1)
    torch.testing.assert_close(matmul(x)[0], expected)
    torch.testing.assert_close(conv(x)[0], expected)


def test_transposed_large_maps_and_given_output_sizes_take_the_torch_path():
    conv, matmul = pair(nn.ConvTranspose2d, in_channels=3, out_channels=4, kernel_size=4, stride=2, padding=1)
    x = torch.randn(2, 3, 16, 16, dtype=torch.double)  # 256 input positions
    assert torch.equal(matmul(x), conv(x))
    small = torch.randn(2, 3, 4, 4, dtype=torch.double)
    assert torch.equal(matmul(small, output_size=[9, 9]), conv(small, output_size=[9, 9]))


def test_thin_transposed_layers_take_the_product_on_any_map_for_one_image():
    # the U-Net's last layer: 3 output channels on a map above the limit, first and second derivatives
    conv, matmul = pair(nn.ConvTranspose2d, in_channels=8, out_channels=3, kernel_size=4, stride=2, padding=1)
    assert 12 * 12 > MAX_TRANSPOSED_POSITIONS and THIN_OUT_CHANNELS >= 3
    with unittest.mock.patch.object(F, "fold", wraps=F.fold) as fold:
        assert_layer_matches(conv, matmul, torch.randn(1, 8, 12, 12, dtype=torch.double))
    assert fold.called
    # two images, or more output channels than thin: oneDNN's layer, exactly
    wide_conv, wide = pair(nn.ConvTranspose2d, in_channels=8, out_channels=THIN_OUT_CHANNELS + 1, kernel_size=4,
                           stride=2, padding=1)
    with unittest.mock.patch.object(F, "fold", wraps=F.fold) as fold:
        two = torch.randn(2, 8, 32, 32, dtype=torch.double)
        assert torch.equal(matmul(two), conv(two))
        assert torch.equal(wide(two[:1]), wide_conv(two[:1]))
    assert not fold.called


def test_transposed_under_bf16_autocast_keeps_bf16_and_its_bias():
    conv, matmul = pair(nn.ConvTranspose2d, in_channels=64, out_channels=32, kernel_size=4, stride=2, padding=1)
    conv, matmul = conv.float(), matmul.float()
    with torch.no_grad():
        for net in (conv, matmul):
            net.bias.fill_(0.5)
    x = torch.randn(2, 64, 4, 4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = conv(x), matmul(x)
    assert got.dtype == torch.bfloat16  # a float32 bias would have promoted the sum
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got.float() - expected.float()).abs().max() < 0.02 * expected.float().abs().max()


def test_unet_256_with_matmul_layers_matches_and_keeps_its_keys():
    torch.manual_seed(0)
    net = UnetGenerator(3, 3, 8, 8, "batch", False)  # unet_256's depth, narrow
    plain = copy.deepcopy(net)
    use_matmul_for_small_maps(net)
    assert net.state_dict().keys() == plain.state_dict().keys()
    switched = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(switched) == 8 and all(type(m) is MatmulConvTranspose2d for m in switched)
    x = torch.randn(2, 3, 256, 256)
    expected, got = plain(x), net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    got.square().mean().backward()
    expected.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_large_maps_compute_exactly_as_the_convolution():
    conv, matmul = pair(in_channels=3, out_channels=4, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)  # 64 output positions: the convolution's path
    assert torch.equal(matmul(x), conv(x))


def test_channels_last_input_gives_channels_last_output():
    conv, matmul = pair(in_channels=8, out_channels=6, kernel_size=4, stride=2, padding=1)
    x = torch.randn(2, 8, 4, 4, dtype=torch.double).to(memory_format=torch.channels_last)
    y = matmul(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv(x))
    assert matmul(x.contiguous()).is_contiguous()


def test_switch_keeps_parameters_and_state_dict_keys():
    torch.manual_seed(0)
    net = StarGANDiscriminator(image_size=32, conv_dim=4, c_dim=3, repeat_num=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    x = torch.randn(2, 3, 32, 32)
    src, cls = net(x)
    use_matmul_for_small_maps(net)
    assert [id(p) for p in net.parameters()] == params
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is MatmulConv2d for m in convs)
    src2, cls2 = net(x)
    torch.testing.assert_close(src2, src, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls2, cls, rtol=1e-5, atol=1e-6)
    net.load_state_dict(before)  # and a checkpoint of either kind loads into it


@pytest.mark.parametrize("batch,by_columns", [(4, False), (1, False), (1, True)])  # rows, then one image's columns
def test_bf16_autocast_matches_the_convolution_within_bf16_rounding(batch, by_columns):
    for layer in (nn.Conv2d, nn.ConvTranspose2d):
        conv, matmul = pair(layer, {"by_columns": by_columns}, in_channels=64, out_channels=32, kernel_size=4,
                            stride=2, padding=1)
        conv, matmul = conv.float(), matmul.float()
        x = torch.randn(batch, 64, 4, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, got = conv(x), matmul(x)
        assert got.dtype == torch.bfloat16 and got.is_contiguous()
        scale = expected.float().abs().max()
        assert (got.float() - expected.float()).abs().max() < 0.02 * scale


@pytest.mark.parametrize("transposed", [False, True])
def test_one_nchw_image_under_autocast_takes_its_products_by_columns_when_set(transposed):
    # weight @ columns is the NCHW output itself: fold gets its patches as they are, the
    # convolution's bias goes in with addmm. Float64 is left alone by autocast, so the comparison
    # with torch's layer is exact, first and second derivatives included. By default (CPUs
    # without AMX) every product is taken by rows.
    for setting in (True, False):
        conv, matmul = pair(nn.ConvTranspose2d if transposed else nn.Conv2d, {"by_columns": True} if setting else None,
                            in_channels=6, out_channels=5, kernel_size=4, stride=2, padding=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert_layer_matches(conv, matmul, torch.randn(1, 6, 4, 4, dtype=torch.double))
            for batch in (1, 2):
                by_columns = setting and batch == 1
                with (unittest.mock.patch.object(F, "fold", wraps=F.fold) as fold,
                      unittest.mock.patch.object(torch, "addmm", wraps=torch.addmm) as addmm):
                    matmul(torch.randn(batch, 6, 4, 4, dtype=torch.double))
                if transposed:
                    assert fold.call_args.args[0].is_contiguous() == by_columns
                else:
                    assert addmm.called == by_columns


def test_runtime_switches_networks_on_the_cpu_only_when_asked():
    for enabled in (True, False):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", small_map_matmul=enabled, keep_freed_memory=False))
        net = runtime.wrap(StarGANDiscriminator(image_size=32, conv_dim=4, c_dim=3, repeat_num=4))
        kinds = {type(m) for m in net.modules() if isinstance(m, nn.Conv2d)}
        assert kinds == ({MatmulConv2d} if enabled else {nn.Conv2d})
    # on a GPU cuDNN chooses its algorithms; the switch is for CPUs
    assert not Runtime(torch.device("cpu")).small_map_matmul


KEEP_PROBE = """
import sys, torch
from translate.train.runtime import keep_freed_memory
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
applied = keep_freed_memory() if sys.argv[1] == 'keep' else None
x = torch.ones(64 * 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
held = rss_mb()
del x
print(applied, held - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc are Linux's")
def test_keep_freed_memory_keeps_large_blocks_for_reuse():
    released = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", KEEP_PROBE, mode], capture_output=True, text=True, check=True)
        applied, dropped = out.stdout.split()
        released[mode] = float(dropped)
        if mode == "keep":
            assert applied == "True"
    # by default the 64 MB block goes back to the system when freed; kept, it stays for the next step
    assert released["default"] > 50
    assert released["keep"] < 5


def test_each_output_position_is_the_weights_dot_the_patch_under_it():
    # a hand check of the layout the reshapes and transposes build
    conv, matmul = pair(in_channels=2, out_channels=3, kernel_size=2, stride=2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.double)
    y = matmul(x)
    patch = x[0, :, 2:4, 0:2]
    expected = (conv.weight * patch).sum(dim=(1, 2, 3)) + conv.bias
    torch.testing.assert_close(y[0, :, 1, 0], expected)


def test_autocast_weight_cast_is_reused_until_the_weight_changes():
    conv, matmul = pair(in_channels=16, out_channels=8, kernel_size=4, stride=2, padding=1)
    conv, matmul = conv.float(), matmul.float()
    x = torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = matmul._weight_matrix()
        assert matmul._weight_matrix() is first  # one cast for the several forwards of a step
        (matmul(x).float().sum() + matmul(2 * x).float().sum()).backward()
        (conv(x).float().sum() + conv(2 * x).float().sum()).backward()
    # gradients reach the float32 weight through the kept cast, as through autocast's own cache
    torch.testing.assert_close(matmul.weight.grad, conv.weight.grad, rtol=0.02, atol=0.02)
    for net in (conv, matmul):  # an optimiser step changes the weights in place
        with torch.no_grad():
            net.weight.mul_(-3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matmul._weight_matrix() is not first
        updated, expected = matmul(x).float(), conv(x).float()
    assert (updated - expected).abs().max() < 0.02 * expected.abs().max()  # not the stale weights
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not matmul._weight_matrix().requires_grad  # no graph kept for a no-grad pass
    assert matmul._weight_matrix().dtype == torch.float32  # outside autocast: the weight itself


def test_kept_cast_is_let_go_once_backward_reaches_it():
    # by then every use is differentiated and the step makes it stale; kept, it sat on the peak
    _, matmul = pair(in_channels=16, out_channels=8, kernel_size=4, stride=2, padding=1)
    matmul = matmul.float()
    x = torch.randn(2, 16, 4, 4, requires_grad=True)  # 8 rows: a bf16 product (4 or fewer: float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = matmul(x).float().sum() + matmul(2 * x).float().sum()
        kept = matmul._cast
        assert kept is not None and kept[1].requires_grad
        # a gradient penalty's input gradient does not reach the weight: the cast stays for reuse
        (grad_x,) = torch.autograd.grad(matmul(x).float().square().sum(), x, create_graph=True)
        assert matmul._cast is kept
    (loss + grad_x.square().sum()).backward()
    assert matmul._cast is None and matmul.weight.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        matmul(x)
        kept = matmul._cast
        assert kept is not None  # without a graph there is no backward: kept for the next pass
        assert matmul._weight_matrix() is kept[1]


def test_a_module_with_a_kept_cast_copies_and_pickles():
    _, matmul = pair(in_channels=8, out_channels=4, kernel_size=4, stride=2, padding=1)
    matmul = matmul.float()
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        matmul(x)  # keeps a bf16 cast with its graph
    for clone in (copy.deepcopy(matmul), pickle.loads(pickle.dumps(matmul))):
        assert getattr(clone, "_cast", None) is None
        assert torch.equal(clone(x), matmul(x))


@pytest.mark.parametrize("fused", [True, False])
def test_kept_cast_follows_optimiser_steps_fused_or_not(fused):
    # the trainer's fused Adam updates weights in place without moving their version counters
    conv, matmul = pair(in_channels=16, out_channels=8, kernel_size=4, stride=2, padding=1)
    conv, matmul = conv.float(), matmul.float()
    optimizers = [torch.optim.Adam(net.parameters(), lr=0.1, fused=fused) for net in (conv, matmul)]
    x = torch.randn(2, 16, 4, 4)  # 8 rows: a bf16 product with a kept cast
    for _ in range(3):
        for net, optimizer in zip((conv, matmul), optimizers, strict=True):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = net(x).float().square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.testing.assert_close(matmul.weight, conv.weight, rtol=0.05, atol=0.01)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(matmul._weight_matrix().float(),
                                       matmul.weight.reshape(8, -1), rtol=0.01, atol=1e-3)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("float32_rows", [FLOAT32_ROWS, 0])  # set on CPUs with AMX; the default
def test_products_of_few_rows_under_autocast_are_float32_and_keep_no_cast(transposed, float32_rows):
    # weight-bound layers: no bf16 copy of the weight, the float32 result rounded to bf16 once
    settings = {"float32_rows": float32_rows} if float32_rows else None
    if transposed:
        conv = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        matmul = copy.deepcopy(conv)
        use_matmul_for_small_maps(matmul, settings)
    else:
        conv, matmul = pair(settings=settings, in_channels=16, out_channels=8, kernel_size=4, stride=2, padding=1)
        conv, matmul = conv.float(), matmul.float()
    assert FLOAT32_ROWS == 4
    for batch, float32 in ((1, float32_rows == 4), (2, False)):  # 4 rows (2x2 positions), then 8
        x = torch.randn(batch, 16, 2 if transposed else 4, 2 if transposed else 4)
        conv.zero_grad(), matmul.zero_grad()
        weights = torch.randn_like(conv(x)).bfloat16().float()  # a linear loss: its gradient exact in bf16
        (conv(x) * weights).sum().backward()
        exact = [p.grad.clone() for p in conv.parameters()]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = matmul(x)
            kept = getattr(matmul, "_cast", None)
        assert y.dtype == torch.bfloat16 and (kept is None) == float32
        if float32:  # the float32 result rounded once (to within float32 summation order)
            torch.testing.assert_close(y.float(), conv(x), rtol=2**-8, atol=1e-5)
        (y.float() * weights).sum().backward()
        for got, want in zip((p.grad for p in matmul.parameters()), exact, strict=True):
            assert got.dtype == torch.float32
            error = (got - want).abs().max() / want.abs().max()
            assert error < (0.01 if float32 else 0.05) and (error > 1e-4) != float32  # bf16 rounding only on the bf16 path


def test_limits_choose_the_maps_a_product_takes():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ConvTranspose2d(4, 8, 4, 2, 1))
    use_matmul_for_small_maps(net, {"max_positions": 64, "max_transposed_positions": 16, "max_rows": 128})
    conv, transposed = net
    assert (conv.max_positions, transposed.max_positions, conv.max_rows) == (64, 16, 128)
    for layer, shape, product in ((conv, (2, 4, 8, 8), True), (conv, (3, 4, 8, 8), False),  # 192 rows
                                  (conv, (1, 4, 9, 9), False), (transposed, (8, 4, 4, 4), True),
                                  (transposed, (1, 4, 5, 5), False)):
        name = "unfold" if layer is conv else "fold"
        with unittest.mock.patch.object(F, name, wraps=getattr(F, name)) as spy:
            layer(torch.randn(shape))
        assert spy.called == product, (shape, product)


@pytest.mark.parametrize("matrix_units", [False, True])
def test_runtime_widens_the_limits_for_bf16_on_cpus_with_bf16_matrix_units(monkeypatch, matrix_units):
    from translate.train import runtime as runtime_module
    monkeypatch.setattr(runtime_module, "has_bf16_matrix_units", lambda: matrix_units)
    for precision in ("fp32", "bf16"):
        runtime = Runtime.setup(RuntimeConfig(device="cpu", precision=precision, keep_freed_memory=False))
        unet = runtime.wrap(UnetGenerator(3, 3, num_downs=5, ngf=8))
        layers = {type(m): (m.max_positions, m.max_rows, m.float32_rows, m.by_columns) for m in unet.modules()
                  if type(m) in (MatmulConv2d, MatmulConvTranspose2d)}
        wide = matrix_units and precision == "bf16"
        # with AMX also float32 products of few rows and one image's products by columns
        assert layers == {MatmulConv2d: (64, 256, FLOAT32_ROWS, True) if wide else (MAX_POSITIONS, 0, 0, False),
                          MatmulConvTranspose2d: (256, 256, FLOAT32_ROWS, True) if wide
                          else (MAX_TRANSPOSED_POSITIONS, 0, 0, False)}
