"""ZSKT (Micaelli & Storkey, NeurIPS 2019): adversarial belief matching, attention transfer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import option
from ..losses import per_sample_kl
from ..losses.priors import attention_transfer
from ..models.features import Features, paired_stages
from .base import MethodContext, OnlineMethod, Terms
from .online import OnlineSettings
from .registry import register_method


@dataclass
class ZSKTSettings:
    """ZSKT's attention transfer."""

    section: ClassVar[str] = "zskt"
    w_at: float = option(250.0, "weight of the attention-transfer loss (loss_at)", lo=0)


@register_method("zskt")
class ZSKT(OnlineMethod):
    """The generator maximises KL(T || S); the student minimises it plus attention transfer."""

    sections = (OnlineSettings, ZSKTSettings)
    defaults = {"w_bn": 0.0, "w_oh": 0.0, "w_adv": 1.0, "tau": 1.0, "student_steps_per_g": 10}
    summary = "Micaelli & Storkey, NeurIPS 2019"
    images = "a persistent generator, fresh images every student step"
    generator_doc = "maximise KL(T‖S)"
    student_doc = "KL + attention transfer"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.at_pairs = paired_stages(len(ctx.student_channels), len(ctx.teacher_channels), 0)

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        return {"loss_adv": -per_sample_kl(s.logits, t.logits).mean()}

    def generator_weights(self) -> dict[str, float]:
        return {"loss_adv": self.cfg.w_adv}

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        terms = super().student_terms(v, y, t, s)
        if self.cfg.zskt.w_at > 0 and self.at_pairs[0]:
            terms["loss_at"] = attention_transfer([s.stages[i] for i in self.at_pairs[0]],
                                                  [t.stages[j] for j in self.at_pairs[1]])
        return terms

    def student_weights(self) -> dict[str, float]:
        return {**super().student_weights(), "loss_at": self.cfg.zskt.w_at}
