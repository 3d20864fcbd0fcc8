"""Turn a config into a validated run: models built, weights checked, data found, out ready.

Everything here runs before any training, so that bad input fails fast and writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, DistillConfig, legacy_values
from ..data.datasets import DatasetInfo, describe_dataset
from ..data.splits import evaluation_split
from ..engine import CHECKPOINT, CheckpointError, check_resumable, load_checkpoint
from ..engine.outputs import MIN_FREE_BYTES
from ..losses.boundary import classifier_weight
from ..methods import distill_config, get_method
from ..methods.registry import method_of
from ..models.build import (
    build_model,
    check_model_name,
    load_model_weights,
    require_batchnorm,
    resolve_weights_path,
)
from ..utils import resolve_device, seed_everything
from .distill import DistillSetup, run_folder
from .extras import check_extras
from .student import RealImages


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
    saved = state["config"]
    method = method_of([saved, *layers])
    if method != saved.get("method"):  # refused, naming the change, before the sections clash
        check_resumable({"method": saved.get("method")}, {"method": method}, allow_change, path)
    cfg = distill_config(saved, *layers)
    check_resumable(saved, cfg.to_dict(), allow_change, path, legacy_values(DistillConfig))
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
    folder = run_folder(cfg.out)
    if overwrite and resume:
        raise ConfigError("--resume and --overwrite exclude each other")
    procs = int(os.environ.get("WORLD_SIZE", "1"))
    for key in ("batch_size", "synthesis_batch_size"):
        if getattr(cfg, key) % procs or getattr(cfg, key) < procs:
            raise ConfigError(f"{key}={getattr(cfg, key)} must be a multiple of the "
                              f"{procs} processes (each takes an equal share)")
    folder.check(overwrite or resume, estimated_run_bytes(cfg, info),
                 hint="pass --resume to continue it, --overwrite to replace it")
    teacher = build_model(cfg.teacher, info.num_classes, info.channels, "teacher")
    load_model_weights(teacher, resolve_weights_path(cfg.teacher_weights, cfg.dataset,
                                                     cfg.teacher), "teacher")
    method = get_method(cfg.method)
    method.check_settings(cfg)
    if cfg.w_bn > 0 and method.source != "real":
        require_batchnorm(teacher, f"teacher {cfg.teacher}",
                          f"method {cfg.method} needs BN statistics (w_bn > 0)")
    if cfg.boundary > 0:  # its neighbouring classes come from the teacher's classifier
        classifier_weight(teacher, info.num_classes)
    student = build_model(cfg.student, info.num_classes, info.channels, "student")
    check_extras(cfg, student, info)
    train, test = evaluation_split(cfg.dataset, cfg.data_root, holdout=cfg.holdout,
                                   download=cfg.download, need_train=method.source == "real",
                                   max_per_class=cfg.test_per_class or None, info=info)
    if train is not None:  # refused before the run folder is written, not when training starts
        RealImages.check_subset(cfg.real_subset, len(train.labels))
    return DistillSetup(cfg, info, teacher, student, test, device, folder, resume_state, train)
