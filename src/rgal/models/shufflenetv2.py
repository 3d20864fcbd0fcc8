"""ShuffleNetV2 (1.0x) for 32x32 inputs, laid out like the DataFree zoo's checkpoints.

CIFAR variant: a 1x1 stem conv at full resolution and no max-pool, so the three stages run
at 16, 8 and 4 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave channel groups: (N, g*c, H, W) -> view (N, g, c) -> transpose -> flatten."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride-1 unit: keep the first half of the channels, transform the second half
    (1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN-ReLU), concatenate [kept, transformed], shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        keep, branch = x[:, :half], x[:, half:]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], 1))


class DownUnit(nn.Module):
    """Stride-2 unit with two branches on the full input, concatenated [left, right], shuffled.

    left: depthwise 3x3/2-BN, 1x1-BN-ReLU (conv1, conv2);
    right: 1x1-BN-ReLU, depthwise 3x3/2-BN, 1x1-BN-ReLU (conv3, conv4, conv5).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """1x1 stem (24 ch), three stages (116, 232, 464 ch), 1x1 conv to 1024, pool, `linear`."""

    stage_names = ("layer1", "layer2", "relu")
    classifier_name = "linear"

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
                 repeats: tuple[int, int, int] = (3, 7, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        stages = []
        for w, n in zip(widths[:3], repeats, strict=True):
            stages.append(nn.Sequential(DownUnit(cin, w), *[ShuffleUnit(w) for _ in range(n)]))
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(cin, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def shufflenetv2(num_classes: int = 10, in_channels: int = 3, **_) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x (CIFAR variant), ~1.3M parameters."""
    return ShuffleNetV2(num_classes, in_channels)
