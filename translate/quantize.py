"""int8 inference on x86 CPUs: `translate-infer precision=int8`.

A trained generator is quantised after training, statically, with torchao's PT2E flow:
torch.export captures it as a graph for one image (height and width left dynamic; a batch goes
through image by image, which oneDNN's int8 kernels run faster here: 150 against 190 ms per
256 px image at batch 8); torchao's X86InductorQuantizer marks its convolutions for int8
(activations per tensor, weights per output channel; transposed convolutions, which it has no
int8 form for, run in bf16, and norms, activations, padding and label concatenation in float32);
observers record the activations' ranges while the first images of the folder go through
(calibration); the converted graph is compiled by inductor with freezing (weights quantised
once) into oneDNN int8 convolutions, which use AVX-512 VNNI where the CPU has it. Preparing takes
seconds to half a minute (inductor builds C++ kernels, cached on disk for the next run);
benchmarks/PERFORMANCE.md has the speed and how close the outputs stay to float32's.

Needs torchao (`pip install ".[int8]"`) and a C++ compiler (inductor builds its kernels with one).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import platform

import torch
import torch.nn.functional as F
from torch import nn
from torch._inductor import config as inductor_config
from torch.export import Dim

from translate.errors import UserError
from translate.nets.norm import inference_copy

CALIBRATION_IMAGES = 8  # images whose activation ranges set the int8 scales


def check_int8_available() -> None:
    """A one-line error unless torchao and a C++ compiler for inductor are here."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        raise UserError(f"precision=int8 is for x86 CPUs (oneDNN's int8 kernels); this one is "
                        f"{platform.machine()}: use precision=fp32 or bf16")
    if importlib.util.find_spec("torchao") is None:
        raise UserError('precision=int8 needs torchao: pip install ".[int8]" (or use precision=bf16)')
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as e:  # inductor's own error names the compilers it looked for
        raise UserError(f"precision=int8 compiles the generator with inductor, which needs a C++ compiler "
                        f"(g++ or clang++, or CXX=path): {str(e).splitlines()[0]}; "
                        f"or use precision=bf16") from None


class Int8Generator(nn.Module):
    """A generator quantised to int8 and compiled; called like the float generator it came from,
    it runs a batch one image at a time (so train-mode batch norm is each image's own statistics,
    as nets.norm.inference_copy(one_image=True) made it). Its norm mode was fixed when it was
    quantised, so train()/eval() do not change it."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        self.graph = graph  # the converted graph: quantise/dequantise nodes around int8 convolutions
        self.compiled = torch.compile(graph)

    def train(self, mode: bool = True) -> Int8Generator:
        return self

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Freezing turns the weights into constants, quantised once at compile time, and lets the
        # int8 convolutions' weights be packed (torch.compile's options= does not reach that pass).
        with inductor_config.patch(freezing=True):
            return torch.cat([self.compiled(*(t[i:i + 1] for t in inputs)) for i in range(len(inputs[0]))])


class Bf16ConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution computed in bfloat16. The x86 quantiser has no int8 pattern for
    transposed convolutions; in float32 the ResNet generator's two upsampling layers took 26 of
    its 165 ms per 256 px image in int8 mode (5% of its work)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(torch.bfloat16)
        return F.conv_transpose2d(x.to(torch.bfloat16), self.weight.to(torch.bfloat16), bias, self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation).float()


def quantize_generator(net: nn.Module, calibration: list[tuple[torch.Tensor, ...]],
                       eval_mode: bool) -> Int8Generator:
    """`net` quantised to int8, calibrated on `calibration` (the generator's inputs, one image per
    tuple: an image batch of 1, and for a StarGAN generator its label), norms in eval mode or on
    each image's own statistics with dropout on (`eval_mode=False`, the official test's train
    mode; see nets.norm.inference_copy), and compiled: its first call here builds the kernels for the first
    image's size (inputs of another size are compiled for when they come)."""
    check_int8_available()
    with _quiet():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    net = inference_copy(net, eval_mode, one_image=True)  # Int8Generator runs one image at a time
    example = calibration[0]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        for module in net.modules():
            if type(module) is nn.ConvTranspose2d:
                module.__class__ = Bf16ConvTranspose2d
    with torch.no_grad():  # the network's own input checks, with sizes rather than export's symbols
        net(*example)
    dynamic = tuple({2: Dim.AUTO, 3: Dim.AUTO} if t.dim() == 4 else None for t in example)
    graph = torch.export.export(net, example, dynamic_shapes=dynamic).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    observed = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for inputs in calibration:
            observed(*inputs)
        int8 = Int8Generator(convert_pt2e(observed))
        with _quiet():
            int8(*example)
    return int8


@contextlib.contextmanager
def _quiet():
    """Warnings no user can act on: torch's deprecation notice about torchao's enum registrations
    (at its import) and, on a machine without a GPU, cpp_extension's "No CUDA runtime is found"
    while inductor builds CPU kernels."""
    loggers = [logging.getLogger(name) for name in ("torch.utils._pytree", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
