"""DFQ (Choi et al., CVPR-W 2020): adversarial generator with BN statistics and class balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import option
from ..losses import per_sample_kl
from ..losses.priors import class_balance_loss
from ..models.features import Features
from .base import OnlineMethod, Terms
from .online import OnlineSettings
from .registry import register_method


@dataclass
class DFQSettings:
    """DFQ's class-balance term."""

    section: ClassVar[str] = "dfq"
    w_balance: float = option(20.0, "weight of the generator's class-balance loss "
                                    "(loss_balance)", lo=0)


@register_method("dfq")
class DFQ(OnlineMethod):
    """w_bn L_bn + w_oh CE(T, argmax T) + w_adv (-KL(T || S)) + w_balance (log K - H).

    As the DataFree (CMI) code runs it: a wide generator (4*ngf first map), 10 student steps
    per generator step, student images sampled with the generator's BN in eval mode, no
    augmentation.
    """

    sections = (OnlineSettings, DFQSettings)
    defaults = {"w_bn": 1.0, "w_oh": 1.0, "w_adv": 1.0, "tau": 1.0, "student_steps_per_g": 10,
                "lr_g": 1e-3, "generator_wide": True, "sample_mode": "eval",
                "generator_init": "pytorch", "mix": "none"}
    search = ({}, {"lr_g": 3e-4}, {"lr_g": 3e-3}, {"w_bn": 0.3}, {"w_bn": 3.0}, {"w_balance": 5.0})
    summary = "Choi et al., CVPR-W 2020"
    images = "a persistent generator, fresh images every student step"
    generator_doc = "BN + one-hot + adversarial + class balance"

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        terms: Terms = {}
        if self.bn_stats:
            terms["loss_bn"] = self.bn_stats.loss()
        if self.cfg.w_oh > 0:
            terms["loss_oh"] = F.cross_entropy(t.logits, t.logits.argmax(1))
        if self.cfg.dfq.w_balance > 0:
            terms["loss_balance"] = class_balance_loss(t.logits)
        if self.cfg.w_adv > 0:
            terms["loss_adv"] = -per_sample_kl(s.logits, t.logits).mean()
        return terms

    def generator_weights(self) -> dict[str, float]:
        cfg = self.cfg
        return {"loss_bn": cfg.w_bn, "loss_oh": cfg.w_oh, "loss_balance": cfg.dfq.w_balance,
                "loss_adv": cfg.w_adv}
