"""Mixed precision: an autocast context and, for fp16, a gradient scaler, per optimiser."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from .distributed import average_gradients

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
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


def native_bf16(device: torch.device | str) -> bool:
    """Whether the device computes in bf16 natively: CUDA compute capability 8.0 or newer, or
    a CPU with AMX or AVX-512 bf16 units (elsewhere bf16 is emulated, and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})
    return False


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(name: str, device: torch.device | str) -> str:
    """`auto` -> bf16 where the device has native bf16, else fp32; other names unchanged."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def channels_last_for(setting: str | bool, device: torch.device | str) -> bool:
    """`auto` -> channels-last on CPUs and CUDA devices (faster convolutions there)."""
    if setting in ("auto", None):
        return torch.device(device).type in ("cpu", "cuda")
    return setting in (True, "true")


class Precision:
    """What one optimiser's steps run in: fp32, bf16 autocast, or fp16 autocast + loss scaling."""

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu") -> None:
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        self.name = resolve_precision(name, device)
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=name == "fp16")

    def autocast(self) -> AbstractContextManager:
        """The context the forward passes run in."""
        dtype = _DTYPES.get(self.name)
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             shared: Iterable[nn.Parameter] = (), clip: float = 0.0,
             on_grads: Callable[[], None] | None = None) -> None:
        """Backward (scaled for fp16), average `shared` gradients over ranks, clip the gradient
        norm of the optimiser's parameters to `clip` (0: no clipping), call `on_grads` (the
        gradients are final then), optimiser step."""
        self.backward(loss)
        shared = list(shared)
        if shared or clip > 0 or on_grads is not None:
            self.unscale(optimizer)
        if shared:
            average_gradients(shared)
        if clip > 0:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                     clip)
        if on_grads is not None:
            on_grads()
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
