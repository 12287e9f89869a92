"""Losses of the three papers: adversarial objectives, gradient penalty, reconstruction (L1), cycle, identity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class AdversarialLoss:
    """The GAN objective on a discriminator's raw output (a PatchGAN map or a scalar per image).

    `loss(pred, target_is_real)` is what both players minimise: D with real=True on real data and
    real=False on fakes; G with real=True on its fakes (the non-saturating form for vanilla).
    lsgan: least squares to 1/0 (CycleGAN). vanilla: BCE with logits (pix2pix).
    wgangp: -mean(D) for real, +mean(D) for fake (StarGAN; pair with `gradient_penalty`).
    hinge: relu(1 - D) / relu(1 + D) for D; -mean(D) for G (`for_generator=True`).
    """

    def __init__(self, mode: str):
        if mode not in ("lsgan", "vanilla", "wgangp", "hinge"):
            raise ValueError(f"unknown gan mode {mode}")
        self.mode = mode

    def __call__(self, pred: Tensor, target_is_real: bool, for_generator: bool = False) -> Tensor:
        pred = pred.float()  # the loss in fp32 under autocast
        if self.mode == "lsgan":
            return F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))
        if self.mode == "vanilla":
            target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.mode == "wgangp" or for_generator:
            return -pred.mean() if target_is_real else pred.mean()
        # hinge, discriminator side
        return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()

    def discriminator_loss(self, pred_real: Tensor, pred_fake: Tensor) -> Tensor:
        """D's loss on its outputs for real and for (detached) fake inputs, halved as in the
        CycleGAN and pix2pix papers so that D learns more slowly than G."""
        return 0.5 * (self(pred_real, True) + self(pred_fake, False))


def gradient_penalty(critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP: (||grad_x D(x)||_2 - 1)^2 at random interpolates of real and fake (Gulrajani et al.)."""
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device, generator=generator)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    out = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(out.float().sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def reconstruction_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute (L1) difference, in fp32: pix2pix's term pulling G(x) towards the true y."""
    return F.l1_loss(output.float(), target.float())


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """L1 between an image and its round trip through both generators."""
    return reconstruction_loss(reconstructed, original)


def identity_loss(same: Tensor, original: Tensor) -> Tensor:
    """L1 between G(y) and y for y already in G's output domain (CycleGAN's colour preservation)."""
    return reconstruction_loss(same, original)
