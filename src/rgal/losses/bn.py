"""DeepInversion's BatchNorm-statistics loss, through forward hooks on the teacher."""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import sum_differentiable, world_size
from ..models.features import find_batchnorms
from ..models.fold import FoldedBN


class BNStatistics:
    """Records, for each BN layer, ||mean - running_mean||_2 + ||var - running_var||_2 of its input.

    The variance is the biased batch variance over every dimension but the channel one. With
    `momentum` m > 0 (Fast-Datafree, NAYER), each layer also keeps an exponential moving
    average of the statistics of earlier batches, and the compared statistics are
    (1 - m) * this batch's + m * the average (a constant) once an average exists;
    `update_momentum()` folds the statistics of the last recorded batch into the average
    (Fast-Datafree calls it once per epoch, after the inner steps). The average is never reset
    by a new phase; `reset()` forgets it. `first_weight` multiplies the distance of the first
    layer a forward pass reaches (DeepInversion's `first_bn_multiplier`), whatever the order
    in which the layers were registered.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0,
                 folds: list[FoldedBN] | None = None, first_weight: float = 1.0) -> None:
        folds = list(folds or [])
        self.layers: list[nn.Module] = [*find_batchnorms(model), *(f.conv for f in folds)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running "
                             "statistics; BN-statistics losses need one")
        self._losses: list[torch.Tensor | None] = [None] * len(self.layers)
        self.enabled = True
        self.momentum = momentum
        self.first_weight = first_weight
        self._first: int | None = None  # the layer the current forward pass reached first
        self._last: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        self._ema: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        plain = len(self.layers) - len(folds)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in
                         enumerate(self.layers[:plain])]
        self._handles += [f.conv.register_forward_hook(self._hook(plain + j, f))
                          for j, f in enumerate(folds)]

    def _hook(self, i: int, fold: FoldedBN | None = None):
        """A BatchNorm's input statistics: from its input, or (folded into the convolution
        before it) from the convolution's output, mapped back exactly."""
        def hook(m: nn.Module, inp, out):
            if not self.enabled:
                return
            if self._first is None:
                self._first = i
            x = inp[0] if fold is None else out
            mean, var = global_mean_var(x) if world_size() > 1 else batch_mean_var(x)
            if fold is not None:
                mean, var = fold.input_stats(mean, var)
                m = fold
            if self.momentum > 0:
                self._last[i] = (mean.detach(), var.detach())
                ema = self._ema[i]
                if ema is not None:
                    mean = (1 - self.momentum) * mean + self.momentum * ema[0]
                    var = (1 - self.momentum) * var + self.momentum * ema[1]
            self._losses[i] = (torch.linalg.vector_norm(mean - m.running_mean)
                               + torch.linalg.vector_norm(var - m.running_var))
        return hook

    @torch.no_grad()
    def update_momentum(self) -> None:
        """Fold the last recorded batch's statistics into each layer's moving average."""
        for i, last in enumerate(self._last):
            if last is None:
                continue
            ema = self._ema[i]
            if ema is None:
                self._ema[i] = (last[0].clone(), last[1].clone())
            else:
                m = self.momentum
                self._ema[i] = (m * ema[0] + (1 - m) * last[0], m * ema[1] + (1 - m) * last[1])

    def reset(self) -> None:
        """Forget the moving averages."""
        self._ema = [None] * len(self.layers)
        self._last = [None] * len(self.layers)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The moving averages (for checkpoints)."""
        out = {}
        for i, ema in enumerate(self._ema):
            if ema is not None:
                out[f"{i}.mean"], out[f"{i}.var"] = ema
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""
        self._ema = [None] * len(self.layers)
        for i in range(len(self.layers)):
            if f"{i}.mean" in state:
                self._ema[i] = (state[f"{i}.mean"], state[f"{i}.var"])

    def loss(self) -> torch.Tensor:
        """Sum over layers of the distances recorded by the last forward pass."""
        losses, first = self._losses, self._first
        if first is None or losses[first] is None:
            raise RuntimeError("no forward pass recorded since the last call")
        if self.first_weight != 1.0:
            losses = list(losses)
            losses[first] = self.first_weight * losses[first]
        self._losses, self._first = [None] * len(self.layers), None
        return torch.stack([v for v in losses if v is not None]).sum()

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()


class _BatchMeanVar(torch.autograd.Function):
    """Per-channel mean and biased variance, with a one-pass backward.

    Two passes forward (mean, then the mean of squared deviations: faster on CPUs than
    var_mean and as stable). d mean / dx = 1/n and d var / dx = 2 (x - mean) / n, so the input
    gradient is one fused multiply-add over the saved deviations.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        var = centred.square().mean(dims)
        ctx.save_for_backward(centred)
        return mean.flatten(), var

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor, g_var: torch.Tensor) -> torch.Tensor:
        (centred,) = ctx.saved_tensors
        n = centred.numel() // centred.shape[1]
        shape = (1, -1) + (1,) * (centred.dim() - 2)
        zeros = centred.new_zeros(centred.shape[1])
        g_mean = zeros if g_mean is None else g_mean
        g_var = zeros if g_var is None else g_var
        return torch.addcmul((g_mean / n).view(shape), centred, (2.0 * g_var / n).view(shape))


def batch_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over every dimension but the channel one."""
    return _BatchMeanVar.apply(x.float())


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
