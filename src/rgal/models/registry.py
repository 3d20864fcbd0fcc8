"""A single registry of model constructors, addressed by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a constructor `fn(num_classes, in_channels, **kw)` under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model by name."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
