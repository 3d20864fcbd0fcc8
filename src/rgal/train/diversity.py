"""Diversity of a synthetic set, measured in the teacher's penultimate feature space.

RGAL claims its synthesis raises intra-class diversity and inter-class confusion; these
numbers make the claim checkable per epoch. Classes are the teacher's predictions; features
are L2-normalised, so distances lie in [0, 2].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import Normalize


def diversity_measures(features: torch.Tensor, labels: torch.Tensor,
                       logits: torch.Tensor) -> dict[str, float]:
    """Mean intra-class pairwise distance, mean distance to the nearest other-class sample,
    and the mean entropy and top-1/top-2 probability margin of the predictions."""
    e = F.normalize(features.float(), dim=1)
    dist = torch.cdist(e, e)
    same = labels[:, None] == labels[None, :]
    off_diag = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pairs = same & off_diag
    intra = float(dist[pairs].mean()) if pairs.any() else float("nan")
    other = dist.masked_fill(same, float("inf")).min(1).values
    finite = torch.isfinite(other)
    nearest = float(other[finite].mean()) if finite.any() else float("nan")
    p = F.softmax(logits.float(), dim=1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
    top2 = p.topk(min(2, p.shape[1]), dim=1).values
    margin = (top2[:, 0] - top2[:, -1]).mean()
    return {"div_intra": intra, "div_nearest_other": nearest, "div_entropy": float(entropy),
            "div_margin": float(margin)}


@torch.no_grad()
def teacher_diversity(teacher: nn.Module, extractor, images: torch.Tensor,
                      normalize: Normalize, batch_size: int = 1000) -> dict[str, float]:
    """`diversity_measures` of images in [0, 1] under the (frozen, eval-mode) teacher."""
    feats, logits = [], []
    was_training = teacher.training
    teacher.eval()
    for i in range(0, images.shape[0], batch_size):
        f = extractor(normalize(images[i:i + batch_size]))
        feats.append(f.feature)
        logits.append(f.logits)
    teacher.train(was_training)
    logits_all = torch.cat(logits)
    return diversity_measures(torch.cat(feats), logits_all.argmax(1), logits_all)
