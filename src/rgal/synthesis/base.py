"""What every synthesis method produces, and the frozen-teacher invariant they share."""

from __future__ import annotations

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

    def synthesize(self) -> SynthesisResult:  # pragma: no cover - interface
        """Run one synthesis phase."""
        raise NotImplementedError


class frozen_student:
    """Context: the student in eval mode without parameter gradients, restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self._mode = self.model.training
        self._grads = [p.requires_grad for p in self.model.parameters()]
        self.model.eval().requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for p, g in zip(self.model.parameters(), self._grads, strict=True):
            p.requires_grad_(g)
        self.model.train(self._mode)
