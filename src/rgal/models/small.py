"""Small CNNs sized for 28x28 grayscale images on a CPU (Fashion-MNIST, MNIST)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv stages (full, 1/2, 1/4 resolution), global average pool, linear head."""

    stage_names = ("stage1", "stage2", "stage3")
    classifier_name = "fc"

    def __init__(self, widths: tuple[int, int, int], depth: tuple[int, int, int],
                 num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        stages = []
        cin = in_channels
        for i, (w, d) in enumerate(zip(widths, depth, strict=True)):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for _ in range(d):
                layers.append(_conv_bn_relu(cin, w))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def smallcnn(num_classes: int = 10, in_channels: int = 1, **_) -> SmallCNN:
    """~0.29M parameters: 32-64-128 channels, two convs each; the shipped Fashion-MNIST teacher."""
    return SmallCNN((32, 64, 128), (2, 2, 2), num_classes, in_channels)


@register_model
def tinycnn(num_classes: int = 10, in_channels: int = 1, **_) -> SmallCNN:
    """~70k parameters: 16-32-64 channels (1, 2, 2 convs), ~5x fewer FLOPs than smallcnn;
    the demo's student."""
    return SmallCNN((16, 32, 64), (1, 2, 2), num_classes, in_channels)
