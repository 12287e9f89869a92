"""StarGAN (Choi et al., 2018): one generator G(x, c) for every domain, steered by a target label c.

D is a WGAN-GP critic with a second head that classifies the domain. Each step updates D on real
images (classified by their own labels) and on G's translations to target labels drawn by
permuting the batch's labels; every n_critic-th step G also updates: fool D, be classified as the
target, and come back to the input when translated back to the original label (L1).
Multi-label attributes (CelebA) are classified with per-attribute BCE summed over attributes;
single-label domains (RaFD) with cross-entropy, as in the official code.

Several datasets with different label sets (data.format=joint; paper section 3.2, official
train_multi): G's label is [c_0, c_1, ..., mask], the mask one-hot on the dataset whose part is
known and the other parts zero; D classifies into every part at once (no mask). A step visits
the datasets in turn, each with its own D step (and G step on every n_critic-th step), and
classifies only into that dataset's part of D's outputs: the other parts, unknown for its
images, get no classification gradient.
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
        self.nets["G"] = StarGANGenerator(s.conv_dim, len(self.labels.names), s.g_repeat_num)
        self.nets["D"] = StarGANDiscriminator(self.labels.image_size, s.d_conv_dim, len(self.labels.class_names),
                                              s.d_repeat_num)
        self.wgan = AdversarialLoss("wgangp")

    def optimizer_nets(self) -> dict[str, list[str]]:
        return {"G": ["G"], "D": ["D"]}

    def generator(self, direction: str = "AtoB") -> nn.Module:
        return self.nets["G"]

    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(logits, labels, self.labels.multi_label)

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, Tensor]:
        if not self.labels.parts:
            losses, visuals = self._dataset_step(batch["image"], batch["label"], ctx)
            if visuals:  # the grids show G's steps only, so every grid has the same columns
                self._visuals = visuals
            return losses
        losses, shown = {}, []
        for k in range(len(self.labels.parts)):
            fmt = self.cfg.data.joint[k]
            part_losses, visuals = self._dataset_step(batch[f"image_{k}"], batch[f"label_{k}"], ctx, k)
            losses.update({f"{name}_{fmt}": v for name, v in part_losses.items()})
            shown.append(visuals)
        if all(shown):  # every dataset's images, one above the other
            self._visuals = {key: torch.cat([v[key] for v in shown]) for key in shown[0]}
        return losses

    def _dataset_step(self, x_real: Tensor, label_org: Tensor, ctx: StepContext,
                      part: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One dataset's D step (and G step every n_critic-th step). `part` is the dataset's index
        in a joint model (None: the only dataset): its labels are widened for G, and only its
        slice of D's classification outputs is classified, with its own loss."""
        s = self.cfg.stargan
        G, D = self.nets["G"], self.nets["D"]
        # Target labels: the batch's own labels in a random order (official rand_idx), so targets
        # follow the data's label distribution; drawn on the CPU so every device draws the same.
        label_trg = label_org[torch.randperm(label_org.size(0)).to(label_org.device)]
        if part is None:
            c_org, c_trg, cls_slice, multi_label = label_org, label_trg, slice(None), self.labels.multi_label
        else:
            c_org, c_trg = self.labels.widen(label_org, part), self.labels.widen(label_trg, part)
            cls_slice, multi_label = self.labels.part_slice(part), self.labels.parts[part].multi_label

        g_step = (ctx.step + 1) % s.n_critic == 0
        set_requires_grad([D], True)
        with ctx.autocast():
            out_src, out_cls = D(x_real)
            # D's step needs no gradient through G. On G's steps the same translation is G's input
            # below (G has not changed in between; the official code computes it twice), so it is
            # made once, with its graph kept for G's update: 6.6% of an iteration's arithmetic.
            with torch.set_grad_enabled(g_step):
                x_fake = G(x_real, c_trg)
            fake_src, _ = D(x_fake.detach())
            losses = {
                "D/loss_real": self.wgan(out_src, True),
                "D/loss_fake": self.wgan(fake_src, False),
                "D/loss_cls": classification_loss(out_cls[:, cls_slice], label_org, multi_label),
                "D/loss_gp": gradient_penalty(D, x_real, x_fake),
            }
        ctx.optimize("D", losses["D/loss_real"] + losses["D/loss_fake"] + s.lambda_cls * losses["D/loss_cls"]
                     + s.lambda_gp * losses["D/loss_gp"])

        visuals = {}
        if g_step:
            set_requires_grad([D], False)
            with ctx.autocast():
                fake_src, fake_cls = D(x_fake)
                x_rec = G(x_fake, c_org)
                losses["G/loss_fake"] = self.wgan(fake_src, True, for_generator=True)
                losses["G/loss_rec"] = reconstruction_loss(x_rec, x_real)
                losses["G/loss_cls"] = classification_loss(fake_cls[:, cls_slice], label_trg, multi_label)
            ctx.optimize("G", losses["G/loss_fake"] + s.lambda_rec * losses["G/loss_rec"]
                         + s.lambda_cls * losses["G/loss_cls"])
            set_requires_grad([D], True)
            visuals = {"real": x_real.detach(), "fake": x_fake.detach(), "rec": x_rec.detach()}
        return {k: v.detach() for k, v in losses.items()}, visuals
