"""Build a method for a teacher, a student and a dataset description."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo
from ..models.features import FeatureExtractor, num_stage_channels
from ..models.fold import FoldedBN, fold_batchnorms
from .base import Method, MethodContext
from .registry import distill_config, get_method


def method_context(cfg: DistillConfig, teacher: FeatureExtractor, student: FeatureExtractor,
                   augment: Augment, info: DatasetInfo, device: torch.device,
                   world: int = 1, teacher_folds: list[FoldedBN] | None = None
                   ) -> MethodContext:
    """The context a method is built from (stage widths measured by one dummy forward each);
    under torchrun each of the `world` processes takes an equal share of the batches."""
    in_shape = (info.channels, info.image_size, info.image_size)
    t_ch, t_dim = num_stage_channels(teacher.model, teacher, in_shape, device)
    s_ch, _ = num_stage_channels(student.model, student, in_shape, device)
    return MethodContext(cfg, teacher, student, augment, info, device, t_ch, s_ch, t_dim,
                         cfg.batch_size // world, cfg.synthesis_batch_size // world,
                         list(teacher_folds or []))


def frozen_teacher(teacher: nn.Module, cfg: DistillConfig, info: DatasetInfo,
                   device: torch.device) -> tuple[nn.Module, list[FoldedBN]]:
    """The teacher the method reads: with `fold_bn`, a copy with its BatchNorms folded into
    the convolutions before them (when the method's terms allow it)."""
    if not (cfg.fold_bn and get_method(cfg.method).fold_teacher):
        return teacher, []
    g = torch.Generator().manual_seed(0)  # its own stream: the run's randomness is untouched
    example = torch.randn(2, info.channels, info.image_size, info.image_size, generator=g)
    return fold_batchnorms(teacher, example.to(device))


def create_method(name: str, teacher: nn.Module, student: nn.Module, info: DatasetInfo, *,
                  device: torch.device | str = "cpu", **settings: Any) -> Method:
    """A registered method on these models, with its defaults under `settings` (config keys)."""
    device = torch.device(device)
    cfg = distill_config({"method": name, **settings})
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    t_ext = FeatureExtractor(teacher.to(device))
    s_ext = FeatureExtractor(student.to(device))
    return get_method(name)(method_context(cfg, t_ext, s_ext, augment, info, device))
