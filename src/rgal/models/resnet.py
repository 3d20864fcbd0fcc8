"""ResNet-18/34/50 adapted to 32x32 inputs (3x3 stem, no max-pool), as in the DataFree zoo."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


def resnet_stages(block: type[nn.Module], cin: int, widths: tuple[int, ...],
                  depths: tuple[int, ...], strides: tuple[int, ...]) -> list[nn.Sequential]:
    """Residual stages, in order: stage k has `depths[k]` blocks of `widths[k]` planes, its first
    block with `strides[k]`; a block's output is planes x `block.expansion` (1 if absent)."""
    stages = []
    for planes, n, stride in zip(widths, depths, strides, strict=True):
        blocks = []
        for i in range(n):
            blocks.append(block(cin, planes, stride if i == 0 else 1))
            cin = planes * getattr(block, "expansion", 1)
        stages.append(nn.Sequential(*blocks))
    return stages


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """The `shortcut` branch: identity (empty) unless shape changes, then 1x1 conv + BN."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs, post-activation."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, post-activation."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem (64 channels, stride 1), four stages (stride 1, 2, 2, 2), pool, `linear`."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    classifier_name = "linear"

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...],
                 num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet_stages(
            block, 64, (64, 128, 256, 512), depths, (1, 2, 2, 2))
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, **_) -> ResNet:
    """CIFAR ResNet-18, ~11.2M parameters."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model
def resnet34(num_classes: int = 10, in_channels: int = 3, **_) -> ResNet:
    """CIFAR ResNet-34, ~21.3M parameters; a common CIFAR teacher."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register_model
def resnet50(num_classes: int = 10, in_channels: int = 3, **_) -> ResNet:
    """CIFAR ResNet-50 (bottleneck blocks), ~23.5M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)
