"""GDFQ's conditional generator: a label embedding multiplies the latent."""

from __future__ import annotations

import torch
from torch import nn

from ..models.generator import Generator


class ConditionalGenerator(nn.Module):
    """x = G(embed(y) * z), with G the library's image generator (output in [0, 1])."""

    def __init__(self, num_classes: int, nz: int = 128, ngf: int = 32, img_size: int = 32,
                 channels: int = 3) -> None:
        super().__init__()
        self.num_classes, self.nz = num_classes, nz
        self.embed = nn.Embedding(num_classes, nz)
        self.body = Generator(nz, ngf, img_size, channels)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(y) * z)

    def sample(self, n: int, device: torch.device | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of `n` random (sorted) labels and the labels."""
        y = torch.randint(0, self.num_classes, (n,), device=device).sort().values
        return self(torch.randn(n, self.nz, device=device), y), y
