"""Inversion synthesis: a generator (or the pixels themselves) and its latents are optimised
against the frozen teacher for a few steps; the lowest-loss batch joins the pool.

RGAL, DeepInversion, CMI and Fast-Datafree are this loop with different loss terms and a
different choice of what is optimised and what persists between phases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision, optimizer_options
from ..data.augment import Augment
from ..losses import BNStatistics, FiniteWatch, adversarial_loss, relation_loss
from ..losses.priors import total_variation
from ..models.features import FeatureExtractor, Features
from .base import SynthesisResult, Synthesizer, frozen_student


class InversionSynthesizer(Synthesizer):
    """One phase = `g_steps` Adam steps on the generator and its latents.

    L_G = w_bn L_bn + w_oh CE(T(v), y) + w_adv L_adv + w_tri L_rel + w_tv TV(x) (+ the terms a
    subclass adds); the batch with the lowest L_G over the steps is returned. In the `paper`
    direction the relation loss is inverted (same-label samples pushed apart, the sampled
    other-label sample pulled close); in the `code` direction it is the ordinary triplet loss.
    """

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor,
                 generator: nn.Module, augment: Augment, num_classes: int, *,
                 batch_size: int, g_steps: int, lr_g: float = 1e-3, lr_z: float = 0.0,
                 w_bn: float = 1.0, w_oh: float = 1.0, w_adv: float = 1.0, w_tri: float = 0.1,
                 w_tv: float = 0.0, bn_momentum: float = 0.0, direction: str = "paper",
                 sampler: str = "focal", margin: float = 0.2,
                 relation_feature: str = "last_stage", reset_generator: bool = True,
                 precision: str = "fp32", optimizer_impl: str = "default",
                 progress: bool = False) -> None:
        super().__init__(teacher, student)
        if direction not in ("paper", "code"):
            raise ValueError(f"relation direction must be 'paper' or 'code', got {direction!r}")
        self.generator = generator
        self.augment = augment
        self.num_classes = num_classes
        self.batch_size, self.g_steps = batch_size, g_steps
        self.lr_g, self.lr_z = lr_g, lr_z or lr_g
        self.weights = {"loss_oh": w_oh, "loss_bn": w_bn, "loss_adv": w_adv,
                        "loss_rel_syn": w_tri, "loss_tv": w_tv}
        self.direction, self.sampler, self.margin = direction, sampler, margin
        self.relation_feature = relation_feature
        self.reset_generator = reset_generator
        self.progress = progress
        self.precision = Precision(precision, next(generator.parameters()).device)
        self.opt_options = optimizer_options(optimizer_impl)
        self.bn_stats = BNStatistics(teacher.model, bn_momentum) if w_bn > 0 else None
        if self.bn_stats:
            self.bn_stats.enabled = False  # only while synthesizing, not in evaluations

    # -- what subclasses vary ---------------------------------------------------------------
    def phase_generator(self) -> nn.Module:
        """The module optimised in this phase (re-initialised if asked)."""
        if self.reset_generator:
            self.generator.reinit()
        return self.generator

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        """Adam over the generator and the latents, betas (0.5, 0.999)."""
        return torch.optim.Adam([{"params": generator.parameters(), "lr": self.lr_g},
                                 {"params": [z], "lr": self.lr_z}], betas=(0.5, 0.999),
                                **self.opt_options)

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        """Parameters every rank must keep identical (their gradients are averaged)."""
        return list(generator.parameters())

    def extra_terms(self, x: torch.Tensor, v: torch.Tensor, t: Features,
                    s: Features) -> dict[str, torch.Tensor]:
        """Loss terms a method adds (keys must be in `self.weights`)."""
        return {}

    def end_phase(self, generator: nn.Module, best: torch.Tensor, teacher_labels: torch.Tensor
                  ) -> None:
        """Called with the kept batch once the phase is over."""

    # -- the shared loop ----------------------------------------------------------------------
    def _relation_embedding(self, feats: Features) -> torch.Tensor:
        if self.relation_feature == "last_stage" and feats.stages:
            return feats.stages[-1]
        return feats.feature

    def terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
              s: Features) -> dict[str, torch.Tensor]:
        """Every active loss term of one step, unweighted."""
        w = self.weights
        terms = {"loss_oh": F.cross_entropy(t.logits, y)}
        if self.bn_stats:
            terms["loss_bn"] = self.bn_stats.loss()
        if w["loss_adv"] > 0:
            terms["loss_adv"] = adversarial_loss(s.logits, t.logits)
        if w["loss_rel_syn"] > 0:
            terms["loss_rel_syn"] = relation_loss(
                self._relation_embedding(s), t.logits.argmax(1), t.logits, sampler=self.sampler,
                margin=self.margin, inverse=self.direction == "paper")
        if w["loss_tv"] > 0:
            terms["loss_tv"] = total_variation(x)
        terms.update(self.extra_terms(x, v, t, s))
        return terms

    def synthesize(self) -> SynthesisResult:
        generator = self.phase_generator()
        device = next(generator.parameters()).device
        generator.train()
        nz = getattr(generator, "nz", 1)
        z = torch.randn(self.batch_size, nz, device=device, requires_grad=True)
        y = torch.randint(0, self.num_classes, (self.batch_size,), device=device).sort().values
        opt = self.optimizer(generator, z)
        shared = self.shared_parameters(generator)
        best_cost = torch.full((), float("inf"), device=device)
        best_x: torch.Tensor | None = None
        best_t = torch.zeros(self.batch_size, dtype=torch.long, device=device)
        sums: dict[str, torch.Tensor] = {}
        watch = FiniteWatch("synthesis")
        if self.bn_stats:
            self.bn_stats.enabled = True
            self.bn_stats.reset()
        with frozen_student(self.student.model):
            for step in tqdm(range(self.g_steps), desc="synthesis", leave=False,
                             disable=not self.progress):
                with self.precision.autocast():
                    x = generator(z)
                    v = self.augment(x)
                    t = self.teacher(v)
                    s = self.student(v)
                    terms = self.terms(x, v, y, t, s)
                    loss = sum(self.weights[k] * val.float() for k, val in terms.items()
                               if self.weights.get(k, 0) > 0)
                with torch.no_grad():
                    if best_x is None:
                        best_x = x.detach().float().clone()
                    better = loss < best_cost
                    best_cost = torch.where(better, loss, best_cost)
                    best_x = torch.where(better, x.detach().float(), best_x)
                    best_t = torch.where(better, t.logits.argmax(1), best_t)
                    terms["loss_syn"] = loss
                    watch.update(step, terms)
                    for k, val in terms.items():
                        sums[k] = sums.get(k, 0.0) + val.detach()
                opt.zero_grad(set_to_none=True)
                self.precision.step(loss, opt, shared)
        if self.bn_stats:
            self.bn_stats.enabled = False
        watch.check()
        self.end_phase(generator, best_x, best_t)
        losses = {k: float(v) / self.g_steps for k, v in sums.items()}
        return SynthesisResult(best_x, y, losses)


class RGALSynthesizer(InversionSynthesizer):
    """RGAL's synthesis: the CMI generator with BN, one-hot, adversarial and relation losses."""
