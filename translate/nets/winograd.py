"""3x3 convolutions by Winograd's minimal filtering algorithms F(2x2, 3x3) and F(4x4, 3x3).

CycleGAN's ResNet generators spend most of their time in the 3x3, stride-1 convolutions of their
residual blocks: two thirds of a CycleGAN step at 128 px, where oneDNN's direct convolution runs
them at 85-92% of this CPU's rate forward but 75% for the weight gradient. Winograd's algorithm
(Lavin and Gray, 2016; what cuDNN picks for these layers on GPUs) computes each m x m block of
outputs from an (m + 2) x (m + 2) tile of the input with (m + 2)^2 multiplications per input and
output channel instead of 9 m^2: 16 instead of 36 for m = 2, 36 instead of 144 for m = 4:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

over overlapping tiles d (stride m), with the 3x3 kernel g transformed once per weight. The
(m + 2)^2 element-wise products summed over input channels are one batched GEMM of
(tiles x C_in) @ (C_in x C_out); the tile transforms are one small matrix product each, with
the matrices built by Toom-Cook from interpolation points (_toom_cook). Backward is the same:
the output gradient transformed by A, one batched GEMM for the input's transformed gradient
(then B and an overlap-add of the tiles), one for the transformed kernel's (then G, by autograd).

The result is the same function with other rounding: float32 noise in float32 (tests/
test_winograd.py), but in bf16, where the transformed tiles and kernels are rounded to 8 bits
before the products, 2x the direct convolution's error for F(2x2) and 7-8x for F(4x4), whose
output transform multiplies by up to 8. So the automatic tile (output_tile_for) takes F(4x4)
only in float32, on large maps, where it is fastest; in bf16 F(2x2). Measured on this CPU
(256 -> 256 channels, 2 threads): bf16 forward at batch 1 on 32 x 32 1.67 ms against oneDNN's
2.79, a CycleGAN step at 128 px 1.22-1.36 against 1.60-1.78 s; more below output_tile_for.

`use_winograd(net, min_channels, output_tile, zero_padded)` switches the plain nn.Conv2d layers
that qualify (3x3, stride 1, undilated, ungrouped, at least min_channels channels in and out:
narrower layers were slower with it here, runtime.winograd_min_channels) to WinogradConv2d in
place: same parameters and state_dict keys. Unpadded layers, whose input is padded before them
(the ResNet generators of CycleGAN and pix2pix pad by reflection), and with zero_padded, layers
that pad with zeros themselves (StarGAN's generator): the runtime includes those in float32 or
with F(4x4) only, as with F(2x2) in bf16 they were no faster (0.86-1.09x). Maps without whole
m x m output blocks compute as the torch layer.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from translate.nets.matmul_conv import _KeptWeightCast, memory_format_of


# Interpolation points of each output tile size: F(2x2, 3x3) takes 0 and +-1 (with infinity),
# whose transforms have only 0 and +-1 coefficients; F(4x4, 3x3) adds 2 and -1/2, which gave the
# smallest bf16 error of the usual choices here (0.017 of the output's RMS against 0.025 for
# +-2 or +-1/2; the direct convolution's is 0.003-0.004).
_POINTS = {2: (0.0, 1.0, -1.0), 4: (0.0, 1.0, -1.0, 2.0, -0.5)}
OUTPUT_TILES = (0, *_POINTS)  # what use_winograd takes (0: automatic, output_tile_for)


def _polynomial(roots: list[float]) -> list[float]:
    """Coefficients, lowest power first, of the product of (x - r) over `roots`."""
    coefficients = [1.0]
    for r in roots:
        coefficients = [a - r * b for a, b in zip([0.0, *coefficients], [*coefficients, 0.0], strict=True)]
    return coefficients


def _toom_cook(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F(m, 3)'s one-dimensional matrices B^T (n x n), G (n x 3) and A^T (m x n), n = m + 2, by
    Toom-Cook from the finite points p and infinity: A^T holds the powers of each point, G each
    point's powers over the product of its differences to the others, and B^T the coefficients
    of the product of (x - p) over the other points (over all of them for infinity's row)."""
    points, n = _POINTS[m], m + 2
    b_t, g, a_t = (torch.zeros(size, dtype=torch.float64) for size in ((n, n), (n, 3), (m, n)))
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        b_t[j] = torch.tensor([*_polynomial(others), 0.0], dtype=torch.float64)
        g[j] = torch.tensor([p ** k for k in range(3)], dtype=torch.float64) / math.prod(p - q for q in others)
        a_t[:, j] = torch.tensor([p ** i for i in range(m)], dtype=torch.float64)
    b_t[n - 1] = torch.tensor(_polynomial(list(points)), dtype=torch.float64)
    g[n - 1, 2] = a_t[m - 1, n - 1] = 1.0
    return b_t, g, a_t


@functools.cache
def _transforms(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F(m x m, 3x3)'s matrices as Kronecker products over a tile's rows and columns, n = m + 2:
    input (n^2 x n^2: an n x n tile to its transformed tile), kernel (n^2 x 9) and output
    (m^2 x n^2)."""
    return tuple(torch.kron(t, t).to(dtype=dtype, device=device) for t in _toom_cook(m))


# Work buffers, reused by every layer and call in a thread: made afresh, the forward's and
# backward's intermediate tiles (4-17 MB each at 256 px) came and went between the activations
# that autograd keeps, and glibc's heap, which the runtime keeps from shrinking
# (runtime.keep_freed_memory), grew around the holes: a CycleGAN step at 128 px in fp32 peaked
# at 3.1 GB instead of 1.75.
_workspace = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """This thread's work buffer `name`, as a contiguous tensor of `shape`."""
    buffers = _workspace.__dict__.setdefault("buffers", {})
    key, numel = (name, dtype, device), math.prod(shape)
    held = buffers.get(key)
    if held is None or held.numel() < numel:
        held = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return held[:numel].view(shape)


# NCHW maps of at least this many pixels (batch included) are made channels-last before their
# tiles are gathered, or their output blocks scattered: from a contiguous (NCHW) map every tile
# position reads C values a map apart, and one transposing copy first was faster (StarGAN's
# layer at batch 16, forward and backward: 81 against 91 ms in bf16, 167 against 185 in
# float32); on smaller maps the copy's cost is not won back (CycleGAN's at 128 px, one 32 x 32
# map: 17.5 against 17.1 ms).
TRANSPOSE_FIRST_PIXELS = 4096


def _is_small_nchw(x: torch.Tensor) -> bool:
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    return not x.is_contiguous(memory_format=torch.channels_last) and pixels < TRANSPOSE_FIRST_PIXELS


def _channels_last(x: torch.Tensor, pad: int = 0, name: str = "padded input") -> torch.Tensor:
    """x as a channels-last map with `pad` zeros around it (a layer's own zero padding), in work
    buffer `name`; x itself if it needs no zeros and is either channels-last already or a small
    NCHW map (TRANSPOSE_FIRST_PIXELS), whose tiles are gathered from it directly."""
    if pad == 0 and (x.is_contiguous(memory_format=torch.channels_last) or _is_small_nchw(x)):
        return x
    n, c, h, w = x.shape
    padded = _buffer(name, (n, h + 2 * pad, w + 2 * pad, c), x.dtype, x.device).permute(0, 3, 1, 2)
    if pad:
        for border in (padded[..., :pad, :], padded[..., -pad:, :], padded[..., :pad], padded[..., -pad:]):
            border.zero_()
    inner = padded[..., pad:h + pad, pad:w + pad]
    if x.is_contiguous() and c > (block := 32 // x.element_size()):
        # in blocks of 32 bytes of channels: torch's one copy from NCHW to NHWC, reading one value
        # per cache line, was 1.5-2x slower here (StarGAN's 16 x 256 x 32 x 32 maps: 4.5 against
        # 2.9 ms in bf16, 6.3 against 3.1 in float32)
        for first in range(0, c, block):
            inner[:, first:first + block].copy_(x[:, first:first + block])
    else:
        inner.copy_(x)
    return padded


def _from_channels_last(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x (a channels-last map, at least as large as `like`) cut to like's size, as a new map in
    like's dtype and memory format. To a contiguous (NCHW) map of a narrower dtype it is cast
    first, in a work buffer, so that the transposing copy moves the narrower values (StarGAN's
    float32 input gradient to bf16: 2.7 against 4.0 ms)."""
    memory_format = memory_format_of(like)
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device, memory_format=memory_format)
    if x.dtype != out.dtype and memory_format != torch.channels_last:
        cast = _buffer("cast", (x.shape[0], *x.shape[2:], x.shape[1]), out.dtype, x.device).permute(0, 3, 1, 2)
        cast.copy_(x)
        x = cast
    out.copy_(x[..., :out.shape[2], :out.shape[3]])
    return out


def _tiles(x: torch.Tensor, size: int, step: int, name: str) -> torch.Tensor:
    """The size x size tiles of x (N x C x H x W, any strides, fastest channels-last) every `step`
    pixels, gathered as size^2 x (N * tiles) x C into work buffer `name`: one copy."""
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    rows, cols = (h - size) // step + 1, (w - size) // step + 1
    view = x.as_strided((size, size, n, rows, cols, c), (sh, sw, sn, step * sh, step * sw, sc))
    tiles = _buffer(name, (size, size, n, rows, cols, c), x.dtype, x.device)
    tiles.copy_(view)
    return tiles.view(size * size, n * rows * cols, c)


def winograd_input(x: torch.Tensor, m: int = 2, name: str = "") -> torch.Tensor:
    """B^T d B for every overlapping (m + 2) x (m + 2) tile d of x (already padded), every m
    pixels: (m + 2)^2 x (N * tiles) x C_in (in work buffer `name`, or a new tensor)."""
    b, _, _ = _transforms(m, x.dtype, x.device)
    tiles = _tiles(x, m + 2, m, "input tiles")
    out = _buffer(name, tuple(tiles.shape), x.dtype, x.device) if name else torch.empty_like(tiles)
    torch.mm(b, tiles.view(len(tiles), -1), out=out.view(len(tiles), -1))
    return out


def winograd_kernel(weight: torch.Tensor, m: int = 2) -> torch.Tensor:
    """G g G^T for every kernel g of `weight` (C_out x C_in x 3 x 3): (m + 2)^2 x C_out x C_in."""
    _, g, _ = _transforms(m, weight.dtype, weight.device)
    c_out, c_in = weight.shape[:2]
    return torch.mm(g, weight.permute(2, 3, 0, 1).reshape(9, c_out * c_in)).view(-1, c_out, c_in)


def _overlap_add(tiles: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """The sum of `tiles` (size x size x N x rows x cols x C: one tile every m pixels, overlapping
    the next by size - m <= m) placed where they were read, in `dtype`: N x C x (rows + 1) m x
    (cols + 1) m, channels-last (the map they were read from, and the rest of a last block of
    m). Columns first, then rows: each pass copies every tile's first m positions in place and
    adds its other size - m to the next block's, three passes over the tiles instead of one add
    per tile position (36 strided adds for F(4x4, 3x3))."""
    size, _, n, rows, cols, c = tiles.shape

    def fold(values: torch.Tensor, out: torch.Tensor) -> None:  # (..., blocks, positions, C)
        out[..., :-1, :, :].copy_(values[..., :m, :])
        out[..., -1, :, :].zero_()
        out[..., 1:, :size - m, :] += values[..., m:, :]

    width = (cols + 1) * m
    by_columns = _buffer("input gradient columns", (size, n, rows, cols + 1, m, c), dtype, tiles.device)
    fold(tiles.permute(0, 2, 3, 4, 1, 5), by_columns)  # tile rows x N x rows x width x C
    total = _buffer("input gradient", (n, rows + 1, m, width, c), dtype, tiles.device)
    fold(by_columns.view(size, n, rows, width, c).permute(1, 3, 2, 0, 4), total.permute(0, 3, 1, 2, 4))
    return total.view(n, (rows + 1) * m, width, c).permute(0, 3, 1, 2)


class _Winograd3x3(torch.autograd.Function):
    """y = conv2d(x, g, padding=pad) + bias from the transformed kernel U = G g G^T, by m x m
    output blocks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, m: int,
                pad: int) -> torch.Tensor:
        n, c_out = x.shape[0], kernel.shape[1]
        rows, cols = (x.shape[2] + 2 * pad - 2) // m, (x.shape[3] + 2 * pad - 2) // m
        _, _, a = _transforms(m, x.dtype, x.device)
        transformed = winograd_input(_channels_last(x, pad), m, "transformed tiles")
        products = _buffer("products", (len(kernel), transformed.shape[1], c_out), x.dtype, x.device)
        torch.bmm(transformed, kernel.transpose(1, 2), out=products)  # (N * tiles) x C_out per position
        blocks = _buffer("blocks", (m * m, products.shape[1] * c_out), x.dtype, x.device)
        torch.mm(a, products.view(len(kernel), -1), out=blocks)  # the m x m outputs of every tile
        # y is made once, in x's memory format (as torch's layer returns it); a large NCHW one from
        # the blocks in channels-last order first (2.5 against 4.1 ms for StarGAN's maps)
        blocks = blocks.view(m, m, n, rows, cols, c_out)
        if memory_format_of(x) == torch.channels_last or _is_small_nchw(x):
            y = torch.empty(n, c_out, m * rows, m * cols, dtype=x.dtype, device=x.device,
                            memory_format=memory_format_of(x))
            y.view(n, c_out, rows, m, cols, m).copy_(blocks.permute(2, 5, 3, 0, 4, 1))
        else:
            by_pixel = _buffer("output", (n, rows, m, cols, m, c_out), x.dtype, x.device)
            by_pixel.copy_(blocks.permute(2, 3, 0, 4, 1, 5))
            y = by_pixel.view(n, m * rows, m * cols, c_out).permute(0, 3, 1, 2).contiguous()
        if bias is not None:
            y.add_(bias.to(y.dtype).view(1, -1, 1, 1))
        ctx.save_for_backward(x, kernel)
        ctx.bias_dtype, ctx.m, ctx.pad = (bias.dtype if bias is not None else None), m, pad
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, kernel = ctx.saved_tensors
        m, pad, size = ctx.m, ctx.pad, ctx.m + 2
        grad = grad.to(x.dtype)
        b, _, a = _transforms(m, x.dtype, x.device)
        n, c = x.shape[:2]
        rows, cols = grad.shape[2] // m, grad.shape[3] // m
        accumulate = torch.promote_types(x.dtype, torch.float32)  # where gradients are summed
        # the output gradient, through A: each m x m block of it to a transformed tile
        blocks = _tiles(_channels_last(grad, 0, "output gradient"), m, m, "output gradient tiles")
        grad_products = _buffer("products", (size * size, *blocks.shape[1:]), x.dtype, x.device)
        torch.mm(a.t(), blocks.view(m * m, -1), out=grad_products.view(size * size, -1))
        grad_x = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:  # through the kernel, then B, then each tile added where it was read
            grad_transformed = _buffer("transformed tiles", (size * size, blocks.shape[1], c), x.dtype, x.device)
            torch.bmm(grad_products, kernel, out=grad_transformed)
            grad_tiles = _buffer("input tiles", (size * size, grad_transformed[0].numel()), x.dtype, x.device)
            torch.mm(b.t(), grad_transformed.view(size * size, -1), out=grad_tiles)
            total = _overlap_add(grad_tiles.view(size, size, n, rows, cols, c), m, accumulate)  # float32 sums
            grad_x = _from_channels_last(total[..., pad:, pad:], x)
        if ctx.needs_input_grad[1]:  # (then through G back to the weight, by autograd, once per update)
            transformed = winograd_input(_channels_last(x, pad), m, "transformed tiles")
            grad_kernel = torch.bmm(grad_products.transpose(1, 2), transformed)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3), dtype=accumulate).to(ctx.bias_dtype)
        return grad_x, grad_kernel, grad_bias, None, None


# Automatic tile (runtime.winograd_output_tile=0): F(4x4, 3x3) in float32 for batches of maps
# with at least this many output pixels per channel (CycleGAN's residual blocks at 256 px,
# StarGAN's at any batch), F(2x2, 3x3) otherwise. Measured per layer (256 -> 256 channels,
# forward and backward, fp32): 4096 pixels (64 x 64) 54-58 ms against 67-75 for F(2x2) and
# 76-79 direct; batch 16 of 32 x 32, zero-padded, 179-203 against 249-334 and 294-331; one
# 32 x 32 map 21-26 ms for either tile and direct alike. In bf16 F(4x4) is faster still (23-27
# against 31-38 ms at 64 x 64, 98-117 against 144-158 direct at batch 16) but its rounding error
# is 7-8x the direct convolution's where F(2x2)'s is 2x: the transformed tiles and kernels are
# rounded to bf16's 8 bits before the products, and its output transform multiplies by up to 8
# where F(2x2)'s has only +-1. So automatic keeps F(2x2) in bf16 and fp16 (runtime.
# winograd_output_tile=4 takes F(4x4) there too).
LARGE_MAP_PIXELS = 4096


def output_tile_for(dtype: torch.dtype, pixels: int) -> int:
    """The automatic tile for maps of `pixels` output pixels per channel (batch included)."""
    return 4 if dtype in (torch.float32, torch.float64) and pixels >= LARGE_MAP_PIXELS else 2


class WinogradConv2d(_KeptWeightCast, nn.Conv2d):
    """nn.Conv2d (3x3, stride 1, no or zero padding) computed by Winograd's F(m x m, 3x3): the
    same result to float rounding. m is `output_tile` (set by use_winograd; 0: by dtype and map
    size, output_tile_for). The transformed kernel is made once per update (from the weight's
    cast under autocast: the kept cast of matmul_conv, also kept in float32) and shared by the
    layer's uses in a step, which save it for backward once; gradients reach the weight through
    it."""

    keep_uncast = True
    output_tile: int = 2
    _tile_in_use: int = 2  # the m of the kernel _weight_matrix makes and keeps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() or x.dim() != 4:
            return super().forward(x)  # exports and compiled graphs hold the plain convolution
        pad = self.padding[0]
        out_h, out_w = x.shape[-2] + 2 * pad - 2, x.shape[-1] + 2 * pad - 2
        m = self.output_tile
        if not m:
            device = self.weight.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.weight.dtype
            m = output_tile_for(dtype, x.shape[0] * out_h * out_w)
            if m == 4 and (out_h % 4 or out_w % 4):
                m = 2
        if out_h < m or out_w < m or out_h % m or out_w % m:  # no whole m x m blocks
            return super().forward(x)
        self._tile_in_use = m
        kernel = self._weight_matrix()
        return _Winograd3x3.apply(x.to(kernel.dtype), kernel, self.bias, m, pad)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return winograd_kernel(weight, self._tile_in_use)

    def _matrix_variant(self) -> int:
        return self._tile_in_use


def is_winograd(conv: nn.Conv2d, min_channels: int, zero_padded: bool = True) -> bool:
    """Whether Winograd's algorithm computes `conv`: 3x3, stride 1, undilated, ungrouped, at
    least min_channels wide in and out (for its matrix products to pay), and unpadded (its input
    padded before it, as the ResNet generators' reflection pads do) or, if zero_padded, padded
    with zeros (StarGAN's residual blocks)."""
    padding = conv.padding
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and isinstance(padding, tuple) and padding[0] == padding[1]
            and (padding[0] == 0 or (zero_padded and conv.padding_mode == "zeros"))
            and min(conv.in_channels, conv.out_channels) >= min_channels)


def use_winograd(net: nn.Module, min_channels: int, output_tile: int = 2, zero_padded: bool = True) -> nn.Module:
    """Switch net's qualifying nn.Conv2d layers (is_winograd) to WinogradConv2d computing
    F(output_tile x output_tile, 3x3) (0: chosen per call, output_tile_for), in place
    (parameters and keys unchanged)."""
    if output_tile not in OUTPUT_TILES:
        raise ValueError(f"Winograd's output tile must be one of {OUTPUT_TILES} (0: automatic), not {output_tile}")
    for module in net.modules():
        if type(module) is nn.Conv2d and is_winograd(module, min_channels, zero_padded):
            module.__class__ = WinogradConv2d
            module.output_tile = output_tile
    return net
