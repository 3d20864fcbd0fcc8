"""Mixed precision: an autocast context and, for fp16, a gradient scaler, per optimiser."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from .distributed import average_gradients

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZER_IMPLS = ("default", "foreach", "fused")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def optimizer_options(impl: str = "default") -> dict[str, bool]:
    """Keyword arguments of a torch optimiser selecting its kernels.

    `default` leaves the choice to PyTorch (multi-tensor `foreach` kernels on GPUs, a loop
    over parameters on CPUs); `foreach` and `fused` ask for those kernels explicitly.
    """
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"optimizer implementation must be one of "
                         f"{', '.join(OPTIMIZER_IMPLS)}, got {impl!r}")
    return {} if impl == "default" else {impl: True}


class Precision:
    """What one optimiser's steps run in: fp32, bf16 autocast, or fp16 autocast + loss scaling."""

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu") -> None:
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        self.name = name
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=name == "fp16")

    def autocast(self) -> AbstractContextManager:
        """The context the forward passes run in."""
        dtype = _DTYPES.get(self.name)
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             shared: Iterable[nn.Parameter] = ()) -> None:
        """Backward (scaled for fp16), average `shared` gradients over ranks, optimiser step."""
        self.backward(loss)
        shared = list(shared)
        if shared:
            self.unscale(optimizer)
            average_gradients(shared)
        self.step_only(optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss` (scaled for fp16)."""
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring fp16-scaled gradients back to their true size (before clipping them)."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(optimizer)

    def step_only(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step (skipped for fp16 when a gradient is not finite)."""
        self.scaler.step(optimizer)
        self.scaler.update()
