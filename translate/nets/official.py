"""Official CycleGAN/pix2pix and StarGAN generator checkpoints: recognise, rebuild, load.

An official checkpoint is a plain state dict (`torch.save(net.state_dict())`) that records none
of the options it was trained with, so the architecture is read from the keys and shapes:

- ResNet (CycleGAN): `model.1.weight` is a 7x7 conv [ngf, input_nc]; residual blocks are the
  `model.N.conv_block` entries; norm from the layer after that conv; a Dropout inside the
  blocks shifts the second conv's index by one; zero padding has no pad layers, so the first
  conv sits at index 0. Reflect and replicate padding have identical keys: reflect is assumed.
- U-Net (pix2pix): `model.model.0.weight` is a 4x4 conv [ngf, input_nc]; num_downs is how
  deep the `model.model.1.model.3.model...` nesting goes. Its Dropout layers come last in their
  blocks and leave no trace in the keys, so dropout is set on (pix2pix's default); it only acts
  in train mode.
- StarGAN: `main.0.weight` is a 7x7 conv [conv_dim, 3 + c_dim]; repeat_num counts the
  `main.N.main` residual blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from translate.errors import UserError
from translate.train.checkpoint import load_state_file
from translate.nets.resnet import ResnetGenerator
from translate.nets.stargan import StarGANGenerator
from translate.nets.unet import UnetGenerator

ARCHS: dict[str, type[nn.Module]] = {"resnet": ResnetGenerator, "unet": UnetGenerator, "stargan": StarGANGenerator}
LABELS = {"resnet": "ResNet (CycleGAN)", "unet": "U-Net (pix2pix)", "stargan": "StarGAN"}
FIX = ("pass a generator's file, e.g. latest_net_G_A.pth (CycleGAN), latest_net_G.pth (pix2pix) "
       "or 200000-G.ckpt (StarGAN)")
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")

Spec = dict[str, Any]


class _Mismatch(Exception):
    """A recognised architecture whose keys or shapes do not fit it; the message says how."""


def load_generator_checkpoint(path: str | Path) -> tuple[nn.Module, Spec]:
    """Load an official generator checkpoint file: the rebuilt network (weights loaded) and its spec."""
    return infer_generator(load_state_file(Path(path)), source=str(path))


def infer_generator(state_dict: Mapping[str, Any], source: str = "the state dict") -> tuple[nn.Module, Spec]:
    """The generator a plain state dict belongs to, built and loaded, and its spec.

    The spec is {"arch": "resnet" | "unet" | "stargan", **constructor arguments}, so
    `ARCHS[spec["arch"]](**rest)` rebuilds the same network. `source` names the dict in errors.
    """
    state = _drop_untracked_instance_norm_stats(_strip_module_prefix(_plain_state(state_dict, source)))
    for arch, read_spec in SPEC_READERS.items():
        try:
            spec = read_spec(state)
            if spec is None:
                continue
            net = ARCHS[arch](**{k: v for k, v in spec.items() if k != "arch"})
            _check_fits(net, state)
        except _Mismatch as e:
            raise _not_a_generator(source, f"it looks like a {LABELS[arch]} generator but {e}") from None
        net.load_state_dict(state)
        return net, spec
    raise _not_a_generator(source, f"unrecognised keys such as {next(iter(state))}")


def _not_a_generator(source: str, detail: str) -> UserError:
    return UserError(f"{source} is not a CycleGAN/pix2pix/StarGAN generator checkpoint ({detail}); {FIX}")


# ---------------------------------------------------------------------------------------------
# Cleaning a loaded state dict


def _plain_state(loaded: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise UserError(f"{source} holds a {type(loaded).__name__}, not a state dict; {FIX}")
    if not loaded:
        raise UserError(f"{source} is an empty state dict; {FIX}")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(f"{source} is not a plain state dict (entry {key!r} is a {type(value).__name__}, "
                            f"not a tensor); {FIX}")
    return dict(loaded)


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Nets saved while wrapped in DataParallel have every key under `module.`."""
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _drop_untracked_instance_norm_stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the running stats that old official checkpoints carry for their instance norms.

    Saved by PyTorch 0.4-era code, they belong to norms that no longer track statistics; the
    official loader drops them as well. Running stats without an affine weight can only be such
    an instance norm: the batch norms here are all affine (and StarGAN's instance norms too).
    """
    stale = {k.rsplit(".", 1)[0] for k in state
             if k.endswith(".running_mean") and k.rsplit(".", 1)[0] + ".weight" not in state}
    return {k: v for k, v in state.items()
            if not (k.rsplit(".", 1)[0] in stale and k.rsplit(".", 1)[-1] in RUNNING_STATS)}


# ---------------------------------------------------------------------------------------------
# Reading the architecture from keys and shapes


def _is_conv(state: dict[str, torch.Tensor], key: str, kernel: int) -> bool:
    w = state.get(key)
    return w is not None and w.ndim == 4 and w.shape[-1] == kernel


def _dim(state: dict[str, torch.Tensor], key: str, axis: int) -> int:
    if key not in state:
        raise _Mismatch(f"lacks keys such as {key}")
    if state[key].ndim != 4:
        raise _Mismatch(f"{key} has shape {list(state[key].shape)} where a conv weight was expected")
    return int(state[key].shape[axis])


def _norm_kind(state: dict[str, torch.Tensor], norm: str, conv: str) -> str:
    """Which norm follows the conv `conv`: batch norm has weights; instance norm has none, but its
    conv has a bias; with no norm the conv has no bias either (see norm.conv_bias)."""
    if f"{norm}weight" in state:
        return "batch"
    return "instance" if f"{conv}bias" in state else "none"


def _resnet_spec(state: dict[str, torch.Tensor]) -> Spec | None:
    if not _is_conv(state, "model.1.weight", 7):
        return None
    n_blocks = len({k.split(".")[1] for k in state if re.match(r"model\.\d+\.conv_block\.", k)})
    padding_type, dropout = "reflect", False
    if n_blocks:
        convs = sorted(int(m.group(1)) for k, v in state.items()
                       if (m := re.fullmatch(r"model\.10\.conv_block\.(\d+)\.weight", k)) and v.ndim == 4)
        if len(convs) != 2:
            raise _Mismatch(f"its first residual block has {len(convs)} convs where 2 were expected")
        padding_type = "zero" if convs[0] == 0 else "reflect"
        # Between the two convs: norm, ReLU, [Dropout], and a pad layer unless zero-padded.
        dropout = convs[1] - convs[0] == (4 if padding_type == "zero" else 5)
    return {"arch": "resnet", "input_nc": _dim(state, "model.1.weight", 1),
            "output_nc": _dim(state, f"model.{17 + n_blocks}.weight", 0),
            "ngf": _dim(state, "model.1.weight", 0), "norm": _norm_kind(state, "model.2.", "model.1."),
            "dropout": dropout, "n_blocks": n_blocks, "padding_type": padding_type}


def _unet_spec(state: dict[str, torch.Tensor]) -> Spec | None:
    if not _is_conv(state, "model.model.0.weight", 4):
        return None
    num_downs, block = 1, "model.model.1.model."
    while any(k.startswith(block) for k in state):
        num_downs, block = num_downs + 1, block + "3.model."
    if num_downs < 5:
        raise _Mismatch(f"has {num_downs} levels where at least 5 were expected")
    return {"arch": "unet", "input_nc": _dim(state, "model.model.0.weight", 1),
            # a ConvTranspose2d weight is [in, out, kh, kw]
            "output_nc": _dim(state, "model.model.3.weight", 1),
            "num_downs": num_downs, "ngf": _dim(state, "model.model.0.weight", 0),
            "norm": _norm_kind(state, "model.model.1.model.2.", "model.model.1.model.1."),
            "dropout": True}


def _stargan_spec(state: dict[str, torch.Tensor]) -> Spec | None:
    if not _is_conv(state, "main.0.weight", 7):
        return None
    in_channels = _dim(state, "main.0.weight", 1)
    if in_channels <= 3:
        raise _Mismatch(f"main.0.weight takes {in_channels} channels where 3 + the number of domains "
                        f"was expected")
    return {"arch": "stargan", "conv_dim": _dim(state, "main.0.weight", 0), "c_dim": in_channels - 3,
            "repeat_num": len({k.split(".")[1] for k in state if re.match(r"main\.\d+\.main\.", k)})}


SPEC_READERS = {"resnet": _resnet_spec, "unet": _unet_spec, "stargan": _stargan_spec}


def _check_fits(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise _Mismatch unless `state` has exactly `net`'s keys and shapes."""
    expected = net.state_dict()
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise _Mismatch(f"has unrecognised keys such as {unexpected[0]}")
    # PyTorch fills in a missing num_batches_tracked itself (checkpoints older than 0.4.1 lack it)
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    if missing:
        raise _Mismatch(f"lacks keys such as {missing[0]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise _Mismatch(f"{key} has shape {list(value.shape)} where {list(expected[key].shape)} was expected")
