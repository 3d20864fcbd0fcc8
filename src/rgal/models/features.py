"""Uniform access to logits, pooled penultimate feature and per-stage maps of any model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class Features:
    """What one forward pass exposes: logits (N, K), feature (N, D), stage maps."""

    logits: torch.Tensor
    feature: torch.Tensor
    stages: list[torch.Tensor] = field(default_factory=list)


def find_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer (1d/2d/3d/Sync) of `model` that tracks running statistics."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]


def default_classifier_name(model: nn.Module) -> str:
    """The declared `classifier_name`, else the last nn.Linear in registration order."""
    name = getattr(model, "classifier_name", None)
    if name:
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head; pass classifier_name")
    return linears[-1]


def pool_map(x: torch.Tensor) -> torch.Tensor:
    """Global-average-pool a (N, C, ...) map to (N, C); leave (N, C) as is."""
    return x.flatten(2).mean(2) if x.dim() > 2 else x


class FeatureExtractor(nn.Module):
    """Wraps a classifier and returns `Features` through forward hooks.

    Zoo models declare `stage_names` and `classifier_name`; for any other module the
    penultimate feature is the input of its last nn.Linear and stages are optional.
    """

    def __init__(self, model: nn.Module, stage_names: tuple[str, ...] | None = None,
                 classifier_name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.stage_names = tuple(stage_names if stage_names is not None
                                 else getattr(model, "stage_names", ()))
        self.classifier_name = classifier_name or default_classifier_name(model)
        self._active = False
        self._stages: list[torch.Tensor | None] = [None] * len(self.stage_names)
        self._feature: torch.Tensor | None = None
        self._handles = []
        for i, name in enumerate(self.stage_names):
            self._handles.append(model.get_submodule(name).register_forward_hook(
                self._stage_hook(i)))
        self._handles.append(model.get_submodule(self.classifier_name).register_forward_pre_hook(
            self._feature_hook))

    def _stage_hook(self, i: int):
        def hook(_m, _inp, out):
            if self._active:
                self._stages[i] = out
        return hook

    def _feature_hook(self, _m, inp):
        if self._active:
            self._feature = inp[0].flatten(1)

    def forward(self, x: torch.Tensor) -> Features:
        self._active = True
        try:
            logits = self.model(x)
        finally:
            self._active = False
        feats = Features(logits, self._feature, list(self._stages))
        self._feature, self._stages = None, [None] * len(self.stage_names)
        return feats

    def remove(self) -> None:
        """Detach the hooks from the wrapped model."""
        for h in self._handles:
            h.remove()
        self._handles = []


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: for a model that is only read."""
    model.eval()
    model.requires_grad_(False)
    return model


def num_stage_channels(model: nn.Module, extractor: FeatureExtractor, in_shape: tuple[int, ...],
                       device: torch.device | None = None) -> tuple[list[int], int]:
    """Channel counts of each stage map and the feature width, from one dummy forward."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        f = extractor(torch.zeros(2, *in_shape, device=device))
    model.train(was_training)
    return [s.shape[1] for s in f.stages], f.feature.shape[1]


def paired_stages(n_student: int, n_teacher: int, start: int = 0) -> tuple[list[int], list[int]]:
    """Stage indices matched between two models: the last min(n_s, n_t) stages, from pair
    `start` on (student indices, teacher indices)."""
    n = min(n_student, n_teacher)
    pairs = [(n_student - n + i, n_teacher - n + i) for i in range(start, n)]
    return [s for s, _ in pairs], [t for _, t in pairs]
