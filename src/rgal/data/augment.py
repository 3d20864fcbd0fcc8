"""Batched, differentiable image augmentation on the tensors' own device."""

from __future__ import annotations

import math

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x - mean) / std for images in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` pixels and take one random HxW crop per sample (differentiable)."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    xp = nn.functional.pad(x, (padding, padding, padding, padding))
    off = torch.randint(0, 2 * padding + 1, (2, n), device=x.device, generator=generator)
    rows = off[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = off[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
    xp = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return xp.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.25, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A random crop covering `scale` of the area with a log-uniform aspect ratio in `ratio`
    (each side at most the image's), resized back to HxW (differentiable)."""
    n = x.shape[0]
    u = torch.rand(4, n, device=x.device, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[3]
    aspect = log_r.exp()
    sx = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the width and height kept
    sy = (area / aspect).sqrt().clamp(max=1.0)
    shift_x, shift_y = (1 - sx) * (2 * u[1] - 1), (1 - sy) * (2 * u[2] - 1)  # stays inside
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                     align_corners=False)


def mix_partners(labels: torch.Tensor, mode: str, confusion: torch.Tensor | None = None
                 ) -> torch.Tensor | None:
    """Each image's partner in the batch (indices), chosen by its label; None for `random`
    (`mix_images` then draws a permutation).

    `same`: another image of its class. `confused`: a class drawn from the image's row of
    `confusion` (C x C, rows summing to 1, zero diagonal), then an image of that class.
    Either way, any other image when the batch holds none of the class wanted.
    """
    if mode == "random":
        return None
    n = labels.shape[0]
    if mode == "same":
        want = labels
    elif mode == "confused":
        if confusion is None:
            raise ValueError("mix partner 'confused' needs a confusion matrix")
        want = torch.multinomial(confusion.to(labels.device)[labels], 1).squeeze(1)
    else:
        raise ValueError(f"unknown mix partner {mode!r} (random, same, confused)")
    others = ~torch.eye(n, dtype=torch.bool, device=labels.device)
    candidates = (labels.view(1, n) == want.view(n, 1)) & others
    alone = ~candidates.any(1)
    candidates[alone] = others[alone] if n > 1 else True
    return torch.multinomial(candidates.float(), 1).squeeze(1)


def mix_images(x: torch.Tensor, kind: str, alpha: float = 1.0,
               partner_index: torch.Tensor | None = None) -> torch.Tensor:
    """Each image mixed with a partner from the same batch (random unless `partner_index`
    names one per image), keeping the larger share.

    The share l ~ Beta(alpha, alpha) is folded to max(l, 1 - l) >= 1/2, so every image stays
    mostly itself (and keeps its label). `mixup`: l * image + (1 - l) * partner. `cutmix`:
    a box of area about (1 - l) of the image, centred uniformly and clipped at the border,
    copied from the partner. `none` (or a batch of one) returns `x` itself.
    """
    n = x.shape[0]
    if kind == "none" or n < 2:
        return x
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device)
    lam = torch.maximum(lam, 1 - lam)
    partner = x[torch.randperm(n, device=x.device) if partner_index is None else partner_index]
    if kind == "mixup":
        w = lam.to(x.dtype).view(n, 1, 1, 1)
        return w * x + (1 - w) * partner
    if kind != "cutmix":
        raise ValueError(f"unknown mix {kind!r} (none, mixup, cutmix)")
    height, width = x.shape[-2:]
    side = (1 - lam).sqrt()
    h, w = (side * height).round().long(), (side * width).round().long()
    cy = torch.randint(height, (n,), device=x.device)
    cx = torch.randint(width, (n,), device=x.device)
    y0, y1 = (cy - h // 2).clamp(0, height), (cy - h // 2 + h).clamp(0, height)
    x0, x1 = (cx - w // 2).clamp(0, width), (cx - w // 2 + w).clamp(0, width)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    box = ((rows >= y0.view(n, 1, 1)) & (rows < y1.view(n, 1, 1))
           & (cols >= x0.view(n, 1, 1)) & (cols < x1.view(n, 1, 1)))
    return torch.where(box.unsqueeze(1), partner, x)


class Augment(nn.Module):
    """Random crop with padding (or a random resized crop), optional horizontal flip, then
    normalisation.

    Input: float images in [0, 1], shape (N, C, H, W), on any device. With
    `train=False` only the normalisation is applied.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int = 4,
                 hflip: bool = True) -> None:
        super().__init__()
        self.padding = padding
        self.hflip = hflip
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor, augment: bool = True, crop_scale: float = 0.0,
                padding: int | None = None) -> torch.Tensor:
        """`crop_scale` > 0: a random resized crop keeping at least that share of the area
        replaces the padded crop; `padding` replaces this Augment's own for this call."""
        if augment:
            pad = self.padding if padding is None else padding
            x = (random_resized_crop(x, (crop_scale, 1.0)) if crop_scale > 0
                 else random_crop(x, pad))
            if self.hflip:
                x = random_hflip(x)
        return self.normalize(x)
