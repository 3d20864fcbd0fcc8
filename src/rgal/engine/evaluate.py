"""Accuracy of a classifier on an in-memory split."""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import Normalize
from ..data.datasets import ImageTensors


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageTensors, normalize: Normalize,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    normalize = normalize.to(device)
    correct = 0
    for i in range(0, len(data), batch_size):
        x = data.images[i:i + batch_size].to(device, non_blocking=True).float().div_(255)
        y = data.labels[i:i + batch_size].to(device, non_blocking=True)
        correct += (model(normalize(x)).argmax(1) == y).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(len(data), 1)
