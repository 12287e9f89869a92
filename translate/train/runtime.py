"""Device, precision and distribution: the one place that decides where and how tensors compute.

Launched by `torchrun`, the process group comes from the environment (WORLD_SIZE, RANK,
LOCAL_RANK): NCCL on GPUs, gloo on CPUs. Each network is wrapped in DistributedDataParallel;
gradients are averaged across processes, so N processes with a local batch of B/N train like one
process with a batch of B.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from translate.config import RuntimeConfig
from translate.errors import UserError
from translate.nets.dropout import use_uniform_dropout
from translate.nets.matmul_conv import FLOAT32_ROWS, let_go_of_kept_casts, use_matmul_for_small_maps
from translate.nets.norm import use_group_norm
from translate.nets.thin_conv import split_thin_convs
from translate.nets.winograd import OUTPUT_TILES, use_winograd

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# With bf16 matrix units (has_bf16_matrix_units), a bf16 matrix product beats oneDNN's layer on
# more maps, up to 256 rows (batch x positions), forward and backward: pix2pix's 8x8 map 1.9x,
# its transposed one from 16x16 1.8x, StarGAN D's 4x4 maps at batch 16 2.4x; at 1,024 rows
# 0.4-0.5x. Convolutions on 16x16 maps went either way (pix2pix's 1.2x; CycleGAN D's at 128 px
# made its step 3.5% slower), so they stay with oneDNN. There, too, products of at most 4 rows run
# in float32 and one image's products by columns (matmul_conv.FLOAT32_ROWS, _one_nchw_image), which
# made pix2pix's bf16 step slower without such units. Without them, the classes' defaults (16 and
# 64 positions per image, no row limit, products in autocast's dtype, by rows).
BF16_MATRIX_UNIT_PRODUCTS = {"max_positions": 64, "max_transposed_positions": 256, "max_rows": 256,
                             "float32_rows": FLOAT32_ROWS, "by_columns": True}


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    channels_last: bool = False
    channels_last_nets: tuple[str, ...] = ()
    compile: bool = False
    small_map_matmul: bool = False
    split_thin_convs: bool = False
    group_instance_norm: bool = False
    winograd: bool = False
    winograd_min_channels: int = 0
    winograd_output_tile: int = 0
    recast_saved_weights: bool = False
    small_map_settings: dict | None = None  # the matrix-product layers' limits and paths (matmul_conv.py)

    @classmethod
    def setup(cls, cfg: RuntimeConfig) -> Runtime:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.keep_freed_memory:
            keep_freed_memory()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = _pick_device(cfg.device, local_rank)
        if cfg.precision == "fp16" and device.type == "cpu":
            raise UserError("runtime.precision=fp16 needs a GPU; on the CPU use runtime.precision=bf16")
        if cfg.precision == "int8" and device.type != "cpu":  # translate-infer only (translate/quantize.py)
            raise UserError(f"precision=int8 runs on x86 CPUs (oneDNN's int8 kernels), not {device.type}; "
                            f"use device=cpu, or precision=bf16 on a GPU")
        if cfg.winograd_output_tile not in OUTPUT_TILES:
            tiles = " or ".join(map(str, OUTPUT_TILES[1:]))
            raise UserError(f"runtime.winograd_output_tile={cfg.winograd_output_tile} is not one of Winograd's tiles: "
                            f"use 0 (automatic), {tiles}")
        rank = 0
        if world_size > 1:
            if not dist.is_initialized():
                backend = "nccl" if device.type == "cuda" else "gloo"
                # A bounded timeout: if another process dies, the rest fail instead of hanging.
                dist.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.dist_timeout))
            rank = dist.get_rank()
        matrix_units = cfg.precision == "bf16" and has_bf16_matrix_units()
        return cls(device=device, precision=cfg.precision, rank=rank, world_size=world_size,
                   channels_last=cfg.channels_last, channels_last_nets=tuple(cfg.channels_last_nets),
                   compile=cfg.compile,
                   # measured on CPUs only; on GPUs cuDNN chooses its own algorithm per shape
                   small_map_matmul=cfg.small_map_matmul and device.type == "cpu",
                   small_map_settings=BF16_MATRIX_UNIT_PRODUCTS if matrix_units else None,
                   # these three in one process only: with the first two, 2 ranks of batch 1
                   # drifted from one process of batch 2 after their second step (other rounding,
                   # which Adam's first step turns into +-lr on near-zero gradients:
                   # tests/test_training.py, benchmarks/PERFORMANCE.md), and N ranks should
                   # reproduce one process; Winograd kept out likewise (its rounding differs from
                   # the plain layer's too; on GPUs cuDNN chooses its own algorithm)
                   split_thin_convs=cfg.split_thin_convs and device.type == "cpu" and world_size == 1,
                   group_instance_norm=cfg.group_instance_norm and device.type == "cpu" and world_size == 1,
                   winograd=cfg.winograd and device.type == "cpu" and world_size == 1
                   and not (matrix_units and cfg.winograd_output_tile == 0),
                   winograd_min_channels=cfg.winograd_min_channels,
                   winograd_output_tile=cfg.winograd_output_tile,
                   recast_saved_weights=cfg.recast_saved_weights)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in ("fp32", "int8"):  # an int8 graph carries its own dtypes
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision]))
        if self.recast_saved_weights:
            stack.enter_context(recast_saved_weights())
            stack.callback(let_go_of_kept_casts)  # the graph no longer needs them either
        return stack

    def adam(self, params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam with its fused kernel: one pass over each parameter rather than torch's default
        chain of element-wise ops per tensor on a CPU (8x faster for pix2pix's 54M parameters,
        a sixth of its step); the same update to within float rounding."""
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling against underflow; bf16 has fp32's range and does not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def wrap(self, net: nn.Module, name: str = "") -> nn.Module:
        """net on this runtime's device, in its layers and memory format (`name`: the method's name
        for it, which runtime.channels_last_nets may list), under DDP where distributed."""
        if self.split_thin_convs:  # first: the layers it takes are not the small-map ones
            split_thin_convs(net)
        if self.group_instance_norm:
            use_group_norm(net)
        if self.winograd:  # before the small-map switch, which takes every plain convolution left
            # zero-padded layers (StarGAN's) in float32 or with F(4x4) only: with F(2x2) in bf16
            # they were no faster (0.86-1.09x; translate/nets/winograd.py)
            zero_padded = self.winograd_output_tile == 4 or (self.winograd_output_tile == 0 and self.precision == "fp32")
            use_winograd(net, self.winograd_min_channels, self.winograd_output_tile, zero_padded)
        if self.small_map_matmul:
            use_matmul_for_small_maps(net, self.small_map_settings)
        if self.device.type == "cpu":  # torch's CPU dropout draws its mask one number at a time
            use_uniform_dropout(net)
        memory_format = torch.channels_last if name in self.channels_last_nets else self.memory_format
        net = net.to(self.device, memory_format=memory_format)
        if self.compile:
            # In place (Module.compile): the module and its state_dict keys stay what they were,
            # so checkpoints do not depend on whether a run was compiled.
            net.compile()
        if self.distributed and any(p.requires_grad for p in net.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(net, device_ids=ids)
        return net

    def to_device(self, batch: dict) -> dict:
        nonblocking = self.device.type == "cuda"
        return {k: self._to_device(v, nonblocking) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _to_device(self, tensor: torch.Tensor, nonblocking: bool) -> torch.Tensor:
        if tensor.dim() == 4:  # image batches in the networks' memory format
            return tensor.to(self.device, non_blocking=nonblocking, memory_format=self.memory_format)
        return tensor.to(self.device, non_blocking=nonblocking)

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's value of a picklable object, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        values = [None] * self.world_size
        dist.all_gather_object(values, obj)
        return values

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank (so all ranks stop together)."""
        if not self.distributed:
            return flag
        t = torch.tensor([0 if flag else 1], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return int(t.item()) == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def lost_peer(self, error: BaseException) -> bool:
        """Whether `error` is a collective failing because another process died or hung: gloo
        reports a closed socket within seconds, a hung peer ends in runtime.dist_timeout."""
        if not self.distributed:
            return False
        if isinstance(error, dist.DistError):
            return True
        text = str(error)
        return any(s in text for s in ("Connection closed by peer", "Connection reset by peer", "Timed out",
                                       "timed out", "NCCL communicator was aborted", "ProcessGroupGloo"))

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except RuntimeError:  # a group whose peer died may fail to tear down; the process ends anyway
                pass


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of giving it back to the system.

    By default every allocation above 32 MB (a weight gradient of StarGAN D's last layers, 134 MB;
    large activations) is a fresh mmap, returned on free, so each step pays page faults to zero it
    again: 40-70% of the time of those layers' forward and backward here. Without mmap and with a
    high trim threshold, a training loop's steady stream of same-sized tensors reuses the heap.
    (jemalloc or tcmalloc preloaded do the same; this needs no launcher.) No effect where the C
    library is not glibc, and none on GPU memory. Returns whether it applied.
    """
    name = ctypes.util.find_library("c")
    if not name or not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


class _SavedCast:
    """A weight's low-precision cast as saved for backward: the weight, and how to cast it again."""

    __slots__ = ("dtype", "version", "view", "weight")

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, view: tuple | None):
        self.weight, self.dtype, self.version, self.view = weight, dtype, weight._version, view


def _pack_weight_cast(saved: torch.Tensor):
    base = saved if saved._base is None else saved._base  # F.linear saves its weight transposed
    cast = base.grad_fn
    if cast is None or cast.name() != "ToCopyBackward0":
        return saved
    (source, _), = cast.next_functions
    weight = getattr(source, "variable", None)  # AccumulateGrad's: a cast of a parameter (a leaf)
    if (weight is None or weight.shape != base.shape or weight.dtype == base.dtype or weight.device != base.device
            or base.stride() != weight.stride()):  # not what weight.to(dtype) makes again
        return saved
    view = None if saved is base else (saved.shape, saved.stride(), saved.storage_offset())
    return _SavedCast(weight, base.dtype, view)


def _unpack_weight_cast(packed):
    if not isinstance(packed, _SavedCast):
        return packed
    if packed.weight._version != packed.version:
        raise RuntimeError("a weight was modified in place between its forward and its backward")
    cast = packed.weight.to(packed.dtype)
    return cast if packed.view is None else cast.as_strided(*packed.view)


def recast_saved_weights() -> torch.autograd.graph.saved_tensors_hooks:
    """Autograd keeps the fp32 weight for backward, not autocast's low-precision copy of it, and
    casts it again there (any cast of a leaf: a parameter, or an input that needs gradients).
    Otherwise every layer's bf16 weight copy lives from the forward to that layer's backward,
    beside the fp32 weights, their new gradients and Adam's moments: pix2pix's U-Net has 54M
    weights, 108 MB of bf16 copies that fp32 training (which saves the parameter itself) does not
    hold. Costs one more cast per use of a weight in backward (benchmarks/PERFORMANCE.md). The
    values are the same casts, so gradients are bit for bit those of plain autocast."""
    return torch.autograd.graph.saved_tensors_hooks(_pack_weight_cast, _unpack_weight_cast)


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in tiles of its own (Intel's AMX). oneDNN's bf16
    convolutions then run at 4-8x the float32 rate (2,475 against 305 GFLOP/s in a 3x3 layer on
    2 Xeon cores, where AVX-512's bf16 gave twice float32's), and the direct 3x3 layers beat
    Winograd's in bf16 (a 256-channel layer, forward and backward, at 256 px: 15 ms against 21
    with F(4x4) and 27 with F(2x2); benchmarks/PERFORMANCE.md). The automatic tile then leaves
    bf16 runs' layers to oneDNN; float32 has no such units and keeps Winograd's."""
    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"runtime.device={name} but no CUDA GPU is visible; use runtime.device=cpu")
        device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise UserError(f"runtime.device={name} is not auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s own random stream. Rank 0 keeps `seed`, so a run in one process
    draws what it always did; the others get streams of their own, so that their dropout masks,
    gradient-penalty mixes and StarGAN target orders are not copies of rank 0's."""
    return seed + 1_000_003 * rank


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(state: dict) -> None:
    # .cpu(): a checkpoint loaded with map_location=cuda brings these byte tensors to the GPU
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
