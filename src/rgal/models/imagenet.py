"""ImageNet-layout ResNet-18/34/50 and MobileNetV2 for 224x224 inputs.

Parameter names and shapes follow torchvision's `resnet18/34/50` and `mobilenet_v2` (conv1,
bn1, layer1..4 with `downsample.0/.1`, fc; features.N.conv..., classifier.1), so ImageNet
checkpoints saved from torchvision load strictly into these models without torchvision.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import init_zoo_weights
from .mobilenetv2 import MobileNetV2
from .registry import register_model
from .resnet import resnet_stages


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN projection when the block changes shape, else None (identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection, ReLU after the sum."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 with the stride (ResNet v1.5), 1x1 expand by 4, residual."""

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
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ImageNetResNet(nn.Module):
    """7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages (strides 1, 2, 2, 2), pool, `fc`."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    classifier_name = "fc"

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...],
                 num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet_stages(
            block, 64, (64, 128, 256, 512), depths, (1, 2, 2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_zoo_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet18_imagenet(num_classes: int = 1000, in_channels: int = 3, **_) -> ImageNetResNet:
    """ImageNet ResNet-18 (torchvision layout), 11.7M parameters with 1000 classes."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model
def resnet34_imagenet(num_classes: int = 1000, in_channels: int = 3, **_) -> ImageNetResNet:
    """ImageNet ResNet-34 (torchvision layout), 21.8M parameters with 1000 classes."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register_model
def resnet50_imagenet(num_classes: int = 1000, in_channels: int = 3, **_) -> ImageNetResNet:
    """ImageNet ResNet-50 v1.5 (torchvision layout), 25.6M parameters with 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


class ImageNetMobileNetV2(MobileNetV2):
    """MobileNetV2 (width 1.0) on 224x224: stage maps at 112, 56, 28, 14 and 7 px.

    The zoo's MobileNetV2 already keeps torchvision's module layout (features.N.conv...,
    classifier.1) and initialisation; this class only documents the ImageNet use.
    """


@register_model
def mobilenetv2_imagenet(num_classes: int = 1000, in_channels: int = 3,
                         **_) -> ImageNetMobileNetV2:
    """ImageNet MobileNetV2 (torchvision layout), 3.5M parameters with 1000 classes."""
    return ImageNetMobileNetV2(num_classes, in_channels)
