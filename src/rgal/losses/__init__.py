"""Loss terms of data-free distillation."""

from .bn import BNStatistics, bn_statistics_distance
from .finite import FiniteWatch, NonFiniteLoss
from .kd import adversarial_loss, kd_loss, per_sample_kl
from .relation import SAMPLERS, negative_probabilities, relation_loss, sample_triplets

__all__ = ["BNStatistics", "bn_statistics_distance", "FiniteWatch", "NonFiniteLoss", "adversarial_loss", "kd_loss",
           "per_sample_kl", "SAMPLERS", "negative_probabilities", "relation_loss",
           "sample_triplets"]
