"""The student phase: KD (or L1 / CE) + pooled-feature L2 (cd) + relation loss (+ AT) on a batch."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..amp import Precision
from ..data.augment import Augment
from ..data.datasets import ImageTensors
from ..losses import kd_loss, relation_loss
from ..losses.priors import attention_transfer
from ..models.features import FeatureExtractor, pool_map

OBJECTIVES = ("kd", "l1", "ce")


class ImageSource(Protocol):
    """Anything the student phase draws batches from: the pool, a generator, real data."""

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class RealImages:
    """A real training set held on the training device, sampled without replacement per batch."""

    def __init__(self, data: ImageTensors, device: torch.device) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` random images as floats in [0, 1], with their true labels."""
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.images.device)
        return self.images[idx].float().div_(255), self.labels[idx]


class FeatureProjector(nn.Module):
    """Learnable 1x1 convs mapping pooled student stage maps to the teacher's widths."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(cs, ct, 1) for cs, ct in
                                  zip(student_channels, teacher_channels, strict=True))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p(pool_map(m)[:, :, None, None]).flatten(1) for p, m in zip(self.proj, maps, strict=True)]


def paired_stages(n_student: int, n_teacher: int, start: int) -> tuple[list[int], list[int]]:
    """Stage indices matched for the cd loss: the last min(n_s, n_t) stages, from pair `start` on."""
    n = min(n_student, n_teacher)
    pairs = [(n_student - n + i, n_teacher - n + i) for i in range(start, n)]
    return [s for s, _ in pairs], [t for _, t in pairs]


class StudentPhase:
    """One student update: a (pair-sampled) batch -> augmented views -> weighted sum of losses.

    The main term is KD (KL * tau^2), the L1 logit gap (`l1`, DFAD) or cross entropy on the
    source's labels (`ce`, training from real labels); then w_cd * pooled-feature L2,
    w_stri * relation loss and w_at * attention transfer (ZSKT).
    """

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor, augment: Augment,
                 optimizer: torch.optim.Optimizer, projector: FeatureProjector | None,
                 stage_pairs: tuple[list[int], list[int]], *, batch_size: int, tau: float,
                 w_cd: float, w_stri: float, sampler: str = "distance", margin: float = 0.2,
                 pair_sampling: bool = True, objective: str = "kd", w_at: float = 0.0,
                 at_pairs: tuple[list[int], list[int]] = ([], []),
                 precision: Precision | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"student objective must be one of {OBJECTIVES}, got {objective!r}")
        self.teacher, self.student, self.augment = teacher, student, augment
        self.optimizer, self.projector = optimizer, projector
        self.s_stages, self.t_stages = stage_pairs
        self.batch_size, self.tau = batch_size, tau
        self.w_cd, self.w_stri, self.w_at = w_cd, w_stri, w_at
        self.objective, self.at_pairs = objective, at_pairs
        self.sampler, self.margin, self.pair_sampling = sampler, margin, pair_sampling
        self.precision = precision or Precision("fp32")
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.needs_teacher = objective != "ce" or w_cd > 0 or w_stri > 0 or w_at > 0

    def batch(self, source: ImageSource) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented views and labels: B images twice (pair sampling) or 2B once."""
        if self.pair_sampling:
            x, y = source.sample(self.batch_size)
            x, y = torch.cat([x, x]), torch.cat([y, y])
        else:
            x, y = source.sample(2 * self.batch_size)
        return self.augment(x), y

    def step(self, source: ImageSource) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss terms."""
        v, y = self.batch(source)
        self.student.model.train()
        with self.precision.autocast():
            terms, loss = self._losses(v, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.step(loss, self.optimizer, self.params)
        terms["loss_student"] = loss
        return {k: val.detach() for k, val in terms.items()}

    def _losses(self, v: torch.Tensor, y: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        t = None
        if self.needs_teacher:
            with torch.no_grad():
                t = self.teacher(v)
        s = self.student(v)
        if self.objective == "ce":
            terms = {"loss_ce": nn.functional.cross_entropy(s.logits, y)}
        elif self.objective == "l1":
            terms = {"loss_l1": (s.logits.float() - t.logits.float()).abs().mean()}
        else:
            terms = {"loss_kd": kd_loss(s.logits, t.logits, self.tau)}
        main = next(iter(terms.values()))
        if self.w_at > 0 and self.at_pairs[0]:
            terms["loss_at"] = attention_transfer([s.stages[i] for i in self.at_pairs[0]],
                                                  [t.stages[j] for j in self.at_pairs[1]])
        if self.w_cd > 0 and self.projector is not None and self.s_stages:
            proj = self.projector([s.stages[i] for i in self.s_stages])
            terms["loss_cd"] = sum(nn.functional.mse_loss(p, pool_map(t.stages[j]))
                                   for p, j in zip(proj, self.t_stages, strict=True))
        if self.w_stri > 0:
            terms["loss_rel_stu"] = relation_loss(s.feature, t.logits.argmax(1), s.logits,
                                                  sampler=self.sampler, margin=self.margin)
        loss = (main.float() + self.w_cd * terms.get("loss_cd", 0.0)
                + self.w_stri * terms.get("loss_rel_stu", 0.0)
                + self.w_at * terms.get("loss_at", 0.0))
        return terms, loss
