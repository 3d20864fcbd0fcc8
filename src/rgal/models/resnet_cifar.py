"""CIFAR ResNets (6n+2 layers, three stages), compatible with the DataFree zoo's checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_zoo_weights
from .registry import register_model
from .resnet import resnet_stages


class BasicBlock(nn.Module):
    """Post-activation block: conv-BN-ReLU-conv-BN, add shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of `n` blocks (stride 1, 2, 2), global pool, `fc`."""

    stage_names = ("layer1", "layer2", "layer3")
    classifier_name = "fc"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1, self.layer2, self.layer3 = resnet_stages(
            BasicBlock, widths[0], widths[1:], (n, n, n), (1, 2, 2))
        self.fc = nn.Linear(widths[3], num_classes)
        init_zoo_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register_model
def resnet8(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-8 (16-32-64), ~78k parameters."""
    return CifarResNet(8, _THIN, num_classes, in_channels)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-20 (16-32-64), ~0.27M parameters."""
    return CifarResNet(20, _THIN, num_classes, in_channels)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-32 (16-32-64), ~0.47M parameters."""
    return CifarResNet(32, _THIN, num_classes, in_channels)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-56 (16-32-64), ~0.86M parameters."""
    return CifarResNet(56, _THIN, num_classes, in_channels)


@register_model
def resnet110(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-110 (16-32-64), ~1.7M parameters."""
    return CifarResNet(110, _THIN, num_classes, in_channels)


@register_model
def resnet8x4(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-8 at 4x width (64-128-256 after a 32-channel stem), ~1.2M parameters."""
    return CifarResNet(8, _WIDE, num_classes, in_channels)


@register_model
def resnet32x4(num_classes: int = 10, in_channels: int = 3, **_) -> CifarResNet:
    """ResNet-32 at 4x width (64-128-256 after a 32-channel stem), ~7.4M parameters."""
    return CifarResNet(32, _WIDE, num_classes, in_channels)
