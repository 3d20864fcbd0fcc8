"""The student step: a batch from the method's image source, augmented views, the method's
weighted student terms, one optimiser step."""

from __future__ import annotations

from typing import Protocol

import torch

from ..amp import Precision
from ..config import ConfigError
from ..data.augment import Augment, mix_images, mix_partners
from ..data.datasets import ImageTensors
from ..engine.evaluate import batched_outputs
from ..engine.inversion import gradient_shares, weighted_sum
from ..methods.base import Method
from ..models.features import FeatureExtractor


class ImageSource(Protocol):
    """Anything the student step draws batches from: the pool, a generator, real data."""

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class RealImages:
    """A real training set held on the training device, sampled without replacement per batch;
    with `subset` > 0, only that many of its images, drawn at random with `seed`."""

    def __init__(self, data: ImageTensors, device: torch.device, subset: int = 0,
                 seed: int = 0) -> None:
        images, labels = data.images, data.labels
        if subset:
            self.check_subset(subset, len(labels))
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            images, labels = images[keep[:subset]], labels[keep[:subset]]
        self.images = images.to(device)
        self.labels = labels.to(device)

    @staticmethod
    def check_subset(subset: int, available: int) -> None:
        """ConfigError if a `subset` of `available` training images cannot be drawn."""
        if subset > available:
            raise ConfigError(f"real_subset {subset} is larger than the training set "
                              f"({available} images)")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` random images as floats in [0, 1], with their true labels."""
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.images.device)
        return self.images[idx].float().div_(255), self.labels[idx]


class StudentPhase:
    """One student update: a (pair-sampled) batch -> augmented views -> the method's terms.

    With pair sampling, B source images are each taken twice (two augmentations, 2B views);
    without it, 2B distinct images are taken once. With `mix` (mixup, cutmix) the source
    images are mixed in random pairs first, so both views of a pair show the same mixture.
    With `crop_scale` > 0 each view is a random resized crop instead of a padded one;
    `padding` (not None) replaces the augmentation's padding of the crop.
    """

    def __init__(self, method: Method, teacher: FeatureExtractor, student: FeatureExtractor,
                 augment: Augment, optimizer: torch.optim.Optimizer, *, batch_size: int,
                 precision: Precision | None = None, clip: float = 0.0,
                 measure_every: int = 0, mix: str = "none", mix_alpha: float = 1.0,
                 crop_scale: float = 0.0, padding: int | None = None,
                 mix_partner: str = "random") -> None:
        self.method, self.teacher, self.student = method, teacher, student
        self.measure_every, self.count = measure_every, 0
        self.augment, self.optimizer = augment, optimizer
        self.batch_size, self.clip = batch_size, clip
        self.mix, self.mix_alpha, self.crop_scale = mix, mix_alpha, crop_scale
        self.padding, self.mix_partner = padding, mix_partner
        self.confusion: torch.Tensor | None = None  # set by refresh_confusion
        self.precision = precision or Precision("fp32")
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def batch(self, source: ImageSource) -> tuple[torch.Tensor, torch.Tensor]:
        """Views and labels: B images twice (pair sampling), 2B images once, or B once."""
        pairs = self.method.pair_sampling
        x, y = source.sample(self.batch_size if pairs else 2 * self.batch_size)
        partner = (mix_partners(y, self.mix_partner, self.confusion)
                   if self.mix != "none" and self.mix_partner != "random" else None)
        x = mix_images(x, self.mix, self.mix_alpha, partner)
        if pairs and pairs != "single":
            x, y = torch.cat([x, x]), torch.cat([y, y])
        return self.augment(x, augment=self.method.augment_student,
                            crop_scale=self.crop_scale, padding=self.padding), y

    @torch.no_grad()
    def refresh_confusion(self, images: torch.Tensor, labels: torch.Tensor,
                          num_classes: int, newest: int = 2048) -> None:
        """For `mix_partner` confused: from the teacher's probabilities on the `newest` uint8
        images (un-augmented), each class's mean probability of every other class, normalised
        per row (uniform over the other classes for a class with none)."""
        if self.mix_partner != "confused" or not len(labels):
            return
        probs = batched_outputs(self.teacher.model,
                                ImageTensors(images[-newest:], labels[-newest:]),
                                self.augment.normalize, 512,
                                head=lambda logits: logits.float().softmax(1))
        off_diagonal = 1 - torch.eye(num_classes, device=probs.device)
        sums = torch.zeros(num_classes, num_classes, device=probs.device)
        sums.index_add_(0, labels[-newest:].to(probs.device), probs[:, :num_classes])
        sums *= off_diagonal
        empty = sums.sum(1) <= 0
        sums[empty] = off_diagonal[empty]
        self.confusion = sums / sums.sum(1, keepdim=True)

    def step(self, source: ImageSource) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss terms."""
        v, y = self.batch(source)
        self.student.model.train()
        with self.precision.autocast():
            t = None
            if self.method.needs_teacher:
                with torch.no_grad():
                    t = self.teacher(v)
            s = self.student(v)
            terms = self.method.student_terms(v, y, t, s)
            loss = weighted_sum(terms, self.method.student_weights())
        shares = {}
        if self.measure_every > 0 and self.count % self.measure_every == 0:
            shares = gradient_shares(terms, self.method.student_weights(), self.params)
        self.count += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.step(loss, self.optimizer, self.params, self.clip)
        terms["loss_student"] = loss
        return {k: val.detach() for k, val in {**terms, **shares}.items()}
