"""Types shared by every dataset reader: the error class and the in-memory split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DatasetError(ValueError):
    """A dataset is missing, truncated or malformed."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name is not registered (also a KeyError, for older callers)."""

    def __str__(self) -> str:
        return ValueError.__str__(self)


@dataclass
class ImageTensors:
    """A whole split in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])
