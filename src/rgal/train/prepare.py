"""Turn a config into a validated run: models built, weights checked, data found, out ready.

Everything here runs before any training, so that bad input fails fast and writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from ..config import (
    BUILTIN_TEACHER,
    REAL_DATA_METHODS,
    ConfigError,
    DistillConfig,
    build_config,
    distill_config,
)
from ..data.datasets import DatasetInfo, ImageTensors, describe_dataset, load_dataset
from ..models import create_model, list_models
from ..models.features import find_batchnorms
from ..models.weights import WeightsError, load_weights
from ..utils import resolve_device, seed_everything
from .checkpoint import CHECKPOINT, CheckpointError, check_resumable, load_checkpoint
from .distill import RUN_OUTPUTS, DistillSetup

MIN_FREE_BYTES = 64 * 2**20

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


def check_output_dir(out: Path, overwrite: bool, need_bytes: int = 0) -> None:
    """Refuse a folder that holds a run (unless overwriting/resuming), is not writable or full."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    if out.is_dir() and not overwrite:
        found = [m for m in RUN_OUTPUTS if (out / m).exists()]
        if found:
            raise ConfigError(f"output folder {out} already holds a run ({found[0]}); "
                              "pass --resume to continue it, --overwrite to replace it, "
                              "or choose another --out")
    probe_dir = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    probe = probe_dir / f".rgal-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} is not writable ({e.strerror})") from None
    free = shutil.disk_usage(probe_dir).free
    need = max(need_bytes, MIN_FREE_BYTES)
    if free < need:
        raise ConfigError(f"output folder {out} has {free / 2**20:.0f} MiB free; this run needs "
                          f"about {need / 2**20:.0f} MiB (checkpoints and outputs)")


def estimated_run_bytes(cfg: DistillConfig, info: DatasetInfo) -> int:
    """Disk a run needs at its peak: the pool twice (checkpoint + its atomic copy) plus exports."""
    pool = cfg.epochs * cfg.synthesis_batch_size * info.channels * info.image_size ** 2
    copies = 3 if cfg.export_synthetic else 2
    return copies * pool + MIN_FREE_BYTES


def config_for_run(layers: list[dict[str, Any]], *, resume: bool = False,
                   allow_change: bool = False) -> tuple[DistillConfig, dict | None]:
    """The run's config from its layers; on resume, the checkpoint's config under the layers.

    Returns the config and the checkpoint state to resume from (None: start from epoch 1).
    """
    cfg = distill_config(*layers)
    path = Path(cfg.out) / CHECKPOINT
    if not resume or not path.exists():
        return cfg, None
    state = load_checkpoint(path)
    known = {f.name for f in fields(DistillConfig)}
    saved = {k: v for k, v in state["config"].items() if k in known}
    cfg = build_config(DistillConfig, saved, *layers)
    check_resumable(saved, cfg.to_dict(), allow_change, path)
    done = state["epoch"] + (1 if state.get("partial") else 0)
    if cfg.epochs < done:
        raise CheckpointError(f"cannot resume {path}: it has reached epoch {done}, "
                              f"beyond epochs={cfg.epochs}")
    return cfg, state


def prepare_distillation(cfg: DistillConfig, overwrite: bool = False,
                         resume_state: dict | None = None, resume: bool = False) -> DistillSetup:
    """Validate every input of a distillation run and build its models and test split."""
    info = describe_dataset(cfg.dataset, cfg.data_root)
    check_model_name(cfg.teacher, "teacher")
    check_model_name(cfg.student, "student")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    if overwrite and resume:
        raise ConfigError("--resume and --overwrite exclude each other")
    procs = int(os.environ.get("WORLD_SIZE", "1"))
    for key in ("batch_size", "synthesis_batch_size"):
        if getattr(cfg, key) % procs or getattr(cfg, key) < procs:
            raise ConfigError(f"{key}={getattr(cfg, key)} must be a multiple of the "
                              f"{procs} processes (each takes an equal share)")
    check_output_dir(out, overwrite or resume, estimated_run_bytes(cfg, info))
    teacher = build_model(cfg.teacher, info, "teacher")
    load_model_weights(teacher, resolve_weights_path(cfg.teacher_weights, cfg.dataset,
                                                     cfg.teacher), "teacher")
    if cfg.w_bn > 0 and cfg.method not in REAL_DATA_METHODS and not find_batchnorms(teacher):
        raise ConfigError(f"teacher {cfg.teacher} has no BatchNorm layer; method {cfg.method} "
                          "needs BN statistics (w_bn > 0)")
    student = build_model(cfg.student, info, "student")
    train = None
    if cfg.method in REAL_DATA_METHODS or cfg.holdout:
        train = load_dataset(cfg.dataset, cfg.data_root, train=True, download=cfg.download)
    if cfg.holdout:  # the held-out images replace the test split, which is never read
        if cfg.holdout >= len(train):
            raise ConfigError(f"holdout={cfg.holdout} leaves no training image "
                              f"({len(train)} in {cfg.dataset})")
        test = ImageTensors(train.images[-cfg.holdout:], train.labels[-cfg.holdout:])
        train = ImageTensors(train.images[:-cfg.holdout], train.labels[:-cfg.holdout])
    else:
        test = load_dataset(cfg.dataset, cfg.data_root, train=False, download=cfg.download,
                            max_per_class=cfg.test_per_class or None)
    if int(test.labels.max()) >= info.num_classes:
        raise ConfigError(f"test labels exceed the {info.num_classes} classes of {cfg.dataset}")
    return DistillSetup(cfg, info, teacher, student, test, device, out, resume_state, train)
