"""ZSKT (Micaelli & Storkey, NeurIPS 2019): adversarial belief matching, attention transfer,
as the authors' code runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import option
from ..losses import kd_loss
from ..losses.priors import attention_transfer
from ..models.features import Features, paired_stages
from .base import MethodContext, OnlineMethod, Terms
from .online import OnlineSettings
from .registry import register_method


@dataclass
class ZSKTSettings:
    """ZSKT's attention transfer and the reduction of its KL divergences."""

    section: ClassVar[str] = "zskt"
    w_at: float = option(250.0, "weight of the attention-transfer loss (loss_at)", lo=0)
    kd_reduction: str = option("mean", "KL averaged over every logit (mean, as ZSKT's code) or "
                                       "per sample (batchmean)", choices=("mean", "batchmean"))


@register_method("zskt")
class ZSKT(OnlineMethod):
    """The generator maximises KL(T || S); the student minimises it plus attention transfer.

    One pseudo-batch of latents serves one generator step and the next `student_steps_per_g`
    (10) student steps, through the updated generator; the student stays in train mode in the
    generator step; student Adam 2e-3, both gradients clipped to norm 5; BN output layer, no
    augmentation; KL averaged over every logit, so attention transfer (x250) weighs as in the
    code.
    """

    sections = (OnlineSettings, ZSKTSettings)
    defaults = {"w_bn": 0.0, "w_oh": 0.0, "w_adv": 1.0, "tau": 1.0, "lr": 2e-3, "lr_g": 1e-3,
                "student_optimizer": "adam", "weight_decay": 0.0, "clip_grad": 5.0,
                "student_steps_per_g": 10, "student_batch": "after", "adv_student_mode": "train",
                "g_beta1": 0.9, "g_clip": 5.0, "generator_output": "bn", "generator_bias": True,
                "generator_init": "pytorch", "mix": "none"}
    search = ({}, {"lr_g": 3e-4}, {"lr_g": 3e-3}, {"lr": 1e-3}, {"lr": 5e-3}, {"w_at": 50.0})
    summary = "Micaelli & Storkey, NeurIPS 2019"
    images = "a persistent generator; one pseudo-batch per generator step and 10 student steps"
    generator_doc = "maximise KL(T‖S)"
    student_doc = "KL + attention transfer"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.at_pairs = paired_stages(len(ctx.student_channels), len(ctx.teacher_channels), 0)

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        return {"loss_adv": -kd_loss(s.logits, t.logits, 1.0, self.cfg.zskt.kd_reduction)}

    def generator_weights(self) -> dict[str, float]:
        return {"loss_adv": self.cfg.w_adv}

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        terms = {"loss_kd": kd_loss(s.logits, t.logits, self.cfg.tau, self.cfg.zskt.kd_reduction)}
        if self.cfg.zskt.w_at > 0 and self.at_pairs[0]:
            terms["loss_at"] = attention_transfer([s.stages[i] for i in self.at_pairs[0]],
                                                  [t.stages[j] for j in self.at_pairs[1]])
        return terms

    def student_weights(self) -> dict[str, float]:
        return {**super().student_weights(), "loss_at": self.cfg.zskt.w_at}
