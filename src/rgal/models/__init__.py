"""Model zoo: every architecture registers itself by name on import."""

from . import imagenet, mobilenetv2, resnet, resnet_cifar, shufflenetv2, small, vgg, wrn
from .features import FeatureExtractor, Features, find_batchnorms, freeze
from .generator import Generator
from .registry import create_model, list_models, register_model

__all__ = [
    "FeatureExtractor",
    "Features",
    "Generator",
    "find_batchnorms",
    "freeze",
    "create_model",
    "imagenet",
    "list_models",
    "mobilenetv2",
    "register_model",
    "resnet",
    "resnet_cifar",
    "shufflenetv2",
    "small",
    "vgg",
    "wrn",
]
