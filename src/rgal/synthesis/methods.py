"""Which synthesizer each `--method` uses, built from a config."""

from __future__ import annotations

import torch

from ..config import ONLINE_METHODS, POOL_METHODS, DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo
from ..models.features import FeatureExtractor
from ..models.generator import Generator
from .base import Synthesizer
from .cmi import CMIRGALSynthesizer, CMISynthesizer
from .deepinv import DeepInversionSynthesizer, PixelImages
from .fast import FastRGALSynthesizer, FastSynthesizer
from .inversion import RGALSynthesizer
from .online import OnlineSynthesizer

INVERSION_CLASSES = {"rgal": RGALSynthesizer, "deepinv": DeepInversionSynthesizer,
                     "cmi": CMISynthesizer, "cmi+rgal": CMIRGALSynthesizer,
                     "fast": FastSynthesizer, "fast+rgal": FastRGALSynthesizer}


def build_synthesizer(cfg: DistillConfig, teacher: FeatureExtractor, student: FeatureExtractor,
                      augment: Augment, info: DatasetInfo, feature_dim: int,
                      device: torch.device) -> Synthesizer | None:
    """The synthesizer of `cfg.method` (None for the real-data references)."""
    if cfg.method in ONLINE_METHODS:
        generator = Generator(cfg.nz, cfg.ngf, info.image_size, info.channels).to(device)
        return OnlineSynthesizer(
            teacher, student, generator, augment, objective=cfg.method,
            batch_size=2 * cfg.batch_size, lr_g=cfg.lr_g, w_bn=cfg.w_bn, w_oh=cfg.w_oh,
            w_adv=cfg.w_adv, w_act=cfg.w_act, w_ie=cfg.w_ie, w_balance=cfg.w_balance,
            precision=cfg.precision, optimizer_impl=cfg.optimizer_impl)
    if cfg.method not in POOL_METHODS:
        return None
    if cfg.method == "deepinv":
        generator = PixelImages(cfg.synthesis_batch_size, info.channels, info.image_size)
    else:
        generator = Generator(cfg.nz, cfg.ngf, info.image_size, info.channels)
    kwargs = dict(batch_size=cfg.synthesis_batch_size, g_steps=cfg.g_steps, lr_g=cfg.lr_g,
                  lr_z=cfg.lr_z, w_bn=cfg.w_bn, w_oh=cfg.w_oh, w_adv=cfg.w_adv,
                  w_tri=cfg.w_tri, w_tv=cfg.w_tv, bn_momentum=cfg.bn_momentum,
                  direction=cfg.relation_direction, sampler=cfg.syn_sampler, margin=cfg.margin,
                  relation_feature=cfg.syn_relation_feature,
                  reset_generator=cfg.reset_generator, precision=cfg.precision,
                  optimizer_impl=cfg.optimizer_impl, progress=cfg.progress)
    if cfg.method.startswith("cmi"):
        kwargs.update(feature_dim=feature_dim, w_cr=cfg.w_cr, cr_temperature=cfg.cr_temperature,
                      bank_size=cfg.bank_size)
    cls = INVERSION_CLASSES[cfg.method]
    return cls(teacher, student, generator.to(device), augment, info.num_classes, **kwargs)
