"""RGAL's synthesis phase: generator inversion with BN, one-hot, adversarial and relation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.augment import Augment
from ..losses import BNStatistics, FiniteWatch, adversarial_loss, relation_loss
from ..models.features import FeatureExtractor
from ..models.generator import Generator
from .base import SynthesisResult, Synthesizer, frozen_student


class RGALSynthesizer(Synthesizer):
    """One phase = `g_steps` Adam steps on a (re-initialised) generator and its latents.

    L_G = w_bn L_bn + w_oh CE(T(v), y) + w_adv L_adv + w_tri L_rel; the batch with the
    lowest L_G over the steps is returned. In the `paper` direction the relation loss is
    inverted (same-label samples pushed apart, the sampled other-label sample pulled close);
    in the `code` direction it is the ordinary triplet loss.
    """

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor,
                 generator: Generator, augment: Augment, num_classes: int, *,
                 batch_size: int, g_steps: int, lr_g: float = 1e-3, w_bn: float = 1.0,
                 w_oh: float = 1.0, w_adv: float = 1.0, w_tri: float = 0.1,
                 direction: str = "paper", sampler: str = "focal", margin: float = 0.2,
                 relation_feature: str = "last_stage", reset_generator: bool = True,
                 progress: bool = False) -> None:
        super().__init__(teacher, student)
        if direction not in ("paper", "code"):
            raise ValueError(f"relation direction must be 'paper' or 'code', got {direction!r}")
        self.generator = generator
        self.augment = augment
        self.num_classes = num_classes
        self.batch_size, self.g_steps, self.lr_g = batch_size, g_steps, lr_g
        self.w_bn, self.w_oh, self.w_adv, self.w_tri = w_bn, w_oh, w_adv, w_tri
        self.direction, self.sampler, self.margin = direction, sampler, margin
        self.relation_feature = relation_feature
        self.reset_generator = reset_generator
        self.progress = progress
        self.bn_stats = BNStatistics(teacher.model) if w_bn > 0 else None

    def _relation_embedding(self, feats) -> torch.Tensor:
        if self.relation_feature == "last_stage" and feats.stages:
            return feats.stages[-1]
        return feats.feature

    def synthesize(self) -> SynthesisResult:
        device = next(self.generator.parameters()).device
        if self.reset_generator:
            self.generator.reinit()
        self.generator.train()
        z = torch.randn(self.batch_size, self.generator.nz, device=device, requires_grad=True)
        y = torch.randint(0, self.num_classes, (self.batch_size,), device=device).sort().values
        opt = torch.optim.Adam([{"params": self.generator.parameters()}, {"params": [z]}],
                               lr=self.lr_g, betas=(0.5, 0.999))
        best_cost = torch.full((), float("inf"), device=device)
        best_x = torch.zeros(self.batch_size, self.generator.channels, self.generator.img_size,
                             self.generator.img_size, device=device)
        sums: dict[str, torch.Tensor] = {}
        watch = FiniteWatch("synthesis")
        if self.bn_stats:
            self.bn_stats.enabled = True
        with frozen_student(self.student.model):
            for step in tqdm(range(self.g_steps), desc="synthesis", leave=False,
                          disable=not self.progress):
                x = self.generator(z)
                v = self.augment(x)
                t = self.teacher(v)
                s = self.student(v)
                terms = {"loss_oh": F.cross_entropy(t.logits, y)}
                if self.bn_stats:
                    terms["loss_bn"] = self.bn_stats.loss()
                if self.w_adv > 0:
                    terms["loss_adv"] = adversarial_loss(s.logits, t.logits)
                if self.w_tri > 0:
                    terms["loss_rel_syn"] = relation_loss(
                        self._relation_embedding(s), t.logits.argmax(1), t.logits,
                        sampler=self.sampler, margin=self.margin,
                        inverse=self.direction == "paper")
                loss = (self.w_oh * terms["loss_oh"]
                        + self.w_bn * terms.get("loss_bn", 0.0)
                        + self.w_adv * terms.get("loss_adv", 0.0)
                        + self.w_tri * terms.get("loss_rel_syn", 0.0))
                with torch.no_grad():
                    better = loss < best_cost
                    best_cost = torch.where(better, loss, best_cost)
                    best_x = torch.where(better, x.detach(), best_x)
                    terms["loss_syn"] = loss
                    watch.update(step, terms)
                    for k, val in terms.items():
                        sums[k] = sums.get(k, 0.0) + val.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if self.bn_stats:
            self.bn_stats.enabled = False
        watch.check()
        losses = {k: float(v) / self.g_steps for k, v in sums.items()}
        return SynthesisResult(best_x, y, losses)
