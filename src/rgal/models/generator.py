"""The image generator of CMI/RGAL: latent -> image in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Linear to (2*ngf, s/4, s/4), then two upsample-conv-BN-LeakyReLU steps and a sigmoid."""

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(f"generator image size must be a multiple of 4, got {img_size}")
        self.nz, self.img_size, self.channels = nz, img_size, channels
        self.init_size = img_size // 4
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.ngf = ngf
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, channels, 3, padding=1),
            nn.Sigmoid(),
        )
        self.reinit()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], 2 * self.ngf, self.init_size, self.init_size)
        return self.conv_blocks(out)

    @torch.no_grad()
    def reinit(self, generator: torch.Generator | None = None) -> None:
        """Fresh weights: conv/linear N(0, 0.02), BN weight N(1, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()
                m.reset_running_stats()
