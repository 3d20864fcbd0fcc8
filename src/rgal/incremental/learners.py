"""Class-incremental methods: each is a small class whose step returns its named losses.

Every step sees a real batch of the current task only (the joint upper bound excepted);
replay methods add an equal batch of images inverted from the previous model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import kd_loss
from ..methods.rgal import RelationTerms
from ..models.features import FeatureExtractor, freeze


@dataclass
class TaskContext:
    """What a learner knows about the task it is learning: class range and frozen past."""

    task: int
    first: int  # first class of this task (= classes of earlier tasks)
    seen: int  # classes seen once this task is learned
    old: FeatureExtractor | None = None  # frozen model after the previous task
    replay: Any = None  # PoolReplay or GeneratorReplay of the old classes, if any


def class_balance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights summing to 1 with every present class carrying the same total."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    w = 1.0 / counts[labels]
    return w / w.sum()


class Learner(nn.Module):
    """Base: the model being trained, its feature access, and the per-task context.

    `losses` returns the step's named terms already scaled by their weights (`w_<term>`).
    """

    name = "base"
    uses_replay = False  # needs images inverted from the previous model
    uses_past_data = False  # trains on real images of past tasks (joint upper bound only)

    def __init__(self, model: nn.Module, **hp: Any) -> None:
        super().__init__()
        self.model = model
        self.extractor = FeatureExtractor(model)
        self.hp = hp
        self.ctx: TaskContext | None = None

    @property
    def head(self) -> nn.Module:
        return self.model.get_submodule(self.extractor.classifier_name)

    def begin_task(self, ctx: TaskContext) -> None:
        """Start learning a task."""
        self.ctx = ctx

    def losses(self, x: torch.Tensor, y: torch.Tensor, xs: torch.Tensor | None,
               ys: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Named loss terms of one step on augmented real (x, y) and replay (xs, ys) images."""
        return {"loss_ce": F.cross_entropy(self.model(x)[:, :self.ctx.seen], y)}


class Finetune(Learner):
    """Cross entropy over every seen class on the new task's data only (lower bound)."""

    name = "finetune"


class Joint(Learner):
    """Cross entropy on every real image seen so far (upper bound)."""

    name = "joint"
    uses_past_data = True


class LwF(Learner):
    """Learning without Forgetting: CE on new data plus logit distillation of the old classes."""

    name = "lwf"

    def losses(self, x, y, xs, ys):
        ctx = self.ctx
        logits = self.model(x)
        out = {"loss_ce": F.cross_entropy(logits[:, :ctx.seen], y)}
        if ctx.old is not None:
            with torch.no_grad():
                old = ctx.old.model(x)[:, :ctx.first]
            out["loss_kd"] = self.hp["w_kd"] * kd_loss(logits[:, :ctx.first], old,
                                                       self.hp["tau"])
        return out


class DeepInversionReplay(Learner):
    """Inverted images of the old classes replayed with their pseudo labels, plus logit KD."""

    name = "deepinv-replay"
    uses_replay = True

    def losses(self, x, y, xs, ys):
        ctx = self.ctx
        if xs is None:
            return super().losses(x, y, xs, ys)
        xa, ya = torch.cat([x, xs]), torch.cat([y, ys])
        logits = self.model(xa)
        with torch.no_grad():
            old = ctx.old.model(xa)[:, :ctx.first]
        return {"loss_ce": F.cross_entropy(logits[:, :ctx.seen], ya),
                "loss_kd": self.hp["w_kd"] * kd_loss(logits[:, :ctx.first], old, self.hp["tau"])}


class ABD(Learner):
    """Always Be Dreaming: local CE on new classes, balanced head-only CE, feature distillation.

    - CE on the real batch over the new classes' logits only;
    - CE of the classifier head alone (features detached) over every seen class, on real
      and synthetic images, with class-balance weights;
    - importance-weighted feature distillation: current and old features both go through
      the frozen old head, and their old-class logits are matched (MSE).
    """

    name = "abd"
    uses_replay = True

    def begin_task(self, ctx: TaskContext) -> None:
        super().begin_task(ctx)
        self.old_head = None
        if ctx.old is not None:
            self.old_head = freeze(copy.deepcopy(
                ctx.old.model.get_submodule(ctx.old.classifier_name)))

    def losses(self, x, y, xs, ys):
        ctx = self.ctx
        if xs is None:
            return super().losses(x, y, xs, ys)
        xa, ya = torch.cat([x, xs]), torch.cat([y, ys])
        f = self.extractor(xa)
        n = x.shape[0]
        out = {"loss_ce_new": F.cross_entropy(f.logits[:n, ctx.first:ctx.seen], y - ctx.first)}
        head = self.head(f.feature.detach())[:, :ctx.seen]
        w = class_balance_weights(ya, ctx.seen)
        out["loss_ce_head"] = (F.cross_entropy(head, ya, reduction="none") * w).sum()
        with torch.no_grad():
            old_feature = ctx.old(xa).feature
            target = self.old_head(old_feature)[:, :ctx.first]
        pred = self.old_head(f.feature)[:, :ctx.first]
        out["loss_fkd"] = self.hp["w_fkd"] * (pred - target).pow(2).sum(1).mean() / ctx.first
        self._last = (f, ya)
        return out


class ABDRGAL(ABD):
    """ABD plus RGAL's student-phase relation loss on the penultimate feature."""

    name = "abd+rgal"

    def __init__(self, model: nn.Module, **hp: Any) -> None:
        super().__init__(model, **hp)
        self.relations = RelationTerms(stu_sampler=hp.get("stu_sampler", "distance"),
                                       margin=hp.get("margin", 0.2))

    def losses(self, x, y, xs, ys):
        out = super().losses(x, y, xs, ys)
        if xs is not None and self.hp["w_rel_stu"] > 0:
            f, ya = self._last
            out["loss_rel_stu"] = self.hp["w_rel_stu"] * self.relations.student(
                f, ya, f.logits[:, :self.ctx.seen])
        return out


LEARNERS: dict[str, type[Learner]] = {c.name: c for c in
                                      (Finetune, LwF, DeepInversionReplay, ABD, ABDRGAL, Joint)}
METHODS: tuple[str, ...] = tuple(LEARNERS)  # same order as config.METHODS


def create_learner(method: str, model: nn.Module, **hp) -> Learner:
    """A learner by method name."""
    if method not in LEARNERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return LEARNERS[method](model, **hp)
