"""The synthetic-image pool: every kept batch, in memory on the training device."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


class ImagePool:
    """A growing store of synthetic images (uint8, like an exported PNG) and their labels."""

    def __init__(self, channels: int, size: int, device: torch.device | str = "cpu") -> None:
        self.shape = (channels, size, size)
        self.device = torch.device(device)
        self._images = torch.empty((0, *self.shape), dtype=torch.uint8, device=self.device)
        self._labels = torch.empty(0, dtype=torch.long, device=self.device)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def images(self) -> torch.Tensor:
        """uint8 images (N, C, H, W)."""
        return self._images[: self._n]

    @property
    def labels(self) -> torch.Tensor:
        """int64 labels (N,)."""
        return self._labels[: self._n]

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Append float images in [0, 1] (quantised to 8 bits) with their labels."""
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"pool holds {self.shape} images, got {tuple(images.shape[1:])}")
        q = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).to(self.device)
        n_new = self._n + q.shape[0]
        if n_new > self._images.shape[0]:  # grow geometrically: amortised O(1) appends
            cap = max(n_new, 2 * self._images.shape[0])
            grown = torch.empty((cap, *self.shape), dtype=torch.uint8, device=self.device)
            grown[: self._n] = self.images
            glab = torch.empty(cap, dtype=torch.long, device=self.device)
            glab[: self._n] = self.labels
            self._images, self._labels = grown, glab
        self._images[self._n:n_new] = q
        self._labels[self._n:n_new] = labels.detach().to(self.device)
        self._n = n_new

    def keep_last(self, n: int) -> None:
        """Drop all but the `n` most recently added images (nothing if it holds fewer)."""
        if n < 0:
            raise ValueError(f"keep_last needs n >= 0, got {n}")
        if self._n <= n:
            return
        start = self._n - n
        self._images[:n] = self._images[start:self._n].clone()
        self._labels[:n] = self._labels[start:self._n].clone()
        self._n = n

    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`min(n, len)` distinct images as floats in [0, 1], with their labels."""
        if self._n == 0:
            raise RuntimeError("the image pool is empty")
        idx = torch.randperm(self._n, generator=generator)[: min(n, self._n)].to(self.device)
        return self._images[idx].float().div_(255), self._labels[idx]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Images and labels, on the CPU."""
        return {"images": self.images.cpu(), "labels": self.labels.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the content with a saved state."""
        self._images = state["images"].to(self.device, torch.uint8).clone()
        self._labels = state["labels"].to(self.device, torch.long).clone()
        self._n = self._images.shape[0]

    def export(self, path: str | Path) -> None:
        """Write the pool as safetensors (`images` uint8 NCHW, `labels` int64)."""
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))
