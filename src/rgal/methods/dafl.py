"""DAFL (Chen et al., ICCV 2019): a generator trained against the teacher alone, as the
authors' MNIST recipe runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import option
from ..losses.priors import activation_loss, class_balance_loss
from ..models.features import Features
from .base import OnlineMethod, Terms
from .online import OnlineSettings
from .registry import register_method


@dataclass
class DAFLSettings:
    """DAFL's activation and information-entropy terms."""

    section: ClassVar[str] = "dafl"
    w_act: float = option(0.1, "weight of the activation loss (loss_act)", lo=0)
    w_ie: float = option(5.0, "weight of the information-entropy loss (loss_ie; log10, as "
                              "DAFL's code)", lo=0)


@register_method("dafl")
class DAFL(OnlineMethod):
    """w_oh CE(T, argmax T) + w_act (-|f_T|) + w_ie (log10 K - H10(mean p_T)); teacher only.

    One generator step and one student step per iteration on the same images (the student
    learns from the generator step's images, detached), tanh + BN output, no augmentation,
    the student trained with Adam (the authors' MNIST recipe).
    """

    sections = (OnlineSettings, DAFLSettings)
    defaults = {"w_bn": 0.0, "w_adv": 0.0, "w_oh": 1.0, "tau": 1.0, "lr_g": 0.2, "lr": 2e-3,
                "student_optimizer": "adam", "weight_decay": 0.0, "student_steps_per_g": 1,
                "student_batch": "same", "g_beta1": 0.9, "generator_output": "tanh_bn",
                "generator_bias": True, "generator_bn_eps": 0.8, "generator_init": "pytorch",
                "mix": "none"}
    search = ({}, {"lr_g": 0.02}, {"lr_g": 2e-3}, {"lr": 1e-3}, {"lr": 5e-3}, {"w_ie": 20.0})
    summary = "Chen et al., ICCV 2019"
    images = "a persistent generator; the student learns from each generator step's images"
    generator_doc = "one-hot + activation + information entropy (teacher only)"

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        terms: Terms = {}
        if self.bn_stats:
            terms["loss_bn"] = self.bn_stats.loss()
        if self.cfg.w_oh > 0:
            terms["loss_oh"] = F.cross_entropy(t.logits, t.logits.argmax(1))
        if self.cfg.dafl.w_act > 0:
            terms["loss_act"] = activation_loss(t.feature)
        if self.cfg.dafl.w_ie > 0:
            terms["loss_ie"] = class_balance_loss(t.logits) / math.log(10.0)
        return terms

    def generator_weights(self) -> dict[str, float]:
        cfg = self.cfg
        return {"loss_bn": cfg.w_bn, "loss_oh": cfg.w_oh, "loss_act": cfg.dafl.w_act,
                "loss_ie": cfg.dafl.w_ie}
