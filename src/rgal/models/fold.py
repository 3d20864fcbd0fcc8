"""BatchNorm folded into the convolution before it, for a frozen network.

A frozen (eval-mode) BatchNorm is a per-channel affine map z -> s z + (b - s m), with
s = w / sqrt(v + eps); when it directly consumes a convolution's output it can be folded into
that convolution (weights scaled by s, bias shifted), which removes its forward and backward
passes. The BN-statistics loss still needs the batch mean and variance of the BatchNorm's
input z; they follow exactly from the folded output y = s z + (b - s m):
mean(z) = (mean(y) - b) / s + m and var(z) = var(y) / s^2.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

MIN_SCALE = 1e-3  # a BatchNorm that nearly zeroes a channel is left unfolded


@dataclass
class FoldedBN:
    """A BatchNorm folded into `conv`: its running statistics and the affine map it applied."""

    conv: nn.Conv2d
    name: str  # the BatchNorm's name in the model
    running_mean: torch.Tensor
    running_var: torch.Tensor
    scale: torch.Tensor  # s = w / sqrt(v + eps)
    bias: torch.Tensor  # b (the BatchNorm's shift)
    original: tuple | None = field(default=None, repr=False)  # to undo the fold

    def input_stats(self, mean_y: torch.Tensor, var_y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the BatchNorm's input from those of the folded output."""
        return (mean_y - self.bias) / self.scale + self.running_mean, var_y / self.scale ** 2


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) where the BatchNorm's input is the conv's output tensor."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # tensors kept alive: ids stay unique
    pairs: list[tuple[str, str]] = []
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(
                lambda mod, _i, out: outputs.__setitem__(id(out), (names[mod], out))))
        elif isinstance(m, _BatchNorm) and m.track_running_stats and m.affine:
            def pre(mod, inp):
                source = outputs.get(id(inp[0]))
                if source is not None and source[1] is inp[0]:
                    pairs.append((source[0], names[mod]))
            handles.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return pairs


def fold_batchnorms(model: nn.Module, example: torch.Tensor, atol: float = 1e-4
                    ) -> tuple[nn.Module, list[FoldedBN]]:
    """A frozen copy of `model` with every BatchNorm that follows a convolution folded into it.

    Each fold is checked against the original on `example` (logits within `atol` relative to
    their scale) and kept only if it changes nothing (a convolution whose output is also read
    elsewhere, e.g. by a residual connection, keeps its BatchNorm).
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(example)
    model.train(was_training)
    tol = atol * (float(ref.abs().max()) or 1.0)
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    for m in folded.modules():  # a folded conv's output is read by the BN statistics:
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):  # keep it intact
            m.inplace = False
    folds: list[FoldedBN] = []
    for conv_name, bn_name in _conv_bn_pairs(model, example):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        if not isinstance(conv, nn.Conv2d) or bn.running_var is None:
            continue
        fold = _fold(folded, conv, bn, bn_name)
        if fold is None:
            continue
        with torch.no_grad():
            ok = torch.allclose(folded(example), ref, atol=tol, rtol=0)
        if ok:
            folds.append(fold)
        else:
            _unfold(folded, conv, bn, bn_name, fold)
    if folds and not _outputs_stay_readable(folded, folds, example):
        return copy.deepcopy(model).eval().requires_grad_(False), []
    return folded, folds


def _fold(model: nn.Module, conv: nn.Conv2d, bn: _BatchNorm, bn_name: str) -> FoldedBN | None:
    """Fold `bn` into `conv` in place (the BatchNorm becomes an identity)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        if float(scale.abs().min()) < MIN_SCALE:
            return None
        fold = FoldedBN(conv, bn_name, bn.running_mean.clone(), bn.running_var.clone(),
                        scale.clone(), bn.bias.detach().clone())
        fold.original = (conv.weight.detach().clone(),
                         None if conv.bias is None else conv.bias.detach().clone(), bn)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        conv.weight.mul_(scale.view(shape))
        base = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        new_bias = (base - bn.running_mean) * scale + bn.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        else:
            conv.bias.copy_(new_bias)
    _replace(model, bn_name, nn.Identity())
    return fold


def _unfold(model: nn.Module, conv: nn.Conv2d, bn: _BatchNorm, bn_name: str,
            fold: FoldedBN) -> None:
    """Undo `_fold`."""
    weight, bias, original = fold.original
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is None:
            conv.bias = None
        else:
            conv.bias.copy_(bias)
    _replace(model, bn_name, original)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _outputs_stay_readable(model: nn.Module, folds: list[FoldedBN], example: torch.Tensor
                           ) -> bool:
    """Whether the folded convolutions' outputs survive until the backward pass (nothing
    overwrites them in place), which the BN-statistics loss needs."""
    saved: list[torch.Tensor] = []
    handles = [f.conv.register_forward_hook(lambda _m, _i, out: saved.append(out))
               for f in folds]
    x = example.detach().clone().requires_grad_(True)
    try:
        out = model(x)
        loss = out.float().sum() + sum((s.float() ** 2).sum() for s in saved)
        loss.backward()
        return True
    except RuntimeError:
        return False
    finally:
        for h in handles:
            h.remove()
