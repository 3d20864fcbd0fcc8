"""Fast-Datafree (Fang et al., AAAI 2022): a meta-learned generator, a few inner steps per phase."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import option
from ..engine.inversion import PhaseResult
from .base import InversionMethod, MethodContext
from .registry import register_method


@dataclass
class FastSettings:
    """Fast-Datafree's latent learning rate and BN-statistics momentum."""

    section: ClassVar[str] = "fast"
    lr_z: float = option(0.015, "latent learning rate (0: lr_g)", lo=0)
    bn_momentum: float = option(0.9, "momentum of the BN statistics across inner steps", lo=0,
                                hi=0.999)


@register_method("fast")
class Fast(InversionMethod):
    """Each phase copies the meta generator, runs `g_steps` inner steps on the copy (with BN
    statistics averaged by momentum across the steps), then moves the meta generator towards
    the adapted copy (a Reptile step through its own Adam, lr = lr_g * g_steps)."""

    sections = (FastSettings,)
    defaults = {"g_steps": 5, "lr_g": 5e-3, "w_bn": 10.0, "w_adv": 1.1}
    summary = "Fang et al., AAAI 2022"
    images = "pool; a meta generator, few inner steps, Reptile update"
    generator_doc = "BN (statistics with momentum) + one-hot + adversarial"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.fast = copy.deepcopy(self.generator)
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(),
                                               lr=self.lr_g * self.g_steps, betas=(0.5, 0.999),
                                               **self.opt_options)

    @property
    def bn_momentum(self) -> float:
        return self.cfg.fast.bn_momentum

    @property
    def lr_z(self) -> float:
        return self.cfg.fast.lr_z or self.lr_g

    def phase_generator(self) -> nn.Module:
        self.fast.load_state_dict(self.generator.state_dict())
        return self.fast

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, result: PhaseResult) -> None:
        for meta, fast in zip(self.generator.parameters(), generator.parameters(), strict=True):
            meta.grad = meta - fast
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        for meta, fast in zip(self.generator.buffers(), generator.buffers(), strict=True):
            meta.copy_(fast)  # BN running statistics follow the adapted copy

    def run_state(self) -> dict[str, Any]:
        state = {k: v for k, v in super().run_state().items() if not k.startswith("fast.")}
        return {**state, "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.meta_optimizer.load_state_dict(state.pop("meta_optimizer"))
        super().load_run_state(state)

    def generators(self) -> list[nn.Module]:
        return [self.generator, self.fast]
