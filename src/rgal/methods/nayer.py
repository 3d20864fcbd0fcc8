"""NAYER (Tran et al., CVPR 2024): a label-embedding generator with re-initialised noisy layers.

The generator has no latent noise. Its input is a fixed embedding of each class (text
embeddings of the class names in the paper), batch-normalised, then passed through one of
several "noisy" linear layers (one per chunk of K images, one image of every class per chunk)
that are re-drawn from N(0, 1) before every generator loop; the rest of the generator persists
across loops and epochs and is rebuilt only every `g_life` epochs. Each epoch runs `g_loops`
loops of `g_steps` steps, each adding its lowest-loss batch to the pool; the BN statistics are
blended with a moving average that every loop updates (as Fast-Datafree's).

Class embeddings: `random` (the offline default: a fixed random orthonormal set, one vector
per class), `clip` (CLIP ViT-B/32 text embeddings of "a photo of a {class}", computed with the
optional `rgal[clip]` extra, whose weights download on first use) or a file holding a
(classes x dim) tensor (.safetensors, .pt or .npy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..config import ConfigError, option
from ..engine.inversion import PhaseResult
from ..models.generator import Generator
from .base import InversionMethod, MethodContext
from .registry import register_method

CLIP_MODEL = "openai/clip-vit-base-patch32"


@dataclass
class NAYERSettings:
    """NAYER's generator input, loops and lifetimes."""

    section: ClassVar[str] = "nayer"
    embeddings: str = option("random", "class embeddings: random (fixed orthonormal, offline), "
                                       "clip (text embeddings, needs rgal[clip]) or a file "
                                       "of a (classes x dim) tensor")
    embedding_dim: int = option(512, "width of the random class embeddings", lo=1, hi=65_536)
    noisy_dim: int = option(1000, "output width of the noisy layers", lo=1, hi=65_536)
    g_loops: int = option(2, "generator loops per epoch (each adds a batch to the pool)", lo=1,
                          hi=10_000)
    g_life: int = option(10, "epochs between two rebuilds of the generator", lo=1,
                         hi=1_000_000)
    prompt: str = option("a photo of a {}", "text of a class for clip embeddings")


def random_class_embeddings(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """A fixed random orthonormal set of `num_classes` vectors (QR of a seeded Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(dim, num_classes), num_classes, generator=g))
    return q[:dim].t().contiguous()


def clip_class_embeddings(classes: tuple[str, ...], prompt: str) -> torch.Tensor:
    """CLIP ViT-B/32 text embeddings of the prompts (needs `pip install "rgal[clip]"`)."""
    try:
        from transformers import CLIPModel, CLIPTokenizer
    except ImportError:
        raise ConfigError('nayer embeddings "clip" need the transformers package: pip install '
                          '"rgal[clip]" (or pass a file of embeddings)') from None
    try:
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_MODEL)
        model = CLIPModel.from_pretrained(CLIP_MODEL).eval()
    except OSError as e:
        raise ConfigError(f"could not load {CLIP_MODEL} ({' '.join(str(e).split())[:160]})"
                          ) from None
    texts = [prompt.format(c.replace("_", " ").replace("-", " ")) for c in classes]
    with torch.no_grad():
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        return model.get_text_features(**tokens).float()


def load_class_embeddings(path: str | Path, num_classes: int) -> torch.Tensor:
    """A (classes x dim) tensor from .safetensors (first tensor), .pt/.pth or .npy."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"nayer embeddings: {path} is not 'random', 'clip' or a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        emb = next(iter(tensors.values())) if tensors else None
    elif path.suffix == ".npy":
        import numpy as np

        emb = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        emb = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != num_classes:
        raise ConfigError(f"nayer embeddings: {path} must hold one ({num_classes} x dim) tensor")
    return emb.float()


class NoisyLayerGenerator(nn.Module):
    """Class embedding -> BatchNorm1d -> a noisy Linear per chunk of K images -> the CMI
    generator body (Linear to 2*ngf maps, upsample-conv-BN-LeakyReLU stages, sigmoid)."""

    def __init__(self, embeddings: torch.Tensor, batch_size: int, noisy_dim: int, ngf: int,
                 img_size: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", embeddings.float().clone())
        self.num_classes, dim = embeddings.shape
        self.nz = noisy_dim
        self.bn = nn.BatchNorm1d(dim)
        self.noisy = nn.ModuleList(nn.Linear(dim, noisy_dim)
                                   for _ in range(math.ceil(batch_size / self.num_classes)))
        self.body = Generator(noisy_dim, ngf, img_size, channels, init="pytorch")

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        e = self.bn(self.embeddings[labels])
        chunks = e.split(self.num_classes)
        return self.body(torch.cat([layer(c) for layer, c in zip(self.noisy, chunks,
                                                                  strict=False)]))

    @torch.no_grad()
    def reinit(self) -> None:
        """A brand-new generator: PyTorch's default initialisation everywhere."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @torch.no_grad()
    def reinit_noisy(self) -> None:
        """Fresh noisy layers: weights N(0, 1), biases 0 (before every generator loop)."""
        for layer in self.noisy:
            layer.weight.normal_()
            layer.bias.zero_()


def balanced_labels(n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """n // K copies of 0..K-1 in order, then random labels for the rest."""
    whole = torch.arange(num_classes, device=device).repeat(n // num_classes)
    rest = torch.randint(0, num_classes, (n % num_classes,), device=device)
    return torch.cat([whole, rest])


@register_method("nayer")
class NAYER(InversionMethod):
    """Label-embedding generator with noisy layers; BN + one-hot + adversarial, BN statistics
    blended with a moving average over loops."""

    sections = (NAYERSettings,)
    defaults = {"w_bn": 10.0, "w_oh": 0.5, "w_adv": 1.33, "lr_g": 4e-3, "bn_momentum": 0.9,
                "mix": "none"}
    search = ({}, {"lr_g": 2e-3}, {"lr_g": 8e-3}, {"w_adv": 0.66}, {"g_life": 5}, {"w_bn": 3.0})
    summary = "Tran et al., CVPR 2024"
    images = "pool; a label-embedding generator, noisy layers redrawn every loop, 2 loops/epoch"
    generator_doc = "BN (moving-average statistics) + one-hot + adversarial"

    def make_generator(self, ctx: MethodContext) -> nn.Module:
        s, info = ctx.cfg.nayer, ctx.info
        if s.embeddings == "random":
            emb = random_class_embeddings(info.num_classes, s.embedding_dim)
        elif s.embeddings == "clip":
            names = info.classes or tuple(str(c) for c in range(info.num_classes))
            emb = clip_class_embeddings(names, s.prompt)
        else:
            emb = load_class_embeddings(s.embeddings, info.num_classes)
        return NoisyLayerGenerator(emb, ctx.synthesis_batch_size, s.noisy_dim, ctx.cfg.ngf,
                                   info.image_size, info.channels)

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam(generator.parameters(), lr=self.lr_g, betas=(0.5, 0.999),
                                **self.opt_options)

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        """The generator but its noisy layers: under torchrun each rank redraws its own (so
        the ranks make different images, as their own latents do for RGAL) and keeps their
        gradients to itself."""
        noisy = {id(p) for p in generator.noisy.parameters()}
        return [p for p in generator.parameters() if id(p) not in noisy]

    def synthesize(self) -> PhaseResult:
        """`g_loops` loops of `g_steps` steps, each with fresh noisy layers; every loop's
        lowest-loss batch joins the pool."""
        s, generator = self.cfg.nayer, self.generator
        if (self.epoch - 1) % s.g_life == 0:
            self.rebuild_generator()
        device = next(generator.parameters()).device
        generator.train()
        results = []
        for _ in range(s.g_loops):
            generator.reinit_noisy()
            y = self.phase_labels(self.batch_size, device,
                                  balanced_labels(self.batch_size, self.num_classes, device))
            self.draw_targets(y)
            opt = self.optimizer(generator, y)
            results.append(self.engine.phase(self.g_steps, lambda y=y: (generator(y), y),
                                             self.synthesis_terms, self.synthesis_weights(),
                                             opt, self.shared_parameters(generator)))
            if self.bn_stats is not None and self.bn_momentum > 0:
                self.bn_stats.update_momentum()
            self.observe_classes(results[-1].images, results[-1].labels)
        losses = {k: sum(r.losses[k] for r in results) / len(results) for k in results[0].losses}
        return PhaseResult(torch.cat([r.images for r in results]),
                           torch.cat([r.labels for r in results]),
                           torch.cat([r.teacher_labels for r in results]), losses)

