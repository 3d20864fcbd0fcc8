"""CMI: contrastive model inversion (Fang et al., IJCAI 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option
from ..data.augment import random_resized_crop
from ..engine.inversion import PhaseResult
from ..models.features import Features
from .base import InversionMethod, MethodContext, Terms
from .registry import register_method


@dataclass
class CMISettings:
    """CMI's contrastive instance discrimination."""

    section: ClassVar[str] = "cmi"
    w_cr: float = option(0.8, "weight of the contrastive loss (loss_cr)", lo=0)
    cr_temperature: float = option(0.1, "temperature of the contrastive loss", lo=0,
                                   lo_open=True)
    bank_size: int = option(4096, "feature bank of past synthetic images", lo=1, hi=10_000_000)


class ContrastiveHead(nn.Module):
    """Two-layer MLP projecting teacher features to an L2-normalised embedding."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(f), dim=1)


class FeatureBank(nn.Module):
    """A ring buffer of teacher features of past synthetic images (kept in checkpoints)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def get(self) -> torch.Tensor:
        """The stored features (at most `size`)."""
        return self.features[: int(min(int(self.count), self.features.shape[0]))]

    @torch.no_grad()
    def add(self, f: torch.Tensor) -> None:
        """Append features, overwriting the oldest once full."""
        size = self.features.shape[0]
        f = f.detach()[-size:]
        idx = (self.count + torch.arange(f.shape[0], device=f.device)) % size
        self.features[idx] = f.to(self.features.dtype)
        self.count += f.shape[0]


@register_method("cmi")
class CMI(InversionMethod):
    """Inversion plus w_cr * InfoNCE: each image's global view must pick out its own local view
    (a random resized crop) among the local views of the batch and the bank's past images."""

    sections = (CMISettings,)
    defaults = {"reset_generator": True}
    summary = "Fang et al., IJCAI 2021"
    images = "pool; generator re-initialised each phase"
    generator_doc = ("BN + one-hot + adversarial + contrastive (InfoNCE over a bank of past "
                     "images)")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = ctx.cfg.cmi
        self.head = ContrastiveHead(ctx.feature_dim).to(ctx.device)
        self.bank = FeatureBank(s.bank_size, ctx.feature_dim).to(ctx.device)

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        opt = super().optimizer(generator, z)
        opt.add_param_group({"params": self.head.parameters(), "lr": self.lr_g})
        return opt

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return [*generator.parameters(), *self.head.parameters()]

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        terms = super().synthesis_terms(x, v, y, t, s)
        st = self.cfg.cmi
        if st.w_cr > 0:
            local = self.teacher(self.augment(random_resized_crop(x), augment=False)).feature
            anchors = self.head(t.feature)
            candidates = self.head(torch.cat([local, self.bank.get()]))
            logits = anchors @ candidates.t() / st.cr_temperature
            target = torch.arange(anchors.shape[0], device=anchors.device)
            terms["loss_cr"] = F.cross_entropy(logits, target)
        return terms

    def synthesis_weights(self) -> dict[str, float]:
        return {**super().synthesis_weights(), "loss_cr": self.cfg.cmi.w_cr}

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, result: PhaseResult) -> None:
        self.bank.add(self.teacher(self.augment(result.images, augment=False)).feature)
