"""Run by tests under torchrun: train a recipe with overrides through the real Trainer, then
print (on rank 0) one JSON line saying how far any rank's weights are from rank 0's and whether
the ranks were given different samples. Different data and equal weights can only come from
gradients averaged across the ranks."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from translate import config
from translate.cli import split_args
from translate.data import build_dataset
from translate.methods import METHODS
from translate.train.loop import Trainer, start_run
from translate.train.runtime import Runtime, unwrap


def main() -> None:
    own, overrides = split_args(tuple(sys.argv[1:]), ("recipe",))
    cfg, name = config.load(own["recipe"], overrides)
    runtime = Runtime.setup(cfg.runtime)
    dataset = build_dataset(cfg.data, "train", paired=METHODS[cfg.method].paired, train=True)
    trainer = Trainer(cfg, start_run(cfg, name, runtime), runtime, dataset)
    seen: list[list[str]] = []
    step = trainer.method.training_step

    def recording_step(batch, ctx):
        seen.append(sorted(batch.get("path") or batch.get("A_path")))
        return step(batch, ctx)

    trainer.method.training_step = recording_step
    trainer.fit()
    # Parameters only: buffers such as instance norm's running statistics are each rank's own
    # (DDP broadcasts rank 0's before each forward; they do not enter any gradient).
    weights = torch.cat([p.detach().float().flatten() for net in trainer.method.nets.values()
                         for p in unwrap(net).parameters()])
    gathered = [torch.zeros_like(weights) for _ in range(runtime.world_size)]
    dist.all_gather(gathered, weights)
    samples = runtime.gather(seen)
    draws = runtime.gather(torch.rand(4).tolist())  # each rank's stream, where training left it
    if runtime.is_main:
        print(json.dumps({
            "steps": trainer.step,
            "max_weight_difference": max(float((g - gathered[0]).abs().max()) for g in gathered),
            "ranks_saw_different_samples": all(set(a).isdisjoint(b) for a, b in zip(*samples)),
            "ranks_drew_differently": len({tuple(d) for d in draws}) == runtime.world_size,
            "weights_trained": float(weights.norm()),
        }))
    runtime.close()


if __name__ == "__main__":
    main()
