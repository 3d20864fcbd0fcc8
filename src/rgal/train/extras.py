"""The optional outputs of a distillation run: the ONNX student (`export: onnx`) and the
requests checked before a run writes anything (an extra not installed, a student the ONNX
exporter cannot write)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.datasets import DatasetInfo, ImageTensors

ONNX_FILE = "student.onnx"
ONNX_CHECK_IMAGES = 1000


def check_extras(cfg: Any, student: nn.Module, info: DatasetInfo) -> None:
    """Refuse up front what the end of the run could not do (ConfigError, one line)."""
    if getattr(cfg, "tensorboard", False):
        from ..engine.tensorboard import require_tensorboard

        require_tensorboard()
    if getattr(cfg, "export", "none") == "onnx":
        from ..export import export_onnx, require_onnx

        require_onnx()
        example = torch.rand(2, info.channels, info.image_size, info.image_size)
        with tempfile.TemporaryDirectory() as tmp:  # the untrained student, once
            export_onnx(student, example, Path(tmp) / ONNX_FILE, normalize=(info.mean, info.std),
                        what=f"student {cfg.student}")


def export_student(student: nn.Module, info: DatasetInfo, test: ImageTensors, out: Path,
                   what: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write `out/student.onnx` and check it against PyTorch on test images; its figures."""
    from ..export import check_fp32, export_onnx, unit_images, verify_onnx

    images = unit_images(test.images[:ONNX_CHECK_IMAGES])
    labels = test.labels[:ONNX_CHECK_IMAGES]
    path = out / ONNX_FILE
    stats = (info.mean, info.std)
    export_onnx(student, images[:2], path, normalize=stats, what=what)
    check = verify_onnx(path, student, images, labels, normalize=stats)
    try:
        check_fp32(check)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    log(f"exported {path}: onnxruntime vs PyTorch on {check.images} test images, max abs diff "
        f"{check.max_abs_diff:.2e} (relative {check.rel_diff:.2e}); accuracy "
        f"{check.ort_acc:.2f}% (PyTorch {check.torch_acc:.2f}%)")
    return {"file": ONNX_FILE, **check.as_dict()}
