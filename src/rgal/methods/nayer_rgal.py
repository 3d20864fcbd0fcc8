"""NAYER with RGAL's relation losses added (both phases) and pair-sampled student batches."""

from __future__ import annotations

from .nayer import NAYER
from .registry import register_method
from .rgal import RGAL


@register_method("nayer+rgal")
class NAYERRGAL(NAYER, RGAL):
    """NAYER's synthesis and RGAL's relation terms, RGAL's student step."""

    sections = (*NAYER.sections, *RGAL.sections)
    defaults = {**NAYER.defaults}
    summary = "NAYER + RGAL"
    images = "as `nayer`"
    generator_doc = "NAYER's terms + RGAL's relation loss"
    student_doc = "RGAL's student step"
