"""Label-map scores of the pix2pix and CycleGAN papers (the "FCN-score" definitions).

Per-pixel accuracy = correct pixels / labelled pixels; per-class accuracy = mean over classes of
correct / labelled pixels of that class; class IoU = mean over classes of TP / (TP + FP + FN).
Classes that never occur in the ground truth are left out of the means.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = 255


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore: int = IGNORE) -> Tensor:
    """counts[i, j] = pixels of true class i predicted as j, int64 of K x (K + 1): the last column
    counts predictions outside the K classes (wrong for every class)."""
    pred, target = pred.flatten().long(), target.flatten().long()
    keep = target != ignore
    pred, target = pred[keep], target[keep]
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = torch.bincount(target * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def label_scores(conf: Tensor) -> dict[str, float]:
    k = conf.shape[0]
    conf = conf.double()
    tp = conf[:, :k].diagonal()
    labelled = conf.sum(1)
    predicted = conf[:, :k].sum(0)
    present = labelled > 0
    if not present.any():
        raise ValueError("no labelled pixels to score")
    iou = tp / (labelled + predicted - tp).clamp(min=1)
    return {
        "pixel_accuracy": float(tp.sum() / labelled.sum()),
        "class_accuracy": float((tp[present] / labelled[present]).mean()),
        "class_iou": float(iou[present].mean()),
    }


@torch.no_grad()
def score_label_maps(generator: torch.nn.Module, dataset, colors_to_classes, num_classes: int,
                     batch_size: int = 16, device: torch.device | str = "cpu") -> dict[str, float]:
    """Translate every sample's "A" (a photo) into a label map, read its colours back as classes,
    and score them against the sample's "A_classes" (for photo -> labels, no FCN is needed)."""
    conf = torch.zeros(num_classes, num_classes + 1, dtype=torch.long)
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        photos = torch.stack([s["A"] for s in samples]).to(device)
        truth = torch.stack([s["A_classes"] for s in samples])
        pred = colors_to_classes(generator(photos)).cpu()
        conf += confusion_matrix(pred, truth, num_classes)
    return label_scores(conf)
