"""The generator loop every synthesis runs on.

One step: produce images (a generator, free pixels, a conditional generator), view them
(augment or just normalise), run the frozen model with its BN statistics recorded, optionally
the frozen student, let the method name its loss terms, weigh them, and step the optimiser in
the run's precision. A *phase* repeats the step and keeps the lowest-loss batch. Data-free
distillation (RGAL, DeepInversion, CMI, Fast, DAFL, ZSKT, DFAD, DFQ), GDFQ's quantization
generator and ABD's model inversion are all this loop with different terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision
from ..losses import BNStatistics, FiniteWatch
from ..models.features import FeatureExtractor, Features

Terms = dict[str, torch.Tensor]
TermsFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", Features,
                    "Features | None"], Terms]


def weighted_sum(terms: Terms, weights: dict[str, float]) -> torch.Tensor:
    """Sum of `weights[k] * terms[k]` over the terms with a positive weight, in the terms' order."""
    total: torch.Tensor | int = 0
    for name, value in terms.items():
        w = weights.get(name, 0.0)
        if w > 0:
            total = total + w * value.float()
    if isinstance(total, int):
        device = next(iter(terms.values())).device if terms else None
        return torch.zeros((), device=device, requires_grad=True)
    return total


def gradient_shares(terms: Terms, weights: dict[str, float],
                    params: Iterable[nn.Parameter]) -> dict[str, torch.Tensor]:
    """Each weighted term's share of the summed gradient norms over `params`:
    `share_<term>` = |grad(w_k L_k)| / sum_j |grad(w_j L_j)|. One backward pass per term (the
    graph is kept for the step's own backward); terms without a gradient count as zero."""
    params = [p for p in params if p.requires_grad]
    norms: dict[str, torch.Tensor] = {}
    for name, value in terms.items():
        w = weights.get(name, 0.0)
        if w <= 0 or not params:
            continue
        if not value.requires_grad:  # e.g. a relation term on a batch without triplets
            norms[name] = torch.zeros((), device=value.device)
            continue
        grads = torch.autograd.grad(w * value.float(), params, retain_graph=True,
                                    allow_unused=True)
        found = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        norms[name] = torch.stack(found).sum().sqrt() if found else torch.zeros(())
    total = sum(norms.values()) if norms else None
    if total is None or float(total) == 0:
        return {}
    return {f"share_{k}": v / total for k, v in norms.items()}


@contextmanager
def frozen(model: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """The model without parameter gradients, in eval mode (or train mode with `train`, so
    its BatchNorms use and update batch statistics); mode and flags restored on exit."""
    mode = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.train(train).requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(mode)


@dataclass
class InversionStep:
    """What one generator step saw: images, views, target labels, model outputs, loss terms."""

    x: torch.Tensor
    v: torch.Tensor
    y: torch.Tensor | None
    t: Features
    s: Features | None
    terms: Terms
    loss: torch.Tensor
    shares: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class PhaseResult:
    """A phase's kept batch (lowest loss), its target labels, the frozen model's labels of it,
    and the mean of each loss term over the steps."""

    images: torch.Tensor
    labels: torch.Tensor | None
    teacher_labels: torch.Tensor
    losses: dict[str, float] = field(default_factory=dict)


class InversionEngine:
    """Optimises images against a frozen model (and, adversarially, a frozen student).

    `view(x)` turns images in [0, 1] into the model's input; `bn` records the BN-statistics
    distance of the frozen model's forward pass (only during generator steps, not during
    evaluations); `precision` runs the forward passes and the optimiser step. With
    `measure_every` > 0, every so many steps of a phase also measure each term's share of the
    gradient norm (`gradient_shares`), averaged into the phase's losses as `share_<term>`.
    """

    def __init__(self, teacher: FeatureExtractor, *, view: Callable[[torch.Tensor], torch.Tensor],
                 student: FeatureExtractor | None = None, bn: BNStatistics | None = None,
                 precision: Precision | None = None, progress: bool = False,
                 name: str = "synthesis",
                 student_context: Callable[[], AbstractContextManager] | None = None,
                 measure_every: int = 0) -> None:
        self.teacher, self.student, self.view = teacher, student, view
        self.measure_every = measure_every
        self._student_context = student_context
        self.bn = bn
        if self.bn is not None:
            self.bn.enabled = False
        self.precision = precision or Precision("fp32")
        self.progress, self.name = progress, name

    @contextmanager
    def recording(self) -> Iterator[None]:
        """BN statistics are recorded inside this block only."""
        if self.bn is None:
            yield
            return
        self.bn.enabled = True
        try:
            yield
        finally:
            self.bn.enabled = False

    def student_context(self) -> AbstractContextManager:
        """The student is read, never trained, during a generator step."""
        if self._student_context is not None:
            return self._student_context()
        return frozen(self.student.model) if self.student is not None else nullcontext()

    def step(self, produce: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
             terms_fn: TermsFn, weights: dict[str, float], optimizer: torch.optim.Optimizer,
             shared: Iterable[nn.Parameter] = (), *, use_student: bool = True,
             clip: float = 0.0, on_grads: Callable[[], None] | None = None,
             after_step: Callable[[], None] | None = None,
             measure: bool = False) -> InversionStep:
        """One generator step: produce, view, frozen forward passes, weighted terms, update.

        `on_grads` runs once the gradients are final (before the update), `after_step` after
        it (e.g. a projection of the optimised pixels); `measure` adds the terms' gradient
        shares over the optimised parameters."""
        with self.precision.autocast():
            x, y = produce()
            v = self.view(x)
            with self.recording():
                t = self.teacher(v)
            s = None
            if use_student and self.student is not None:
                with self.student_context():
                    s = self.student(v)
            terms = terms_fn(x, v, y, t, s)
            loss = weighted_sum(terms, weights)
        shares = (gradient_shares(terms, weights, (p for g in optimizer.param_groups
                                                   for p in g["params"]))
                  if measure else {})
        optimizer.zero_grad(set_to_none=True)
        self.precision.step(loss, optimizer, shared, clip, on_grads)
        if after_step is not None:
            after_step()
        return InversionStep(x, v, y, t, s, terms, loss, shares)

    def phase(self, steps: int, produce: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
              terms_fn: TermsFn, weights: dict[str, float], optimizer: torch.optim.Optimizer,
              shared: Iterable[nn.Parameter] = (), *, use_student: bool = True,
              keep_best: bool = True, on_grads: Callable[[], None] | None = None,
              after_step: Callable[[], None] | None = None,
              on_step: Callable[[InversionStep, torch.Tensor], None] | None = None
              ) -> PhaseResult:
        """`steps` generator steps; the batch with the lowest weighted loss is kept (with
        `keep_best=False`, the last). `on_step(step, better)` sees every step and whether it
        became the kept one. Non-finite terms raise NonFiniteLoss at the end."""
        shared = list(shared)
        best_cost: torch.Tensor | None = None
        best_x: torch.Tensor | None = None
        best_t: torch.Tensor | None = None
        y = None
        sums: dict[str, torch.Tensor] = {}
        share_sums: dict[str, list[torch.Tensor]] = {}
        watch = FiniteWatch(self.name)
        for i in tqdm(range(steps), desc=self.name, leave=False, disable=not self.progress):
            measure = self.measure_every > 0 and i % self.measure_every == 0
            out = self.step(produce, terms_fn, weights, optimizer, shared,
                            use_student=use_student, on_grads=on_grads, after_step=after_step,
                            measure=measure)
            for k, val in out.shares.items():
                share_sums.setdefault(k, []).append(val)
            y = out.y
            with torch.no_grad():
                labels = out.t.logits.argmax(1)
                if best_x is None or not keep_best:
                    best_cost = torch.full((), float("inf"), device=out.loss.device)
                    best_x = out.x.detach().float().clone()
                    best_t = torch.zeros_like(labels)
                better = out.loss < best_cost
                best_cost = torch.where(better, out.loss, best_cost)
                best_x = torch.where(better, out.x.detach().float(), best_x)
                best_t = torch.where(better, labels, best_t)
                if on_step is not None:
                    on_step(out, better)
                terms = dict(out.terms)
                terms["loss_syn"] = out.loss
                watch.update(i, terms)
                for k, val in terms.items():
                    sums[k] = sums.get(k, 0.0) + val.detach()
        watch.check()
        losses = {k: float(v) / steps for k, v in sums.items()}
        losses.update({k: float(torch.stack(v).mean()) for k, v in share_sums.items()})
        return PhaseResult(best_x, y, best_t, losses)
