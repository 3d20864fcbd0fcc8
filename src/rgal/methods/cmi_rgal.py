"""CMI with RGAL's relation losses added (both phases) and pair-sampled student batches."""

from __future__ import annotations

from .cmi import CMI
from .registry import register_method
from .rgal import RGAL


@register_method("cmi+rgal")
class CMIRGAL(CMI, RGAL):
    """CMI's synthesis and RGAL's relation terms, RGAL's student step."""

    sections = (*CMI.sections, *RGAL.sections)
    defaults = {**CMI.defaults}
    summary = "CMI + RGAL"
    images = "as `cmi`"
    generator_doc = "CMI's terms + RGAL's relation loss"
    student_doc = "RGAL's student step"
