"""RGAL's relation (triplet) loss and its negative samplers.

For every ordered positive pair (a, p) (same label, a != p) one negative n (other label)
is sampled from weights computed on a *sampling* embedding (L2-normalised logits), and the
loss on the L2-normalised *loss* embedding is mean(max(0, |e_a - e_p| - |e_a - e_n| + m)).
With `inverse=True` the roles of p and n are swapped (RGAL's synthesis direction: push
same-label samples apart, pull the chosen other-label sample close).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ..models.features import pool_map

Sampler = Literal["focal", "distance", "random"]
SAMPLERS: tuple[str, ...] = ("focal", "distance", "random")

FOCAL_BAND = (0.5, 1.0)
DISTANCE_CLAMP = 0.5
DISTANCE_CUTOFF = 1.4


def log_inverse_density(dist: torch.Tensor, dim: int) -> torch.Tensor:
    """log q(d)^-1 for distances between points uniform on the unit (dim-1)-sphere (Wu et al.)."""
    dist = dist.clamp(1e-6, 2.0 - 1e-6)
    log_q = (dim - 2.0) * torch.log(dist) + ((dim - 3.0) / 2.0) * torch.log1p(-dist.pow(2) / 4.0)
    return -log_q


def negative_probabilities(sampling_embedding: torch.Tensor, labels: torch.Tensor,
                           sampler: Sampler,
                           band: tuple[float, float] = FOCAL_BAND) -> torch.Tensor:
    """Row-stochastic (N, N) matrix: probability that column n is the negative for anchor row a.

    The focal sampler takes negatives whose distance lies inside `band` (open interval).

    Weights are normalised in log space over the eligible negatives only; a row without an
    eligible negative falls back to uniform over all negatives; a row without any negative
    is all zeros.
    """
    e = F.normalize(sampling_embedding.detach().float(), dim=1)
    negatives = labels[:, None] != labels[None, :]
    if sampler == "random":
        logw = torch.zeros(e.shape[0], e.shape[0], device=e.device)
        eligible = negatives
    else:
        dist = torch.cdist(e, e).clamp(max=2.0)
        dim = e.shape[1]
        if sampler == "distance":
            logw = log_inverse_density(dist.clamp(min=DISTANCE_CLAMP), dim)
            eligible = negatives & (dist < DISTANCE_CUTOFF)
        elif sampler == "focal":
            logw = log_inverse_density(dist, dim)
            lo, hi = band
            eligible = negatives & (dist > lo) & (dist < hi)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    has_eligible = eligible.any(1, keepdim=True)
    mask = torch.where(has_eligible, eligible, negatives)
    logw = torch.where(has_eligible, logw, torch.zeros_like(logw))
    probs = torch.softmax(logw.masked_fill(~mask, -math.inf), dim=1)
    return torch.nan_to_num(probs, nan=0.0)


def sample_triplets(sampling_embedding: torch.Tensor, labels: torch.Tensor, sampler: Sampler,
                    generator: torch.Generator | None = None,
                    band: tuple[float, float] = FOCAL_BAND
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Indices (a, p, n) of one triplet per ordered positive pair, or None if none exist."""
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    same &= ~torch.eye(n, dtype=torch.bool, device=labels.device)
    pairs = same.nonzero()
    if pairs.numel() == 0:
        return None
    probs = negative_probabilities(sampling_embedding, labels, sampler, band)
    anchors = pairs[:, 0]
    valid = probs.sum(1)[anchors] > 0
    if not bool(valid.any()):
        return None
    anchors, positives = anchors[valid], pairs[valid, 1]
    # inverse-CDF sampling from each anchor's row (one cumsum per anchor, not per pair)
    cdf = probs.cumsum(1)[anchors]
    u = torch.rand(anchors.shape[0], 1, device=cdf.device, generator=generator) * cdf[:, -1:]
    negatives = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=n - 1)
    return anchors, positives, negatives


def unit_distances(e: torch.Tensor) -> torch.Tensor:
    """(N, N) Euclidean distances between rows of an L2-normalised matrix (safe gradient at 0)."""
    return (2.0 - 2.0 * (e @ e.T)).clamp(min=1e-12).sqrt()


def relation_loss(embeddings: torch.Tensor | list[torch.Tensor], labels: torch.Tensor,
                  sampling_embedding: torch.Tensor, sampler: Sampler = "distance",
                  margin: float = 0.2, inverse: bool = False,
                  generator: torch.Generator | None = None,
                  band: tuple[float, float] = FOCAL_BAND) -> torch.Tensor:
    """Triplet relation loss summed over the given embeddings (maps are pooled first).

    One set of triplets, sampled once, is shared by every embedding layer. Returns a zero
    scalar on the embeddings' device when the batch has no positive pair or no negative.
    """
    layers = embeddings if isinstance(embeddings, (list, tuple)) else [embeddings]
    device = layers[0].device
    triplets = sample_triplets(sampling_embedding, labels, sampler, generator, band)
    if triplets is None:
        return torch.zeros((), device=device)
    a, p, n = triplets
    total = torch.zeros((), device=device)
    for emb in layers:
        dist = unit_distances(F.normalize(pool_map(emb).float(), dim=1))
        d_ap, d_an = dist[a, p], dist[a, n]
        if inverse:
            d_ap, d_an = d_an, d_ap
        total = total + F.relu(d_ap - d_an + margin).mean()
    return total
