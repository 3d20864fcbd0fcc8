"""DeepInversion / ADI: the pixels themselves are optimised from noise."""

from __future__ import annotations

import torch
from torch import nn

from .inversion import InversionSynthesizer


class PixelImages(nn.Module):
    """A batch of free images: x = sigmoid(u), u initialised from N(0, 1); the input is ignored."""

    def __init__(self, batch_size: int, channels: int, img_size: int) -> None:
        super().__init__()
        self.channels, self.img_size = channels, img_size
        self.nz = 1
        self.u = nn.Parameter(torch.empty(batch_size, channels, img_size, img_size))
        self.reinit()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.u)

    @torch.no_grad()
    def reinit(self) -> None:
        """Fresh noise."""
        self.u.normal_()


class DeepInversionSynthesizer(InversionSynthesizer):
    """BN statistics + TV prior + one-hot + adversarial competition, on free pixels.

    The latents are unused (their learning rate is 0); the pixels are re-drawn every phase.
    """

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return []  # the pixels are this rank's own images

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam(generator.parameters(), lr=self.lr_g, betas=(0.5, 0.999),
                                **self.opt_options)
