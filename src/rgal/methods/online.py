"""What every online method shares: its schedule and how its generator is built and sampled.

The online baselines differ in more than their loss terms: their authors' code builds the
generator with another output layer, samples the student's batches differently and trains the
student with or without augmentation. Each method file sets these to its code's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import option
from ..models.generator import INITS, OUTPUTS


@dataclass
class OnlineSettings:
    """Settings of the online methods (DAFL, ZSKT, DFAD, DFQ)."""

    section: ClassVar[str] = "online"
    student_steps_per_g: int = option(5, "student steps per generator step", lo=1,
                                      hi=1_000_000)
    student_batch: str = option("fresh", "the student's images: fresh latents every step, "
                                         "the generator step's latents redrawn after its update "
                                         "(after: ZSKT), or the generator step's own images "
                                         "(same: DAFL)", choices=("fresh", "after", "same"))
    sample_mode: str = option("train", "the generator's BatchNorm mode when it samples the "
                                       "student's images", choices=("train", "eval"))
    augment_synthetic: bool = option(False, "random crop/flip of the student's synthetic "
                                            "images")
    adv_student_mode: str = option("eval", "the student's mode in the generator step (train: "
                                           "batch statistics, as ZSKT's and DFAD's code)",
                                   choices=("eval", "train"))
    g_beta1: float = option(0.5, "the generator Adam's first beta", lo=0, hi=0.999)
    g_clip: float = option(0.0, "clip the generator's gradient norm (0: no clipping)", lo=0)
    generator_output: str = option("sigmoid", "generator output layer", choices=OUTPUTS)
    generator_wide: bool = option(False, "a first generator map of 4*ngf channels")
    generator_bias: bool = option(False, "biased generator convolutions")
    generator_bn_eps: float = option(1e-5, "epsilon of the generator's middle BatchNorms", lo=0,
                                     lo_open=True)
    generator_init: str = option("dcgan", "generator initialisation", choices=INITS)
