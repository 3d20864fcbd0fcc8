"""MobileNetV2 (width 1.0), laid out like the DataFree zoo's CIFAR checkpoints.

The zoo keeps the ImageNet settings unchanged on 32x32 inputs: a stride-2 stem and the
standard (t, c, n, s) table, so the last feature map is 1x1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_zoo_weights
from .registry import register_model

# (expansion t, output channels c, repeats n, first stride s)
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1), 3x3 depthwise, linear 1x1 project; residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """`features` (stem, 17 inverted residuals, 1x1 conv to 1280), pool, dropout, linear."""

    # Last block at each resolution (16, 8, 4, 2 px on 32x32 input) and the final 1x1 map.
    stage_names = ("features.1", "features.3", "features.6", "features.13", "features.18")
    classifier_name = "classifier.1"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, cin, stride=2)]
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        init_zoo_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, **_) -> MobileNetV2:
    """MobileNetV2 (width 1.0, stride-2 stem), ~2.2M parameters."""
    return MobileNetV2(num_classes, in_channels)
