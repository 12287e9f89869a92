"""pix2pix (Isola et al., 2017): a conditional GAN on pairs, G(A) pulled towards the true B by L1.

The discriminator is conditional: it sees the input and an output side by side (concatenated
channels), so it judges whether the output fits this input, not only whether it looks real.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from translate.config import RunConfig
from translate.losses import AdversarialLoss, reconstruction_loss
from translate.methods.base import Method, StepContext, set_requires_grad
from translate.nets import build_discriminator, build_generator


class Pix2Pix(Method):
    paired = True

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m = cfg.model
        self.nets["G"] = build_generator(m, m.input_nc, m.output_nc)
        self.nets["D"] = build_discriminator(m, m.input_nc + m.output_nc)
        self.adversarial = AdversarialLoss(cfg.pix2pix.gan_mode)

    def optimizer_nets(self) -> dict[str, list[str]]:
        return {"G": ["G"], "D": ["D"]}

    def generator(self, direction: str = "AtoB") -> nn.Module:
        # One generator: which side is its input was settled by data.direction in training.
        return self.nets["G"]

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        real_A, real_B = batch["A"], batch["B"]

        # The official order: G's forward, D's step, then G's step against the updated D.
        with ctx.autocast():
            fake_B = G(real_A)

        set_requires_grad([D], True)
        with ctx.autocast():
            pred_fake = D(torch.cat([real_A, fake_B.detach()], 1))
            pred_real = D(torch.cat([real_A, real_B], 1))
            losses = {"D": self.adversarial.discriminator_loss(pred_real, pred_fake)}
        ctx.optimize("D", losses["D"])

        set_requires_grad([D], False)
        with ctx.autocast():
            losses["G_GAN"] = self.adversarial(D(torch.cat([real_A, fake_B], 1)), True, for_generator=True)
            losses["G_L1"] = reconstruction_loss(fake_B, real_B) * self.cfg.pix2pix.lambda_L1
        ctx.optimize("G", losses["G_GAN"] + losses["G_L1"])

        self._visuals = {"real_A": real_A.detach(), "fake_B": fake_B.detach(), "real_B": real_B.detach()}
        return {k: v.detach() for k, v in losses.items()}
