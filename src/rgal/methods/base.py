"""What a data-free distillation method is: its settings, its synthesis and its student step.

A method is a small class (one file each, registered by name) that names the loss terms of
its synthesis step and of its student step, unweighted, with the weights that scale them; the
engines (`rgal.engine`) run the steps and the loop. Three families differ in where the
student's images come from:

- `InversionMethod` (*pool*): every epoch a synthesis phase optimises a generator (or the
  pixels) against the teacher; the lowest-loss batch joins a growing pool;
- `OnlineMethod` (*online*): a persistent generator takes one step every few student steps
  and is sampled afresh for every student batch;
- `RealDataMethod` (*real*): the real training set (the references kd-real and scratch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..amp import Precision, optimizer_options
from ..config import ConfigError, DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo
from ..distributed import broadcast_module, world_size
from ..engine.inversion import InversionEngine, PhaseResult, frozen
from ..losses import BNStatistics, adversarial_loss, kd_loss, per_sample_kl
from ..losses.boundary import boundary_targets, classifier_weight, partner_probabilities
from ..models.features import FeatureExtractor, Features, freeze
from ..models.fold import FoldedBN
from ..models.generator import Generator

Terms = dict[str, torch.Tensor]

# configurations of its own hyper-parameters each data-free method tries in `rgal bench
# --search` (the same number for every method; the first is its defaults)
SEARCH_BUDGET = 6


@dataclass
class MethodContext:
    """What a method is built from: the run's config, frozen teacher, student and their shapes.

    `batch_size` and `synthesis_batch_size` are this process's shares under torchrun.
    """

    cfg: DistillConfig
    teacher: FeatureExtractor
    student: FeatureExtractor
    augment: Augment
    info: DatasetInfo
    device: torch.device
    teacher_channels: list[int]
    student_channels: list[int]
    feature_dim: int
    batch_size: int
    synthesis_batch_size: int
    teacher_folds: list[FoldedBN] = field(default_factory=list)


# shared options that act on a synthesised pool or its generator: their "off" value and what
# they do (a method whose images are online or real refuses any other value)
POOL_OPTIONS: dict[str, tuple[Any, str]] = {
    "boundary": (0.0, "shapes the targets of a synthesised pool"),
    "hard_classes": (0.0, "shapes the targets of a synthesised pool"),
    "generator_life": (0, "re-initialises a synthesis phase's generator"),
    "reset_part": ("all", "re-initialises part of a synthesis phase's generator"),
    "pool_window": (0, "trims a synthesised pool"),
    "mix_partner": ("random", "pairs a synthesised pool's images by their classes"),
}


class Method(nn.Module):
    """Base of every method. Holds the frozen teacher (kept in eval mode whatever `train()`
    says) and the student, and gives the plain KD student step."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = "pool"  # pool | online | real
    sections: ClassVar[tuple[type, ...]] = ()  # typed settings sections the method reads
    defaults: ClassVar[dict[str, Any]] = {}  # its paper's values of shared keys and sections
    summary: ClassVar[str] = ""  # one line: the paper
    images: ClassVar[str] = ""  # where the student's images come from (README table)
    generator_doc: ClassVar[str] = ""  # the generator's objective (README table)
    student_doc: ClassVar[str] = "KD"  # the student's objective (README table)
    in_suite: ClassVar[bool] = True  # part of `rgal bench`'s default suite
    # its own hyper-parameters tried by `rgal bench --search` (SEARCH_BUDGET configurations,
    # the first `{}` = its defaults); empty for the real-data references, which are not tuned
    search: ClassVar[tuple[dict[str, Any], ...]] = ()
    fold_teacher: ClassVar[bool] = True  # its terms work on a teacher with folded BatchNorms
    pair_sampling: bool = False  # every image taken twice as two views (RGAL's batches)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx, self.cfg = ctx, ctx.cfg
        self.teacher = ctx.teacher
        self.student = ctx.student
        self.augment = ctx.augment
        self.epoch = 1  # the epoch being run (1-based), set by `start_epoch`
        freeze(self.teacher.model)

    @classmethod
    def check_settings(cls, cfg: DistillConfig) -> None:
        """Refuse settings the method cannot run with (ConfigError), before any work."""
        if cfg.mix_partner != "random" and cfg.mix == "none":
            raise ConfigError(f"mix_partner {cfg.mix_partner} chooses mixing partners; set mix "
                              f"to mixup or cutmix")
        if cls.source != "real" and cfg.real_subset:
            raise ConfigError(f"real_subset picks the real training images of kd-real and "
                              f"scratch; {cls.name} trains on {cls.source} images")
        if cls.source == "pool":
            return
        for key, (off, what) in POOL_OPTIONS.items():
            if getattr(cfg, key) != off:
                raise ConfigError(f"{key} {what}; {cls.name} has none ({cls.source} images)")

    def start_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (1-based), before its synthesis phase."""
        self.epoch = epoch

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        self.teacher.model.eval()
        return self

    # -- the student step ---------------------------------------------------------------------
    @property
    def needs_teacher(self) -> bool:
        """Whether the student step reads the teacher's outputs."""
        return True

    @property
    def augment_student(self) -> bool:
        """Whether the student's images get random crops and flips."""
        return True

    def student_terms(self, v: torch.Tensor, y: torch.Tensor, t: Features | None,
                      s: Features) -> Terms:
        """The student step's loss terms on views `v` (labels `y`), unweighted."""
        return {"loss_kd": kd_loss(s.logits, t.logits, self.cfg.tau)}

    def student_weights(self) -> dict[str, float]:
        """The weight of each student term."""
        return {"loss_kd": 1.0}

    def student_parameters(self) -> list[nn.Parameter]:
        """Parameters trained together with the student (e.g. projections of a feature loss)."""
        return []

    # -- checkpoints --------------------------------------------------------------------------
    def run_state(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue exactly (teacher and student excluded)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("teacher.", "student.", "ctx."))}

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Restore what `run_state` returned."""
        own = self.state_dict()
        own.update(state)
        self.load_state_dict(own)

    def generators(self) -> list[nn.Module]:
        """The image generators the method trains (for channels-last / compile)."""
        generator = getattr(self, "generator", None)
        return [generator] if isinstance(generator, nn.Module) else []


class InversionMethod(Method):
    """A synthesis phase per epoch: `g_steps` Adam steps on the generator and its latents.

    L_G = w_bn L_bn + w_oh CE(T(v), y) + w_adv L_adv (+ the terms a method adds); the batch
    with the lowest L_G joins the pool under its target labels y.
    """

    source = "pool"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg = ctx.cfg
        self.generator = self.make_generator(ctx).to(ctx.device)
        self.num_classes = ctx.info.num_classes
        self.batch_size, self.g_steps = ctx.synthesis_batch_size, cfg.g_steps
        self.lr_g = cfg.lr_g
        self.opt_options = optimizer_options(cfg.optimizer_impl)
        self.bn_stats = (BNStatistics(self.teacher.model, self.bn_momentum, ctx.teacher_folds,
                                      first_weight=cfg.w_bn_first)
                         if cfg.w_bn > 0 else None)
        self.engine = InversionEngine(self.teacher, view=self.augment, student=self.student,
                                      bn=self.bn_stats,
                                      precision=Precision(cfg.precision, ctx.device),
                                      progress=cfg.progress, measure_every=cfg.grad_shares)
        # boundary targets: which classes neighbour which, from the teacher's classifier
        self.partners = (partner_probabilities(classifier_weight(self.teacher.model,
                                                                 self.num_classes))
                         if cfg.boundary > 0 else None)
        self._soft: tuple[torch.Tensor, torch.Tensor] | None = None
        # with hard_classes, each class's disagreement so far (kept in checkpoints; None: off)
        self.register_buffer("class_gap", torch.zeros(self.num_classes, device=ctx.device)
                             if cfg.hard_classes > 0 else None)

    @classmethod
    def check_settings(cls, cfg: DistillConfig) -> None:
        super().check_settings(cfg)
        if cfg.generator_life > 0:
            if cfg.reset_generator:
                raise ConfigError("generator_life and reset_generator both set: reset_generator "
                                  "already re-initialises the generator every phase")
        if cfg.generator_life > 0 or cfg.reset_part != "all":
            key = "generator_life" if cfg.generator_life > 0 else "reset_part"
            if (cls.phase_generator is not InversionMethod.phase_generator
                    or cls.synthesize is not InversionMethod.synthesize):
                raise ConfigError(f"{key}: {cls.name} decides its generator's life itself")
        if cfg.reset_part != "all":
            if cls.make_generator is not InversionMethod.make_generator:
                raise ConfigError(f"reset_part: {cls.name}'s generator has no first layer to "
                                  f"renew on its own")
            if not cfg.reset_generator and cfg.generator_life == 0:
                raise ConfigError("reset_part does nothing without reset_generator or "
                                  "generator_life")

    # -- what methods vary --------------------------------------------------------------------
    def make_generator(self, ctx: MethodContext) -> nn.Module:
        """The module optimised by each phase (the CMI/RGAL generator by default)."""
        return Generator(ctx.cfg.nz, ctx.cfg.ngf, ctx.info.image_size, ctx.info.channels)

    @property
    def bn_momentum(self) -> float:
        """Momentum of the moving average BN statistics are blended with (0: this batch's)."""
        return self.cfg.bn_momentum

    @property
    def lr_z(self) -> float:
        """Learning rate of the latents."""
        return self.lr_g

    def phase_generator(self) -> nn.Module:
        """The module optimised in this phase (re-initialised if asked, whole or its first
        layer (`reset_part`): every phase, or at the start of every `generator_life`-th phase
        after the first)."""
        life = self.cfg.generator_life
        if self.cfg.reset_generator or (life > 0 and self.epoch > 1
                                        and (self.epoch - 1) % life == 0):
            self.rebuild_generator()
        return self.generator

    def rebuild_generator(self) -> None:
        """Fresh generator weights (all, or the first layer's with `reset_part` first), the
        same on every rank (under torchrun each rank's random stream differs, so rank 0's draw
        is broadcast)."""
        if self.cfg.reset_part == "first":
            self.generator.reinit_first()
        else:
            self.generator.reinit()
        broadcast_module(self.generator)

    def optimizer(self, generator: nn.Module, z: torch.Tensor) -> torch.optim.Optimizer:
        """Adam over the generator and the latents, betas (0.5, 0.999)."""
        return torch.optim.Adam([{"params": generator.parameters(), "lr": self.lr_g},
                                 {"params": [z], "lr": self.lr_z}], betas=(0.5, 0.999),
                                **self.opt_options)

    def shared_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        """Parameters every rank must keep identical (their gradients are averaged)."""
        return list(generator.parameters())

    def synthesis_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                        s: Features) -> Terms:
        """Every active loss term of one synthesis step, unweighted."""
        terms = {"loss_oh": F.cross_entropy(t.logits, self.one_hot_target(y))}
        if self.bn_stats:
            terms["loss_bn"] = self.bn_stats.loss()
        if self.cfg.w_adv > 0 and self.adversarial:
            terms["loss_adv"] = adversarial_loss(s.logits, t.logits)
        return terms

    def draw_targets(self, y: torch.Tensor) -> None:
        """This phase's targets of the one-hot term for labels y: y itself, or with
        `boundary` > 0 soft targets that put part of the weight on a neighbouring class."""
        self._soft = ((y, boundary_targets(y, self.partners.to(y.device), self.cfg.boundary))
                      if self.partners is not None else None)

    def phase_labels(self, n: int, device: torch.device, uniform: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """This phase's n target labels, sorted: `uniform` (or n drawn uniformly), or with
        `hard_classes` = a > 0 drawn from p_c = (1 - a) / K + a g_c / sum g, where g_c is the
        class's disagreement measured by `observe_classes` (uniform until measured)."""
        gap = self.class_gap
        if gap is not None and float(gap.sum()) > 0:
            a = self.cfg.hard_classes
            p = (1 - a) / self.num_classes + a * gap / gap.sum()
            return torch.multinomial(p, n, replacement=True).sort().values
        if uniform is not None:
            return uniform
        return torch.randint(0, self.num_classes, (n,), device=device).sort().values

    @torch.no_grad()
    def observe_classes(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """With `hard_classes`: fold the student's KL(teacher || student) on this phase's kept
        images in [0, 1], averaged per target class, into each class's moving average
        (momentum 0.8; summed over ranks under torchrun)."""
        gap = self.class_gap
        if gap is None or not len(labels):
            return
        v = self.augment(images, augment=False)
        with frozen(self.student.model):
            kl = per_sample_kl(self.student(v).logits, self.teacher(v).logits)
        stats = torch.zeros(2, self.num_classes, device=gap.device)
        stats[0].index_add_(0, labels, kl.to(gap.device))
        stats[1].index_add_(0, labels, torch.ones_like(kl, device=gap.device))
        if world_size() > 1:
            torch.distributed.all_reduce(stats)
        seen = stats[1] > 0
        mean = stats[0][seen] / stats[1][seen]
        gap[seen] = torch.where(gap[seen] > 0, 0.8 * gap[seen] + 0.2 * mean, mean)

    def one_hot_target(self, y: torch.Tensor) -> torch.Tensor:
        """The one-hot term's target for the labels of this phase (see `draw_targets`)."""
        if self._soft is not None and self._soft[0] is y:
            return self._soft[1]
        return y

    @property
    def adversarial(self) -> bool:
        """The adversarial term is off in the warm-up epochs (there is no student step yet)."""
        return self.epoch > self.cfg.warmup_epochs

    def synthesis_weights(self) -> dict[str, float]:
        """The weight of each synthesis term."""
        cfg = self.cfg
        return {"loss_oh": cfg.w_oh, "loss_bn": cfg.w_bn, "loss_adv": cfg.w_adv}

    def end_phase(self, generator: nn.Module, result: PhaseResult) -> None:
        """Called with the kept batch once the phase is over."""

    # -- the phase ----------------------------------------------------------------------------
    def synthesize(self) -> PhaseResult:
        """One synthesis phase: fresh latents and target labels, `g_steps` generator steps."""
        generator = self.phase_generator()
        device = next(generator.parameters()).device
        generator.train()
        nz = getattr(generator, "nz", 1)
        z = torch.randn(self.batch_size, nz, device=device, requires_grad=True)
        y = self.phase_labels(self.batch_size, device)
        self.draw_targets(y)
        opt = self.optimizer(generator, z)
        result = self.engine.phase(self.g_steps, lambda: (generator(z), y), self.synthesis_terms,
                                   self.synthesis_weights(), opt, self.shared_parameters(generator),
                                   **self.phase_options(generator))
        self.end_phase(generator, result)
        if self.bn_stats is not None and self.bn_momentum > 0:
            self.bn_stats.update_momentum()  # this phase's last batch joins the average
        result.images = self.to_unit(result.images)
        self.observe_classes(result.images, result.labels)
        return result

    def phase_options(self, generator: nn.Module) -> dict[str, Any]:
        """Extra arguments of the engine's phase (hooks; which batch is kept)."""
        return {}

    def run_state(self) -> dict[str, Any]:
        bn = self.bn_stats.state_dict() if self.bn_stats is not None else {}
        return {**super().run_state(), "bn_momentum": bn}

    def load_run_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        bn = state.pop("bn_momentum", {})
        if self.bn_stats is not None:
            self.bn_stats.load_state_dict(bn)
        super().load_run_state(state)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """The kept batch as images in [0, 1] (what the pool stores)."""
        return images


class OnlineMethod(Method):
    """A persistent generator trained one step every `student_steps_per_g` student steps and
    sampled for every student batch; images are never stored.

    The student's images are fresh draws, the generator step's latents redrawn after its
    update, or the generator step's own images (`online.student_batch`). Images a generator
    makes in the model's input space (`tanh_bn`, `bn` outputs) reach the teacher as they are;
    they are handed to the student step mapped back to [0, 1] through the dataset's mean and
    std, which its normalisation undoes.
    """

    source = "online"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, s = ctx.cfg, ctx.cfg.online
        self.generator = Generator(cfg.nz, cfg.ngf, ctx.info.image_size, ctx.info.channels,
                                   output=s.generator_output, wide=s.generator_wide,
                                   conv_bias=s.generator_bias, bn_eps=s.generator_bn_eps,
                                   init=s.generator_init).to(ctx.device)
        self.batch_size = 2 * ctx.batch_size
        self.bn_stats = (BNStatistics(self.teacher.model, folds=ctx.teacher_folds,
                                      first_weight=cfg.w_bn_first)
                         if cfg.w_bn > 0 else None)
        self.opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g,
                                    betas=(s.g_beta1, 0.999),
                                    **optimizer_options(cfg.optimizer_impl))
        view = ((lambda x: x) if self.generator.normalized_output
                else (lambda x: self.augment(x, augment=False)))
        self.engine = InversionEngine(self.teacher, view=view, student=self.student,
                                      bn=self.bn_stats,
                                      precision=Precision(cfg.precision, ctx.device),
                                      student_context=self._student_context)
        self.register_buffer("cache", torch.empty(0, device=ctx.device), persistent=True)

    @property
    def steps_per_generator_step(self) -> int:
        """Student steps per generator step."""
        return self.cfg.online.student_steps_per_g

    @property
    def augment_student(self) -> bool:
        return self.cfg.online.augment_synthetic

    def _student_context(self):
        """The student in the generator step: frozen weights, BN in eval mode or (as ZSKT's and
        DFAD's code run it) in train mode, which also moves its running statistics."""
        if self.cfg.online.adv_student_mode == "eval":
            return frozen(self.student.model)
        return frozen(self.student.model, train=True)

    def generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: None, t: Features,
                        s: Features | None) -> Terms:
        """The generator's loss terms on the views `v`, unweighted."""
        raise NotImplementedError

    def generator_weights(self) -> dict[str, float]:
        """The weight of each generator term."""
        raise NotImplementedError

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        return torch.randn(n, self.generator.nz, device=device, generator=generator)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output -> images in [0, 1] space (the student step normalises them)."""
        if not self.generator.normalized_output:
            return x
        norm = self.augment.normalize
        return x * norm.std + norm.mean

    def generator_step(self) -> Terms:
        """One Adam step of the generator; returns its detached loss terms."""
        self.generator.train()
        z = self._z(self.batch_size)
        out = self.engine.step(lambda: (self.generator(z), None), self.generator_terms,
                               self.generator_weights(), self.opt, self.generator.parameters(),
                               use_student=self.cfg.w_adv > 0, clip=self.cfg.online.g_clip)
        mode = self.cfg.online.student_batch
        if mode == "same":  # the images this step saw (before its update)
            self.cache = self.to_unit(out.x.detach())
        elif mode == "after":  # the same latents through the updated generator
            with torch.no_grad():
                self.cache = self.to_unit(self.generator(z))
        terms = dict(out.terms)
        terms["loss_syn"] = out.loss
        return {k: val.detach() for k, val in terms.items()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` images in [0, 1] space; their labels are unknown (-1): the student step reads
        the teacher's own outputs. A student batch is the kept one when the method keeps one;
        with its own `generator` (pictures, diversity) the draw is always fresh."""
        if generator is None and self.cache.numel() and self.cfg.online.student_batch != "fresh":
            x = self.cache[:n]
        else:
            self.generator.train(self.cfg.online.sample_mode == "train")
            x = self.to_unit(self.generator(self._z(n, generator)))
            self.generator.train()
        return x, torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def teacher_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's predicted classes of images in [0, 1] (for pictures)."""
        return self.teacher(self.augment(x, augment=False)).logits.argmax(1)

    def run_state(self) -> dict[str, Any]:
        return {**super().run_state(), "generator_optimizer": self.opt.state_dict()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.opt.load_state_dict(state.pop("generator_optimizer"))
        if "cache" in state:
            self.cache = state["cache"].to(self.cache.device)
        super().load_run_state(state)


class RealDataMethod(Method):
    """The student trains on the real training set (a reference, not a data-free method)."""

    source = "real"
    defaults = {"mix": "none"}  # KD on real images as the field runs it, without CutMix
    images = "the real training set"
    generator_doc = "none"
