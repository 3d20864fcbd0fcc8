"""DeepInversion / ADI (Yin et al., CVPR 2020): the pixels themselves are optimised from noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import option
from ..losses.priors import total_variation
from ..models.features import Features
from .base import InversionMethod, MethodContext, Terms
from .registry import register_method


@dataclass
class DeepInvSettings:
    """DeepInversion's image prior."""

    section: ClassVar[str] = "deepinv"
    w_tv: float = option(1e-3, "weight of the total-variation image prior (loss_tv)", lo=0)


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


@register_method("deepinv")
class DeepInversion(InversionMethod):
    """BN statistics + TV prior + one-hot + adversarial competition, on free pixels.

    The latents are unused; the pixels are re-drawn every phase.
    """

    sections = (DeepInvSettings,)
    defaults = {"w_bn": 10.0, "w_adv": 1.0, "lr_g": 0.05, "reset_generator": True}
    summary = "Yin et al., CVPR 2020"
    images = "pool; the pixels themselves"
    generator_doc = "BN + TV prior + one-hot + adversarial"

    def make_generator(self, ctx: MethodContext) -> nn.Module:
        return PixelImages(ctx.synthesis_batch_size, ctx.info.channels, ctx.info.image_size)

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return []  # the pixels are this rank's own images

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam(generator.parameters(), lr=self.lr_g, betas=(0.5, 0.999),
                                **self.opt_options)

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        terms = super().synthesis_terms(x, v, y, t, s)
        if self.cfg.deepinv.w_tv > 0:
            terms["loss_tv"] = total_variation(x)
        return terms

    def synthesis_weights(self) -> dict[str, float]:
        return {**super().synthesis_weights(), "loss_tv": self.cfg.deepinv.w_tv}

    def generators(self) -> list[nn.Module]:
        return []  # free pixels: nothing to compile or re-lay out
