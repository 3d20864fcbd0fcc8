"""Turn a config into a validated run: models built, weights checked, data found, out ready.

Everything here runs before any training, so that bad input fails fast and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..config import BUILTIN_TEACHER, ConfigError, DistillConfig
from ..data.datasets import DatasetInfo, describe_dataset, load_dataset
from ..models import create_model, list_models
from ..models.features import find_batchnorms
from ..models.weights import WeightsError, load_weights
from ..utils import resolve_device, seed_everything
from .distill import RUN_OUTPUTS, DistillSetup

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


def build_model(name: str, info: DatasetInfo, role: str = "model") -> nn.Module:
    """A registered model sized for the dataset's classes and channels."""
    check_model_name(name, role)
    return create_model(name, num_classes=info.num_classes, in_channels=info.channels)


def load_model_weights(model: nn.Module, path: str, role: str) -> nn.Module:
    """Load weights with a message that names the role and the likely cause."""
    try:
        return load_weights(model, path)
    except WeightsError as e:
        msg = str(e)
        if "does not fit" in msg:
            msg += " (wrong architecture or class count?)"
        raise WeightsError(f"{role} weights: {msg}") from e


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds a run (unless overwriting) or cannot be written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    if out.is_dir() and not overwrite:
        found = [m for m in RUN_OUTPUTS if (out / m).exists()]
        if found:
            raise ConfigError(f"output folder {out} already holds a run ({found[0]}); "
                              "pass --overwrite or choose another --out")
    probe_dir = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    probe = probe_dir / ".rgal-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} is not writable ({e.strerror})") from None


def prepare_distillation(cfg: DistillConfig, overwrite: bool = False) -> DistillSetup:
    """Validate every input of a distillation run and build its models and test split."""
    info = describe_dataset(cfg.dataset, cfg.data_root)
    check_model_name(cfg.teacher, "teacher")
    check_model_name(cfg.student, "student")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    check_output_dir(out, overwrite)
    teacher = build_model(cfg.teacher, info, "teacher")
    load_model_weights(teacher, resolve_weights_path(cfg.teacher_weights, cfg.dataset,
                                                     cfg.teacher), "teacher")
    if not find_batchnorms(teacher):
        raise ConfigError(f"teacher {cfg.teacher} has no BatchNorm layer; method {cfg.method} "
                          "needs BN statistics")
    student = build_model(cfg.student, info, "student")
    test = load_dataset(cfg.dataset, cfg.data_root, train=False, download=cfg.download)
    if int(test.labels.max()) >= info.num_classes:
        raise ConfigError(f"test labels exceed the {info.num_classes} classes of {cfg.dataset}")
    return DistillSetup(cfg, info, teacher, student, test, device, out)
