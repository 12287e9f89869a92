"""StarGAN's attribute-classification accuracy (Choi et al. 2018, Sec. 5): a classifier trained on
the real attribute labels judges whether a translation shows the asked-for attribute.

`train_attribute_classifier` trains a multi-label classifier (BCE with logits, one output per
attribute) on samples {"image" in [-1, 1], "label" float 0/1}: a timm backbone built with
`timm.create_model(arch, pretrained=False, num_classes=n)` (no weights are downloaded; any timm
name works, e.g. resnet18, resnet10t, mobilenetv3_small_050), or `arch="tiny"`, a four-layer
conv net of this module that trains in seconds on 32 px images (for tests and synthetic worlds).

`attribute_accuracy` builds, for every held-out image and every attribute, the target label of
the official test (`create_labels` in yunjey/stargan solver.py, see `target_labels`): the
attribute flipped, or for a hair colour that colour set and the other hair colours cleared;
translates with G(x, c_trg), classifies, and counts per attribute how often the classifier finds
the target value of that attribute. For reference it also gives the classifier's accuracy on the
real held-out images against their own labels.

The generator is used in whatever mode the caller left it: the official StarGAN test runs G in
training mode (instance norm on each image's own statistics), so call `generator.train()` first
to score as it does. The classifier is switched to eval mode (batch norm on its running stats).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from translate.eval.supervised import draw_keys, fit

# The official create_labels treats these as one one-hot group; the others are flipped on their own.
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


class TinyClassifier(nn.Module):
    """Four strided 3x3 convs (16-32-64-128 channels, batch norm, ReLU), global average pooling, and
    a linear layer to one logit per attribute."""

    def __init__(self, num_classes: int, in_chans: int = 3):
        super().__init__()
        layers, dim = [], in_chans
        for width in (16, 32, 64, 128):
            layers += [nn.Conv2d(dim, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            dim = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_classifier(arch: str, num_attributes: int) -> nn.Module:
    if arch == "tiny":
        return TinyClassifier(num_attributes)
    import timm  # only for the timm backbones
    return timm.create_model(arch, pretrained=False, num_classes=num_attributes)


def _collate(dataset: Dataset, keys: Sequence) -> tuple[Tensor, Tensor]:
    samples = [dataset[k] for k in keys]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"].float() for s in samples])


def train_attribute_classifier(dataset: Dataset, num_attributes: int, steps: int, batch_size: int,
                               arch: str = "resnet18", seed: int = 0, lr: float = 1e-3,
                               device: torch.device | str = "cpu", log_every: int = 0) -> nn.Module:
    """A classifier of the dataset's attribute labels: `steps` Adam steps on batches drawn with
    replacement (each draw has its own sample seed, so a dataset that augments flips differently
    each time). Returned in eval mode, on `device`."""
    torch.manual_seed(seed)
    keys = draw_keys(len(dataset), steps * batch_size, seed)
    model = build_classifier(arch, num_attributes).to(device)

    def bce(model: nn.Module, keys: list) -> Tensor:
        images, labels = _collate(dataset, keys)
        return F.binary_cross_entropy_with_logits(model(images.to(device)).float(), labels.to(device))

    batches = (keys[i:i + batch_size] for i in range(0, len(keys), batch_size))
    return fit(model, batches, bce, lr, steps, log_every, "classifier (BCE)")


def target_labels(labels: Tensor, attribute_names: Sequence[str],
                  hair_group: Sequence[str] | None = HAIR_COLOURS) -> list[Tensor]:
    """One target label batch per attribute, as the official `create_labels`: for attribute i in
    the hair group, entry i set to 1 and the group's other entries to 0; for any other attribute,
    entry i flipped (0 <-> 1). The remaining entries keep the image's own values."""
    group = [i for i, name in enumerate(attribute_names) if hair_group and name in hair_group]
    targets = []
    for i in range(len(attribute_names)):
        c_trg = labels.clone()
        if i in group:
            c_trg[:, group] = 0
            c_trg[:, i] = 1
        else:
            c_trg[:, i] = 1 - c_trg[:, i]
        targets.append(c_trg)
    return targets


def domain_targets(labels: Tensor, names: Sequence[str], multi_label: bool) -> list[Tensor]:
    """The official test's target batches for images with labels `labels` (B x names): for
    attributes (CelebA) create_labels' flips; for one-hot domains (RaFD, folders) each domain in turn."""
    if multi_label:
        return target_labels(labels, names)
    eye = torch.eye(len(names), dtype=labels.dtype, device=labels.device)
    return [eye[i].expand(labels.size(0), -1).clone() for i in range(len(names))]


@torch.no_grad()
def attribute_accuracy(classifier: nn.Module, generator: nn.Module, dataset: Dataset,
                       attribute_names: Sequence[str], hair_group: Sequence[str] | None = HAIR_COLOURS,
                       batch_size: int = 16, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Per attribute (one row each): `real_accuracy`, how often the classifier's reading of the real
    held-out image (logit > 0) matches its label; `target_found`, how often its reading of
    G(x, c_trg) for that attribute's target equals the target's value of that attribute; `images`.
    The dataset is read in order with plain indices (give it train=False: no flips)."""
    classifier.eval()
    n_attr = len(attribute_names)
    real_hits = torch.zeros(n_attr)
    found = torch.zeros(n_attr)
    count = 0
    for start in range(0, len(dataset), batch_size):
        images, labels = _collate(dataset, range(start, min(start + batch_size, len(dataset))))
        images, labels = images.to(device), labels.to(device)
        real_hits += ((classifier(images) > 0).float() == labels).float().sum(0).cpu()
        for i, c_trg in enumerate(target_labels(labels, attribute_names, hair_group)):
            predicted = classifier(generator(images, c_trg))[:, i] > 0
            found[i] += (predicted.float() == c_trg[:, i]).float().sum().cpu()
        count += len(labels)
    return pd.DataFrame({"attribute": list(attribute_names), "real_accuracy": (real_hits / count).tolist(),
                         "target_found": (found / count).tolist(), "images": count})


@torch.no_grad()
def real_attribute_accuracy(classifier: nn.Module, dataset: Dataset, attribute_names: Sequence[str],
                            batch_size: int = 16, device: torch.device | str = "cpu", limit: int = 0) -> pd.DataFrame:
    """Per attribute, how often the classifier's reading of a real image (logit > 0) matches its
    label, over the first `limit` images of the dataset (0: all) read in order: how far the judge
    itself can be trusted. Columns `attribute`, `accuracy`, `images`."""
    classifier.eval()
    count = min(len(dataset), limit) if limit else len(dataset)
    hits = torch.zeros(len(attribute_names))
    for start in range(0, count, batch_size):
        images, labels = _collate(dataset, range(start, min(start + batch_size, count)))
        hits += ((classifier(images.to(device)) > 0).float() == labels.to(device)).float().sum(0).cpu()
    return pd.DataFrame({"attribute": list(attribute_names), "accuracy": (hits / count).tolist(), "images": count})
