"""KD on the real training images: the upper bound a data-free method aims at."""

from __future__ import annotations

from .base import RealDataMethod
from .registry import register_method


@register_method("kd-real")
class KDReal(RealDataMethod):
    """The student distilled from the teacher on real training images (no synthesis)."""

    summary = "reference (uses real data)"
    student_doc = "KD"
