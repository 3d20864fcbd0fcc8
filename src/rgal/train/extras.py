"""The optional outputs of a run: TensorBoard events, the ONNX student, report.html.

The distillation loop calls `DistillExtras` at three points (start, end of each epoch, end of
the run); everything else lives here. Requests that cannot be met (an extra not installed, a
student the ONNX exporter cannot write) are refused at the start, before the run writes
anything.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .html_report import write_report
from .tensorboard import TensorBoardWriter

ONNX_FILE = "student.onnx"
ONNX_CHECK_IMAGES = 1000


def _export_target(cfg: Any) -> str:
    return getattr(cfg, "export", "none") or "none"


class DistillExtras:
    """TensorBoard events (`tensorboard: true`), `student.onnx` (`export: onnx`), report.html."""

    def __init__(self, setup: Any, log: Callable[[str], None] = print) -> None:
        cfg = setup.cfg
        self.setup, self.log = setup, log
        self.export = _export_target(cfg)
        resuming = setup.resume_state is not None
        self.tb = TensorBoardWriter(setup.out, fresh=not resuming) \
            if getattr(cfg, "tensorboard", False) else None
        if self.export == "onnx":
            self._dry_run_export(setup.student)

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.setup.info.mean, self.setup.info.std

    def _example(self) -> torch.Tensor:
        info = self.setup.info
        return torch.rand(2, info.channels, info.image_size, info.image_size)

    def _dry_run_export(self, student: nn.Module) -> None:
        """Export the untrained student once, so an unexportable model fails before training."""
        from ..export import export_onnx, require_onnx

        require_onnx()
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(student, self._example(), Path(tmp) / ONNX_FILE,
                        normalize=self._stats(), what=f"student {self.setup.cfg.student}")

    def epoch(self, record: dict[str, Any], grid: Path | None) -> None:
        """After an epoch's metrics line: its scalars and image grid as TensorBoard events."""
        if self.tb is not None:
            self.tb.log_epoch(int(record["epoch"]), record,
                              grid if grid is not None and grid.is_file() else None)

    def finish(self, student: nn.Module, summary: dict[str, Any]) -> None:
        """After summary.json: export and check the student, then write report.html."""
        out = self.setup.out
        try:
            if self.export == "onnx":
                summary["onnx"] = self._export_student(student)
                (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            write_report(out)
        finally:
            self.close()

    def _export_student(self, student: nn.Module) -> dict[str, Any]:
        from ..export import check_fp32, export_onnx, unit_images, verify_onnx

        test = self.setup.test
        images = unit_images(test.images[:ONNX_CHECK_IMAGES])
        labels = test.labels[:ONNX_CHECK_IMAGES]
        path = self.setup.out / ONNX_FILE
        export_onnx(student, images[:2], path, normalize=self._stats(),
                    what=f"student {self.setup.cfg.student}")
        check = verify_onnx(path, student, images, labels, normalize=self._stats())
        try:
            check_fp32(check)
        except Exception:
            path.unlink(missing_ok=True)
            raise
        self.log(f"exported {path}: onnxruntime vs PyTorch on {check.images} test images, max "
                 f"abs diff {check.max_abs_diff:.2e} (relative {check.rel_diff:.2e}); "
                 f"accuracy {check.ort_acc:.2f}% (PyTorch {check.torch_acc:.2f}%)")
        return {"file": ONNX_FILE, **check.as_dict()}

    def close(self) -> None:
        """Close the TensorBoard event file."""
        if self.tb is not None:
            self.tb.close()


def finish_run(out: Path, tb: TensorBoardWriter | None = None,
               final: dict[str, Any] | None = None, step: int = 0,
               grid: Path | None = None) -> Path:
    """End of a quantize or incremental run: its final figures (and `grid`) as TensorBoard
    events at `step`, the event file closed, report.html written; returns the report's path."""
    try:
        if tb is not None and final:
            tb.log_epoch(step, final, grid if grid is not None and grid.is_file() else None)
        return write_report(out)
    finally:
        if tb is not None:
            tb.close()
