"""The training loop every application runs on: epochs of steps, checkpoints, exact resume.

An application (distillation, quantization fine-tuning, class-incremental learning, teacher
training) describes what its epochs compute as a `Job`; the loop runs it and owns everything
else: progress bars, non-finite checks, metrics lines, the full-state checkpoint after every
epoch, a checkpoint of the exact position on SIGTERM/SIGINT, and resuming from either.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..distributed import any_rank, rank, world_size
from ..losses import FiniteWatch, NonFiniteLoss
from ..utils import rng_state, set_rng_state
from .checkpoint import CHECKPOINT, save_checkpoint
from .outputs import RunFolder

Terms = dict[str, torch.Tensor]
METRICS = "metrics.jsonl"


class RunInterrupted(Exception):
    """SIGTERM/SIGINT stopped the run after a checkpoint of its exact position was written."""

    def __init__(self, signum: int, epoch: int, step: int, path: Path | None,
                 repeat_epoch: bool = False, unit: str = "epoch", prelude: str = "its set-up",
                 step_name: str = "step") -> None:
        super().__init__(signum, epoch, step, path)
        self.signum, self.epoch, self.step, self.path = signum, epoch, step, path
        self.repeat_epoch = repeat_epoch
        self.unit, self.prelude, self.step_name = unit, prelude, step_name

    def __str__(self) -> str:
        where = (f"{self.unit} {self.epoch}, after {self.step_name} {self.step}" if self.step > 0
                 else f"{self.unit} {self.epoch}, after {self.prelude}" if self.step == 0
                 else f"the end of {self.unit} {self.epoch}")
        again = f" ({self.unit} {self.epoch} starts again)" if self.repeat_epoch else ""
        if self.path is None:
            return f"stopped by {signal.Signals(self.signum).name} at {where}"
        return (f"stopped by {signal.Signals(self.signum).name} at {where}; checkpoint "
                f"{self.path}; continue with --resume{again}")


class StopSignals:
    """While active, the first SIGTERM/SIGINT only sets `signum`; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Job:
    """What an application's epochs compute. Override what applies; the loop does the rest.

    Per epoch the loop calls `begin_epoch` (a set-up phase, e.g. synthesis; its return value,
    the *prelude*, is kept in a mid-epoch checkpoint), then `step` `steps(epoch)` times (each
    returns its detached loss terms), then `finish_epoch` on every rank and `end_epoch` on the
    writing rank (evaluation and outputs; it returns the epoch's metrics record).
    """

    name = "train"  # progress-bar label of the epoch loop
    unit = "epoch"  # what one iteration of the outer loop is called
    step_name = "step"  # what one inner step is called (in messages)
    prelude_name = "its set-up"  # what begin_epoch does (in messages)
    watch_name = "train"  # the phase named when a step's loss is not finite
    timing_names = ("setup_s", "train_s", "eval_s")  # begin_epoch, steps, end_epoch
    epochs = 1

    def steps(self, epoch: int) -> int:
        """How many steps epoch `epoch` has."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        """Work before the epoch's steps; returns the prelude the steps and outputs read."""
        return {}

    def step(self, epoch: int, step: int, prelude: dict[str, Any]) -> Terms:
        """One training step; returns its detached loss terms."""
        raise NotImplementedError

    def finish_epoch(self, epoch: int) -> None:
        """After the steps, on every rank (schedulers, synchronisation)."""

    def end_epoch(self, epoch: int, prelude: dict[str, Any], means: dict[str, float],
                  timings: dict[str, float]) -> dict[str, Any]:
        """On the writing rank: evaluate and write per-epoch outputs; return the metrics record."""
        return {}

    def after_record(self, history: list[dict[str, Any]]) -> None:
        """Once the epoch's record is in the history (e.g. redraw a plot)."""

    def grid_path(self, epoch: int) -> Path | None:
        """The picture of this epoch's synthetic images, if the job wrote one (TensorBoard)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything the job needs to continue exactly (merged into the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def _sync(device: torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).mean()) if values else 0.0


class TrainingLoop:
    """Runs a Job epoch by epoch with checkpoints in `folder` (none when it has no path).

    `config` is stored in every checkpoint (`checkpoint`, a file name in the folder; None: no
    checkpoints); `metrics` names the JSON-lines file of per-epoch records; `seed` reseeds each
    epoch's streams under torchrun so that every rank's randomness depends only on
    (seed, epoch, rank).
    """

    def __init__(self, job: Job, folder: RunFolder, *, config: dict[str, Any],
                 progress: bool = True, seed: int = 0, metrics: str = METRICS,
                 checkpoint: str | None = CHECKPOINT, tensorboard: bool = False,
                 log: Callable[[str], None] = tqdm.write) -> None:
        self.job, self.folder, self.config = job, folder, config
        self.checkpoint_name = checkpoint
        self.progress, self.seed, self.metrics_name, self.log = progress, seed, metrics, log
        self.checkpointing = checkpoint is not None and bool(folder)
        self.world, self.rank = world_size(), rank()
        self.main = self.rank == 0
        self.device = getattr(job, "device", torch.device("cpu"))
        self.epoch = 0  # last completed epoch
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.partial: dict[str, Any] | None = None
        self._t_start = time.time()
        self.tb = None
        if tensorboard and folder and self.main:
            from .tensorboard import TensorBoardWriter

            self.tb = TensorBoardWriter(folder.path)

    # -- state ------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.folder / self.checkpoint_name if self.checkpointing else None

    def elapsed(self) -> float:
        """Wall time of this run, earlier (interrupted) segments included."""
        return self.elapsed_before + time.time() - self._t_start

    def state(self) -> dict[str, Any]:
        """The checkpoint: the job's state, the loop's position, every RNG state, the config."""
        return {"config": self.config, **self.job.state_dict(), "epoch": self.epoch,
                "history": self.history, "elapsed_s": self.elapsed(), "partial": self.partial,
                "rng": rng_state()}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: job state, position, RNG states."""
        self.job.load_state_dict(state)
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.elapsed_before = state["elapsed_s"]
        self.partial = state["partial"]
        set_rng_state(state["rng"])
        if self.tb is not None:  # keep the events, from the first epoch not yet logged on
            self.tb.fresh = False

    def where(self) -> str:
        """The position a resumed run continues from, in words."""
        if self.partial:
            return (f"{self.job.unit} {self.partial['epoch']}, {self.job.step_name} "
                    f"{self.partial['done']}")
        return f"the end of {self.job.unit} {self.epoch}"

    def save(self) -> None:
        """Write the checkpoint (if this run keeps one)."""
        if self.checkpointing and self.main:
            save_checkpoint(self.checkpoint_path, self.state())

    # -- running ------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Every remaining epoch; returns the history of metrics records."""
        self._t_start = time.time()
        if self.main and self.folder:
            self.folder.write_lines(self.metrics_name, self.history)
        job = self.job
        try:
            with StopSignals() as stop:
                bar = tqdm(range(self.epoch + 1, job.epochs + 1), desc=job.name,
                           disable=not (self.progress and self.main), initial=self.epoch,
                           total=job.epochs)
                for epoch in bar:
                    self._epoch(epoch, stop)
                    if self.main and self.history:
                        bar.set_postfix(self.postfix(self.history[-1]))
        finally:
            if self.tb is not None:
                self.tb.close()
        return self.history

    @staticmethod
    def postfix(record: dict[str, Any]) -> dict[str, str]:
        """What the epoch bar shows of the last record."""
        return {k: f"{record[k]:.2f}" for k in ("test_acc", "acc") if k in record}

    def _interrupt(self, stop: StopSignals, epoch: int, step: int, watch: FiniteWatch,
                   make_partial: Callable[[], dict[str, Any]]) -> None:
        """Honour a pending stop signal: checkpoint this exact position, then stop."""
        job = self.job
        names = dict(unit=job.unit, prelude=job.prelude_name, step_name=job.step_name)
        if self.world > 1:  # ranks agree to stop; the last epoch checkpoint is the resume point
            if any_rank(stop.signum is not None, self.device):
                raise RunInterrupted(stop.signum or signal.SIGTERM, epoch, step,
                                     self.checkpoint_path, repeat_epoch=True, **names)
            return
        if stop.signum is not None:
            watch.check()
            self.partial = make_partial()
            self.save()
            raise RunInterrupted(stop.signum, epoch, step, self.checkpoint_path, **names)

    def _epoch(self, epoch: int, stop: StopSignals) -> None:
        job = self.job
        if self.world > 1:  # per-rank streams that depend only on (seed, epoch, rank)
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 1009 + self.rank)
        watch = FiniteWatch(job.watch_name)
        try:
            part = self.partial if self.partial and self.partial["epoch"] == epoch else None
            if part is None:
                t0 = time.time()
                prelude = job.begin_epoch(epoch)
                _sync(self.device)  # time the device's work, not its queueing
                part = {"epoch": epoch, "done": 0, "prelude": prelude, "terms": {},
                        "setup_s": time.time() - t0, "steps_s": 0.0}
                self._interrupt(stop, epoch, 0, watch, lambda: part)
            prelude = part["prelude"]
            terms = {k: list(v.to(self.device)) for k, v in part["terms"].items()}
            t1 = time.time()
            n = job.steps(epoch)
            for step in tqdm(range(part["done"], n), desc=job.step_name, leave=False,
                             disable=not (self.progress and self.main), initial=part["done"],
                             total=n):
                step_terms = job.step(epoch, step, prelude)
                watch.update(step, step_terms)
                for k, v in step_terms.items():
                    terms.setdefault(k, []).append(v)
                self._interrupt(stop, epoch, step + 1, watch, lambda step=step: {
                    **part, "done": step + 1, "steps_s": part["steps_s"] + time.time() - t1,
                    "terms": {k: torch.stack(v).cpu() for k, v in terms.items()}})
            watch.check()
        except NonFiniteLoss as e:
            e.epoch = epoch
            e.unit = job.unit
            raise
        self.partial = None
        job.finish_epoch(epoch)
        _sync(self.device)
        t2 = time.time()
        self.epoch = epoch
        stopping = (any_rank(stop.signum is not None, self.device) if self.world > 1
                    else stop.signum is not None)
        if self.main:
            setup_s, steps_s = part["setup_s"], part["steps_s"] + t2 - t1
            means = {k: _mean(v) for k, v in terms.items()}
            timing = dict(zip(job.timing_names[:2], (setup_s, steps_s), strict=True))
            record = job.end_epoch(epoch, prelude, means, timing)
            record.setdefault(job.timing_names[2], time.time() - t2)
            record["elapsed_s"] = self.elapsed()
            self.history.append(record)
            if self.folder:
                self.folder.append_line(self.metrics_name, record)
            job.after_record(self.history)
            if self.tb is not None:
                self.tb.log_epoch(epoch, record, job.grid_path(epoch))
            self.save()
        if stopping and epoch < job.epochs:  # after the last epoch: just finish
            raise RunInterrupted(stop.signum or signal.SIGTERM, epoch, -1, self.checkpoint_path,
                                 unit=job.unit, prelude=job.prelude_name,
                                 step_name=job.step_name)
