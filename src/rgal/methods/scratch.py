"""The student trained on the real labels alone: the reference without a teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.features import Features
from .base import RealDataMethod, Terms
from .registry import register_method


@register_method("scratch")
class Scratch(RealDataMethod):
    """Cross entropy on the true labels of the real training images."""

    summary = "reference (uses real data)"
    student_doc = "cross entropy on labels"

    @property
    def needs_teacher(self) -> bool:
        return False

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        return {"loss_ce": F.cross_entropy(s.logits, y)}

    def student_weights(self) -> dict[str, float]:
        return {"loss_ce": 1.0}
