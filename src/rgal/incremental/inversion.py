"""ABD's model inversion: a generator trained to produce images a frozen model recognises.

L_G = w_ce CE(f(x), argmax f(x)) + w_div (1 - H(mean softmax) / log K) + w_bn L_bn
      + w_smooth L_smooth [+ w_tri L_rel], over the K classes the model has seen.
The optional relation term is RGAL's synthesis loss in its inverse ("paper") direction:
same-label samples are pushed apart and a focal-sampled other-label sample pulled close.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import Augment
from ..losses import BNStatistics, relation_loss
from ..models.features import FeatureExtractor, freeze
from ..models.generator import Generator


def class_balance_loss(logits: torch.Tensor) -> torch.Tensor:
    """1 - H(mean softmax) / log K: zero when the batch covers the K classes evenly."""
    k = logits.shape[1]
    if k < 2:
        return torch.zeros((), device=logits.device)
    p = F.softmax(logits.float(), dim=1).mean(0)
    return 1.0 + (p * p.clamp_min(1e-12).log()).sum() / math.log(k)


def smoothness_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (an L2 total variation)."""
    return ((x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean()
            + (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean())


class ModelInversion(nn.Module):
    """Trains a generator against a frozen model and samples labelled replay images from it."""

    def __init__(self, model: nn.Module, generator: Generator, augment: Augment, seen: int, *,
                 steps: int, batch_size: int, lr: float = 1e-3, w_ce: float = 1.0,
                 w_div: float = 1.0, w_bn: float = 1.0, w_smooth: float = 1.0,
                 w_tri: float = 0.0, sampler: str = "focal", margin: float = 0.2,
                 inverse: bool = True, progress: bool = False) -> None:
        super().__init__()
        self.model = freeze(model)
        self.extractor = FeatureExtractor(model)
        self.generator, self.augment, self.seen = generator, augment, seen
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.w_ce, self.w_div, self.w_bn, self.w_smooth = w_ce, w_div, w_bn, w_smooth
        self.w_tri, self.sampler, self.margin, self.inverse = w_tri, sampler, margin, inverse
        self.progress = progress

    def train(self, mode: bool = True) -> ModelInversion:
        super().train(mode)
        self.model.eval()  # the inverted model stays frozen whatever train() says
        return self

    def fit(self) -> dict[str, float]:
        """Train the generator for `steps` steps (fresh latents each step); mean losses."""
        device = next(self.generator.parameters()).device
        self.generator.reinit()
        self.generator.train()
        self.model.eval()
        bn = BNStatistics(self.model) if self.w_bn > 0 else None
        opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        sums: dict[str, float] = {}
        try:
            for _ in tqdm(range(self.steps), desc="inversion", leave=False,
                          disable=not self.progress):
                z = torch.randn(self.batch_size, self.generator.nz, device=device)
                x = self.generator(z)
                f = self.extractor(self.augment(x))
                logits = f.logits[:, :self.seen]
                terms = {"inv_ce": F.cross_entropy(logits, logits.argmax(1)),
                         "inv_div": class_balance_loss(logits),
                         "inv_smooth": smoothness_loss(x)}
                if bn is not None:
                    terms["inv_bn"] = bn.loss()
                if self.w_tri > 0:
                    emb = f.stages[-1] if f.stages else f.feature
                    terms["inv_rel"] = relation_loss(emb, logits.argmax(1), logits,
                                                     sampler=self.sampler, margin=self.margin,
                                                     inverse=self.inverse)
                loss = (self.w_ce * terms["inv_ce"] + self.w_div * terms["inv_div"]
                        + self.w_smooth * terms["inv_smooth"]
                        + self.w_bn * terms.get("inv_bn", 0.0)
                        + self.w_tri * terms.get("inv_rel", 0.0))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
        finally:
            if bn is not None:
                bn.remove()
        return {k: v / self.steps for k, v in sums.items()}

    @torch.no_grad()
    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch of `n` generated images in [0, 1] and the frozen model's labels."""
        device = next(self.generator.parameters()).device
        self.generator.train()  # batch statistics, as during fitting
        x = self.generator(torch.randn(n, self.generator.nz, device=device))
        return x, self.model(self.augment.normalize(x))[:, :self.seen].argmax(1)

    @torch.no_grad()
    def sample(self, n: int, oversample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` generated images in [0, 1] labelled by the frozen model's prediction.

        `oversample * n` candidates are drawn and as equal a number per predicted class as
        they allow is kept, so that a class the generator rarely produces is not lost.
        """
        total = max(n, oversample * n)
        batches = [self.draw(min(256, total - i)) for i in range(0, total, 256)]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        keep = balanced_indices(y, n, self.seen)
        return x[keep], y[keep]


class PoolReplay:
    """Replay from a fixed set of uint8 images: `n` drawn uniformly with replacement."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.labels), (n,), generator=generator)
        return (self.images[idx.to(self.images.device)].float().div_(255),
                self.labels[idx.to(self.labels.device)])


class GeneratorReplay:
    """Replay drawn fresh from the inverted generator at every step (ABD's replay)."""

    def __init__(self, inversion: ModelInversion) -> None:
        self.inversion = inversion

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        del generator  # latents come from torch's seeded global generator
        return self.inversion.draw(n)


def balanced_indices(labels: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """`min(n, len)` indices, as equal a count per class as available (round-robin)."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    # rank of every sample within its class; take rank 0 of each class, then rank 1, ...
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels), device=labels.device) - starts[labels[order]]
    pick = torch.argsort(rank * num_classes + labels, stable=True)[:n]
    return pick
