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
seconds to half a minute (inductor builds C++ kernels, cached on disk for the next run, and the
quantised graph is kept for a next run with the same network and images: InferConfig.int8_cache);
benchmarks/PERFORMANCE.md has the speed and how close the outputs stay to float32's.

Needs torchao (`pip install ".[int8]"`) and a C++ compiler (inductor builds its kernels with one).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import itertools
import logging
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch._inductor import config as inductor_config
from torch.export import Dim

from translate.errors import UserError
from translate.nets.norm import inference_copy

CALIBRATION_IMAGES = 8  # images whose activation ranges set the int8 scales
log = logging.getLogger(__name__)


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


def quantize_generator(net: nn.Module, calibration: list[tuple[torch.Tensor, ...]], eval_mode: bool,
                       cache: Path | None = None) -> Int8Generator:
    """`net` quantised to int8, calibrated on `calibration` (the generator's inputs, one image per
    tuple: an image batch of 1, and for a StarGAN generator its label), norms in eval mode or on
    each image's own statistics with dropout on (`eval_mode=False`, the official test's train
    mode; see nets.norm.inference_copy), and compiled: its first call here builds the kernels for
    the first image's size (inputs of another size are compiled for when they come).

    With a `cache` folder, the quantised graph is saved there (torch.export's format), under a
    hash of everything it came from (the network's structure and weights, the calibration
    inputs, the norm mode, the torch and torchao versions), and a later run with the same
    inputs loads it instead of exporting and calibrating again (translate-infer on 12 images
    at 256 px with resnet_9blocks: 15 s end to end instead of 23 here, the same PNGs)."""
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
    saved = cache / f"{_cache_key(net, calibration, eval_mode)}.pt2" if cache is not None else None
    graph = _load(saved) if saved is not None and saved.exists() else None
    if graph is None:
        graph = torch.export.export(net, example, dynamic_shapes=dynamic).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        observed = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for inputs in calibration:
                observed(*inputs)
            graph = convert_pt2e(observed)
        if saved is not None:
            _save(graph, example, dynamic, saved)
    int8 = Int8Generator(graph)
    with torch.no_grad(), _quiet():
        int8(*example)
    return int8


def _cache_key(net: nn.Module, calibration: list[tuple[torch.Tensor, ...]], eval_mode: bool) -> str:
    """A hash of what a quantised graph depends on: the float network (its printed structure,
    which names every layer's settings, and its weights and buffers), the calibration inputs, the
    norm mode and the versions of the code that quantise it."""
    import torchao

    digest = hashlib.sha256()
    for text in ("translate int8 graph 1", torch.__version__, torchao.__version__, str(eval_mode), repr(net)):
        digest.update(text.encode())
    tensors = [*net.state_dict().items(), *((f"input {i}", t) for i, t in enumerate(itertools.chain(*calibration)))]
    for name, tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _load(path: Path) -> torch.fx.GraphModule | None:
    """The graph saved at `path`, or None (with a warning) if it cannot be read."""
    try:
        with _quiet():  # torch's own warning about a damaged file is ours, in one line
            return torch.export.load(path).module()
    except Exception as e:  # any failure to read a cache means only that it is quantised again
        log.warning("int8: could not read the cached graph %s (%s); quantising again", path,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def _save(graph: torch.fx.GraphModule, example: tuple[torch.Tensor, ...], dynamic: tuple, path: Path) -> None:
    """Save `graph` at `path` (whole or not at all: written beside it, then renamed); a failure
    costs the next run its time, not this run its work, so it is a warning."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        archive = io.BytesIO()  # (torch.export.save warns about any file name not ending in .pt2)
        torch.export.save(torch.export.export(graph, example, dynamic_shapes=dynamic), archive)
        partial.write_bytes(archive.getbuffer())
        os.replace(partial, path)
    except Exception as e:  # a full disk, a read-only folder, a graph export cannot take again
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        log.warning("int8: could not save the quantised graph to %s (%s); the next run quantises again", path,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)


@contextlib.contextmanager
def _quiet():
    """Warnings no user can act on: torch's deprecation notice about torchao's enum registrations
    (at its import), on a machine without a GPU cpp_extension's "No CUDA runtime is found" while
    inductor builds CPU kernels, and torch.export's own for a cached graph it cannot read (_load
    says so)."""
    names = ("torch.utils._pytree", "torch.utils.cpp_extension", "torch.export")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
