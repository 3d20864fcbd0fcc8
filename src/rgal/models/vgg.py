"""VGG-8/11/13 with BatchNorm for 32x32 inputs (no large FC head), as in the DataFree zoo."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_zoo_weights
from .registry import register_model

# Output widths of the convs of each of the five blocks.
_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _block(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    """[conv3x3 (with bias), BN, ReLU] per width; indices 0,1 / 3,4 / ... hold the weights."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Five conv blocks with 2x2 max-pools after blocks 0-2, global average pool, `classifier`.

    A fourth max-pool after block 3 is applied only for 64x64 inputs (as the reference does),
    so on 32x32 inputs blocks 3 and 4 both run at 4x4.
    """

    stage_names = ("block0", "block1", "block2", "block3", "block4")
    classifier_name = "classifier"

    def __init__(self, cfg: tuple[tuple[int, ...], ...], num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        cins = (in_channels,) + tuple(c[-1] for c in cfg[:-1])
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _block(cin, widths) for cin, widths in zip(cins, cfg, strict=True))
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        init_zoo_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x = F.max_pool2d(self.block0(x), 2)
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block3(x)
        if h == 64:
            x = F.max_pool2d(x, 2)
        x = self.block4(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def vgg8(num_classes: int = 10, in_channels: int = 3, **_) -> VGG:
    """VGG-8 with BN (one conv per block), ~3.9M parameters."""
    return VGG(_CFGS["vgg8"], num_classes, in_channels)


@register_model
def vgg11(num_classes: int = 10, in_channels: int = 3, **_) -> VGG:
    """VGG-11 with BN, ~9.2M parameters."""
    return VGG(_CFGS["vgg11"], num_classes, in_channels)


@register_model
def vgg13(num_classes: int = 10, in_channels: int = 3, **_) -> VGG:
    """VGG-13 with BN, ~9.4M parameters."""
    return VGG(_CFGS["vgg13"], num_classes, in_channels)
