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


OUTPUTS = ("sigmoid", "tanh_bn", "bn")
INITS = ("dcgan", "pytorch")


class Generator(nn.Module):
    """Linear to (2*ngf, s/2^k, s/2^k), then k upsample-conv-BN-LeakyReLU stages and an output
    layer.

    Every stage keeps 2*ngf channels except the last, which has ngf; with the default
    k = 2 for images up to 64 px and a sigmoid output this is the CIFAR generator of the
    CMI/RGAL code, layer for layer. The variants of the other methods' code:

    - `output`: `sigmoid` (images in [0, 1], normalised before the model), `tanh_bn` (tanh,
      then BatchNorm without affine: DAFL, DFAD, GDFQ, ABD) or `bn` (BatchNorm with affine:
      ZSKT); the last two produce the model's input directly (`normalized_output`);
    - `wide`: a first map of 4*ngf channels (CMI's LargeGenerator, used for its DFQ);
    - `conv_bias`, `bn_eps`: biased convolutions, and the middle BatchNorms' epsilon (0.8 in
      DAFL's, GDFQ's and ABD's generators);
    - `init`: `dcgan` (N(0, 0.02) weights, BN weights N(1, 0.02)) or `pytorch` (defaults).
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3,
                 num_upsamples: int | None = None, *, output: str = "sigmoid",
                 wide: bool = False, conv_bias: bool = False, bn_eps: float = 1e-5,
                 init: str = "dcgan") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"generator output must be one of {', '.join(OUTPUTS)}")
        if init not in INITS:
            raise ValueError(f"generator init must be one of {', '.join(INITS)}")
        k = default_upsamples(img_size) if num_upsamples is None else num_upsamples
        if k < 1:
            raise ValueError(f"generator needs at least one upsampling stage, got {k}")
        if img_size % 2 ** k:
            raise ValueError(f"generator image size must be a multiple of {2 ** k}, "
                             f"got {img_size}")
        self.nz, self.img_size, self.channels = nz, img_size, channels
        self.num_upsamples = k
        self.init_size = img_size // 2 ** k
        self.output, self.init = output, init
        self.normalized_output = output != "sigmoid"
        first = (4 if wide else 2) * ngf
        self.first_channels = first
        self.l1 = nn.Linear(nz, first * self.init_size ** 2)
        self.ngf = ngf
        layers: list[nn.Module] = [nn.BatchNorm2d(first)]
        cin = first
        for i in range(k):
            cout = ngf if i == k - 1 else 2 * ngf
            layers += [nn.Upsample(scale_factor=2),
                       nn.Conv2d(cin, cout, 3, padding=1, bias=conv_bias),
                       nn.BatchNorm2d(cout, eps=bn_eps),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(ngf, channels, 3, padding=1))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output == "tanh_bn":
            layers += [nn.Tanh(), nn.BatchNorm2d(channels, affine=False)]
        else:
            layers.append(nn.BatchNorm2d(channels))
        self.conv_blocks = nn.Sequential(*layers)
        if init == "dcgan":
            self.reinit()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], self.first_channels, self.init_size, self.init_size)
        return self.conv_blocks(out)

    @torch.no_grad()
    def reinit_first(self, generator: torch.Generator | None = None) -> None:
        """Fresh weights for the first layer only (the linear map from the latent), drawn as
        `reinit` draws them; the upsampling stages keep theirs."""
        if self.init == "pytorch":
            self.l1.reset_parameters()
        else:
            _dcgan_init(self.l1, generator)

    @torch.no_grad()
    def reinit(self, generator: torch.Generator | None = None) -> None:
        """Fresh weights: conv/linear N(0, 0.02), BN weight N(1, 0.02), biases 0 (`dcgan`), or
        PyTorch's default initialisation (`pytorch`)."""
        if self.init == "pytorch":
            for m in self.modules():
                if hasattr(m, "reset_parameters") and m is not self:
                    m.reset_parameters()
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
            return
        for m in self.modules():
            _dcgan_init(m, generator)


@torch.no_grad()
def _dcgan_init(m: nn.Module, generator: torch.Generator | None) -> None:
    """One layer's `dcgan` initialisation: conv/linear N(0, 0.02), BN weight N(1, 0.02), biases
    0, BN running statistics reset; other modules are left alone."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        m.weight.normal_(0.0, 0.02, generator=generator)
        if m.bias is not None:
            m.bias.zero_()
    elif isinstance(m, nn.BatchNorm2d):
        if m.affine:
            m.weight.normal_(1.0, 0.02, generator=generator)
            m.bias.zero_()
        m.reset_running_stats()
