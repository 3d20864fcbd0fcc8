"""Supervised training on real images: teachers, and the `scratch` reference."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from .evaluate import evaluate


def train_supervised(model: nn.Module, train: ImageTensors, test: ImageTensors,
                     info: DatasetInfo, *, epochs: int, batch_size: int = 128, lr: float = 0.1,
                     weight_decay: float = 5e-4, device: torch.device | None = None,
                     seed: int = 0, progress: bool = True,
                     on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `model` with cross entropy, SGD + cosine schedule and crop/flip augmentation.

    Returns the final and best test accuracy (percent) and the wall time.
    """
    device = device or torch.device("cpu")
    model.to(device).train()
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay,
                          nesterov=True)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    gen = torch.Generator().manual_seed(seed)
    images, labels = train.images.to(device), train.labels.to(device)
    best, acc, t0 = 0.0, 0.0, time.time()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(train), generator=gen).to(device)
        bar = tqdm(range(steps_per_epoch), desc=f"teacher epoch {epoch}/{epochs}",
                   disable=not progress, leave=False)
        total = 0.0
        for i in bar:
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = augment(images[idx].float().div_(255))
            loss = nn.functional.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        acc = evaluate(model, test, augment.normalize)
        best = max(best, acc)
        record = {"epoch": epoch, "loss": total / steps_per_epoch, "test_acc": acc,
                  "elapsed_s": time.time() - t0}
        if on_epoch:
            on_epoch(record)
        if progress:
            tqdm.write(f"epoch {epoch}: loss {record['loss']:.4f}  test acc {acc:.2f}%")
    return {"final_acc": acc, "best_acc": best, "wall_s": time.time() - t0}
