"""Every setting of a `rgal incremental` run (defaults: Fashion-MNIST, 5 tasks, CPU)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import option as _opt

METHODS: tuple[str, ...] = ("finetune", "lwf", "deepinv-replay", "abd", "abd+rgal", "joint")


@dataclass
class IncrementalConfig:
    """Protocol, method and schedule of a class-incremental run."""

    # protocol
    dataset: str = _opt("fashion-mnist", "dataset name")
    data_root: str | None = _opt(None, "folder holding the dataset files")
    download: bool = _opt(True, "download a missing dataset")
    model: str = _opt("tinycnn", "architecture trained task after task")
    tasks: int = _opt(5, "number of tasks the classes are split into", lo=1, hi=100_000)
    method: str = _opt("abd", "incremental method", choices=METHODS)
    validation: bool = _opt(False, "hold out the last val_size training images and report "
                                   "accuracy on them instead of the test set (for tuning)")
    val_size: int = _opt(10_000, "held-out training images with --validation", lo=1)
    # real-data training, per task
    epochs: float = _opt(4.0, "passes over the task's training images per task (sets the "
                                   "steps of every method, joint included)", lo=0,
                         lo_open=True)
    batch_size: int = _opt(64, "real images per step (replay adds as many)", lo=2, hi=65_536)
    lr: float = _opt(0.01, "SGD learning rate (cosine-decayed within each task)", lo=0,
                     lo_open=True)
    momentum: float = _opt(0.9, "SGD momentum", lo=0, hi=1)
    weight_decay: float = _opt(5e-4, "weight decay", lo=0)
    clip_grad: float = _opt(2.0, "clip the gradient norm to this value (0: no clipping)", lo=0)
    # inversion of the previous model (deepinv-replay, abd, abd+rgal)
    inv_steps: int = _opt(100, "generator steps after each task", lo=1, hi=1_000_000)
    inv_batch_size: int = _opt(64, "images per generator step", lo=2, hi=65_536)
    replay: str = _opt("pool", "replay source: 'pool' (replay_size images sampled once after "
                               "each inversion, class-balanced) or 'generator' (a fresh batch "
                               "from the generator at every step, as in ABD)",
                       choices=("pool", "generator"))
    replay_size: int = _opt(4096, "replay images drawn from each task's generator "
                                  "(--replay pool; also the size of the replay grid's sample)",
                            lo=2)
    lr_g: float = _opt(1e-2, "generator Adam learning rate", lo=0, lo_open=True)
    nz: int = _opt(128, "generator latent size", lo=1, hi=65_536)
    ngf: int = _opt(16, "generator width", lo=1, hi=4096)
    w_oh: float = _opt(1.0, "inversion: CE of the model on its own predictions (loss_oh)",
                       lo=0, aliases=("w_ce",))
    w_balance: float = _opt(1.0, "inversion: class balance, 1 - H(mean softmax) / log K "
                                 "(loss_balance)", lo=0, aliases=("w_div",))
    w_bn: float = _opt(1.0, "inversion: BN-statistics weight (loss_bn)", lo=0)
    w_tv: float = _opt(1.0, "inversion: smoothness, L2 total variation (loss_tv)", lo=0,
                       aliases=("w_smooth",))
    w_rel_syn: float = _opt(0.1, "inversion relation-loss weight (loss_rel_syn, abd+rgal)",
                            lo=0, aliases=("w_tri",))
    relation_direction: str = _opt("paper", "inversion relation direction",
                                   choices=("paper", "code"))
    syn_sampler: str = _opt("focal", "negative sampler in the inversion",
                            choices=("focal", "distance", "random"))
    # training losses
    w_fkd: float = _opt(10.0, "feature-distillation weight (loss_fkd; abd, abd+rgal)", lo=0,
                        aliases=("mu",))
    w_kd: float = _opt(1.0, "logit-distillation weight (lwf, deepinv-replay)", lo=0)
    tau: float = _opt(2.0, "logit-distillation temperature", lo=0, lo_open=True)
    w_rel_stu: float = _opt(1.0, "training relation-loss weight (loss_rel_stu, abd+rgal)", lo=0,
                            aliases=("w_stri",))
    stu_sampler: str = _opt("distance", "negative sampler in training",
                            choices=("focal", "distance", "random"))
    margin: float = _opt(0.2, "triplet margin", lo=0)
    # run
    out: str = _opt("runs/incremental", "output folder")
    seed: int = _opt(0, "random seed (class order, initialisation, batches)", lo=0,
                     hi=2**31 - 1)
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1, mps")
    eval_batch_size: int = _opt(1000, "evaluation batch size", lo=1, hi=65_536)
    precision: str = _opt("fp32", "fp32, bf16 (autocast), fp16 (autocast + loss scaling), or "
                                  "auto (bf16 where the device has native bf16, else fp32)",
                          choices=("fp32", "bf16", "fp16", "auto"))
    progress: bool = _opt(True, "show progress bars")
    tensorboard: bool = _opt(False, "write each task's metrics and replay grid as TensorBoard "
                                    "events into out (pip install \"rgal[tensorboard]\")")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key."""
        return dataclasses.asdict(self)
