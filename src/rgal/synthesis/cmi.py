"""CMI: contrastive model inversion (instance discrimination over a bank of past images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import random_resized_crop
from ..models.features import Features
from .inversion import InversionSynthesizer


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


class CMISynthesizer(InversionSynthesizer):
    """Inversion plus w_cr * InfoNCE: each image's global view must pick out its own local view
    (a random resized crop) among the local views of the batch and the bank's past images."""

    def __init__(self, *args, feature_dim: int, w_cr: float = 0.8,
                 cr_temperature: float = 0.1, bank_size: int = 4096, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weights["loss_cr"] = w_cr
        self.temperature = cr_temperature
        device = next(self.generator.parameters()).device
        self.head = ContrastiveHead(feature_dim).to(device)
        self.bank = FeatureBank(bank_size, feature_dim).to(device)

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        opt = super().optimizer(generator, z)
        opt.add_param_group({"params": self.head.parameters(), "lr": self.lr_g})
        return opt

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return [*generator.parameters(), *self.head.parameters()]

    def extra_terms(self, x: torch.Tensor, v: torch.Tensor, t: Features,
                    s: Features) -> dict[str, torch.Tensor]:
        if self.weights["loss_cr"] <= 0:
            return {}
        local = self.teacher(self.augment(random_resized_crop(x), augment=False)).feature
        anchors = self.head(t.feature)
        candidates = self.head(torch.cat([local, self.bank.get()]))
        logits = anchors @ candidates.t() / self.temperature
        target = torch.arange(anchors.shape[0], device=anchors.device)
        return {"loss_cr": F.cross_entropy(logits, target)}

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, best: torch.Tensor,
                  teacher_labels: torch.Tensor) -> None:
        self.bank.add(self.teacher(self.augment(best, augment=False)).feature)


class CMIRGALSynthesizer(CMISynthesizer):
    """CMI's synthesis with RGAL's relation loss added (w_tri > 0)."""
