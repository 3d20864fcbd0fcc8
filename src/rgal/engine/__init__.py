"""The two engines every application runs on.

`inversion`: the generator loop (optimise images against a frozen model); `loop`: the training
loop (epochs of steps, non-finite checks, checkpoints, exact resume, stop signals);
`outputs`: the run folder and its guard; `checkpoint`: atomic, pickle-free checkpoints.
"""

from .checkpoint import (
           CHECKPOINT,
           CheckpointError,
           check_resumable,
           load_checkpoint,
           save_checkpoint,
)
from .inversion import InversionEngine, InversionStep, PhaseResult, frozen, weighted_sum
from .loop import Job, RunInterrupted, StopSignals, TrainingLoop
from .outputs import RunFolder, check_output_dir

__all__ = ["CHECKPOINT", "CheckpointError", "InversionEngine", "InversionStep", "Job",
           "PhaseResult", "RunFolder", "RunInterrupted", "StopSignals", "TrainingLoop",
           "check_output_dir", "check_resumable", "frozen", "load_checkpoint",
           "save_checkpoint", "weighted_sum"]
