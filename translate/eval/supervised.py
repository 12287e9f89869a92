"""Training the judge networks (attribute classifier, FCN-score segmenter): plain supervised Adam
steps on batches drawn with replacement from a dataset's real images."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def draw_keys(num_samples: int, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` sample keys (index, sample seed): a training dataset crops and flips each draw of
    the same image differently (see data/sampler.py)."""
    draw = random.Random(seed)
    return [(draw.randrange(num_samples), draw.randrange(2**31)) for _ in range(count)]


def fit(model: nn.Module, batches: Iterable, loss: Callable[[nn.Module, object], Tensor | None], lr: float,
        steps: int, log_every: int = 0, what: str = "judge") -> nn.Module:
    """One Adam step per batch on loss(model, batch) (None: nothing to learn from, skipped), with
    a console line every `log_every` steps. Returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step, batch in enumerate(batches):
        value = loss(model, batch)
        if value is None:
            continue
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"{what} step {step + 1}/{steps}: {float(value.detach()):.4f}", flush=True)
    return model.eval()
