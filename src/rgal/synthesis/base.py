"""What every synthesis method produces, and the frozen-teacher invariant they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.features import FeatureExtractor, freeze


@dataclass
class SynthesisResult:
    """A batch to add to the pool, its labels, and the mean of each loss term over the steps."""

    images: torch.Tensor
    labels: torch.Tensor
    losses: dict[str, float] = field(default_factory=dict)


class Synthesizer(nn.Module):
    """Base of the synthesis methods: holds a teacher that stays frozen whatever `train()` says."""

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        freeze(self.teacher.model)

    def train(self, mode: bool = True) -> Synthesizer:
        super().train(mode)
        self.teacher.model.eval()
        return self

    def run_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must keep to continue synthesis exactly (teacher/student excluded)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("teacher.", "student."))}

    def load_run_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `run_state` returned."""
        own = self.state_dict()
        own.update(state)
        self.load_state_dict(own)

    def synthesize(self) -> SynthesisResult:  # pragma: no cover - interface
        """Run one synthesis phase."""
        raise NotImplementedError


@contextmanager
def frozen_student(model: nn.Module) -> Iterator[nn.Module]:
    """The student in eval mode without parameter gradients; mode and flags restored on exit."""
    mode = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(mode)
