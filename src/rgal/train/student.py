"""The student phase: KD + pooled-feature L2 (cd) + relation loss on pool batches."""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import Augment
from ..losses import kd_loss, relation_loss
from ..models.features import FeatureExtractor, pool_map
from ..synthesis.pool import ImagePool


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
    """One student update: pair-sampled pool batch -> two views -> weighted sum of losses."""

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor, augment: Augment,
                 optimizer: torch.optim.Optimizer, projector: FeatureProjector | None,
                 stage_pairs: tuple[list[int], list[int]], *, batch_size: int, tau: float,
                 w_cd: float, w_stri: float, sampler: str = "distance", margin: float = 0.2,
                 pair_sampling: bool = True) -> None:
        self.teacher, self.student, self.augment = teacher, student, augment
        self.optimizer, self.projector = optimizer, projector
        self.s_stages, self.t_stages = stage_pairs
        self.batch_size, self.tau = batch_size, tau
        self.w_cd, self.w_stri = w_cd, w_stri
        self.sampler, self.margin, self.pair_sampling = sampler, margin, pair_sampling

    def batch(self, pool: ImagePool) -> torch.Tensor:
        """Augmented views of a pool batch: B images twice (pair sampling) or 2B once."""
        if self.pair_sampling:
            x, _ = pool.sample(self.batch_size)
            x = torch.cat([x, x])
        else:
            x, _ = pool.sample(2 * self.batch_size)
        return self.augment(x)

    def step(self, pool: ImagePool) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss terms."""
        v = self.batch(pool)
        self.student.model.train()
        with torch.no_grad():
            t = self.teacher(v)
        s = self.student(v)
        terms = {"loss_kd": kd_loss(s.logits, t.logits, self.tau)}
        if self.w_cd > 0 and self.projector is not None and self.s_stages:
            proj = self.projector([s.stages[i] for i in self.s_stages])
            terms["loss_cd"] = sum(nn.functional.mse_loss(p, pool_map(t.stages[j]))
                                   for p, j in zip(proj, self.t_stages, strict=True))
        if self.w_stri > 0:
            terms["loss_rel_stu"] = relation_loss(s.feature, t.logits.argmax(1), s.logits,
                                                  sampler=self.sampler, margin=self.margin)
        loss = (terms["loss_kd"] + self.w_cd * terms.get("loss_cd", 0.0)
                + self.w_stri * terms.get("loss_rel_stu", 0.0))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        terms["loss_student"] = loss
        return {k: val.detach() for k, val in terms.items()}
