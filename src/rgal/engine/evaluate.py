"""Accuracy of a classifier on an in-memory split."""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import Normalize
from ..data.datasets import ImageTensors


@torch.no_grad()
def predict(model: nn.Module, data: ImageTensors, normalize: Normalize,
            batch_size: int = 1000) -> torch.Tensor:
    """The model's top-1 class for every image of `data`, on the model's device; its
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    normalize = normalize.to(device)
    preds = [model(normalize(data.images[i:i + batch_size].to(device, non_blocking=True)
                             .float().div_(255))).argmax(1)
             for i in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)


def evaluate(model: nn.Module, data: ImageTensors, normalize: Normalize,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent; the model's train/eval mode is restored afterwards."""
    preds = predict(model, data, normalize, batch_size)
    correct = (preds == data.labels.to(preds.device)).sum().item()
    return 100.0 * correct / max(len(data), 1)
