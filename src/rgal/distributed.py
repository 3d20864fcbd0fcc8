"""Multi-process runs under torchrun: process group set-up and the few collectives RGAL needs.

Every rank holds identical models; gradients are averaged across ranks before each optimiser
step (what DistributedDataParallel does, without wrapping the modules, so feature hooks and the
frozen-teacher invariant stay as they are). With one process every helper is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Number of processes in the run (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the rank that evaluates and writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes; return this rank's device.

    CUDA ranks use NCCL and the GPU `LOCAL_RANK`; CPU ranks use gloo.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def shutdown(clean: bool = True) -> None:
    """Leave the process group (if one was joined).

    After a clean run every rank first waits for the others, so that no rank tears its
    connections down while a peer is still using them; after an error a rank leaves at
    once (its peers may never reach a barrier).
    """
    if dist.is_available() and dist.is_initialized():
        if clean and world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def leaving_when_done() -> Iterator[None]:
    """Run the block, then leave the process group: cleanly after success, at once after an
    error."""
    try:
        yield
    except BaseException:
        shutdown(clean=False)
        raise
    shutdown()


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks (one flattened all-reduce)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped tensors of every rank, in rank order."""
    if world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class _SumOverRanks(torch.autograd.Function):
    """y = sum over ranks of x; each rank's dL/dx is the sum over ranks of dL/dy."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sum_differentiable(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks that gradients flow back through (for global BN statistics)."""
    if world_size() == 1:
        return t
    return _SumOverRanks.apply(t)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of `module` from rank `src` to the others."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any rank (so that all ranks stop at the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier() -> None:
    """Wait for every rank."""
    if world_size() > 1:
        dist.barrier()
