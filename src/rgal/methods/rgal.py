"""RGAL: Relation-Guided Adversarial Learning (Liang & Fu, IJCV 2024).

Adversarial inversion plus triplet *relation* losses. While images are synthesised, the
relation loss on the student's features pushes same-class samples apart and pulls a focal-
sampled other-class sample close (`relation_direction: paper`; `code` keeps the ordinary
triplet, as the authors' released code does). While the student trains, the ordinary
direction with distance-weighted negatives clusters each class, next to KD and an L2 between
pooled, projected student and teacher stage maps; every pool image is taken twice, as two
augmented views (pair sampling).

`RelationTerms` is the one place where the relation losses are wired to features, labels and
samplers; quantization (GDFQ+RGAL) and class-incremental learning (ABD+RGAL) use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, option
from ..losses import relation_loss
from ..losses.relation import FOCAL_BAND
from ..models.features import Features, paired_stages, pool_map
from .base import InversionMethod, MethodContext, Terms
from .registry import register_method

SAMPLER_CHOICES = ("focal", "distance", "random")


@dataclass
class RGALSettings:
    """RGAL's own settings: the relation losses, the feature L2 and pair sampling."""

    section: ClassVar[str] = "rgal"
    w_rel_syn: float = option(0.1, "weight of the synthesis relation loss (loss_rel_syn)", lo=0,
                              aliases=("w_tri",))
    w_rel_stu: float = option(0.1, "weight of the student relation loss (loss_rel_stu)", lo=0,
                              aliases=("w_stri",))
    w_cd: float = option(0.1, "weight of the pooled-feature L2 loss (loss_cd)", lo=0)
    cd_start_stage: int = option(0, "first stage pair (0-based) used by the cd loss (0: every "
                                    "pair, as the reference code)", lo=0, hi=64)
    relation_direction: str = option("paper", "synthesis relation direction: paper (inverted "
                                              "triplet) or code (the released code's)",
                                     choices=("paper", "code"))
    syn_sampler: str = option("focal", "negative sampler in synthesis", choices=SAMPLER_CHOICES)
    focal_band: str = option("0.5:1.0", "the focal sampler's band lo:hi of distances between "
                                        "unit sampling embeddings (0..2) a negative may lie in")
    syn_relation_feature: str = option("stages", "feature of the synthesis relation: the "
                                                     "stage maps of relation_stages (summed), "
                                                     "the last stage map, or the penultimate "
                                                     "feature",
                                       choices=("stages", "last_stage", "penultimate"))
    syn_relation_model: str = option("student", "model whose features the synthesis relation "
                                                "reads (the reference's --triplet_target)",
                                     choices=("student", "teacher"))
    relation_stages: str = option("2:4", "stage maps (a start:end slice of the model's stages) "
                                         "of the 'stages' relation features (the reference's "
                                         "--start_layer:--end_layer)")
    stu_relation_feature: str = option("penultimate", "feature(s) of the student relation: "
                                                      "penultimate, stages, logits, or several "
                                                      "joined by '+'")
    relation_until: float = option(1.0, "fraction of the epochs during which the cd and student "
                                        "relation terms apply (the reference's --custom_steps)",
                                   lo=0, hi=1)
    stu_sampler: str = option("distance", "negative sampler in the student phase",
                              choices=SAMPLER_CHOICES)
    margin: float = option(0.2, "triplet margin", lo=0)
    pair_sampling: str = option("single", "true: every pool image twice, as two augmentations "
                                          "(B images, 2B views; the paper's CIFAR recipe); "
                                          "false: 2B distinct images, one view each; single: B "
                                          "images, one view each (the reference code without "
                                          "--pair_sample; the demo's default, half the cost)",
                                choices=("true", "false", "single"))


def parse_stages(text: str) -> slice:
    """`"2:4"` -> slice(2, 4) (either end may be empty; negative counts from the end)."""
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ConfigError(f"relation_stages must be a start:end slice such as 2:4, got "
                          f"{text!r}") from None
    return slice(start, end)


def parse_band(band: str | tuple[float, float]) -> tuple[float, float]:
    """`"0.5:1.0"` -> (0.5, 1.0), a band of unit-embedding distances (0 <= lo < hi <= 2)."""
    if isinstance(band, str):
        try:
            lo, hi = (float(p) for p in band.split(":"))
        except ValueError:
            raise ConfigError(f"focal_band must be lo:hi such as 0.5:1.0, got {band!r}") from None
    else:
        lo, hi = band
    if not 0 <= lo < hi <= 2:
        raise ConfigError(f"focal_band must satisfy 0 <= lo < hi <= 2, got {band!r}")
    return float(lo), float(hi)


STUDENT_FEATURES = ("penultimate", "stages", "logits")


def parse_student_features(text: str) -> tuple[str, ...]:
    """`"stages+penultimate"` -> ("stages", "penultimate")."""
    parts = tuple(p.strip() for p in str(text).split("+") if p.strip())
    if not parts or any(p not in STUDENT_FEATURES for p in parts):
        raise ConfigError(f"stu_relation_feature must join {', '.join(STUDENT_FEATURES)} with "
                          f"'+', got {text!r}")
    return parts


class RelationTerms:
    """RGAL's two relation losses, wired to features, labels and samplers.

    `synthesis`: on a frozen model's features of generated images (the stage maps of
    `stages`, summed with one set of triplets; the last stage map; or the penultimate
    feature), labels = the teacher's classes, negatives sampled on the teacher's logits,
    inverted in the `paper` direction. `student`: on the trained model's penultimate feature
    (or stage maps / logits), negatives sampled on its own logits, ordinary direction.
    """

    def __init__(self, *, direction: str = "paper", syn_sampler: str = "focal",
                 stu_sampler: str = "distance", margin: float = 0.2,
                 syn_feature: str = "last_stage", stages: str = "2:4",
                 stu_features: str = "penultimate",
                 focal_band: str | tuple[float, float] = FOCAL_BAND) -> None:
        if direction not in ("paper", "code"):
            raise ValueError(f"relation direction must be 'paper' or 'code', got {direction!r}")
        self.direction, self.margin, self.syn_feature = direction, margin, syn_feature
        self.syn_sampler, self.stu_sampler = syn_sampler, stu_sampler
        self.stages = parse_stages(stages)
        self.stu_features = parse_student_features(stu_features)
        self.band = parse_band(focal_band)

    @classmethod
    def from_settings(cls, s: Any) -> RelationTerms:
        """From any settings object with RGAL's key names."""
        return cls(direction=s.relation_direction, syn_sampler=s.syn_sampler,
                   stu_sampler=s.stu_sampler, margin=s.margin,
                   syn_feature=getattr(s, "syn_relation_feature", "last_stage"),
                   stages=getattr(s, "relation_stages", "2:4"),
                   stu_features=getattr(s, "stu_relation_feature", "penultimate"),
                   focal_band=getattr(s, "focal_band", FOCAL_BAND))

    def _stage_maps(self, feats: Features) -> list[torch.Tensor]:
        """The selected stage maps (the last stage when the slice selects none)."""
        maps = feats.stages[self.stages]
        return maps or feats.stages[-1:]

    def embedding(self, feats: Features) -> torch.Tensor | list[torch.Tensor]:
        """The synthesis relation's embedding(s) of a forward pass."""
        if self.syn_feature == "stages" and feats.stages:
            return self._stage_maps(feats)
        if self.syn_feature == "last_stage" and feats.stages:
            return feats.stages[-1]
        return feats.feature

    def synthesis(self, feats: Features, labels: torch.Tensor,
                  sampling_logits: torch.Tensor) -> torch.Tensor:
        """The synthesis relation loss (inverted in the paper direction)."""
        return relation_loss(self.embedding(feats), labels, sampling_logits,
                             sampler=self.syn_sampler, margin=self.margin,
                             inverse=self.direction == "paper", band=self.band)

    def student(self, feats: Features, labels: torch.Tensor,
                sampling_logits: torch.Tensor) -> torch.Tensor:
        """The student-phase relation loss (ordinary triplet direction)."""
        embeddings: list[torch.Tensor] = []
        for part in self.stu_features:
            if part == "stages" and feats.stages:
                embeddings.extend(self._stage_maps(feats))
            elif part == "logits":
                embeddings.append(feats.logits)
            else:
                embeddings.append(feats.feature)
        if len(embeddings) == 1:
            return relation_loss(embeddings[0], labels, sampling_logits,
                                 sampler=self.stu_sampler, margin=self.margin, band=self.band)
        return relation_loss(embeddings, labels, sampling_logits, sampler=self.stu_sampler,
                             margin=self.margin, band=self.band)


class FeatureProjector(nn.Module):
    """Learnable 1x1 convs mapping pooled student stage maps to the teacher's widths."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(cs, ct, 1) for cs, ct in
                                  zip(student_channels, teacher_channels, strict=True))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p(pool_map(m)[:, :, None, None]).flatten(1)
                for p, m in zip(self.proj, maps, strict=True)]


@register_method("rgal")
class RGAL(InversionMethod):
    """Adversarial inversion + relation losses in both phases, pair-sampled student batches."""

    sections = (RGALSettings,)
    search = ({}, {"reset_generator": True}, {"lr_g": 3e-3},
              {"reset_generator": True, "lr_g": 3e-3}, {"w_adv": 0.5}, {"w_bn": 3.0})
    summary = "Liang & Fu, IJCV 2024"
    images = "pool; generator + latents, a few steps per epoch"
    generator_doc = "BN + one-hot + adversarial + inverted relation (focal negatives)"
    student_doc = "KD + pooled-feature L2 + relation (distance-weighted), pair sampling"
    # ablations addressable by name in `rgal bench`
    ablations: ClassVar[dict[str, dict[str, Any]]] = {
        "rgal-code": {"method": "rgal", "relation_direction": "code"},
        "rgal-distance-syn": {"method": "rgal", "syn_sampler": "distance"},
        "rgal-random-syn": {"method": "rgal", "syn_sampler": "random"},
        "rgal-no-syn-rel": {"method": "rgal", "w_rel_syn": 0.0},
        "rgal-no-stu-rel": {"method": "rgal", "w_rel_stu": 0.0},
        "rgal-no-rel": {"method": "rgal", "w_rel_syn": 0.0, "w_rel_stu": 0.0},
        "rgal-distinct-views": {"method": "rgal", "pair_sampling": "false"},
        "rgal-single-views": {"method": "rgal", "pair_sampling": "single"},
    }

    def __init__(self, ctx: MethodContext) -> None:
        s = ctx.cfg.rgal
        cd_pairs = paired_stages(len(ctx.student_channels), len(ctx.teacher_channels),
                                 s.cd_start_stage)
        # built before the generator: the parameter-init stream is part of a seeded run
        projector = FeatureProjector([ctx.student_channels[i] for i in cd_pairs[0]],
                                     [ctx.teacher_channels[j] for j in cd_pairs[1]])
        super().__init__(ctx)
        self.projector = projector.to(ctx.device)
        self.s_stages, self.t_stages = cd_pairs
        self.relations = RelationTerms.from_settings(s)

    @classmethod
    def check_settings(cls, cfg: Any) -> None:
        super().check_settings(cfg)
        parse_stages(cfg.rgal.relation_stages)
        parse_student_features(cfg.rgal.stu_relation_feature)
        parse_band(cfg.rgal.focal_band)

    @property
    def pair_sampling(self) -> bool | str:  # type: ignore[override]
        value = self.cfg.rgal.pair_sampling
        return "single" if value == "single" else value == "true"

    @property
    def relation_active(self) -> bool:
        """The cd and student relation terms apply during the first `relation_until` of the
        epochs (all of them by default)."""
        return self.epoch - 1 < self.cfg.rgal.relation_until * self.cfg.epochs

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        terms = super().synthesis_terms(x, v, y, t, s)
        if self.cfg.rgal.w_rel_syn > 0:
            feats = t if self.cfg.rgal.syn_relation_model == "teacher" else s
            terms["loss_rel_syn"] = self.relations.synthesis(feats, t.logits.argmax(1),
                                                             t.logits)
        return terms

    def synthesis_weights(self) -> dict[str, float]:
        return {**super().synthesis_weights(), "loss_rel_syn": self.cfg.rgal.w_rel_syn}

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        terms = super().student_terms(v, y, t, s)
        st = self.cfg.rgal
        if not self.relation_active:
            return terms
        if st.w_cd > 0 and self.s_stages:
            proj = self.projector([s.stages[i] for i in self.s_stages])
            terms["loss_cd"] = sum(F.mse_loss(p, pool_map(t.stages[j]))
                                   for p, j in zip(proj, self.t_stages, strict=True))
        if st.w_rel_stu > 0:
            terms["loss_rel_stu"] = self.relations.student(s, t.logits.argmax(1), s.logits)
        return terms

    def student_weights(self) -> dict[str, float]:
        st = self.cfg.rgal
        return {**super().student_weights(), "loss_cd": st.w_cd, "loss_rel_stu": st.w_rel_stu}

    def student_parameters(self) -> list[nn.Parameter]:
        return [*super().student_parameters(), *self.projector.parameters()]
