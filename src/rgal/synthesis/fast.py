"""Fast-Datafree: a meta-learned generator initialisation, a few inner steps per phase."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .inversion import InversionSynthesizer


class FastSynthesizer(InversionSynthesizer):
    """Each phase copies the meta generator, runs `g_steps` inner steps on the copy (with BN
    statistics averaged by momentum across the steps), then moves the meta generator towards
    the adapted copy (a Reptile step through its own Adam, lr = lr_g * g_steps)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["reset_generator"] = False
        super().__init__(*args, **kwargs)
        self.fast = copy.deepcopy(self.generator)
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(),
                                               lr=self.lr_g * self.g_steps, betas=(0.5, 0.999),
                                               **self.opt_options)

    def phase_generator(self) -> nn.Module:
        self.fast.load_state_dict(self.generator.state_dict())
        return self.fast

    @torch.no_grad()
    def end_phase(self, generator: nn.Module, best: torch.Tensor,
                  teacher_labels: torch.Tensor) -> None:
        for meta, fast in zip(self.generator.parameters(), generator.parameters(), strict=True):
            meta.grad = meta - fast
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        for meta, fast in zip(self.generator.buffers(), generator.buffers(), strict=True):
            meta.copy_(fast)  # BN running statistics follow the adapted copy

    def run_state(self) -> dict:
        state = super().run_state()
        state = {k: v for k, v in state.items() if not k.startswith("fast.")}
        return {**state, "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_run_state(self, state: dict) -> None:
        state = dict(state)
        self.meta_optimizer.load_state_dict(state.pop("meta_optimizer"))
        super().load_run_state(state)


class FastRGALSynthesizer(FastSynthesizer):
    """Fast-Datafree's synthesis with RGAL's relation loss added (w_tri > 0)."""
