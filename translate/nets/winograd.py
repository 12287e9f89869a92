"""3x3 convolutions by Winograd's minimal filtering algorithm F(2x2, 3x3).

CycleGAN's ResNet generators spend most of their time in the 3x3, stride-1 convolutions of their
residual blocks: two thirds of a CycleGAN step at 128 px, where oneDNN's direct convolution runs
them at 85-92% of this CPU's rate forward but 75% for the weight gradient. Winograd's algorithm
(Lavin and Gray, 2016; what cuDNN picks for these layers on GPUs) computes each 2x2 block of
outputs from a 4x4 tile of the input with 16 multiplications per input and output channel
instead of 36:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

over overlapping 4x4 tiles d (stride 2), with the 3x3 kernel g transformed once per weight. The
16 element-wise products summed over input channels are 16 matrix products, one batched GEMM of
(tiles x C_in) @ (C_in x C_out); the tile transforms have only 0 and +-1 coefficients and are
one small matrix product each. Backward is the same: the output gradient transformed by A, one
batched GEMM for the input's transformed gradient (then B and an overlap-add of the tiles), one
for the transformed kernel's (then G, by autograd).

Measured on this CPU (256 -> 256 channels on a 32 x 32 map, batch 1, bf16, 2 threads): forward 1.67
ms against oneDNN's 2.79; a CycleGAN step at 128 px 1.22-1.36 against 1.60-1.78 s. The result is
the same function with other rounding; in bf16 its error is about twice the direct convolution's
(the tiles' sums and differences are rounded to bf16 before the products), in float32 it is float32
noise (tests/test_winograd.py).

`use_winograd(net, min_channels)` switches the plain nn.Conv2d layers that qualify (3x3, stride 1,
undilated, ungrouped, at least min_channels channels in and out: narrower layers were slower with
it here, runtime.winograd_min_channels) to WinogradConv2d in place: same parameters and state_dict
keys. Only unpadded layers qualify, whose input is padded before them (the ResNet generators of
CycleGAN and pix2pix pad by reflection): StarGAN's generator, whose residual layers pad with zeros
inside the convolution, was no faster with it (forward and backward 0.96-1.09x at batch 1 to 16,
its no-grad forward at batch 16 0.97x). Maps with an odd output size, or one smaller than 2x2,
compute as the torch layer.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from translate.nets.matmul_conv import _KeptWeightCast, memory_format_of


@functools.cache
def _transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F(2x2, 3x3)'s matrices as Kronecker products over a tile's rows and columns:
    input (16 x 16: 4x4 tile -> 4x4 transformed tile), kernel (16 x 9) and output (4 x 16)."""
    b_t = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
    g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    a_t = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)
    return tuple(torch.kron(m, m).to(dtype=dtype, device=device) for m in (b_t, g, a_t))


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


def _tiles(x: torch.Tensor, size: int, step: int, name: str) -> torch.Tensor:
    """The size x size tiles of x (N x C x H x W, any strides) every `step` pixels, gathered as
    (tile row, tile column) x (N * tiles) x C into work buffer `name`: one copy."""
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    rows, cols = (h - size) // step + 1, (w - size) // step + 1
    view = x.as_strided((size, size, n, rows, cols, c), (sh, sw, sn, step * sh, step * sw, sc))
    tiles = _buffer(name, (size, size, n, rows, cols, c), x.dtype, x.device)
    tiles.copy_(view)
    return tiles.view(size * size, n * rows * cols, c)


def winograd_input(x: torch.Tensor, name: str = "") -> torch.Tensor:
    """B^T d B for every overlapping 4x4 tile of x: 16 x (N * tiles) x C_in (in work buffer
    `name`, or a new tensor)."""
    b, _, _ = _transforms(x.dtype, x.device)
    tiles = _tiles(x, 4, 2, "input tiles")
    out = _buffer(name, tuple(tiles.shape), x.dtype, x.device) if name else torch.empty_like(tiles)
    torch.mm(b, tiles.view(16, -1), out=out.view(16, -1))
    return out


def winograd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """G g G^T for every kernel g of `weight` (C_out x C_in x 3 x 3): 16 x C_out x C_in."""
    _, g, _ = _transforms(weight.dtype, weight.device)
    c_out, c_in = weight.shape[:2]
    return torch.mm(g, weight.permute(2, 3, 0, 1).reshape(9, c_out * c_in)).view(16, c_out, c_in)


class _Winograd3x3(torch.autograd.Function):
    """y = conv2d(x, g) + bias for x already padded, from the transformed kernel U = G g G^T."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, _, h, w = x.shape
        rows, cols, c_out = (h - 2) // 2, (w - 2) // 2, kernel.shape[1]
        _, _, a = _transforms(x.dtype, x.device)
        transformed = winograd_input(x, "transformed tiles")
        products = _buffer("products", (16, transformed.shape[1], c_out), x.dtype, x.device)
        torch.bmm(transformed, kernel.transpose(1, 2), out=products)  # 16 x (N * tiles) x C_out
        blocks = _buffer("blocks", (4, products.shape[1] * c_out), x.dtype, x.device)
        torch.mm(a, products.view(16, -1), out=blocks)  # the 2x2 outputs of every tile
        # written once, in x's memory format (as torch's layer returns it)
        y = torch.empty(n, c_out, 2 * rows, 2 * cols, dtype=x.dtype, device=x.device,
                        memory_format=memory_format_of(x))
        y.view(n, c_out, rows, 2, cols, 2).copy_(blocks.view(2, 2, n, rows, cols, c_out).permute(2, 5, 3, 0, 4, 1))
        if bias is not None:
            y.add_(bias.to(y.dtype).view(1, -1, 1, 1))
        ctx.save_for_backward(x, kernel)
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, kernel = ctx.saved_tensors
        grad = grad.to(x.dtype)
        b, _, a = _transforms(x.dtype, x.device)
        n, c, h, w = x.shape
        accumulate = torch.promote_types(x.dtype, torch.float32)  # where gradients are summed
        # the output gradient, through A: each 2x2 block of it to a 4x4 transformed tile
        blocks = _tiles(grad, 2, 2, "output gradient tiles")
        grad_products = _buffer("products", (16, blocks.shape[1], blocks.shape[2]), x.dtype, x.device)
        torch.mm(a.t(), blocks.view(4, -1), out=grad_products.view(16, -1))
        grad_x = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:  # through the kernel, then B, then each tile added where it was read
            grad_transformed = _buffer("transformed tiles", (16, blocks.shape[1], c), x.dtype, x.device)
            torch.bmm(grad_products, kernel, out=grad_transformed)
            grad_tiles = _buffer("input tiles", (16, grad_transformed.shape[1] * c), x.dtype, x.device)
            torch.mm(b.t(), grad_transformed.view(16, -1), out=grad_tiles)
            # summed in float32 (an element gets up to four): 16 strided adds
            total = _buffer("input gradient", (n, h, w, c), accumulate, x.device).zero_()
            parts = grad_tiles.view(4, 4, n, (h - 2) // 2, (w - 2) // 2, c)
            for i in range(4):
                for j in range(4):
                    total[:, i:i + h - 3:2, j:j + w - 3:2] += parts[i, j]
            grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
            grad_x.copy_(total.permute(0, 3, 1, 2))
        if ctx.needs_input_grad[1]:  # (then through G back to the weight, by autograd, once per update)
            grad_kernel = torch.bmm(grad_products.transpose(1, 2), winograd_input(x, "transformed tiles"))
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3), dtype=accumulate).to(ctx.bias_dtype)
        return grad_x, grad_kernel, grad_bias


class WinogradConv2d(_KeptWeightCast, nn.Conv2d):
    """nn.Conv2d (3x3, stride 1) computed by Winograd's F(2x2, 3x3): the same result to float
    rounding. The transformed kernel is made once per update (from the weight's cast under
    autocast: the kept cast of matmul_conv, also kept in float32) and shared by the layer's uses
    in a step, which save it for backward once; gradients reach the weight through it."""

    keep_uncast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() or x.dim() != 4:
            return super().forward(x)  # exports and compiled graphs hold the plain convolution
        out_h, out_w = x.shape[-2] - 2, x.shape[-1] - 2
        if out_h < 2 or out_w < 2 or out_h % 2 or out_w % 2:  # no whole 2x2 blocks
            return super().forward(x)
        kernel = self._weight_matrix()
        return _Winograd3x3.apply(x.to(kernel.dtype), kernel, self.bias)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return winograd_kernel(weight)


def is_winograd(conv: nn.Conv2d, min_channels: int) -> bool:
    """Whether F(2x2, 3x3) computes `conv`: 3x3, stride 1, undilated, ungrouped, unpadded (its
    input padded before it, as the ResNet generators' reflection pads do), at least min_channels
    wide in and out (for its matrix products to pay)."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding == (0, 0)
            and min(conv.in_channels, conv.out_channels) >= min_channels)


def use_winograd(net: nn.Module, min_channels: int) -> nn.Module:
    """Switch net's qualifying nn.Conv2d layers to WinogradConv2d in place (parameters and keys
    unchanged)."""
    for module in net.modules():
        if type(module) is nn.Conv2d and is_winograd(module, min_channels):
            module.__class__ = WinogradConv2d
    return net
