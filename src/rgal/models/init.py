"""The weight initialisation shared by the CIFAR zoo families."""

from __future__ import annotations

import math

from torch import nn


def init_zoo_weights(model: nn.Module, linear_std: float | None = None,
                     zero_linear_bias: bool = False) -> None:
    """He-normal (fan-out) convs with zeroed biases; BN weight 1 and bias 0; optionally
    Linear weights N(0, linear_std) and/or zeroed Linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
