"""Image and prediction priors of the baseline methods: TV, activation, entropy, attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (an L2 smoothness prior)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean()
    return dh + dw


def activation_loss(feature: torch.Tensor) -> torch.Tensor:
    """-mean |f|: DAFL rewards images that strongly activate the teacher's features."""
    return -feature.abs().mean()


def mean_prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch-averaged class distribution (high when classes are balanced)."""
    p = F.softmax(logits.float(), dim=1).mean(0)
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


def class_balance_loss(logits: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """How far the batch-averaged prediction is from uniform over the K classes.

    log K - H(mean prediction) in nats (DAFL, DFQ), or with `normalized` 1 - H / log K, which
    lies in [0, 1] whatever K (ABD). Zero for a perfectly balanced batch.
    """
    k = logits.shape[1]
    if normalized:
        if k < 2:
            return torch.zeros((), device=logits.device)
        return 1.0 - mean_prediction_entropy(logits) / math.log(k)
    return torch.log(torch.tensor(float(k), device=logits.device)) - mean_prediction_entropy(logits)


def attention_map(fmap: torch.Tensor) -> torch.Tensor:
    """L2-normalised spatial attention: channel mean of squared activations, flattened."""
    return F.normalize(fmap.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student_maps: list[torch.Tensor],
                       teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over paired stages of the mean squared distance of attention maps (Zagoruyko & Komodakis).

    A student map of another spatial size is resized to the teacher's first.
    """
    total = torch.zeros((), device=teacher_maps[0].device)
    for s, t in zip(student_maps, teacher_maps, strict=True):
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total
