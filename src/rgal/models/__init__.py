"""Model zoo: every architecture registers itself by name on import."""

from . import mobilenetv2, resnet, resnet_cifar, shufflenetv2, small, vgg, wrn
from .registry import create_model, list_models, register_model

__all__ = [
    "create_model",
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
