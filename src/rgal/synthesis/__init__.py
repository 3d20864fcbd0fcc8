"""Synthesis methods and the synthetic-image pool."""

from .base import SynthesisResult, Synthesizer
from .pool import ImagePool
from .rgal import RGALSynthesizer

__all__ = ["ImagePool", "RGALSynthesizer", "SynthesisResult", "Synthesizer"]
