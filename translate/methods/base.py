"""The contract between a method and the trainer.

A method owns its networks and says what one training step does: which networks, which losses,
which optimiser steps in which order. The trainer owns everything a step need not know: where
tensors live, precision, gradient sync, optimisers and their schedules, checkpoints and logging.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import ClassVar, Protocol

from torch import Tensor, nn

from translate.config import RunConfig


class StepContext(Protocol):
    """What the trainer lends a method for one step."""

    step: int

    def autocast(self) -> AbstractContextManager:
        """The forward-pass precision context (fp32, bf16 or fp16 autocast)."""

    def optimize(self, name: str, loss: Tensor) -> None:
        """Backward `loss` and step optimiser `name` (zeroing its gradients first)."""


class Method(nn.Module):
    paired: ClassVar[bool]  # whether its datasets must give pairs (A and B of one scene)

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        self.nets = nn.ModuleDict()
        self._visuals: dict[str, Tensor] = {}

    def optimizer_nets(self) -> dict[str, list[str]]:
        """One optimiser per key, over the parameters of the named networks."""
        raise NotImplementedError

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, Tensor]:
        """One step; returns the losses to log (detached scalars, no host sync)."""
        raise NotImplementedError

    def generator(self, direction: str = "AtoB") -> nn.Module:
        """The network that translates inputs at inference time."""
        raise NotImplementedError

    def visuals(self) -> dict[str, Tensor]:
        """Images from the last step for the grids in TensorBoard, each Bx3xHxW in [-1, 1]."""
        return self._visuals

    def restore_visuals(self, visuals: dict[str, Tensor]) -> None:
        """The visuals a checkpoint kept (a resumed run draws the grids an uninterrupted one would)."""
        self._visuals = visuals

    def extra_state(self) -> dict:
        """Training state beyond networks and optimisers (e.g. image pools)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Freeze the discriminators while the generators step: saves their gradient computation."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)
