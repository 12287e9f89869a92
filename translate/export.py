"""`translate-export`: a trained generator as TorchScript and ONNX, checked before it is reported.

The generator comes from a translate checkpoint (`checkpoint=` or the newest readable one of
`run=`; CycleGAN's G_A or G_B by `direction`) or an official one (`*_net_G_A.pth`,
`*_net_G.pth`, `N-G.ckpt`), loaded as translate-infer does (infer.load_translator). A StarGAN
generator is exported with its target label fixed: `target=Blond_Hair,Young` is stored in the
graph (infer.TargetedGenerator), so the exported model takes an image alone; export one file per
target you need.

Formats, written into `output/` as `generator.pt` and `generator.onnx`:
- torchscript: `torch.jit.trace` of the generator, loaded with `torch.jit.load`;
- onnx: `torch.onnx.export` (the dynamo exporter, opset `opset`) with input "image" and output
  "translated", both N x 3 x H x W with N, H and W dynamic; needs onnx, onnxscript and onnxruntime
  (`pip install ".[export]"`).
Both take any batch size and any image side the network allows (a multiple of 4 for the ResNet
and StarGAN generators, of 2^num_downs for a U-Net), images in [-1, 1], and give images in [-1, 1].

Every exported file is written under a temporary name, loaded back (onnxruntime for ONNX) and run
on random images of another batch size than the one traced with, at `size` and at a second
side, and compared with the PyTorch generator: the largest absolute difference must be at most
`tolerance` (1e-4 on outputs in [-1, 1]; measured differences are ~1e-6). Only then is it renamed
into place; a failed check is an error and leaves no file.

Norm layers. By default (`eval=true`) the generator is exported in eval mode: batch norm uses its
running averages and dropout is off. The official test scripts run in train mode instead (unless
--eval), which differs by network:
- CycleGAN's instance norm keeps no running statistics, so it normalises each image by its own
  statistics in both modes: train-mode and eval-mode outputs are identical, and the export is the
  official test's output (tests/test_export.py checks this on the official generator).
- pix2pix's U-Net has batch norm and dropout: the official test (batch 1, train mode) normalises
  each image by its own statistics and drops units at random, which eval mode does not; the
  exported eval-mode model gives what `translate-infer eval=true` gives, not the official test.
- StarGAN's instance norms track running statistics, so eval mode uses them, while the official
  test runs G in train mode on each image's own statistics. `eval=false` exports that: instance
  norms are switched to per-image statistics (same output as train mode, no buffer updates).
  Networks with batch norm or dropout have no deterministic per-image train mode for a batch, so
  eval=false refuses them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from translate.config import ExportConfig
from translate.errors import UserError
from translate.infer import TargetedGenerator, load_translator
from translate.nets.norm import inference_copy
from translate.nets.unet import UnetGenerator
from translate.train.checkpoint import latest_checkpoint

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
TRACE_BATCH = 2  # the example batch traced with; checked on CHECK_BATCH (another size) and on 1
CHECK_BATCH = 3
NAME = "generator"


def export_generator(cfg: ExportConfig) -> pd.DataFrame:
    """Export the generator `cfg` names in each of `cfg.formats`, check every file, and return one
    row per format: the file, the check inputs and the largest difference found."""
    _check_options(cfg)
    path = _checkpoint_path(cfg)
    net = inference_copy(load_translator(path, cfg.direction, cfg.target, cfg.attributes), cfg.eval)
    multiple = size_multiple(net)
    if cfg.size % multiple:
        raise UserError(f"size={cfg.size} does not fit this generator: its image sides must be multiples of "
                        f"{multiple}; e.g. size={max(multiple, cfg.size // multiple * multiple)}")
    other = cfg.size - multiple if cfg.size > multiple else cfg.size + multiple
    g = torch.Generator().manual_seed(0)
    example = torch.rand(TRACE_BATCH, 3, cfg.size, cfg.size, generator=g) * 2 - 1
    checks = [torch.rand(CHECK_BATCH, 3, cfg.size, cfg.size, generator=g) * 2 - 1,
              torch.rand(1, 3, other, other, generator=g) * 2 - 1]
    with torch.no_grad():
        expected = [net(x) for x in checks]
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in cfg.formats:
        final = out / f"{NAME}{FORMATS[fmt]}"
        tmp = final.with_name(f".tmp-{final.name}")
        try:
            EXPORTERS[fmt](net, example, tmp, cfg)
            run = RUNNERS[fmt](tmp)
            with torch.no_grad():
                worst = max(float((run(x) - y).abs().max()) for x, y in zip(checks, expected, strict=True))
            if not worst <= cfg.tolerance:  # also catches NaN
                raise UserError(f"the exported {fmt} model differs from the PyTorch generator by up to {worst:.3g} "
                                f"(tolerance={cfg.tolerance}); no {fmt} file written. Raise tolerance= only if "
                                f"such differences are acceptable for your use")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        rows.append({"format": fmt, "file": str(final), "checked_on": ", ".join("x".join(map(str, x.shape))
                                                                               for x in checks),
                     "max_abs_diff": worst, "tolerance": cfg.tolerance})
    return pd.DataFrame(rows)


def _check_options(cfg: ExportConfig) -> None:
    if bool(cfg.checkpoint) == bool(cfg.run):
        raise UserError("give one of checkpoint=PATH or run=runs/NAME (its newest checkpoint)")
    if not cfg.output:
        raise UserError("output= is required: the folder for the exported files, e.g. output=exported/")
    if Path(cfg.output).exists() and not Path(cfg.output).is_dir():
        raise UserError(f"output={cfg.output} is a file; give a folder, the exported files go into it")
    if cfg.direction not in ("AtoB", "BtoA"):
        raise UserError(f"direction={cfg.direction} is not AtoB or BtoA")
    unknown = [f for f in cfg.formats if f not in FORMATS]
    if unknown or not cfg.formats:
        raise UserError(f"formats={','.join(cfg.formats)}: use one or more of {', '.join(FORMATS)}")
    if cfg.size <= 0 or cfg.tolerance <= 0 or cfg.opset <= 0:
        raise UserError(f"size, tolerance and opset must be greater than 0, got {cfg.size}, {cfg.tolerance}, "
                        f"{cfg.opset}")
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if "onnx" in cfg.formats and missing:
        raise UserError(f"formats=onnx needs {', '.join(missing)}: pip install \".[export]\" in the translate checkout "
                        f"(or formats=torchscript)")


def _checkpoint_path(cfg: ExportConfig) -> Path:
    if cfg.checkpoint:
        return Path(cfg.checkpoint)
    found = latest_checkpoint(Path(cfg.run) / "checkpoints")
    if found is None:
        raise UserError(f"no readable checkpoint in {cfg.run}/checkpoints; pass a run folder of translate-train "
                        f"or checkpoint=PATH")
    return found[1]


def size_multiple(net: nn.Module) -> int:
    """What the generator's image sides must be multiples of."""
    inner = net.generator if isinstance(net, TargetedGenerator) else net
    if isinstance(inner, UnetGenerator):
        return 2 ** inner.num_downs
    return 4  # the ResNet and StarGAN generators: two stride-2 convolutions, two transposed ones


# ---------------------------------------------------------------------------------------------
# Writers and readers


@contextlib.contextmanager
def _quiet():
    """The exporters' deprecation and tracer warnings and progress lines are not for the user: the
    check after export says whether the file is right."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: Path, cfg: ExportConfig) -> None:
    with _quiet(), torch.no_grad():
        torch.jit.save(torch.jit.trace(net, example, check_trace=False), str(path))


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path, cfg: ExportConfig) -> None:
    from torch.export import Dim
    with _quiet():
        torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["translated"],
                          dynamic_shapes=({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},), opset_version=cfg.opset,
                          dynamo=True, external_data=False, verbose=False)


def _run_torchscript(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with _quiet():
        module = torch.jit.load(str(path))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)
    return run


def _run_onnx(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch is allowed
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["translated"], {"image": x.numpy()})[0])
    return run


EXPORTERS = {"torchscript": _export_torchscript, "onnx": _export_onnx}
RUNNERS = {"torchscript": _run_torchscript, "onnx": _run_onnx}
