"""Typed settings of `rgal quantize` (defaults: the shipped Fashion-MNIST teacher at W4A4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import BUILTIN_TEACHER, ConfigError, build_config
from ..config import option as _opt

METHODS = ("ptq-noise", "ptq-real", "gdfq", "gdfq+rgal")


@dataclass
class QuantizeConfig:
    """Every setting of a `rgal quantize` run."""

    # what to quantize
    model: str = _opt("smallcnn", "architecture of the full-precision model")
    weights: str = _opt(BUILTIN_TEACHER, "full-precision weights file, or 'builtin'")
    dataset: str = _opt("fashion-mnist", "dataset (test split for evaluation; ptq-real "
                        "calibrates on its training split)")
    data_root: str | None = _opt(None, "folder holding the dataset files")
    download: bool = _opt(True, "download a missing dataset")
    method: str = _opt("gdfq+rgal", "quantization method", choices=METHODS)
    wbits: int = _opt(4, "weight bits", lo=2, hi=8)
    abits: int = _opt(4, "activation bits", lo=2, hi=8)
    keep_first_last_8bit: bool = _opt(False, "keep the first layer and the classifier at 8 bit")
    act_momentum: float = _opt(0.9, "EMA momentum of the activation ranges", lo=0, hi=1)
    calib_batches: int = _opt(20, "calibration batches of the ptq methods", lo=1, hi=100_000)
    # schedule of the gdfq methods
    epochs: int = _opt(8, "epochs (generator warm-up included)", lo=1, hi=100_000)
    iters: int = _opt(50, "iterations per epoch", lo=1, hi=1_000_000)
    warmup_epochs: int = _opt(1, "epochs training only the generator while the activation "
                              "ranges calibrate on its images (frozen afterwards)", lo=1,
                              hi=100_000)
    batch_size: int = _opt(64, "synthetic images per iteration", lo=2, hi=65_536)
    # optimisation
    lr: float = _opt(1e-3, "quantized-model SGD learning rate (cosine decay)", lo=0,
                     lo_open=True)
    momentum: float = _opt(0.9, "quantized-model SGD (Nesterov) momentum", lo=0, hi=1)
    weight_decay: float = _opt(1e-4, "quantized-model weight decay", lo=0)
    lr_g: float = _opt(1e-3, "generator Adam learning rate", lo=0, lo_open=True)
    nz: int = _opt(128, "generator latent size", lo=1, hi=65_536)
    ngf: int = _opt(32, "generator width", lo=1, hi=4096)
    augment: bool = _opt(True, "random crop/flip of the synthetic images")
    # generator losses
    w_oh: float = _opt(1.0, "generator: weight of the teacher's cross entropy on the "
                            "generator's labels (loss_oh)", lo=0, aliases=("w_ce_g",))
    w_bn: float = _opt(0.1, "generator: weight of the BN-statistics loss (loss_bn)", lo=0)
    w_rel_syn: float = _opt(0.1, "generator: weight of RGAL's synthesis relation loss "
                                 "(loss_rel_syn, gdfq+rgal)", lo=0, aliases=("w_tri",))
    relation_direction: str = _opt("paper", "synthesis relation direction",
                                   choices=("paper", "code"))
    syn_sampler: str = _opt("focal", "negative sampler of the synthesis relation loss",
                            choices=("focal", "distance", "random"))
    # quantized-model losses
    tau: float = _opt(4.0, "KD temperature", lo=0, lo_open=True)
    w_kd: float = _opt(1.0, "weight of the KD loss from the full-precision model (loss_kd)",
                       lo=0)
    w_ce: float = _opt(1.0, "weight of the cross entropy on the generator's labels (loss_ce)",
                       lo=0)
    w_rel_stu: float = _opt(0.1, "weight of the student-phase relation loss (loss_rel_stu, "
                                 "gdfq+rgal)", lo=0, aliases=("w_stri",))
    stu_sampler: str = _opt("distance", "negative sampler of the student-phase relation loss",
                            choices=("focal", "distance", "random"))
    margin: float = _opt(0.2, "triplet margin", lo=0)
    # run
    out: str = _opt("runs/quantize", "output folder")
    seed: int = _opt(0, "random seed", lo=0, hi=2**31 - 1)
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1, mps")
    precision: str = _opt("fp32", "fp32, bf16 (autocast), fp16 (autocast + loss scaling), or "
                                  "auto (bf16 where the device has native bf16, else fp32)",
                          choices=("fp32", "bf16", "fp16", "auto"))
    eval_batch_size: int = _opt(1000, "evaluation batch size", lo=1, hi=65_536)
    holdout: int = _opt(0, "evaluate on the last N training images instead of the test set "
                        "(for choosing settings); ptq-real then calibrates before them", lo=0)
    progress: bool = _opt(True, "show progress bars")
    tensorboard: bool = _opt(False, "write the metrics and images as TensorBoard events into "
                                    "out (pip install \"rgal[tensorboard]\")")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key."""
        return dataclasses.asdict(self)


def build_quantize_config(*layers: dict[str, Any]) -> QuantizeConfig:
    """Defaults updated by each layer, validated, with the cross-key checks."""
    cfg = build_config(QuantizeConfig, *layers)
    if cfg.method.startswith("gdfq") and cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"warmup_epochs ({cfg.warmup_epochs}) must be smaller than epochs "
                          f"({cfg.epochs}) so that the quantized model is fine-tuned")
    return cfg
