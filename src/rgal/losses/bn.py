"""DeepInversion's BatchNorm-statistics loss, through forward hooks on the teacher."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..distributed import sum_differentiable, world_size
from ..models.features import find_batchnorms


class BNStatistics:
    """Records, for each BN layer, ||mean - running_mean||_2 + ||var - running_var||_2 of its input.

    The variance is the biased batch variance over every dimension but the channel one. With
    `momentum` m > 0 (Fast-Datafree), the compared statistics are m * (those of the previous
    step, detached) + (1 - m) * the batch's; `reset()` forgets the previous step.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0) -> None:
        self.layers = find_batchnorms(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running "
                             "statistics; BN-statistics losses need one")
        self._losses: list[torch.Tensor | None] = [None] * len(self.layers)
        self.enabled = True
        self.momentum = momentum
        self._previous: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, i: int):
        def hook(m: _BatchNorm, inp, _out):
            if not self.enabled:
                return
            mean, var = (global_mean_var(inp[0]) if world_size() > 1
                         else batch_mean_var(inp[0]))
            prev = self._previous[i]
            if self.momentum > 0:
                if prev is not None:
                    mean = self.momentum * prev[0] + (1 - self.momentum) * mean
                    var = self.momentum * prev[1] + (1 - self.momentum) * var
                self._previous[i] = (mean.detach(), var.detach())
            self._losses[i] = (torch.linalg.vector_norm(mean - m.running_mean)
                               + torch.linalg.vector_norm(var - m.running_var))
        return hook

    def reset(self) -> None:
        """Forget the statistics carried by the momentum."""
        self._previous = [None] * len(self.layers)

    def loss(self) -> torch.Tensor:
        """Sum over layers of the distances recorded by the last forward pass."""
        recorded = [v for v in self._losses if v is not None]
        if not recorded:
            raise RuntimeError("no forward pass recorded since the last call")
        self._losses = [None] * len(self.layers)
        return torch.stack(recorded).sum()

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()


def batch_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over every dimension but the channel one."""
    dims = [0, *range(2, x.dim())]
    x = x.float()
    mean = x.mean(dims, keepdim=True)  # two passes: faster than var_mean on NCHW, as stable
    var = (x - mean).pow(2).mean(dims)
    return mean.flatten(), var


def global_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_mean_var` over the union of every rank's batch; gradients reach every rank."""
    dims = [0, *range(2, x.dim())]
    x = x.float()
    count = torch.full((1,), x.numel() / x.shape[1], device=x.device)
    totals = sum_differentiable(torch.cat([x.sum(dims), x.pow(2).sum(dims), count]))
    c = x.shape[1]
    mean = totals[:c] / totals[-1]
    return mean, (totals[c:2 * c] / totals[-1] - mean.pow(2)).clamp_min(0)


def bn_statistics_distance(x: torch.Tensor, running_mean: torch.Tensor,
                           running_var: torch.Tensor) -> torch.Tensor:
    """||batch mean - running mean||_2 + ||batch var - running var||_2 for one layer input."""
    mean, var = batch_mean_var(x)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)
