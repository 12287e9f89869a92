"""StarGAN (Choi et al., 2018): one generator G(x, c) for every domain, steered by a target label c.

D is a WGAN-GP critic with a second head that classifies the domain. Each step updates D on real
images (classified by their own labels) and on G's translations to target labels drawn by
permuting the batch's labels; every n_critic-th step G also updates: fool D, be classified as the
target, and come back to the input when translated back to the original label (L1).
Multi-label attributes (CelebA) are classified with per-attribute BCE summed over attributes;
single-label domains (RaFD) with cross-entropy, as in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from translate.config import RunConfig
from translate.data import domain_labels
from translate.losses import AdversarialLoss, gradient_penalty, reconstruction_loss
from translate.methods.base import Method, StepContext, set_requires_grad
from translate.nets import StarGANDiscriminator, StarGANGenerator


def classification_loss(logits: Tensor, labels: Tensor, multi_label: bool) -> Tensor:
    """Multi-label: BCE with logits summed over attributes, averaged over the batch (official
    size_average=False / batch). Single-label: cross-entropy against the one-hot label's index."""
    logits = logits.float()
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum") / logits.size(0)
    return F.cross_entropy(logits, labels.argmax(1))


class StarGAN(Method):
    paired = False

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        s = cfg.stargan
        self.labels = domain_labels(cfg.data)
        c_dim = len(self.labels.names)
        self.nets["G"] = StarGANGenerator(s.conv_dim, c_dim, s.g_repeat_num)
        self.nets["D"] = StarGANDiscriminator(self.labels.image_size, s.d_conv_dim, c_dim, s.d_repeat_num)
        self.wgan = AdversarialLoss("wgangp")

    def optimizer_nets(self) -> dict[str, list[str]]:
        return {"G": ["G"], "D": ["D"]}

    def generator(self, direction: str = "AtoB") -> nn.Module:
        return self.nets["G"]

    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(logits, labels, self.labels.multi_label)

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, Tensor]:
        s = self.cfg.stargan
        G, D = self.nets["G"], self.nets["D"]
        x_real, c_org = batch["image"], batch["label"]
        # Target labels: the batch's own labels in a random order (official rand_idx), so targets
        # follow the data's label distribution; drawn on the CPU so every device draws the same.
        c_trg = c_org[torch.randperm(c_org.size(0)).to(c_org.device)]

        set_requires_grad([D], True)
        with ctx.autocast():
            out_src, out_cls = D(x_real)
            with torch.no_grad():  # D's step needs no gradient through G
                x_fake = G(x_real, c_trg)
            fake_src, _ = D(x_fake)
            losses = {
                "D/loss_real": self.wgan(out_src, True),
                "D/loss_fake": self.wgan(fake_src, False),
                "D/loss_cls": self.classification_loss(out_cls, c_org),
                "D/loss_gp": gradient_penalty(D, x_real, x_fake),
            }
        ctx.optimize("D", losses["D/loss_real"] + losses["D/loss_fake"] + s.lambda_cls * losses["D/loss_cls"]
                     + s.lambda_gp * losses["D/loss_gp"])

        if (ctx.step + 1) % s.n_critic == 0:
            set_requires_grad([D], False)
            with ctx.autocast():
                x_fake = G(x_real, c_trg)
                fake_src, fake_cls = D(x_fake)
                x_rec = G(x_fake, c_org)
                losses["G/loss_fake"] = self.wgan(fake_src, True, for_generator=True)
                losses["G/loss_rec"] = reconstruction_loss(x_rec, x_real)
                losses["G/loss_cls"] = self.classification_loss(fake_cls, c_trg)
            ctx.optimize("G", losses["G/loss_fake"] + s.lambda_rec * losses["G/loss_rec"]
                         + s.lambda_cls * losses["G/loss_cls"])
            set_requires_grad([D], True)
            # The grids show G's steps only, so every grid has the same columns.
            self._visuals = {"real": x_real.detach(), "fake": x_fake.detach(), "rec": x_rec.detach()}
        return {k: v.detach() for k, v in losses.items()}
