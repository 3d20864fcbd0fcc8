"""ABD's model inversion on the inversion engine: a generator trained to produce images a
frozen model recognises, then sampled as replay.

L_G = w_oh CE(f(x), argmax f(x)) + w_balance (1 - H(mean softmax) / log K) + w_tv TV(x)
      + w_bn L_bn [+ w_rel_syn L_rel], over the K classes the model has seen.
The optional relation term is RGAL's synthesis loss (`RelationTerms`): in the inverse
("paper") direction same-label samples are pushed apart and a focal-sampled other-label sample
pulled close.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import Augment
from ..engine import InversionEngine
from ..losses import BNStatistics
from ..losses.priors import class_balance_loss, total_variation
from ..methods.rgal import RelationTerms
from ..models.features import FeatureExtractor, Features, freeze
from ..models.generator import Generator


class ModelInversion(nn.Module):
    """Trains a generator against a frozen model and samples labelled replay images from it."""

    def __init__(self, model: nn.Module, generator: Generator, augment: Augment, seen: int, *,
                 steps: int, batch_size: int, lr: float = 1e-3, w_oh: float = 1.0,
                 w_balance: float = 1.0, w_bn: float = 1.0, w_tv: float = 1.0,
                 w_rel_syn: float = 0.0, relations: RelationTerms | None = None,
                 progress: bool = False) -> None:
        super().__init__()
        self.model = freeze(model)
        self.extractor = FeatureExtractor(model)
        self.generator, self.augment, self.seen = generator, augment, seen
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.weights = {"loss_oh": w_oh, "loss_balance": w_balance, "loss_tv": w_tv,
                        "loss_bn": w_bn, "loss_rel_syn": w_rel_syn}
        self.relations = relations or RelationTerms()
        self.progress = progress
        self._bn: BNStatistics | None = None

    def train(self, mode: bool = True) -> ModelInversion:
        super().train(mode)
        self.model.eval()  # the inverted model stays frozen whatever train() says
        return self

    def _terms(self, x: torch.Tensor, v: torch.Tensor, y: None, f: Features,
               s: None) -> dict[str, torch.Tensor]:
        w = self.weights
        logits = f.logits[:, :self.seen]
        terms = {"loss_oh": F.cross_entropy(logits, logits.argmax(1)),
                 "loss_balance": class_balance_loss(logits, normalized=True),
                 "loss_tv": total_variation(x)}
        if self._bn is not None:
            terms["loss_bn"] = self._bn.loss()
        if w["loss_rel_syn"] > 0:
            terms["loss_rel_syn"] = self.relations.synthesis(f, logits.argmax(1), logits)
        return terms

    def fit(self) -> dict[str, float]:
        """Train the generator for `steps` steps (fresh latents each step); mean losses."""
        device = next(self.generator.parameters()).device
        self.generator.reinit()
        self.generator.train()
        self.model.eval()
        self._bn = BNStatistics(self.model) if self.weights["loss_bn"] > 0 else None
        opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        engine = InversionEngine(self.extractor, view=self.augment, bn=self._bn,
                                 progress=self.progress, name="inversion")
        nz = self.generator.nz
        try:
            result = engine.phase(
                self.steps,
                lambda: (self.generator(torch.randn(self.batch_size, nz, device=device)), None),
                self._terms, self.weights, opt, keep_best=False)
        finally:
            if self._bn is not None:
                self._bn.remove()
            self._bn = None
        return result.losses

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
