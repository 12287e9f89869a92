"""Shared test helpers: tiny configurations that train in seconds on a CPU."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from translate import config

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
REFERENCE = SHARED / "fixtures" / "reference"
FACADES = SHARED / "data" / "facades"


def tiny_overrides(tmp_path: Path, **extra) -> list[str]:
    """CycleGAN on 32 px synthetic scenes with 8-channel networks."""
    values = {
        "output_dir": str(tmp_path / "runs"),
        "data.format": "scenes", "data.scenes_size": 36, "data.preprocess": "crop", "data.crop_size": 32,
        "data.load_size": 36, "data.scenes_count": 16, "data.num_workers": 0,
        "model.generator": "resnet_6blocks", "model.ngf": 8, "model.ndf": 8,
        "cyclegan.lambda_identity": 0.5, "train.batch_size": 2, "train.epochs": 1, "train.epochs_decay": 1,
        "train.log_every": 1, "train.image_every": 4, "train.save_every": 4,
        "runtime.deterministic": True,
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(tmp_path: Path, **extra) -> config.RunConfig:
    cfg, _ = config.load("cyclegan_synthetic", tiny_overrides(tmp_path, **extra))
    return cfg


def assert_layer_matches(reference: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> None:
    """`layer` computes what `reference` does (float64 input x): outputs, the parameters' gradients
    of a penalty on the input gradient (first and second derivatives, as the gradient penalty
    takes them), and torch's numerical gradcheck and gradgradcheck of `layer`."""
    x = x.detach().requires_grad_()
    expected, got = reference(x), layer(x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for net, out in ((reference, expected), (layer, got)):
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grad_x.square().sum().backward()
    for a, b in zip(reference.parameters(), layer.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x[:1].detach().requires_grad_(),))
    assert torch.autograd.gradgradcheck(layer, (x[:1].detach().requires_grad_(),))


class RecordingContext:
    """A stand-in for the trainer in one step (methods/base.py's StepContext): plain Adam, and a
    record of which optimiser stepped when."""

    def __init__(self, method, step: int = 0, lr: float = 2e-4):
        import torch
        self.step = step
        self.optimizers = {name: torch.optim.Adam([p for n in nets for p in method.nets[n].parameters()], lr=lr)
                           for name, nets in method.optimizer_nets().items()}
        self.order: list[str] = []

    def autocast(self):
        return contextlib.nullcontext()

    def optimize(self, name: str, loss) -> None:
        self.order.append(name)
        self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[name].step()


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run tiny models: one thread is as fast, and a second one stalls badly whenever
    # another process shares the two cores (seen here: 100x slower forwards).
    import torch
    torch.set_num_threads(1)
    yield
