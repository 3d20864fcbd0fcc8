"""Fast-Datafree (Fang et al., AAAI 2022): a meta-learned generator, a few inner steps per phase."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import option
from ..engine.inversion import PhaseResult
from ..models.generator import Generator
from .base import InversionMethod, MethodContext
from .registry import register_method


@dataclass
class FastSettings:
    """Fast-Datafree's latent learning rate, BN-statistics momentum and meta update."""

    section: ClassVar[str] = "fast"
    lr_z: float = option(0.01, "latent learning rate (0: lr_g)", lo=0)
    meta_update: str = option("fomaml", "the meta generator's update: fomaml (the sum of the "
                                        "inner steps' gradients, as the released scripts run "
                                        "it) or reptile (towards the adapted copy)",
                              choices=("fomaml", "reptile"))


@register_method("fast")
class Fast(InversionMethod):
    """Each phase copies the meta generator and runs `g_steps` inner steps on the copy; the
    meta generator then takes one step of its own Adam (lr = lr_g * g_steps) with the sum of
    the inner steps' gradients (first-order MAML) or towards the adapted copy (Reptile).

    BN statistics: each batch's are blended with a moving average (momentum 0.9) of earlier
    epochs' last-inner-step statistics, folded in once per epoch and never reset.
    """

    sections = (FastSettings,)
    defaults = {"g_steps": 5, "lr_g": 3e-3, "w_bn": 10.0, "w_adv": 1.1, "w_oh": 0.4,
                "bn_momentum": 0.9, "mix": "none"}
    search = ({}, {"lr_g": 1e-3}, {"lr_g": 1e-2}, {"w_adv": 0.5}, {"lr_z": 0.05}, {"w_bn": 3.0})
    summary = "Fang et al., AAAI 2022"
    images = "pool; a meta generator, few inner steps, meta update"
    generator_doc = "BN (moving-average statistics) + one-hot + adversarial"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.fast = copy.deepcopy(self.generator)
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(),
                                               lr=self.lr_g * self.g_steps, betas=(0.5, 0.999),
                                               **self.opt_options)

    def make_generator(self, ctx: MethodContext) -> nn.Module:
        cfg = ctx.cfg  # the meta generator keeps PyTorch's initialisation (it is never reset)
        return Generator(cfg.nz, cfg.ngf, ctx.info.image_size, ctx.info.channels,
                         init="pytorch")

    @property
    def lr_z(self) -> float:
        return self.cfg.fast.lr_z or self.lr_g

    def phase_generator(self) -> nn.Module:
        self.fast.load_state_dict(self.generator.state_dict())
        for meta in self.generator.parameters():
            meta.grad = torch.zeros_like(meta)
        return self.fast

    def phase_options(self, generator: nn.Module) -> dict[str, Any]:
        if self.cfg.fast.meta_update != "fomaml":
            return {}

        def add_inner_gradients() -> None:  # first-order MAML: sum of every inner gradient
            for meta, fast in zip(self.generator.parameters(), generator.parameters(),
                                  strict=True):
                if fast.grad is not None:
                    meta.grad.add_(fast.grad)

        return {"on_grads": add_inner_gradients}

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, result: PhaseResult) -> None:
        if self.cfg.fast.meta_update == "reptile":
            for meta, fast in zip(self.generator.parameters(), generator.parameters(),
                                  strict=True):
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
