"""Synthesis targets aimed at the boundary between a class and the classes the teacher finds
similar to it.

Without data the teacher's own classifier says which classes are neighbours: the cosine
similarity of two rows of its last linear layer (the class-similarity matrix of Nayak et al.,
ICML 2019, who draw whole soft-label vectors from it). Here a chosen share of each synthesis
batch keeps its class c as the larger share of a two-class target,
`(1 - l) e_c + l e_n` with `l ~ U(0, 1/2)`, the partner n drawn from a softmax of its
similarity to c (sharp: mostly the nearest one or two classes). The one-hot term then asks
the teacher to be unsure between c and n: images near the boundary the student must learn,
which a one-hot target never asks for.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

# cosine similarities of classifier rows are small (0.2 for Fashion-MNIST's t-shirt and shirt,
# the nearest pair): at 0.05 the nearest one or two classes take most of the draws
PARTNER_TEMPERATURE = 0.05


def classifier_weight(model: nn.Module, num_classes: int) -> torch.Tensor:
    """The weight (num_classes x features) of the model's last linear layer with that many
    outputs; ConfigError when there is none."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = module
    if found is None:
        raise ConfigError(f"boundary targets need the teacher's classifier: {type(model).__name__} "
                          f"has no nn.Linear with {num_classes} outputs")
    return found.weight.detach().float()


def partner_probabilities(weight: torch.Tensor,
                          temperature: float = PARTNER_TEMPERATURE) -> torch.Tensor:
    """Row c: the probability of each other class being drawn as c's partner, a softmax over
    the other classes of the cosine similarity of their classifier rows to c's divided by
    `temperature`; 0 on the diagonal."""
    k = weight.shape[0]
    if k < 2:
        raise ConfigError("boundary targets need at least two classes")
    w = nn.functional.normalize(weight.float(), dim=1)
    sim = (w @ w.T) / temperature
    sim.fill_diagonal_(float("-inf"))
    return sim.softmax(1)


def boundary_targets(y: torch.Tensor, partners: torch.Tensor, share: float) -> torch.Tensor:
    """Soft targets (N x K) for labels y: one-hot, except a random `share` of the rows, which
    give their class `1 - l` and a partner drawn from `partners[y]` the rest, l ~ U(0, 1/2)."""
    k = partners.shape[0]
    target = nn.functional.one_hot(y, k).float()
    chosen = (torch.rand(y.shape[0], device=y.device) < share).nonzero().flatten()
    if chosen.numel():
        c = y[chosen]
        n = torch.multinomial(partners[c], 1).flatten()
        lam = 0.5 * torch.rand(chosen.numel(), device=y.device)
        target[chosen, c] = 1 - lam
        target[chosen, n] = lam
    return target
