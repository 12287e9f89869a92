"""Convolutions with small maps, computed as one matrix product with unfold or fold.

oneDNN's direct convolution on a CPU parallelises and blocks over output positions; a layer with
a few positions per image and many channels starves it. StarGAN's discriminator at 128 px ends
in such layers (512 -> 1024 channels on a 4x4 output, 1024 -> 2048 on 2x2, its 2x2 classifier
on 1x1), which hold 42M of its 45M weights: there a convolution forward and backward reached
6-15 GFLOP/s, while the same arithmetic as one (N*positions x K) @ (K x C_out) product, K =
C_in * kernel area, runs as an ordinary GEMM that reads the weights once. Measured on this CPU
(one StarGAN D step with the gradient penalty, 1 thread): 1.5-1.9x faster in fp32 and bf16
(benchmarks/PERFORMANCE.md).

The U-Net's decoder has the same trouble in transposed convolutions: pix2pix's unet_256 goes up
from 1x1, 2x2, 4x4 and 8x8 maps with 512 -> 512 and 1024 -> 512 channels (25M of its 54M
weights), where oneDNN's transposed convolution reached 7-90 GFLOP/s. A transposed convolution
is the adjoint of a convolution: every input position's channels times the weight give one
output patch (C_out x kernel area), and fold sums the overlapping patches into the output map.
As one GEMM and a fold, forward and backward were 1.5-2.2x faster in bf16 at those sizes and
1.1-2.4x in fp32 (2 threads, with runtime.keep_freed_memory).

`use_matmul_for_small_maps(net)` switches every plain nn.Conv2d and nn.ConvTranspose2d of a
network to its matrix-product subclass in place: same parameters, same state_dict keys, so
checkpoints do not depend on it; a layer on larger maps than the limit computes exactly as the
torch layer.
"""

from __future__ import annotations

import contextlib
import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

# Output positions per image up to which the matrix product wins here: at 4x4 (16) it was
# 1.3-2.3x faster than the convolution, at 8x8 (64) 0.7-1.1x.
MAX_POSITIONS = 16
# Input positions per image up to which a transposed convolution's matrix product wins: up to
# 8x8 (64) 1.1-2.4x faster, at 16x16 0.9-1.05x, at 32x32 0.75x.
MAX_TRANSPOSED_POSITIONS = 64
# A transposed convolution with at most this many output channels takes the product on maps of
# any size when it has one image. oneDNN vectorises over output channels in blocks of 16, and the
# U-Net's last layer (128 -> 3 channels, 128x128 -> 256x256) ran forward and backward 1.4x faster
# in float32 and 1.9x in bf16 as a product and a fold (benchmarks/PERFORMANCE.md). With 2 or 4
# images it was up to 2x slower: the rows of one image are a view of its map, those of several a copy.
THIN_OUT_CHANNELS = 4
# Under autocast on CPUs with bf16 matrix units (AMX), a product of at most this many rows (batch
# x positions) is computed in float32 from the float32 weight. Such a layer is bound by moving its
# weight, not by arithmetic (2 FLOP per float32 weight read), and autocast would read the float32
# weight and write a bf16 copy, then cast the bf16 gradient back to float32: 18 bytes moved per
# weight against 12 in float32. pix2pix's U-Net has 21M of its 54M weights in layers of 1-4 rows
# (its 1x1 and 2x2 maps): there its bf16 steps ran 2-3% faster. At 16 rows, StarGAN at batch 4 was
# 7% slower: its D's 2x2 layer is compute-bound in float32 there, and D's passes share one kept
# cast per step. Without such units (AVX-512 bf16 on a Zen 4) pix2pix's bf16 step was 4-12% slower
# with it, so the layers' default is 0 (none) and the runtime sets it on AMX CPUs
# (benchmarks/PERFORMANCE.md).
FLOAT32_ROWS = 4


def _float32_product(layer: nn.Module, rows: int) -> bool:
    device = layer.weight.device.type
    return rows <= layer.float32_rows and torch.is_autocast_enabled(device) and layer.weight.dtype == torch.float32


@contextlib.contextmanager
def _float32(x: torch.Tensor):
    """Autocast off for a float32 product; yields x in float32 and the dtype to return in."""
    dtype = torch.get_autocast_dtype(x.device.type)
    with torch.autocast(x.device.type, enabled=False):
        yield x.float(), dtype

# Optimiser steps taken in this process. Fused optimisers (the trainer's fused Adam) update
# parameters in place without moving their version counters, so a kept weight cast is also
# keyed on this count, advanced by a hook after every step of every optimiser.
_optimizer_steps = 0


def _count_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_step)


class _KeptWeightCast:
    """The weight as the matrix of a layer's product, cast once per update under autocast.

    Autocast caches its cast of a parameter for the whole autocast region, but only when the
    parameter itself is the argument; the reshaped view a matrix product needs would be cast
    again on every call (StarGAN's D runs three times per step: 134 MB read and 67 MB written
    each time for its largest layer, and as many gradient casts and sums on the way back). The
    cast is kept until the weight changes (an optimiser steps, or its version counter moves: a
    load or any other in-place change) or autocast's dtype or the need for gradients does;
    gradients flow through it to the weight as through autocast's own cache. A cast with a graph
    is let go as soon as backward reaches it: by then every use of it has been differentiated
    and an optimiser step will make it stale, and keeping it until the next forward put its size
    on top of the step's peak (pix2pix's U-Net: 75 MB of bf16 matrices beside the new fp32
    gradients at the end of G's backward).
    """

    # Also keep the matrix of a weight that autocast does not cast: for a matrix that costs more
    # than a reshape to make (Winograd's transformed kernels), and would otherwise be made, and
    # saved for backward, once per use
    keep_uncast: bool = False

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # each layer's own reshape

    def _matrix_variant(self) -> object:
        return None  # what else _matrix depends on, if anything (Winograd's tile size)

    def _weight_matrix(self) -> torch.Tensor:
        weight, device = self.weight, self.weight.device.type
        autocast = torch.is_autocast_enabled(device) and weight.dtype == torch.float32
        if not (autocast or self.keep_uncast):
            self._cast = None
            return self._matrix(weight)
        dtype = torch.get_autocast_dtype(device) if autocast else weight.dtype
        key = (weight.data_ptr(), weight._version, _optimizer_steps, dtype,
               torch.is_grad_enabled() and weight.requires_grad, self._matrix_variant())
        cached = getattr(self, "_cast", None)
        if cached is None or cached[0] != key:
            # cast, then reshape: a view of a parameter's cast, which backward can make again
            # (runtime.recast_saved_weights)
            cast = self._matrix(weight.to(dtype))
            if cast.requires_grad:  # weakly: the hook lives in the module's own graph
                cast.register_hook(functools.partial(_let_go_of_cast, weakref.ref(self), key))
                _holding_casts.add(self)
            cached = self._cast = (key, cast)
        return cached[1]

    def __getstate__(self) -> dict:
        # copies and pickles leave the cast behind: it belongs to this module's autograd graph
        # (deepcopy refuses non-leaf tensors) and is made again on the next forward
        state = dict(super().__getstate__())
        state.pop("_cast", None)
        return state


_holding_casts: weakref.WeakSet = weakref.WeakSet()  # layers whose kept cast has a graph


def let_go_of_kept_casts() -> None:
    """Drop every kept cast that has a graph (the end of an autocast region whose backward will
    cast the weights again: runtime.recast_saved_weights)."""
    for layer in list(_holding_casts):
        cached = getattr(layer, "_cast", None)
        if cached is not None and cached[1].requires_grad:
            layer._cast = None
    _holding_casts.clear()


def _let_go_of_cast(owner: weakref.ref, key: tuple, grad: torch.Tensor) -> None:
    """Backward has reached the kept cast made under `key`: the layer need not hold it longer."""
    layer = owner()
    cached = getattr(layer, "_cast", None)
    if cached is not None and cached[0] == key:
        layer._cast = None


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last 4-d tensor that is not also contiguous, else contiguous."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def like_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y in x's memory format (channels_last in, channels_last out, as torch's layers do)."""
    return y.contiguous(memory_format=memory_format_of(x))


class MatmulConv2d(_KeptWeightCast, nn.Conv2d):
    """nn.Conv2d that computes small output maps as unfold + matrix product (same result to
    float rounding, first and second derivatives included: the gradient penalty's double
    backward goes through unfold's and fold's own derivatives)."""

    max_positions: int = MAX_POSITIONS
    max_rows: int = 0  # batch x positions up to which the product is taken (0: no limit)
    float32_rows: int = 0  # under autocast, products of at most this many rows in float32 (FLOAT32_ROWS)
    by_columns: bool = False  # one NCHW image under autocast: weight @ columns (_one_nchw_image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._plain or x.dim() != 4:
            return super().forward(x)
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if not _small(self, n, out_h * out_w):
            return super().forward(x)
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # N x K x L
        if self.by_columns and _one_nchw_image(x):  # the product is the output map itself
            return self._product(columns[0], by_columns=True).reshape(1, self.out_channels, out_h, out_w)
        rows = columns.transpose(1, 2).reshape(n * out_h * out_w, -1)  # one row per output position
        y = self._product(rows, by_columns=False)
        return like_input(y.reshape(n, out_h, out_w, self.out_channels).permute(0, 3, 1, 2), x)

    def _product(self, source: torch.Tensor, by_columns: bool) -> torch.Tensor:
        """weight @ columns (one column per output position) or rows @ weight^T (one row each), + bias."""
        if _float32_product(self, source.shape[1 if by_columns else 0]):
            with _float32(source) as (source32, dtype):
                return self._linear(source32, by_columns).to(dtype)
        return self._linear(source, by_columns)

    def _linear(self, source: torch.Tensor, by_columns: bool) -> torch.Tensor:
        # F.linear and addmm, not a product then `+ bias`: under autocast they cast the bias too (a
        # float32 bias would promote the sum, and every layer after it, back to float32)
        weight = self._weight_matrix()
        if not by_columns:
            return F.linear(source, weight, self.bias)
        return weight @ source if self.bias is None else torch.addmm(self.bias.unsqueeze(1), weight, source)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(self.out_channels, -1)  # C_out x (C_in * kernel area)

    @property
    def _plain(self) -> bool:
        # what unfold expresses: one group, zero padding given as numbers
        return self.groups == 1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)


class MatmulConvTranspose2d(_KeptWeightCast, nn.ConvTranspose2d):
    """nn.ConvTranspose2d that computes small input maps as a matrix product + fold (same result
    to float rounding, with first and second derivatives)."""

    max_positions: int = MAX_TRANSPOSED_POSITIONS
    max_rows: int = 0  # batch x input positions up to which the product is taken (0: no limit)
    float32_rows: int = 0  # under autocast, products of at most this many rows in float32 (FLOAT32_ROWS)
    by_columns: bool = False  # one NCHW image under autocast: weight @ columns (_one_nchw_image)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        n, _, h, w = x.shape if x.dim() == 4 else (0, 0, 0, 0)
        thin = n == 1 and self.out_channels <= THIN_OUT_CHANNELS
        if self.groups != 1 or output_size is not None or not (h * w > 0 and (thin or _small(self, n, h * w))):
            return super().forward(x, output_size)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + self.output_padding[0] + 1
        out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + self.output_padding[1] + 1
        by_columns = self.by_columns and _one_nchw_image(x)
        if by_columns:  # one column per input position: a view of the map
            source = x.reshape(self.in_channels, h * w)
        else:  # one row per input position
            source = x.permute(0, 2, 3, 1).reshape(n * h * w, self.in_channels)
        if _float32_product(self, n * h * w):  # product, sums and bias in float32, rounded once
            with _float32(source) as (source, dtype):
                return like_input(self._fold(source, by_columns, (n, h, w, out_h, out_w)).to(dtype), x)
        return like_input(self._fold(source, by_columns, (n, h, w, out_h, out_w)), x)

    def _fold(self, source: torch.Tensor, by_columns: bool, shape: tuple[int, ...]) -> torch.Tensor:
        n, h, w, out_h, out_w = shape
        # each input position's C_out x kernel-area patch, as fold takes them: N x patch x positions
        if by_columns:
            patches = (self._weight_matrix().t() @ source).unsqueeze(0)
        else:
            patches = torch.matmul(source, self._weight_matrix()).reshape(n, h * w, -1).transpose(1, 2)
        # fold places patch (i, j) at output (i*stride - padding, ...) and sums the overlaps:
        # exactly the transposed convolution, whose sliding blocks over the output are the inputs
        y = F.fold(patches, (out_h, out_w), self.kernel_size, self.dilation, self.padding, self.stride)
        if self.bias is not None:  # in y's dtype, as autocast casts a transposed conv's bias
            y = y + self.bias.to(y.dtype).reshape(1, -1, 1, 1)
        return y

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(self.in_channels, -1)  # C_in x (C_out * kernel area)


def _one_nchw_image(x: torch.Tensor) -> bool:
    """Whether x is one NCHW image under autocast, whose products a layer with `by_columns` takes by
    columns: weight @ columns (one per position) is the NCHW output (fold's input) with no
    transposed copies. With the weight as the first operand oneDNN's bf16 products of pix2pix's
    layers ran forward and backward 1.1-1.2x faster than rows @ weight on a CPU with AMX (its bf16
    step 2% faster; in float32 1% slower). On a Zen 4 without AMX they made its bf16 step 3-8%
    slower, so the runtime sets `by_columns` on AMX CPUs only (benchmarks/PERFORMANCE.md)."""
    one_image = x.shape[0] == 1 and memory_format_of(x) == torch.contiguous_format
    return one_image and torch.is_autocast_enabled(x.device.type)


def _small(layer: nn.Module, batch: int, positions: int) -> bool:
    """Whether a map of `positions` per image, `batch` images, is the layer's matrix product's."""
    return positions <= layer.max_positions and (not layer.max_rows or batch * positions <= layer.max_rows)


def use_matmul_for_small_maps(net: nn.Module, settings: dict | None = None) -> nn.Module:
    """Switch net's nn.Conv2d and nn.ConvTranspose2d layers to their matrix-product subclasses
    in place (parameters and keys unchanged). `settings` overrides the classes' defaults:
    max_positions, max_transposed_positions, max_rows, float32_rows, by_columns
    (translate/train/runtime.py picks them for the CPU)."""
    settings = settings or {}
    switch = {nn.Conv2d: MatmulConv2d, nn.ConvTranspose2d: MatmulConvTranspose2d}
    for module in net.modules():
        if type(module) in switch:
            module.__class__ = switch[type(module)]
            transposed = type(module) is MatmulConvTranspose2d
            positions = settings.get("max_transposed_positions" if transposed else "max_positions")
            if positions is not None:
                module.max_positions = positions
            for name in ("max_rows", "float32_rows", "by_columns"):
                if name in settings:
                    setattr(module, name, settings[name])
    return net
