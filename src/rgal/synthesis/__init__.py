"""Synthesis methods and the synthetic-image pool."""

from .base import SynthesisResult, Synthesizer
from .cmi import CMIRGALSynthesizer, CMISynthesizer
from .deepinv import DeepInversionSynthesizer, PixelImages
from .fast import FastRGALSynthesizer, FastSynthesizer
from .inversion import InversionSynthesizer, RGALSynthesizer
from .online import OnlineSynthesizer
from .pool import ImagePool

__all__ = ["CMIRGALSynthesizer", "CMISynthesizer", "DeepInversionSynthesizer",
           "FastRGALSynthesizer", "FastSynthesizer", "ImagePool", "InversionSynthesizer",
           "OnlineSynthesizer", "PixelImages", "RGALSynthesizer", "SynthesisResult",
           "Synthesizer"]
