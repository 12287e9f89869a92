"""The shared training loop: run folder, TensorBoard, checkpoints, exact resume, DDP, divergence."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_config, tiny_overrides
from translate.data import build_dataset
from translate.errors import UserError
from translate.methods import build_method, method_from_checkpoint
from translate.methods.cyclegan import CycleGAN
from translate.nets.winograd import WinogradConv2d
from translate.train import checkpoint as ckpt
from translate.train.loop import LinearDecay, Trainer, TrainingDiverged, train
from translate.train.runtime import Runtime

LOSSES = ["G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"]


def read_losses(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "losses.csv") as f:
        return list(csv.DictReader(f))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state, _ = ckpt.latest_checkpoint(run_dir / "checkpoints")
    return {f"{net}.{k}": v for net, sd in state["nets"].items() for k, v in sd.items()}


def test_run_folder_holds_config_events_checkpoints_samples(tmp_path):
    cfg = tiny_config(tmp_path)  # 16 scenes, batch 2: 8 steps per epoch, 2 epochs
    run_dir = train(cfg, "tiny")
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("tiny-")
    assert "[cyclegan]" in (run_dir / "config.toml").read_text()

    rows = read_losses(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert set(LOSSES) <= set(rows[0])
    assert all(float(r[k]) == float(r[k]) for r in rows for k in LOSSES)  # no NaN

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {f"loss/{k}" for k in LOSSES} <= set(scalars)
    assert {"lr/G", "lr/D"} <= set(scalars)
    lrs = [e.value for e in events.Scalars("lr/G")]
    # 1 constant epoch then 1 decay epoch: factor 1 for steps 1-7, 1 - 1/2 from step 8 on.
    assert lrs[0] == pytest.approx(2e-4) and lrs[-1] == pytest.approx(1e-4)
    images = events.Tags()["images"]
    assert len(images) == 1 and "real_A" in images[0] and "rec_A" in images[0] and "idt_A" in images[0]
    assert len(events.Images(images[0])) == 4  # every 4 steps
    assert len(list((run_dir / "samples").glob("step_*.png"))) == 4

    saved = ckpt.list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in saved] == ["step_00000016.pt", "step_00000012.pt", "step_00000008.pt"]
    state = ckpt.load_checkpoint(saved[0])  # weights_only=True inside
    assert state["step"] == 16
    assert set(state["nets"]) == {"G_A", "G_B", "D_A", "D_B"}
    assert set(state["optimizers"]) == {"G", "D"} and set(state["schedulers"]) == {"G", "D"}
    assert state["extra"]["fake_A_pool"]["images"].shape == (32, 3, 32, 32)  # pool of 50: 16 steps x 2 seen
    assert len(state["rng"]) == 1 and {"torch", "python"} <= set(state["rng"][0])  # one process's stream


def test_gradients_are_freed_once_their_optimiser_steps(tmp_path):
    # they are spent after the step; kept, they would sit through the rest of the iteration
    cfg = tiny_config(tmp_path)
    trainer = Trainer(cfg, tmp_path, Runtime(torch.device("cpu")), build_dataset(cfg.data, "train", False, True))
    G = trainer.method.nets["G_A"]
    before = [p.detach().clone() for p in G.parameters()]
    trainer.optimize("G", G(torch.randn(2, 3, 32, 32)).square().mean())
    assert all(not torch.equal(a, p) for a, p in zip(before, G.parameters(), strict=True))  # it stepped
    assert all(p.grad is None for p in G.parameters())
    trainer.logger.close()


def test_channels_last_nets_puts_only_the_named_networks_in_channels_last(tmp_path):
    cfg = tiny_config(tmp_path, runtime__channels_last_nets="D_A,D_B")
    trainer = Trainer(cfg, tmp_path, Runtime.setup(cfg.runtime), build_dataset(cfg.data, "train", False, True))
    for name, net in trainer.method.nets.items():
        kernels = [p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
        channels_last = [not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                         for p in kernels]
        assert kernels and all(channels_last) == name.startswith("D") and any(channels_last) == name.startswith("D")
    trainer.logger.close()
    with pytest.raises(UserError, match="runtime.channels_last_nets names D, which cyclegan does not have; "
                                        "its networks are G_A, G_B, D_A, D_B"):
        wrong = tiny_config(tmp_path, runtime__channels_last_nets="D")
        Trainer(wrong, tmp_path / "b", Runtime.setup(wrong.runtime), build_dataset(cfg.data, "train", False, True))


@pytest.mark.parametrize("layers", [{}, {"runtime__winograd_min_channels": 1},
                                    {"runtime__winograd_min_channels": 1, "runtime__winograd_output_tile": 4}],
                         ids=["default", "winograd", "winograd4x4"])
def test_resume_continues_exactly(tmp_path, layers):
    if layers:  # the tiny generator's 32-channel residual blocks by Winograd's F(2x2, 3x3) or F(4x4, 3x3)
        cfg = tiny_config(tmp_path / "probe", **layers)
        trainer = Trainer(cfg, tmp_path / "probe", Runtime.setup(cfg.runtime),
                          build_dataset(cfg.data, "train", False, True))
        switched = [m for m in trainer.method.nets["G_A"].modules() if type(m) is WinogradConv2d]
        assert switched and all(m.output_tile == cfg.runtime.winograd_output_tile for m in switched)
        trainer.logger.close()
    whole = train(tiny_config(tmp_path / "a", **layers), "whole")
    part = train(tiny_config(tmp_path / "b", train__max_steps=6, **layers), "part")
    assert [int(r["step"]) for r in read_losses(part)] == list(range(1, 7))
    from translate.train.loop import load_run_config
    train(load_run_config(part, ["train.max_steps=0"]), "part", resume_dir=part)

    a, b = read_losses(whole), read_losses(part)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    assert a == b  # every loss of every step after the resume, to the printed digit
    wa, wb = final_weights(whole), final_weights(part)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_workers_do_not_change_the_samples(tmp_path):
    zero = train(tiny_config(tmp_path / "a", train__max_steps=3), "w0")
    two = train(tiny_config(tmp_path / "b", train__max_steps=3, data__num_workers=2), "w2")
    assert read_losses(zero) == read_losses(two)


def test_new_runs_never_reuse_a_folder(tmp_path):
    cfg = tiny_config(tmp_path, train__max_steps=1)
    first, second = train(cfg, "same"), train(cfg, "same")
    assert first != second and first.exists() and second.exists()


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint({"step": 1, "w": torch.ones(3)}, folder, 1, keep=3)

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match="could not write checkpoint .*No space left on device"):
        ckpt.save_checkpoint({"step": 2, "w": torch.zeros(3)}, folder, 2, keep=3)
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001.pt"]  # no partial, no temp file
    state, path = ckpt.latest_checkpoint(folder)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_broken_latest_checkpoint_falls_back(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    for step in (1, 2):
        ckpt.save_checkpoint({"step": step}, folder, step, keep=3)
    newest = ckpt.checkpoint_path(folder, 2)
    newest.write_bytes(newest.read_bytes()[:40])
    state, path = ckpt.latest_checkpoint(folder)
    assert state["step"] == 1 and path.name == "step_00000001.pt"
    assert "cannot read" in capsys.readouterr().err


def test_checkpoint_with_code_is_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "owned"),))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": ckpt.FORMAT, "x": Payload()}, f)
    with pytest.raises(UserError, match="is not a plain state dict of tensors"):
        ckpt.load_checkpoint(evil)
    assert not (tmp_path / "owned").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    step_fn = CycleGAN.training_step

    def poisoned(self, batch, ctx):
        losses = step_fn(self, batch, ctx)
        if ctx.step >= 5:  # ctx.step counts finished steps: the 6th step's loss is NaN
            losses["G_A"] = losses["G_A"] * float("nan")
        return losses

    monkeypatch.setattr(CycleGAN, "training_step", poisoned)
    cfg = tiny_config(tmp_path, train__save_every=2)
    with pytest.raises(TrainingDiverged, match="NaN or infinite before step 6; the last good checkpoint is .*step_00000004.pt"):
        train(cfg, "nan")
    run_dir = next((tmp_path / "runs").iterdir())
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step_00000004.pt", "step_00000002.pt"]


def test_linear_decay_matches_the_official_rule():
    decay = LinearDecay(constant=100, decay=100, steps_per_epoch=10)
    assert decay(0) == 1.0 and decay(999) == 1.0
    assert decay(1000) == pytest.approx(1 - 1 / 101)  # epoch 101 (1-based)
    assert decay(1999) == pytest.approx(1 / 101)  # the last epoch still trains a little


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_method(run_dir: Path):
    state, _ = ckpt.latest_checkpoint(run_dir / "checkpoints")
    return method_from_checkpoint(state).eval()


def test_ddp_two_processes_match_one_process(tmp_path):
    common = dict(train__max_steps=2, cyclegan__pool_size=0, data__scenes_count=8)
    one = train(tiny_config(tmp_path / "one", **common), "one")
    overrides = tiny_overrides(tmp_path / "two", **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={free_port()}", "--master_addr=127.0.0.1",
                        "-m", "translate.cli", "recipe=cyclegan_synthetic", *overrides, "runtime.threads=1"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    (two,) = list((tmp_path / "two" / "runs").iterdir())
    w1, w2 = final_weights(one), final_weights(two)
    assert w1.keys() == w2.keys()
    # Adam divides each gradient by its own running size, so an element whose true gradient is
    # zero or nearly so (every conv bias before an instance norm, which removes it) moves by
    # +-lr on float noise alone. Such elements are rare and change no output; without gradient
    # averaging most elements would differ. So: nearly all weights equal, all outputs equal.
    for k in w1:
        if w1[k].dim() > 1:
            differing = ((w1[k] - w2[k]).abs() > 1e-5).float().mean()
            assert differing < 1e-3, (k, float(differing))
    a, b = load_method(one), load_method(two)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        for name in a.nets:
            out_a, out_b = a.nets[name](x), b.nets[name](x)
            assert (out_a - out_b).abs().max() <= 1e-3 * out_a.abs().max(), name
    torch.manual_seed(0)  # the runs' seed: their initial weights
    initial = build_method(tiny_config(tmp_path / "init", **common)).nets
    start = {f"{n}.{k}": v for n, net in initial.items() for k, v in net.state_dict().items()}
    assert all(not torch.equal(start[k], w1[k]) for k in w1 if w1[k].dim() > 1)  # both runs trained
