"""Normalisation layers and weight initialisation, set up as the official CycleGAN/pix2pix code does."""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from translate.errors import UserError

NormFactory = Callable[[int], nn.Module]

NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")


def _unknown(kind: str, name: str, known: tuple[str, ...]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return UserError(f"unknown {kind} {name!r}; {hint}choose one of {', '.join(known)}")


class GroupInstanceNorm2d(nn.InstanceNorm2d):
    """Instance norm without affine parameters or running statistics (the official
    CycleGAN/pix2pix setting) computed as a group norm of one channel per group.

    The same normalisation, per image and channel. F.instance_norm normalises the batch as one
    image of N * C channels and returns a view of that result, so the in-place ReLU that follows
    every norm in these networks makes autograd copy the whole gradient back through the view
    (CopySlices) on the way back; and the CPU has a faster group norm. Norm and ReLU, forward and
    backward, were 1.5-2.3x faster on this CPU in fp32 and bf16. The runtime switches to it on
    CPUs in one process (`use_group_norm`): GPUs keep instance norm, which autocast runs in the
    low precision there (group norm it runs in float32), and so do torchrun jobs
    (translate/train/runtime.py).

    Channels-last maps (runtime.channels_last): torch's group norm backward on them was 15-30x
    slower than on contiguous ones. One image's instance norm is batch norm's training-mode
    normalisation (per channel over the image's pixels, biased variance), which has a fast
    channels-last kernel, so a batch of one goes through F.batch_norm; larger batches are made
    contiguous for the group norm and back.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.affine or self.track_running_stats:
            return super().forward(x)
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return F.group_norm(x, x.size(1), eps=self.eps)
        if x.size(0) == 1:
            return F.batch_norm(x, None, None, training=True, eps=self.eps)
        return F.group_norm(x.contiguous(), x.size(1), eps=self.eps).contiguous(memory_format=torch.channels_last)


def use_group_norm(net: nn.Module) -> nn.Module:
    """Switch net's parameter-free nn.InstanceNorm2d layers to GroupInstanceNorm2d in place
    (no parameters or buffers either way; StarGAN's affine, tracking ones stay)."""
    for module in net.modules():
        if type(module) is nn.InstanceNorm2d and not (module.affine or module.track_running_stats):
            module.__class__ = GroupInstanceNorm2d
    return net


def inference_copy(net: nn.Module, eval_mode: bool, one_image: bool = False) -> nn.Module:
    """A float32 CPU copy of `net` for a fixed graph (an exported or quantised generator): in eval
    mode, or (eval_mode=False) with its instance norms on each image's own statistics, as train mode
    computes them, without running-statistics updates. Train-mode batch norm mixes a batch's
    images and dropout draws random numbers, so eval_mode=False refuses them, unless the copy will
    only ever see one image at a time (`one_image`): then batch norm is that image's instance norm
    with the batch norm's scale and shift, and dropout stays on, as the official test runs them."""
    net = copy.deepcopy(net).cpu().float().eval()
    if eval_mode:
        return net
    for parent in list(net.modules()):
        for name, m in parent.named_children():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and one_image:
                setattr(parent, name, _per_image_batch_norm(m))
            elif isinstance(m, nn.Dropout) and m.p > 0 and one_image:
                m.train()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, nn.Dropout) and m.p > 0):
                raise UserError(f"eval=false: this generator has {type(m).__name__} layers, whose train mode "
                                f"mixes a batch's images or draws random numbers; use eval=true")
            elif isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats:
                m.track_running_stats = False  # eval mode then normalises by the input's own statistics
                m.running_mean = m.running_var = m.num_batches_tracked = None
    return net


def _per_image_batch_norm(bn: nn.modules.batchnorm._BatchNorm) -> nn.InstanceNorm2d:
    """Train-mode batch norm of a batch of one image: that image's instance norm, same affine."""
    norm = nn.InstanceNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        norm.load_state_dict({"weight": bn.weight, "bias": bn.bias})
    return norm


def norm_layer(name: str) -> NormFactory:
    """A constructor `channels -> module` for the named normalisation.

    instance: no affine parameters and no running statistics, so it adds nothing to a state dict
    (the official code since 2019). none: an Identity, which has no parameters either but keeps
    its slot in the Sequential, so a layer has the same key index whatever the norm.
    """
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "none":
        return lambda channels: nn.Identity()
    raise _unknown("norm", name, NORMS)


def conv_bias(norm: str) -> bool:
    """Whether a conv that feeds a norm layer has a bias: officially only before instance norm.

    Batch norm's shift makes a bias redundant; the official test also leaves 'none' without one,
    and checkpoints trained that way have no bias keys, so we keep that.
    """
    return norm == "instance"


def init_weights(net: nn.Module, init: str = "normal", gain: float = 0.02) -> nn.Module:
    """Re-initialise conv/linear weights (biases to 0) and BatchNorm scales N(1, gain), in place.

    `Module.apply` visits children before their parent, the order the official init_net uses,
    so a net built after `torch.manual_seed(s)` draws exactly the official weights.
    """
    if init not in INITS:
        raise _unknown("init", init, INITS)

    def init_module(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init == "kaiming":
                # gain is not used: the official code keeps kaiming's own fan-in scaling
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init_module)
    return net
