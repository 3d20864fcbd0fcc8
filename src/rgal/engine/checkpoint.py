"""Full-state run checkpoints: written atomically, read without pickle code, compared on resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, flat_config
from ..models.weights import safe_torch_load
from ..utils import atomic_path

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 2

# Keys that may differ between a checkpoint and its resumption without changing the results.
RESUME_FREE_KEYS = frozenset({"progress", "device", "download", "data_root", "eval_batch_size",
                              "eval_every", "out", "tensorboard", "export"})
# Keys that define the shapes of the saved state: never changeable on resume.
STRUCTURAL_KEYS = frozenset({"dataset", "teacher", "teacher_weights", "student", "method", "nz",
                             "ngf", "model", "weights", "tasks", "wbits", "abits"})


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, unsafe, or does not match the run resuming it."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` with torch.save through a temporary file, fsync and rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **state}, f)
        f.flush()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; pickle code is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint found")
    state = safe_torch_load(path, CheckpointError)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an rgal run checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else '?'})")
    return state


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       legacy: dict[str, Any] | None = None) -> list[str]:
    """Keys whose values differ between two configs, ignoring keys that cannot change results.

    Method sections are compared key by key (`rgal.w_rel_syn`). A key the saved config lacks
    (an option added after it was written) counts as its value in `legacy` (`legacy_values`
    of the config class): the behaviour the version that wrote it had.
    """
    saved, current = flat_config(saved), flat_config(current)
    if legacy:
        saved = {**{k: v for k, v in flat_config(legacy).items() if k not in saved}, **saved}
    keys = sorted((set(saved) | set(current)) - RESUME_FREE_KEYS)
    return [k for k in keys if saved.get(k) != current.get(k)]


def check_resumable(saved: dict[str, Any], current: dict[str, Any],
                    allow_change: bool, path: Path,
                    legacy: dict[str, Any] | None = None) -> list[str]:
    """Refuse a resume whose config differs from the checkpoint's (unless allowed); return diffs.

    `legacy`: what keys the checkpoint's config predates meant (see `config_differences`).
    """
    diff = config_differences(saved, current, legacy)
    saved, current = flat_config(saved), flat_config(current)
    structural = [k for k in diff if k in STRUCTURAL_KEYS]
    if structural:
        raise CheckpointError(
            f"cannot resume {path}: " + ", ".join(
                f"{k} is {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now"
                for k in structural) + " (these define the saved state; start a new run)")
    if diff and not allow_change:
        raise CheckpointError(
            f"cannot resume {path} with a different config: " + ", ".join(
                f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in diff)
            + "; pass --allow-config-change to continue with the new values")
    return diff
