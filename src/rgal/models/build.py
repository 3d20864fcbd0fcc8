"""Models for a dataset: build by name, load weights with clear errors, the shipped teachers."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..config import BUILTIN_TEACHER, ConfigError
from .features import find_batchnorms
from .registry import create_model, list_models
from .weights import WeightsError, load_weights

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUILTIN_TEACHERS = {("fashion-mnist", "smallcnn"): WEIGHTS_DIR / "fmnist_smallcnn.safetensors"}


def builtin_teacher_record(dataset: str, model: str) -> dict:
    """The shipped teacher's metadata (weights path, test accuracy) for a dataset/model pair."""
    path = BUILTIN_TEACHERS.get((dataset, model))
    if path is None:
        known = ", ".join(f"{m} on {d}" for d, m in BUILTIN_TEACHERS)
        raise ConfigError(f"no built-in teacher for {model} on {dataset} (built-in: {known}); "
                          "pass --teacher-weights FILE")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return {"path": str(path), **meta}


def resolve_weights_path(weights: str, dataset: str, model: str) -> str:
    """`builtin` -> the shipped weights file for this dataset/model; any other value as is."""
    if weights == BUILTIN_TEACHER:
        return builtin_teacher_record(dataset, model)["path"]
    return weights


def check_model_name(name: str, role: str) -> None:
    """Raise ConfigError for a model name the registry does not know."""
    if name not in list_models():
        raise ConfigError(f"unknown {role} model {name!r}; known: {', '.join(list_models())}")


def build_model(name: str, num_classes: int, channels: int, role: str = "model") -> nn.Module:
    """A registered model sized for a dataset's classes and channels."""
    check_model_name(name, role)
    return create_model(name, num_classes=num_classes, in_channels=channels)


def load_model_weights(model: nn.Module, path: str, role: str) -> nn.Module:
    """Load weights with a message that names the role and the likely cause."""
    try:
        return load_weights(model, path)
    except WeightsError as e:
        msg = str(e)
        if "does not fit" in msg:
            msg += " (wrong architecture or class count?)"
        raise WeightsError(f"{role} weights: {msg}") from e


def require_batchnorm(model: nn.Module, name: str, why: str) -> None:
    """Raise ConfigError if `model` has no BatchNorm layer with running statistics."""
    if not find_batchnorms(model):
        raise ConfigError(f"{name} has no BatchNorm layer; {why}")
