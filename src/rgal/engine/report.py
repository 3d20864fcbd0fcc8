"""Pictures of a run: labelled grids of synthetic images and accuracy curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def labelled_grid(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                  per_class: int = 8, scale: int = 2, max_classes: int = 20) -> Image.Image:
    """One row per class (name on the left), up to `per_class` images of that class."""
    imgs = images.detach().float().cpu()
    if imgs.max() > 1.5:
        imgs = imgs / 255.0
    arr = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    labels = labels.detach().cpu()
    classes = [c for c in sorted(set(labels.tolist()))][:max_classes]
    n, h, w, c = arr.shape
    th, tw = h * scale, w * scale
    label_w, pad = 90, 2
    canvas = Image.new("RGB", (label_w + per_class * (tw + pad) + pad,
                               max(len(classes), 1) * (th + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, cls in enumerate(classes):
        y0 = pad + r * (th + pad)
        name = class_names[cls] if cls < len(class_names) else str(cls)
        draw.text((4, y0 + th // 2 - 6), f"{cls}: {name}"[:14], fill="black", font=font)
        idx = (labels == cls).nonzero().flatten()[:per_class].tolist()
        for k, i in enumerate(idx):
            tile = arr[i][:, :, 0] if c == 1 else arr[i]
            im = Image.fromarray(np.ascontiguousarray(tile)).resize((tw, th), Image.NEAREST)
            canvas.paste(im.convert("RGB"), (label_w + pad + k * (tw + pad), y0))
    return canvas


def save_grid(path: str | Path, images: torch.Tensor, labels: torch.Tensor,
              class_names: Sequence[str], **kw) -> None:
    """Write `labelled_grid(...)` as a PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, labels, class_names, **kw).save(path)


def plot_curves(path: str | Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]],
                xlabel: str = "epoch", ylabel: str = "test accuracy (%)", title: str = "",
                hlines: dict[str, float] | None = None) -> None:
    """Line plot of named (x, y) series, with optional labelled horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(curves) > 10  # beyond one colour cycle: 20 colours, dashes, legend outside
    fig, ax = plt.subplots(figsize=(8.5, 5) if many else (6, 4), dpi=100)
    colours = plt.get_cmap("tab20").colors if many else [None] * len(curves)
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3, label=name,
                color=colours[i % len(colours)], ls="-" if i < 10 or not many else "--")
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="gray")
        ax.annotate(name, (0.01, y), xycoords=("axes fraction", "data"), va="bottom",
                    fontsize=8, color="gray")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
