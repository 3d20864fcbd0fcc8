"""Supervised training on real images (teachers) as a job on the training loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..engine import Job, RunFolder, TrainingLoop
from ..engine.evaluate import evaluate


class SupervisedJob(Job):
    """Cross entropy, SGD (Nesterov) with a one-cycle schedule, crop/flip augmentation; one
    loop epoch is one shuffled pass over the training images."""

    name = "teacher"
    watch_name = "teacher"
    timing_names = ("setup_s", "train_s", "eval_s")

    def __init__(self, model: nn.Module, train: ImageTensors, test: ImageTensors | None,
                 info: DatasetInfo, *, epochs: int, batch_size: int, lr: float,
                 weight_decay: float, device: torch.device, seed: int,
                 precision: str = "fp32") -> None:
        self.model, self.test, self.device = model.to(device).train(), test, device
        self.epochs, self.batch_size = epochs, batch_size
        self.augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                   weight_decay=weight_decay, nesterov=True)
        self.steps_per_epoch = math.ceil(len(train) / batch_size)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=epochs * self.steps_per_epoch, pct_start=0.15,
            anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.images, self.labels = train.images.to(device), train.labels.to(device)
        self.precision = Precision(precision, device)
        self.best = 0.0

    def steps(self, epoch: int) -> int:
        return self.steps_per_epoch

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        return {"perm": torch.randperm(len(self.labels), generator=self.gen)}

    def step(self, epoch: int, step: int, prelude: dict[str, Any]) -> dict[str, torch.Tensor]:
        b = self.batch_size
        idx = prelude["perm"][step * b:(step + 1) * b].to(self.device)
        x = self.augment(self.images[idx].float().div_(255))
        with self.precision.autocast():
            loss = nn.functional.cross_entropy(self.model(x), self.labels[idx])
        self.opt.zero_grad(set_to_none=True)
        self.precision.step(loss, self.opt)
        self.sched.step()
        return {"loss": loss.detach()}

    def end_epoch(self, epoch: int, prelude: dict[str, Any], means: dict[str, float],
                  timings: dict[str, float]) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": epoch, "loss": means.get("loss", float("nan"))}
        if self.test is not None:
            acc = evaluate(self.model, self.test, self.augment.normalize)
            self.best = max(self.best, acc)
            record["test_acc"] = acc
        return {**record, **timings}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "batch_rng": self.gen.get_state(),
                "best": self.best, "precision": self.precision.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["batch_rng"])
        self.best = state["best"]
        self.precision.scaler.load_state_dict(state["precision"])


def train_supervised(model: nn.Module, train: ImageTensors, test: ImageTensors | None,
                     info: DatasetInfo, *, epochs: int, batch_size: int = 128, lr: float = 0.1,
                     weight_decay: float = 5e-4, device: torch.device | None = None,
                     seed: int = 0, progress: bool = True, precision: str = "fp32",
                     folder: RunFolder | None = None, config: dict | None = None,
                     resume_state: dict | None = None, checkpoint: str | None = None,
                     metrics: str = "metrics.jsonl",
                     log: Callable[[str], None] = tqdm.write) -> dict:
    """Train `model` with cross entropy; with a `folder`, checkpoint every epoch (resumable).

    Returns the final and best test accuracy (percent), the wall time and the history.
    """
    job = SupervisedJob(model, train, test, info, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, device=device or torch.device("cpu"),
                        seed=seed, precision=precision)
    loop = TrainingLoop(job, folder or RunFolder(None), config=config or {}, progress=progress,
                        seed=seed, log=log, checkpoint=checkpoint, metrics=metrics)
    if resume_state is not None:
        loop.load(resume_state)
        log(f"resuming from {loop.where()}")
    history = loop.run()
    if progress:
        for r in history[-1:]:
            acc = f"  test acc {r['test_acc']:.2f}%" if "test_acc" in r else ""
            tqdm.write(f"epoch {r['epoch']}: loss {r['loss']:.4f}{acc}")
    final = history[-1].get("test_acc") if history else None
    return {"final_acc": final, "best_acc": job.best, "wall_s": loop.elapsed(),
            "history": history}
