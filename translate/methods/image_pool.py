"""The history of generated images that CycleGAN shows its discriminators (Shrivastava et al.)."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Holds up to `size` past fakes. Each queried image is, with probability 1/2 once the pool
    is full, swapped for a random stored one, so D also sees older generator outputs and training
    oscillates less. Its random draws come from its own generator, saved with the checkpoint, so
    a resumed run draws exactly what an uninterrupted one would."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """The images D sees, always detached: D's loss must not reach back into G."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.rng).item() > 0.5:
                slot = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        stored = torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)
        return {"images": stored, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        stored = state["images"]
        self.images = [img.unsqueeze(0).to(device) for img in stored] if stored.numel() else []
        self.rng.set_state(state["rng"])
