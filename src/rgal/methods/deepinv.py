"""DeepInversion / ADI (Yin et al., CVPR 2020), as the DataFree (CMI) code runs it for KD:
the normalised pixels themselves are optimised from noise and clipped to valid images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option
from ..models.features import Features
from .base import InversionMethod, MethodContext, Terms
from .registry import register_method


@dataclass
class DeepInvSettings:
    """DeepInversion's image prior and competition temperature."""

    section: ClassVar[str] = "deepinv"
    w_tv: float = option(1e-3, "weight of the total-variation image prior (loss_tv)", lo=0)
    js_temperature: float = option(3.0, "temperature of the Jensen-Shannon competition term",
                                   lo=0, lo_open=True)


class FreePixels(nn.Module):
    """A batch of free images in the model's normalised input space, drawn from N(0, 1);
    the input is ignored. `clip_()` keeps every pixel inside the valid [0, 1] image range."""

    def __init__(self, batch_size: int, channels: int, img_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.channels, self.img_size = channels, img_size
        self.nz = 1
        self.u = nn.Parameter(torch.empty(batch_size, channels, img_size, img_size))
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        self.register_buffer("lo", -m / s, persistent=False)
        self.register_buffer("hi", (1 - m) / s, persistent=False)
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)
        self.reinit()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.u

    @torch.no_grad()
    def reinit(self) -> None:
        """Fresh noise."""
        self.u.normal_()

    @torch.no_grad()
    def clip_(self) -> None:
        """Clamp each channel to the normalised image of [0, 1]."""
        self.u.copy_(torch.maximum(torch.minimum(self.u, self.hi), self.lo))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels -> images in [0, 1]."""
        return (x * self.std + self.mean).clamp(0, 1)


def jitter_and_flip(x: torch.Tensor, limit: int) -> torch.Tensor:
    """One random circular shift in [-limit, limit]^2 and one random horizontal flip (p 1/2),
    the same for the whole batch (DeepInversion's augmentation)."""
    if limit > 0:
        dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,)))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if bool(torch.rand(()) < 0.5):
        x = x.flip(3)
    return x


def jensen_shannon(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """JS divergence of the softened predictions, probabilities clamped to [0.01, 0.99]
    (as the DataFree code computes it), averaged over the batch."""
    p = F.softmax(student_logits.float() / temperature, dim=1)
    q = F.softmax(teacher_logits.float() / temperature, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    return (0.5 * F.kl_div(p.log(), m, reduction="batchmean")
            + 0.5 * F.kl_div(q.log(), m, reduction="batchmean"))


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels in four directions (horizontal,
    vertical and both diagonals), summed: DeepInversion's L1 total variation."""
    return ((x[:, :, :, :-1] - x[:, :, :, 1:]).abs().mean()
            + (x[:, :, :-1, :] - x[:, :, 1:, :]).abs().mean()
            + (x[:, :, 1:, :-1] - x[:, :, :-1, 1:]).abs().mean()
            + (x[:, :, :-1, :-1] - x[:, :, 1:, 1:]).abs().mean())


@register_method("deepinv")
class DeepInversion(InversionMethod):
    """BN statistics + L1 TV prior + one-hot + Jensen-Shannon competition, on free pixels.

    The pixels live in the normalised input space, are re-drawn every phase, clipped to valid
    images after every Adam (betas 0.5, 0.99) step and seen through one random shift and flip
    per batch; the pool gets the last iterate, as the released code keeps it.
    """

    sections = (DeepInvSettings,)
    defaults = {"w_bn": 10.0, "w_adv": 1.0, "lr_g": 0.1, "reset_generator": True,
                "mix": "none"}
    search = ({}, {"lr_g": 0.05}, {"lr_g": 0.25}, {"w_adv": 0.0}, {"w_bn": 3.0}, {"w_tv": 1e-2})
    summary = "Yin et al., CVPR 2020"
    images = "pool; the pixels themselves"
    generator_doc = "BN + TV prior + one-hot + Jensen-Shannon competition"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.jitter = max(1, ctx.info.image_size // 8)
        self.engine.view = lambda x: jitter_and_flip(x, self.jitter)

    def make_generator(self, ctx: MethodContext) -> nn.Module:
        return FreePixels(ctx.synthesis_batch_size, ctx.info.channels, ctx.info.image_size,
                          ctx.info.mean, ctx.info.std)

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return []  # the pixels are this rank's own images

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam(generator.parameters(), lr=self.lr_g, betas=(0.5, 0.99),
                                **self.opt_options)

    def phase_options(self, generator: nn.Module) -> dict[str, Any]:
        return {"after_step": generator.clip_, "keep_best": False}

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        return self.generator.to_unit(images)

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        terms = {"loss_oh": F.cross_entropy(t.logits, self.one_hot_target(y))}
        if self.bn_stats:
            terms["loss_bn"] = self.bn_stats.loss()
        if self.cfg.w_adv > 0 and self.adversarial:
            terms["loss_adv"] = -jensen_shannon(s.logits, t.logits,
                                                self.cfg.deepinv.js_temperature)
        if self.cfg.deepinv.w_tv > 0:
            terms["loss_tv"] = tv_l1(x)
        return terms

    def synthesis_weights(self) -> dict[str, float]:
        return {**super().synthesis_weights(), "loss_tv": self.cfg.deepinv.w_tv}

    def generators(self) -> list[nn.Module]:
        return []  # free pixels: nothing to compile or re-lay out
