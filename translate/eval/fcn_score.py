"""The FCN-score of the pix2pix and CycleGAN papers, in PyTorch.

The papers judge generated photos (labels -> photo) by how well an off-the-shelf semantic
segmentation network, trained on the real photos of the target domain, recovers the labels the
photos were generated from: per-pixel accuracy, per-class accuracy and class IoU of its
predictions against the input label map (the definitions are in segmentation.py). Scoring the
real held-out photos with the same network gives the "real photos" row of the papers' tables:
the upper bound a translation can reach with this judge (0.80 / 0.26 / 0.21 for their FCN-8s on
Cityscapes at 256x256).

The papers used an FCN-8s from Caffe; here the judge is any timm backbone with random weights
(`features_only`, so no download) and a light head (`Segmenter`), trained by
`train_segmenter` on a dataset's "A" photos and their "A_classes" (255 = ignore). Numbers are
comparable between models scored with the same judge file, not with the papers' FCN-8s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from translate.eval.segmentation import IGNORE, confusion_matrix, label_scores
from translate.eval.supervised import draw_keys, fit

TINY = "tiny"  # a three-stage conv backbone of this module: trains in seconds at 32 px (tests)


class TinyBackbone(nn.Module):
    """Three conv-BN-ReLU stages at strides 1, 2 and 4 (16, 32, 64 channels), returning all three
    maps like a timm `features_only` model."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.channels = [16, 32, 64]
        stages, dim = [], in_chans
        for width, stride in zip(self.channels, (1, 2, 2), strict=True):
            stages.append(nn.Sequential(nn.Conv2d(dim, width, 3, stride=stride, padding=1, bias=False),
                                        nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
            dim = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Segmenter(nn.Module):
    """A backbone's feature maps, each projected by a 1x1 conv to `head_channels`, upsampled to the
    finest map and summed (an FPN without the top-down 3x3 convs), then a 3x3 conv-BN-ReLU and a
    1x1 conv to class logits, bilinearly upsampled to the input resolution: N x classes x H x W."""

    def __init__(self, arch: str, num_classes: int, head_channels: int = 64):
        super().__init__()
        if arch == TINY:
            self.backbone = TinyBackbone()
            channels = self.backbone.channels
        else:
            import timm  # only for the timm backbones
            self.backbone = timm.create_model(arch, features_only=True, pretrained=False)
            channels = self.backbone.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        size = features[0].shape[-2:]
        fused = sum(F.interpolate(lateral(f), size=size, mode="bilinear", align_corners=False)
                    for lateral, f in zip(self.lateral, features, strict=True))
        logits = self.classifier(self.fuse(fused))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(arch: str, num_classes: int) -> Segmenter:
    return Segmenter(arch, num_classes)


def photo_batches(dataset: Dataset, batch_size: int, keys, num_workers: int = 0) -> DataLoader:
    """Batches of {"A": photos, "A_classes": class maps, ...} read at `keys` (plain indices, or
    (index, seed) pairs for a training draw with its own crop and flip). The loader's own
    generator keeps it from drawing on torch's global one (see data/sampler.py)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers,
                      generator=torch.Generator())


def train_segmenter(dataset: Dataset, num_classes: int, steps: int, batch_size: int, arch: str = "resnet18",
                    lr: float = 1e-3, seed: int = 0, device: torch.device | str = "cpu", log_every: int = 0,
                    num_workers: int = 0) -> nn.Module:
    """A segmentation network of the dataset's real photos ("A", in [-1, 1]) into their classes
    ("A_classes", 255 = ignore): `steps` Adam steps of pixel-wise cross-entropy on batches drawn
    with replacement, each draw with its own sample seed (a training dataset crops and flips each
    draw differently). Returned in eval mode, on `device`."""
    torch.manual_seed(seed)
    keys = draw_keys(len(dataset), steps * batch_size, seed)
    model = build_segmenter(arch, num_classes).to(device)

    def cross_entropy(model: nn.Module, batch: dict) -> Tensor | None:
        truth = batch["A_classes"].to(device)
        if not (truth != IGNORE).any():  # nothing labelled: cross-entropy would be 0/0
            return None
        return F.cross_entropy(model(batch["A"].to(device)).float(), truth, ignore_index=IGNORE)

    return fit(model, photo_batches(dataset, batch_size, keys, num_workers), cross_entropy, lr, steps,
               log_every, "segmenter (cross-entropy)")


class FCNScore:
    """Accumulates the segmenter's predictions on photos against the true class maps; `compute`
    gives the papers' pixel accuracy, class accuracy and class IoU over everything seen so far.

    Photos are Bx3xHxW in [-1, 1]; with `image_size` set, they are resized (bilinear) to the size
    the segmenter was trained at, and its logits resized back to the truth's size. The segmenter
    runs in eval mode (batch norm on its running statistics)."""

    def __init__(self, segmenter: nn.Module, num_classes: int, device: torch.device | str = "cpu",
                 image_size: int | None = None):
        self.segmenter = segmenter.to(device).eval()
        self.num_classes = num_classes
        self.device = device
        self.image_size = image_size
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.long)

    @torch.no_grad()
    def update(self, photos: Tensor, truth: Tensor) -> None:
        if photos.dim() != 4 or truth.dim() != 3 or len(photos) != len(truth):
            raise ValueError(f"expected photos Bx3xHxW and truth BxHxW, got {tuple(photos.shape)} and "
                             f"{tuple(truth.shape)}")
        x = photos.to(self.device).float()
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        logits = self.segmenter(x)
        if logits.shape[-2:] != truth.shape[-2:]:
            logits = F.interpolate(logits, size=truth.shape[-2:], mode="bilinear", align_corners=False)
        self.confusion += confusion_matrix(logits.argmax(1).cpu(), truth.cpu(), self.num_classes)

    def compute(self) -> dict[str, float]:
        return label_scores(self.confusion)


def score_real_photos(segmenter: nn.Module, dataset: Dataset, num_classes: int, batch_size: int = 16,
                      device: torch.device | str = "cpu", limit: int = 0, num_workers: int = 0,
                      image_size: int | None = None) -> tuple[dict[str, float], int]:
    """The FCN-score of a dataset's own photos ("A" against "A_classes"), read in order: the
    papers' "real photos" row when the dataset is held out. Returns the scores and the count."""
    count = min(len(dataset), limit) if limit else len(dataset)
    score = FCNScore(segmenter, num_classes, device, image_size)
    for batch in photo_batches(dataset, batch_size, range(count), num_workers):
        score.update(batch["A"], batch["A_classes"])
    return score.compute(), count
