"""The image generator of CMI/RGAL: latent -> image in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn


def default_upsamples(img_size: int) -> int:
    """2 stages up to 64 px (the CIFAR/MNIST generator); above, start from a 4-7 px map.

    224 -> 5 stages from 7x7, as in the ImageNet generators of the CMI/Fast-DFKD family.
    """
    if img_size <= 64:
        return 2
    n = 2
    while img_size % 2 ** (n + 1) == 0 and img_size // 2 ** (n + 1) >= 4:
        n += 1
    return n


class Generator(nn.Module):
    """Linear to (2*ngf, s/2^k, s/2^k), then k upsample-conv-BN-LeakyReLU stages and a sigmoid.

    Every stage keeps 2*ngf channels except the last, which has ngf; with the default
    k = 2 for images up to 64 px this is the reference CIFAR generator, layer for layer.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3,
                 num_upsamples: int | None = None) -> None:
        super().__init__()
        k = default_upsamples(img_size) if num_upsamples is None else num_upsamples
        if k < 1:
            raise ValueError(f"generator needs at least one upsampling stage, got {k}")
        if img_size % 2 ** k:
            raise ValueError(f"generator image size must be a multiple of {2 ** k}, "
                             f"got {img_size}")
        self.nz, self.img_size, self.channels = nz, img_size, channels
        self.num_upsamples = k
        self.init_size = img_size // 2 ** k
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.ngf = ngf
        layers: list[nn.Module] = [nn.BatchNorm2d(2 * ngf)]
        for i in range(k):
            cout = ngf if i == k - 1 else 2 * ngf
            layers += [nn.Upsample(scale_factor=2),
                       nn.Conv2d(2 * ngf, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(ngf, channels, 3, padding=1), nn.Sigmoid()]
        self.conv_blocks = nn.Sequential(*layers)
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
