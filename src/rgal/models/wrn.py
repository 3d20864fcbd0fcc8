"""Wide ResNets for 32x32 inputs, compatible with the DataFree zoo's `wrn*` checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_zoo_weights
from .registry import register_model


class PreActBlock(nn.Module):
    """Pre-activation basic block: (BN-ReLU-conv3x3) twice, 1x1 `convShortcut` if widths differ."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.same_width = cin == cout
        self.convShortcut = (None if self.same_width
                             else nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(pre)))))
        # Identity path takes the raw input; the projection path takes the activated one.
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class WRNStage(nn.Module):
    """`n` pre-activation blocks held as `.layer`; the first one may stride and widen."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: conv stem, three stages (16k, 32k, 64k channels), BN-ReLU, pool, `fc`.

    Its stage maps are the raw outputs of the three stages (the last one before the final
    BN-ReLU), as the reference code's WRN returns them.
    """

    stage_names = ("block1", "block2", "block3")
    classifier_name = "fc"

    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = WRNStage(n, widths[0], widths[1], 1, dropout)
        self.block2 = WRNStage(n, widths[1], widths[2], 2, dropout)
        self.block3 = WRNStage(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)
        init_zoo_weights(self, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def wrn16_1(num_classes: int = 10, in_channels: int = 3, **_) -> WideResNet:
    """WRN-16-1, ~0.18M parameters."""
    return WideResNet(16, 1, num_classes, in_channels)


@register_model
def wrn16_2(num_classes: int = 10, in_channels: int = 3, **_) -> WideResNet:
    """WRN-16-2, ~0.69M parameters."""
    return WideResNet(16, 2, num_classes, in_channels)


@register_model
def wrn40_1(num_classes: int = 10, in_channels: int = 3, **_) -> WideResNet:
    """WRN-40-1, ~0.56M parameters."""
    return WideResNet(40, 1, num_classes, in_channels)


@register_model
def wrn40_2(num_classes: int = 10, in_channels: int = 3, **_) -> WideResNet:
    """WRN-40-2, ~2.2M parameters; the usual CIFAR teacher."""
    return WideResNet(40, 2, num_classes, in_channels)
