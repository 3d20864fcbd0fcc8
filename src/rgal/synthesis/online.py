"""Adversarial/online methods: a persistent generator, sampled afresh for every student step.

DAFL, ZSKT, DFAD and DFQ differ only in the generator's objective (the student's objective is
set in the student phase). The generator takes one Adam step every `student_steps_per_g`
student steps; images are never stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..amp import Precision, optimizer_options
from ..data.augment import Augment
from ..losses import BNStatistics, per_sample_kl
from ..losses.priors import activation_loss, class_balance_loss
from ..models.features import FeatureExtractor
from .base import Synthesizer, frozen_student

OBJECTIVES = ("dafl", "zskt", "dfad", "dfq")


class OnlineSynthesizer(Synthesizer):
    """A generator trained step by step against the teacher (and, adversarially, the student).

    - dafl: w_oh CE(T, argmax T) + w_act (-|f_T|) + w_ie (log K - H(mean p_T)); teacher only.
    - zskt: maximise KL(T || S) (w_adv).
    - dfad: maximise mean |T - S| over logits (w_adv).
    - dfq:  w_bn L_bn + w_oh CE(T, argmax T) + w_adv (-KL(T || S)) + w_balance (log K - H).
    """

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor,
                 generator: nn.Module, augment: Augment, *, objective: str, batch_size: int,
                 lr_g: float, w_bn: float = 0.0, w_oh: float = 0.0, w_adv: float = 0.0,
                 w_act: float = 0.0, w_ie: float = 0.0, w_balance: float = 0.0,
                 precision: str = "fp32", optimizer_impl: str = "default") -> None:
        super().__init__(teacher, student)
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown online objective {objective!r}")
        self.objective = objective
        self.generator, self.augment = generator, augment
        self.batch_size = batch_size
        self.weights = {"loss_bn": w_bn, "loss_oh": w_oh, "loss_adv": w_adv, "loss_act": w_act,
                        "loss_ie": w_ie, "loss_balance": w_balance}
        self.bn_stats = BNStatistics(teacher.model) if w_bn > 0 else None
        if self.bn_stats:
            self.bn_stats.enabled = False
        self.opt = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999),
                                    **optimizer_options(optimizer_impl))
        self.precision = Precision(precision, next(generator.parameters()).device)

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        return torch.randn(n, self.generator.nz, device=device, generator=generator)

    def generator_step(self) -> dict[str, torch.Tensor]:
        """One Adam step of the generator; returns its detached loss terms."""
        self.generator.train()
        with self.precision.autocast():
            x = self.generator(self._z(self.batch_size))
            terms = self._terms(self.augment(x, augment=False))
        loss = sum(self.weights[k] * val.float() for k, val in terms.items())
        self.opt.zero_grad(set_to_none=True)
        self.precision.step(loss, self.opt, self.generator.parameters())
        terms["loss_syn"] = loss
        return {k: val.detach() for k, val in terms.items()}

    def _terms(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's loss terms on the views `v`, unweighted."""
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if self.bn_stats:
            self.bn_stats.enabled = True
        try:
            t = self.teacher(v)
            if self.bn_stats:
                terms["loss_bn"] = self.bn_stats.loss()
        finally:
            if self.bn_stats:
                self.bn_stats.enabled = False
        if w["loss_oh"] > 0:
            terms["loss_oh"] = F.cross_entropy(t.logits, t.logits.argmax(1))
        if w["loss_act"] > 0:
            terms["loss_act"] = activation_loss(t.feature)
        if w["loss_ie"] > 0:
            terms["loss_ie"] = class_balance_loss(t.logits)
        if w["loss_balance"] > 0:
            terms["loss_balance"] = class_balance_loss(t.logits)
        if w["loss_adv"] > 0:
            with frozen_student(self.student.model):
                s = self.student(v)
            if self.objective == "dfad":
                terms["loss_adv"] = -(s.logits.float() - t.logits.float()).abs().mean()
            else:
                terms["loss_adv"] = -per_sample_kl(s.logits, t.logits).mean()
        return terms

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` fresh images in [0, 1]; their labels are unknown (-1): the student phase reads
        the teacher's own outputs, so no extra teacher pass is spent here."""
        self.generator.train()
        x = self.generator(self._z(n, generator))
        return x, torch.full((n,), -1, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def teacher_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's predicted classes of images in [0, 1] (for pictures)."""
        return self.teacher(self.augment(x, augment=False)).logits.argmax(1)

    def run_state(self) -> dict:
        return {**super().run_state(), "generator_optimizer": self.opt.state_dict()}

    def load_run_state(self, state: dict) -> None:
        state = dict(state)
        self.opt.load_state_dict(state.pop("generator_optimizer"))
        super().load_run_state(state)
