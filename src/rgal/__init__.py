"""rgal: data-free knowledge transfer with Relation-Guided Adversarial Learning.

    import rgal
    result = rgal.distill(teacher, student, data="cifar10", epochs=20)   # any nn.Modules
    q = rgal.quantize(model, data="cifar10", wbits=4, abits=4)
    images, labels = rgal.synthesize(teacher, 1024, data="cifar10")

`rgal.list_methods()` names the data-free methods; `rgal.register_method` adds one.
"""

from ._version import __version__
from .api import DistillResult, ImageSpec, QuantizeResult, distill, quantize, synthesize
from .methods import Method, get_method, list_methods, register_method
from .models import FeatureExtractor, create_model, list_models

__all__ = ["DistillResult", "FeatureExtractor", "ImageSpec", "Method", "QuantizeResult",
           "__version__", "create_model", "distill", "get_method", "list_methods", "list_models",
           "quantize", "register_method", "synthesize"]
