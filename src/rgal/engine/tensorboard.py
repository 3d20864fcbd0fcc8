"""TensorBoard events of a run, written next to its metrics.jsonl (`--tensorboard`).

Every numeric field of a metrics record becomes a scalar, grouped by kind (`accuracy/`,
`loss/`, `diversity/`, `optim/`, `time/`, `run/`), and the run's image grid of that step an
image (`synthetic/grid`). The events go into the run folder itself, so
`tensorboard --logdir runs` lists every run by its folder name. TensorBoard is an optional
extra: `pip install "rgal[tensorboard]"`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..config import ConfigError

INSTALL_HINT = 'pip install "rgal[tensorboard]"'
EVENTS_GLOB = "events.out.tfevents.*"

# metrics fields that are positions, not measurements
_NOT_SCALARS = frozenset({"epoch", "task", "step"})


def require_tensorboard() -> None:
    """Raise ConfigError (one line, saying what to install) unless TensorBoard is importable."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--tensorboard needs the tensorboard package ({e}); install it with: "
                          f"{INSTALL_HINT}") from None


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics field: its name under a group of its kind."""
    if key.endswith("_acc") or key in ("acc_seen", "agree"):
        group = "accuracy"
    elif key.startswith("div_"):
        group = "diversity"
    elif key == "lr" or key.startswith("lr_"):
        group = "optim"
    elif key.endswith("_s"):
        group = "time"
    elif key.startswith(("loss", "inv_")) or "loss" in key:
        group = "loss"
    else:
        group = "run"
    return f"{group}/{key}"


def scalar_fields(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a metrics record (booleans, lists and positions left out)."""
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardWriter:
    """Writes the records of one run folder as TensorBoard events.

    The writer is opened at the first record. The first step logged by this writer becomes the
    purge step, so a resumed run replaces any events an interrupted process wrote past its
    last checkpoint. With `fresh`, event files of an earlier run in the folder are removed
    first (a run that starts over, e.g. with --overwrite).
    """

    def __init__(self, out_dir: str | Path, fresh: bool = True, purge: bool = True) -> None:
        require_tensorboard()
        self.out_dir = Path(out_dir)
        self.fresh, self.purge = fresh, purge
        self._writer = None

    def _open(self, step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.fresh:
            for old in self.out_dir.glob(EVENTS_GLOB):
                old.unlink()
        purge = None if self.fresh or not self.purge else step
        self._writer = SummaryWriter(log_dir=str(self.out_dir), purge_step=purge,
                                     flush_secs=30)
        return self._writer

    def log_epoch(self, epoch: int, record: dict[str, Any], grid: str | Path | None = None) -> None:
        """Every numeric field of `record` at step `epoch`, and the PNG `grid` if it exists."""
        writer = self._writer or self._open(epoch)
        for key, value in scalar_fields(record).items():
            writer.add_scalar(scalar_tag(key), value, epoch)
        if grid is not None and Path(grid).is_file():
            import numpy as np
            from PIL import Image

            with Image.open(grid) as im:
                pixels = np.asarray(im.convert("RGB"))
            writer.add_image("synthetic/grid", pixels, epoch, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a no-op if nothing was logged)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
