"""Where a run writes: its folder, the guard that keeps it from clobbering another run, and a
folder that writes nothing at all (`out=None` in the Python API)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..utils import atomic_path

MIN_FREE_BYTES = 64 * 2**20


def check_output_dir(out: Path, outputs: Iterable[str], overwrite: bool,
                     need_bytes: int = 0, hint: str = "pass --overwrite to replace it") -> None:
    """Refuse a folder that holds a run (unless overwriting), is not a folder, is not writable
    or lacks `need_bytes` of free space. Nothing is written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    if out.is_dir() and not overwrite:
        found = [m for m in outputs if (out / m).exists()]
        if found:
            raise ConfigError(f"output folder {out} already holds a run ({found[0]}); "
                              f"{hint}, or choose another --out")
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


class RunFolder:
    """A run's output folder and the files it owns; with `path=None` every write is skipped.

    `outputs` are the file names a run of this kind writes (what the guard looks for and what
    `clear()` removes when a run is replaced); `patterns` are globs of further files it owns.
    """

    def __init__(self, path: str | Path | None, outputs: Iterable[str] = (),
                 patterns: Iterable[str] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self.outputs, self.patterns = tuple(outputs), tuple(patterns)

    def __bool__(self) -> bool:
        return self.path is not None

    def __truediv__(self, name: str) -> Path:
        if self.path is None:
            raise RuntimeError("this run writes no files (out=None)")
        return self.path / name

    def check(self, overwrite: bool, need_bytes: int = 0,
              hint: str = "pass --overwrite to replace it") -> None:
        """The output-folder guard (see `check_output_dir`); nothing to check without a path."""
        if self.path is not None:
            check_output_dir(self.path, self.outputs, overwrite, need_bytes, hint)

    def clear(self) -> None:
        """Create the folder and remove the files an earlier run of this kind left there."""
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        for name in self.outputs:
            (self.path / name).unlink(missing_ok=True)
        for pattern in self.patterns:
            for f in self.path.glob(pattern):
                f.unlink()

    def write_json(self, name: str, obj: Any) -> None:
        """`name` as indented JSON (atomically)."""
        if self.path is None:
            return
        with atomic_path(self.path / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=2) + "\n")

    def write_lines(self, name: str, records: list[dict]) -> None:
        """`name` as JSON lines, one per record (atomically)."""
        if self.path is None:
            return
        with atomic_path(self.path / name) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))

    def append_line(self, name: str, record: dict) -> None:
        """Append one JSON line to `name`."""
        if self.path is None:
            return
        with (self.path / name).open("a") as f:
            f.write(json.dumps(record) + "\n")
