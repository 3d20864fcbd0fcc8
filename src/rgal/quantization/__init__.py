"""Data-free quantization: fake-quantized models, PTQ baselines, GDFQ and GDFQ+RGAL."""

from ..models.quantized import (
    ActQuantizer,
    QuantizedModel,
    QuantLayer,
    affine_qparams,
    dequantize_weight,
    fake_quantize_weight,
    quantize_weight_int,
    weight_qparams,
)
from .config import METHODS, QuantizeConfig, build_quantize_config
from .generator import ConditionalGenerator

__all__ = ["METHODS", "QuantizeConfig", "build_quantize_config", "ConditionalGenerator",
           "ActQuantizer", "QuantizedModel", "QuantLayer", "affine_qparams",
           "dequantize_weight", "fake_quantize_weight", "quantize_weight_int", "weight_qparams"]
