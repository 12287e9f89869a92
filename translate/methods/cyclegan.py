"""CycleGAN (Zhu et al., 2017): two generators, two discriminators, cycle and identity losses."""

from __future__ import annotations

from torch import Tensor, nn

from translate.config import RunConfig
from translate.losses import AdversarialLoss, cycle_loss, identity_loss
from translate.methods.base import Method, StepContext, set_requires_grad
from translate.methods.image_pool import ImagePool
from translate.nets import build_discriminator, build_generator


class CycleGAN(Method):
    paired = False

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m, c = cfg.model, cfg.cyclegan
        # G_A: A -> B, judged by D_A (which sees domain B); G_B: B -> A, judged by D_B.
        self.nets["G_A"] = build_generator(m, m.input_nc, m.output_nc)
        self.nets["G_B"] = build_generator(m, m.output_nc, m.input_nc)
        self.nets["D_A"] = build_discriminator(m, m.output_nc)
        self.nets["D_B"] = build_discriminator(m, m.input_nc)
        self.adversarial = AdversarialLoss(c.gan_mode)
        self.fake_A_pool = ImagePool(c.pool_size, seed=cfg.train.seed + 1)
        self.fake_B_pool = ImagePool(c.pool_size, seed=cfg.train.seed + 2)

    def optimizer_nets(self) -> dict[str, list[str]]:
        return {"G": ["G_A", "G_B"], "D": ["D_A", "D_B"]}

    def generator(self, direction: str = "AtoB") -> nn.Module:
        return self.nets["G_A" if direction == "AtoB" else "G_B"]

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, Tensor]:
        c = self.cfg.cyclegan
        G_A, G_B, D_A, D_B = (self.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
        real_A, real_B = batch["A"], batch["B"]

        set_requires_grad([D_A, D_B], False)
        with ctx.autocast():
            fake_B = G_A(real_A)
            rec_A = G_B(fake_B)
            fake_A = G_B(real_B)
            rec_B = G_A(fake_A)
            losses = {
                "G_A": self.adversarial(D_A(fake_B), True, for_generator=True),
                "G_B": self.adversarial(D_B(fake_A), True, for_generator=True),
                "cycle_A": cycle_loss(rec_A, real_A) * c.lambda_A,
                "cycle_B": cycle_loss(rec_B, real_B) * c.lambda_B,
            }
            visuals = {"real_A": real_A, "fake_B": fake_B, "rec_A": rec_A,
                       "real_B": real_B, "fake_A": fake_A, "rec_B": rec_B}
            if c.lambda_identity > 0:
                idt_A = G_A(real_B)  # G_A should leave an image that is already in B unchanged
                idt_B = G_B(real_A)
                losses["idt_A"] = identity_loss(idt_A, real_B) * c.lambda_B * c.lambda_identity
                losses["idt_B"] = identity_loss(idt_B, real_A) * c.lambda_A * c.lambda_identity
                visuals.update(idt_A=idt_A, idt_B=idt_B)
        ctx.optimize("G", sum(losses.values()))

        set_requires_grad([D_A, D_B], True)
        with ctx.autocast():
            # D_A judges domain B: real B against G_A's fakes, drawn through the image pool.
            fake_B_seen, fake_A_seen = self.fake_B_pool.query(fake_B), self.fake_A_pool.query(fake_A)
            losses["D_A"] = self.adversarial.discriminator_loss(D_A(real_B), D_A(fake_B_seen))
            losses["D_B"] = self.adversarial.discriminator_loss(D_B(real_A), D_B(fake_A_seen))
        ctx.optimize("D", losses["D_A"] + losses["D_B"])

        self._visuals = {k: v.detach() for k, v in visuals.items()}
        return {k: v.detach() for k, v in losses.items()}

    def extra_state(self) -> dict:
        return {"fake_A_pool": self.fake_A_pool.state_dict(), "fake_B_pool": self.fake_B_pool.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        device = next(self.parameters()).device
        self.fake_A_pool.load_state_dict(state["fake_A_pool"], device)
        self.fake_B_pool.load_state_dict(state["fake_B_pool"], device)
