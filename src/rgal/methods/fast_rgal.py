"""Fast-Datafree with RGAL's relation losses added (both phases) and pair-sampled batches."""

from __future__ import annotations

from .fast import Fast
from .registry import register_method
from .rgal import RGAL


@register_method("fast+rgal")
class FastRGAL(Fast, RGAL):
    """Fast-Datafree's synthesis and RGAL's relation terms, RGAL's student step."""

    sections = (*Fast.sections, *RGAL.sections)
    defaults = {**Fast.defaults}
    summary = "Fast-Datafree + RGAL"
    images = "as `fast`"
    generator_doc = "Fast's terms + RGAL's relation loss"
    student_doc = "RGAL's student step"
