"""Detect non-finite loss terms without a host sync per step."""

from __future__ import annotations

import torch


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; names the term, the phase, the step and the epoch."""

    def __init__(self, term: str, phase: str, step: int, epoch: int | None = None,
                 unit: str = "epoch") -> None:
        super().__init__(term, phase, step, epoch)
        self.term, self.phase, self.step, self.epoch = term, phase, step, epoch
        self.unit = unit

    def __str__(self) -> str:
        where = f"{self.unit} {self.epoch}, " if self.epoch is not None else ""
        return f"{self.term} is not finite ({where}{self.phase} step {self.step})"


class FiniteWatch:
    """Remembers, per loss term, the first step at which it was not finite (on the device)."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.first: dict[str, torch.Tensor] = {}

    def update(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Record the terms of one step (no host sync)."""
        for name, value in terms.items():
            value = value.detach()
            seen = self.first.get(name)
            if seen is None:
                seen = torch.full((), -1, dtype=torch.long, device=value.device)
            bad = ~torch.isfinite(value).all()
            self.first[name] = torch.where((seen < 0) & bad, torch.full_like(seen, step), seen)

    def check(self) -> None:
        """Raise NonFiniteLoss for the earliest non-finite term seen (one host sync), then reset."""
        if not self.first:
            return
        names = list(self.first)
        steps = torch.stack([self.first[n] for n in names]).tolist()
        self.first.clear()
        bad = [(s, n) for s, n in zip(steps, names, strict=True) if s >= 0]
        if bad:
            step, name = min(bad)
            raise NonFiniteLoss(name, self.phase, step + 1)
