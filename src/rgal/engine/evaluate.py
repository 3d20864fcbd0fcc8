"""Accuracy of a classifier on an in-memory split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.augment import Normalize
from ..data.datasets import ImageTensors


@torch.no_grad()
def batched_outputs(model: nn.Module, data: ImageTensors, normalize: Normalize,
                    batch_size: int = 1000,
                    head: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits,
                    empty_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`head(logits)` for every image of `data` in eval mode, batch by batch, concatenated on
    the model's device; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    normalize = normalize.to(device)
    outs = [head(model(normalize(data.images[i:i + batch_size].to(device, non_blocking=True)
                                 .float().div_(255))))
            for i in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, dtype=empty_dtype, device=device)


def predict(model: nn.Module, data: ImageTensors, normalize: Normalize,
            batch_size: int = 1000) -> torch.Tensor:
    """The model's top-1 class for every image of `data`, on the model's device; its
    train/eval mode is restored afterwards."""
    return batched_outputs(model, data, normalize, batch_size, head=lambda y: y.argmax(1),
                           empty_dtype=torch.long)


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of predicted classes against labels."""
    correct = (preds == labels.to(preds.device)).sum().item()
    return 100.0 * correct / max(len(labels), 1)


def evaluate(model: nn.Module, data: ImageTensors, normalize: Normalize,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent; the model's train/eval mode is restored afterwards."""
    return accuracy(predict(model, data, normalize, batch_size), data.labels)


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true class, predicted class] (int64, on the CPU)."""
    preds, labels = preds.cpu().long(), labels.cpu().long()
    flat = labels * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes,
                                                                           num_classes)


def _class_names(classes: Sequence[str], n: int) -> list[str]:
    """The dataset's class names when they fit the matrix, else the class indices."""
    return list(classes) if len(classes) == n else [str(c) for c in range(n)]


def per_class_rows(cm: torch.Tensor, classes: Sequence[str] = ()) -> list[dict]:
    """One row per class: its images, its accuracy (%), how often it is predicted (% of its
    own count) and the class it is most often mistaken for (with the share of its images)."""
    n = cm.shape[0]
    names = _class_names(classes, n)
    rows = []
    for c in range(n):
        total = int(cm[c].sum())
        wrong = cm[c].clone()
        wrong[c] = 0
        worst = int(wrong.argmax())
        rows.append({"class": names[c], "images": total,
                     "acc": 100.0 * int(cm[c, c]) / max(total, 1),
                     "predicted": 100.0 * int(cm[:, c].sum()) / max(total, 1),
                     "mistaken_for": names[worst] if int(wrong[worst]) else "",
                     "mistaken_pct": 100.0 * int(wrong[worst]) / max(total, 1)})
    return rows


def plot_confusion(path: str | Path, cm: torch.Tensor, classes: Sequence[str] = (),
                   title: str = "") -> None:
    """A heat map of the confusion matrix, each row in % of its true class, annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = cm.shape[0]
    names = _class_names(classes, n)
    pct = 100.0 * cm.double() / cm.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    im = ax.imshow(pct.numpy(), cmap="Blues", vmin=0, vmax=100)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = float(pct[i, j])
                if v >= 1:
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 60 else "black")
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
