"""CMI: contrastive model inversion (Fang et al., IJCAI 2021), as its released code runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option
from ..data.augment import random_hflip, random_resized_crop
from ..engine.inversion import InversionStep, PhaseResult
from ..models.features import Features, find_batchnorms
from .base import InversionMethod, MethodContext, Terms
from .registry import register_method


@dataclass
class CMISettings:
    """CMI's contrastive instance discrimination."""

    section: ClassVar[str] = "cmi"
    w_cr: float = option(0.8, "weight of the contrastive loss (loss_cr)", lo=0)
    cr_temperature: float = option(0.1, "temperature of the contrastive loss", lo=0,
                                   lo_open=True)
    bank_size: int = option(40960, "memory bank of past kept images' features", lo=1,
                            hi=10_000_000)
    negatives: int = option(4096, "bank entries drawn as extra negatives each step", lo=0,
                            hi=10_000_000)
    head_dim: int = option(256, "output width of the projection head", lo=1, hi=65_536)


class InstanceMeans:
    """Per sample, the spatial mean of every BatchNorm input of a model, concatenated: CMI's
    contrastive feature. Recorded on every forward pass while `enabled`."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = find_batchnorms(model)
        self.enabled = False
        self._means: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, i: int):
        def hook(_m, inp, _out):
            if self.enabled:
                x = inp[0]
                self._means[i] = x.float().mean(dim=tuple(range(2, x.dim())))
        return hook

    def feature(self) -> torch.Tensor:
        """The concatenated means of the last forward pass, (N, sum of BN widths)."""
        return torch.cat([m for m in self._means if m is not None], dim=1)

    def width(self) -> int:
        """Length of the feature: the sum of the BatchNorm layers' channel counts."""
        return sum(m.num_features for m in self.layers)


class ProjectionHead(nn.Module):
    """Linear(D, D) -> ReLU -> Linear(D, out) -> L2 normalisation (CMI's MLP head)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                 nn.Linear(dim, out_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(f), dim=1)


class FeatureBank(nn.Module):
    """A ring buffer of [local, global] features of past kept batches (kept in checkpoints)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(min(int(self.count), self.features.shape[0]))

    def sample(self, k: int) -> torch.Tensor:
        """Up to `k` distinct stored rows at random."""
        n = len(self)
        idx = torch.randperm(n)[:min(k, n)].to(self.features.device)
        return self.features[idx]

    @torch.no_grad()
    def add(self, f: torch.Tensor) -> None:
        """Append rows, overwriting the oldest once full."""
        size = self.features.shape[0]
        f = f.detach()[-size:]
        idx = (self.count + torch.arange(f.shape[0], device=f.device)) % size
        self.features[idx] = f.to(self.features.dtype)
        self.count += f.shape[0]


@register_method("cmi")
class CMI(InversionMethod):
    """Inversion plus w_cr * InfoNCE over the teacher's per-sample BN-input means.

    Each step has a global view (crop + flip, the one the inversion loss sees) and a local view
    (a random resized crop, 25-100% of the area, + flip) of every image. Projected by a head
    with its own persistent Adam, each local view must pick out its own (detached) global view
    among the batch's and a random draw of bank entries' global views; the drawn bank entries'
    local views are extra rows, averaged separately. The kept batch's [local, global] features
    join the bank.
    """

    sections = (CMISettings,)
    fold_teacher = False  # its contrastive feature reads every BatchNorm's input
    defaults = {"reset_generator": True, "w_adv": 0.5, "lr_g": 1e-3, "mix": "none"}
    search = ({}, {"reset_generator": False}, {"lr_g": 3e-3},
              {"reset_generator": False, "lr_g": 3e-3}, {"w_cr": 0.4}, {"w_adv": 1.0})
    summary = "Fang et al., IJCAI 2021"
    images = "pool; generator re-initialised each phase"
    generator_doc = ("BN + one-hot + adversarial + contrastive (InfoNCE over a bank of past "
                     "images)")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = ctx.cfg.cmi
        self.means = InstanceMeans(self.teacher.model)
        dim = self.means.width()
        self.head = ProjectionHead(dim, s.head_dim).to(ctx.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr_g,
                                               **self.opt_options)
        self.bank = FeatureBank(s.bank_size, 2 * dim).to(ctx.device)
        self._features: torch.Tensor | None = None
        self._best: torch.Tensor | None = None

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return [*generator.parameters(), *self.head.parameters()]

    def phase_options(self, generator: nn.Module) -> dict[str, Any]:
        self.means.enabled = True  # both teacher passes of a step record their means
        self._best = None

        def step_head() -> None:
            self.head_optimizer.step()
            self.head_optimizer.zero_grad(set_to_none=True)

        def keep(out: InversionStep, better: torch.Tensor) -> None:
            if self._features is not None:
                self._best = (self._features if self._best is None
                              else torch.where(better, self._features, self._best))

        return {"on_grads": step_head, "on_step": keep}

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        terms = super().synthesis_terms(x, v, y, t, s)
        st = self.cfg.cmi
        if st.w_cr <= 0:
            return terms
        global_f = self.means.feature()  # from the inversion loss's teacher pass
        local = random_hflip(random_resized_crop(x))
        self.teacher(self.augment(local, augment=False))
        local_f = self.means.feature()
        self._features = torch.cat([local_f, global_f], dim=1).detach()
        cached = self.bank.sample(st.negatives)
        cached_local, cached_global = cached.chunk(2, dim=1)
        n, m = local_f.shape[0], cached.shape[0]
        proj = self.head(torch.cat([local_f, cached_local, global_f, cached_global]))
        p_local, p_global = proj[:n + m], proj[n + m:]
        logits = p_local @ p_global.detach().t() / st.cr_temperature
        per_row = F.cross_entropy(logits, torch.arange(n + m, device=logits.device),
                                  reduction="none")
        terms["loss_cr"] = (per_row[:n].mean() + per_row[n:].mean()) if m else per_row.mean()
        return terms

    def synthesis_weights(self) -> dict[str, float]:
        return {**super().synthesis_weights(), "loss_cr": self.cfg.cmi.w_cr}

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, result: PhaseResult) -> None:
        self.means.enabled = False
        if self._best is not None:
            self.bank.add(self._best)
        self._features = self._best = None

    def run_state(self) -> dict[str, Any]:
        return {**super().run_state(), "head_optimizer": self.head_optimizer.state_dict()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.head_optimizer.load_state_dict(state.pop("head_optimizer"))
        super().load_run_state(state)
