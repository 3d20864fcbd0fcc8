"""DFAD (Fang et al., 2019): the generator maximises the student-teacher L1 logit gap, as the
authors' MNIST recipe runs it."""

from __future__ import annotations

import torch

from ..models.features import Features
from .base import OnlineMethod, Terms
from .online import OnlineSettings
from .registry import register_method


@register_method("dfad")
class DFAD(OnlineMethod):
    """Generator: maximise mean |T - S| over logits; student: minimise it (5 student steps per
    generator step, each on fresh images). tanh + BN output, no augmentation, the student in
    train mode in the generator step, student SGD 0.01 (the MNIST recipe)."""

    sections = (OnlineSettings,)
    defaults = {"w_bn": 0.0, "w_oh": 0.0, "w_adv": 1.0, "lr": 0.01, "lr_g": 1e-3,
                "student_steps_per_g": 5, "adv_student_mode": "train", "g_beta1": 0.9,
                "generator_output": "tanh_bn", "generator_bias": True,
                "generator_init": "pytorch", "mix": "none"}
    search = ({}, {"lr_g": 3e-4}, {"lr_g": 3e-3}, {"lr": 0.03}, {"lr": 3e-3},
              {"student_steps_per_g": 1})
    summary = "Fang et al., arXiv 2019"
    images = "a persistent generator, fresh images every student step"
    generator_doc = "maximise the L1 logit gap"
    student_doc = "L1 logit gap"

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        return {"loss_adv": -(s.logits.float() - t.logits.float()).abs().mean()}

    def generator_weights(self) -> dict[str, float]:
        return {"loss_adv": self.cfg.w_adv}

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        return {"loss_l1": (s.logits.float() - t.logits.float()).abs().mean()}

    def student_weights(self) -> dict[str, float]:
        return {"loss_l1": 1.0}
