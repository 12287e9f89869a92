"""Paired metrics of pix2pix-style evaluation: L1, PSNR and SSIM of each translation against its
true output, through torchmetrics, on a 0-1 scale.

L1 is the mean absolute difference (torchmetrics MeanAbsoluteError over all pixels, which for
images of one size is the mean over images of each image's mean); PSNR (dB) is computed per
image and averaged; SSIM is torchmetrics' (Gaussian 11x11 window, sigma 1.5), averaged over images.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from translate.eval.metrics import LOCAL, Metric, MetricContext, Translated, register, to_unit


class PairedScores:
    """L1, PSNR and SSIM accumulated over batches of (fake, real) images in [-1, 1]."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.l1 = MeanAbsoluteError(**LOCAL).to(device)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), **LOCAL).to(device)  # per image, then mean
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0, **LOCAL).to(device)

    @torch.no_grad()
    def update(self, fake: Tensor, real: Tensor) -> None:
        fake, real = to_unit(fake), to_unit(real)
        for metric in (self.l1, self.psnr, self.ssim):
            metric.update(fake, real)

    def compute(self) -> dict[str, float]:
        return {"L1": float(self.l1.compute()), "PSNR": float(self.psnr.compute()), "SSIM": float(self.ssim.compute())}


@register("paired")
class Paired(Metric):
    columns = {"L1": False, "PSNR": True, "SSIM": True}
    requires = ("target",)
    requirement = "pairs (each input's true output: aligned data, paired folders, scenes, cityscapes)"
    stargan = False

    def __init__(self, context: MetricContext):
        super().__init__(context)
        self.scores = PairedScores(context.device)

    def update(self, batch: Translated) -> None:
        self.scores.update(batch.fake, batch.target)

    def compute(self) -> dict[str, float]:
        return self.scores.compute()
