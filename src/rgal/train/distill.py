"""Data-free distillation on the training loop: synthesis phase, student steps, evaluation.

`DistillJob` describes one epoch (the method's synthesis phase, `kd_steps` student steps, an
evaluation and the epoch's outputs); `rgal.engine.TrainingLoop` runs the epochs with
checkpoints, exact resume and stop signals; `run_distillation` writes the run's outputs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision, channels_last_for, optimizer_options
from ..config import DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..data.pool import ImagePool
from ..distributed import all_gather_cat, barrier, broadcast_module, rank, world_size
from ..engine import CHECKPOINT, Job, RunFolder, TrainingLoop
from ..engine.evaluate import evaluate
from ..engine.html_report import split_name, write_report
from ..engine.report import plot_curves, save_grid
from ..methods import get_method, method_context
from ..methods.build import frozen_teacher
from ..models.features import FeatureExtractor, freeze
from ..models.weights import save_weights
from ..utils import seed_everything
from .diversity import teacher_diversity
from .extras import export_student
from .student import RealImages, StudentPhase


class WeightAverage:
    """An exponential moving average of a model: after each `update` every floating-point
    parameter and buffer (BN statistics) moves `1 - decay` of the way to the model's; integer
    buffers (BN's batch counter) are copied. `model` is the averaged copy, never trained."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), 1.0 - self.decay)
            else:
                average.copy_(current[name])


@dataclass
class DistillSetup:
    """Everything a run needs, already validated and on its device.

    `test` is None when there is nothing to evaluate on (a run from an image shape alone).
    """

    cfg: DistillConfig
    info: DatasetInfo
    teacher: nn.Module
    student: nn.Module
    test: ImageTensors | None
    device: torch.device
    folder: RunFolder
    resume_state: dict | None = None
    train: ImageTensors | None = None  # the real training set, for kd-real and scratch

    @property
    def out(self) -> Path | None:
        return self.folder.path


RUN_OUTPUTS = ("metrics.jsonl", "summary.json", "student.safetensors", "student_best.safetensors",
               "accuracy.png", "synthetic.safetensors", CHECKPOINT, "report.html", "student.onnx")
RUN_PATTERNS = ("grids/epoch_*.png", "events.out.tfevents.*")


def run_folder(out: str | Path | None) -> RunFolder:
    """The folder of a distillation run (writes nothing when `out` is None)."""
    return RunFolder(out, RUN_OUTPUTS, RUN_PATTERNS)


class DistillJob(Job):
    """The objects of one distillation run and what each of its epochs computes."""

    name = "distill"
    step_name = "student step"
    prelude_name = "synthesis"
    watch_name = "student"
    timing_names = ("synthesis_s", "distill_s", "eval_s")

    def __init__(self, setup: DistillSetup) -> None:
        cfg, info, device = setup.cfg, setup.info, setup.device
        self.setup, self.cfg, self.info, self.device = setup, cfg, info, device
        self.folder = setup.folder
        self.epochs = cfg.epochs
        self.world, self.rank = world_size(), rank()
        # under torchrun every rank synthesizes and trains on its share of each batch
        self.local_batch = cfg.batch_size // self.world
        self.teacher = freeze(setup.teacher.to(device))
        self.student = setup.student.to(device)
        # copied before any hook is attached to the student; off (None) at student_ema 0
        self.average = (WeightAverage(self.student, cfg.student_ema) if cfg.student_ema > 0
                        else None)
        self.augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
        self.reader, folds = frozen_teacher(self.teacher, cfg, info, device)
        self.t_ext, s_ext = FeatureExtractor(self.reader), FeatureExtractor(self.student)
        ctx = method_context(cfg, self.t_ext, s_ext, self.augment, info, device, self.world,
                             folds)
        self.method = get_method(cfg.method)(ctx)
        self.kind = self.method.source
        self._speed_ups(cfg)
        params = list(self.student.parameters()) + list(self.method.student_parameters())
        self.optimizer = student_optimizer(cfg, params)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, cfg.epochs - cfg.warmup_epochs))
        self.phase = StudentPhase(self.method, self.t_ext, s_ext, self.augment, self.optimizer,
                                  batch_size=self.local_batch,
                                  precision=Precision(cfg.precision, device), clip=cfg.clip_grad,
                                  measure_every=cfg.grad_shares, mix=cfg.mix,
                                  mix_alpha=cfg.mix_alpha, crop_scale=cfg.student_crop,
                                  padding=(None if cfg.student_padding < 0
                                           else cfg.student_padding),
                                  mix_partner=cfg.mix_partner)
        self.pool = ImagePool(info.channels, info.image_size, device)
        self.source = (self.pool if self.kind == "pool" else self.method
                       if self.kind == "online"
                       else RealImages(setup.train, device, cfg.real_subset, cfg.seed))
        self.images_synthesized = 0
        self.teacher_acc: float | None = None
        self.best_acc, self.best_epoch = -1.0, 0
        for module in (self.student, self.method, *self._averaged()):
            broadcast_module(module)  # identical starting points on every rank

    def _averaged(self) -> list[nn.Module]:
        return [] if self.average is None else [self.average.model]

    @property
    def delivered(self) -> nn.Module:
        """The student the run evaluates and saves: the weight average where there is one."""
        return self.student if self.average is None else self.average.model

    def _speed_ups(self, cfg: DistillConfig) -> None:
        """channels-last layout and torch.compile, where the config asks for them."""
        channels_last = channels_last_for(cfg.channels_last, self.device)
        for net in [self.reader, self.student, *self._averaged(), *self.method.generators()]:
            if channels_last:
                net.to(memory_format=torch.channels_last)
            if cfg.compile:
                net.compile()

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "method": self.method.run_state(),
                "images_synthesized": self.images_synthesized,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "pool": self.pool.state_dict(),
                "teacher_acc": self.teacher_acc, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch,
                **({} if self.average is None
                   else {"student_average": self.average.model.state_dict()})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; settings changed on resume take effect from here on."""
        cfg = self.cfg
        self.student.load_state_dict(state["student"])
        if self.average is not None:  # switched on at this resume: it starts from the student
            self.average.model.load_state_dict(state.get("student_average", state["student"]))
        self.method.load_run_state(state["method"])
        self.images_synthesized = state["images_synthesized"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.T_max = max(1, cfg.epochs - cfg.warmup_epochs)
        self.scheduler.base_lrs = [cfg.lr for _ in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.scheduler._get_closed_form_lr(),
                             strict=True):
            group.update(lr=lr, initial_lr=cfg.lr, weight_decay=cfg.weight_decay)
            if "momentum" in group:
                group["momentum"] = cfg.momentum
        self.pool.load_state_dict(state["pool"])
        self.phase.refresh_confusion(self.pool.images, self.pool.labels,
                                     self.info.num_classes)
        partial = state.get("partial")
        self.method.start_epoch(partial["epoch"] if partial else state["epoch"] + 1)
        self.teacher_acc = state["teacher_acc"]
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]

    # -- one epoch ----------------------------------------------------------------------------
    def steps(self, epoch: int) -> int:
        return 0 if epoch <= self.cfg.warmup_epochs else self.cfg.kd_steps

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        """The synthesis phase of a pool method; its kept batch joins the pool."""
        prelude: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"], "images": None,
                                   "labels": None, "syn_losses": {}}
        self.method.start_epoch(epoch)
        if self.kind == "pool":
            result = self.method.synthesize()
            images = all_gather_cat(result.images.detach())
            labels = all_gather_cat(result.labels)
            self.pool.add(images, labels)  # every rank keeps the same pool
            if self.cfg.pool_window > 0:  # this phase's and the N - 1 phases' before it
                self.pool.keep_last(self.cfg.pool_window * images.shape[0])
            self.images_synthesized += images.shape[0]
            self.phase.refresh_confusion(self.pool.images, self.pool.labels,
                                         self.info.num_classes)
            prelude.update(images=images.cpu(), labels=labels.cpu(), syn_losses=result.losses)
        self.student.train()
        return prelude

    def step(self, epoch: int, step: int, prelude: dict[str, Any]) -> dict[str, torch.Tensor]:
        step_terms: dict[str, torch.Tensor] = {}
        if self.kind == "online":  # count the images the student trains on, each once
            fresh = self.cfg.online.student_batch == "fresh"
            if step % self.method.steps_per_generator_step == 0:
                step_terms = self.method.generator_step()
                self.images_synthesized += 0 if fresh else self.method.batch_size
            self.images_synthesized += self.method.batch_size if fresh else 0
        step_terms.update(self.phase.step(self.source))
        if self.average is not None:
            self.average.update(self.student)
        return step_terms

    def finish_epoch(self, epoch: int) -> None:
        if epoch > self.cfg.warmup_epochs:
            self.scheduler.step()
        for module in (self.student, *self._averaged()):
            broadcast_module(module)  # BN running statistics as rank 0's

    def end_epoch(self, epoch: int, prelude: dict[str, Any], means: dict[str, float],
                  timings: dict[str, float]) -> dict[str, Any]:
        """Evaluate, keep the best student, diversity, grid; the epoch's metrics record."""
        cfg, folder = self.cfg, self.folder
        t2 = time.time()
        record: dict[str, Any] = {"epoch": epoch}
        measured = self._due(epoch, cfg.eval_every)
        if measured and self.setup.test is not None:
            acc = evaluate(self.delivered, self.setup.test, self.augment.normalize,
                           cfg.eval_batch_size)
            record["test_acc"] = round(acc, 4)
            if self.average is not None and epoch == cfg.epochs:  # the trained one, once
                record["test_acc_trained"] = round(
                    evaluate(self.student, self.setup.test, self.augment.normalize,
                             cfg.eval_batch_size), 4)
            if acc > self.best_acc:
                self.best_acc, self.best_epoch = acc, epoch
                if folder:
                    save_weights(self.delivered, folder / "student_best.safetensors")
        diversity = self._diversity(epoch) if measured else {}
        t3 = time.time()
        if folder and self._due(epoch, cfg.grid_every):
            images, labels = prelude["images"], prelude["labels"]
            if self.kind == "online":  # its own seeded stream: pictures never shift training
                gen = torch.Generator(device=self.device)
                gen.manual_seed(cfg.seed * 100_019 + epoch)
                images, _ = self.method.sample(cfg.synthesis_batch_size, generator=gen)
                labels = self.method.teacher_labels(images)
            if images is not None:
                save_grid(folder / "grids" / f"epoch_{epoch:03d}.png", images, labels,
                          self.info.classes)
        record.update({**prelude["syn_losses"], **means, **diversity, "lr": prelude["lr"],
                       "pool_size": len(self.pool),
                       "images_synthesized": self.images_synthesized, **timings,
                       "eval_s": t3 - t2})
        return record

    def _due(self, epoch: int, every: int) -> bool:
        """Whether an every-N-epochs task (evaluation, grids) runs this epoch: every N-th
        epoch and the last; never when N is 0."""
        return every > 0 and (epoch % every == 0 or epoch == self.cfg.epochs)

    def grid_path(self, epoch: int) -> Path | None:
        return self.folder / "grids" / f"epoch_{epoch:03d}.png" if self.folder else None

    def after_record(self, history: list[dict[str, Any]]) -> None:
        if not self.folder or self.setup.test is None:
            return
        cfg = self.cfg
        measured = [r for r in history if "test_acc" in r]  # every eval_every-th epoch
        if not measured:
            return
        teacher = ({} if self.teacher_acc is None
                   else {f"teacher {self.teacher_acc:.2f}%": self.teacher_acc})
        plot_curves(self.folder / "accuracy.png",
                    {f"student {cfg.student}": ([r["epoch"] for r in measured],
                                                [r["test_acc"] for r in measured])},
                    title=f"{cfg.method}: {cfg.teacher} -> {cfg.student} on {self.info.name}",
                    ylabel=f"{split_name(cfg.holdout)} accuracy (%)", hlines=teacher)

    def _diversity(self, epoch: int) -> dict[str, float | None]:
        """Diversity measures of up to `diversity_samples` images of the method's current set.

        The sample is drawn with its own seeded generator, so measuring never shifts the run's
        random streams.
        """
        n = self.cfg.diversity_samples
        if n == 0 or (self.kind == "pool" and len(self.pool) == 0):
            return {}
        gen = torch.Generator(device="cpu" if self.kind != "online" else self.device)
        gen.manual_seed(self.cfg.seed * 100_003 + epoch)
        images, _ = self.source.sample(n, generator=gen)
        measures = teacher_diversity(self.reader, self.t_ext, images, self.augment.normalize,
                                     self.cfg.eval_batch_size)
        return {k: v if math.isfinite(v) else None for k, v in measures.items()}  # valid JSON


def student_optimizer(cfg: DistillConfig, params: list) -> torch.optim.Optimizer:
    """SGD with momentum (the default) or Adam, over the student's trained parameters."""
    if cfg.student_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                **optimizer_options(cfg.optimizer_impl))
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, **optimizer_options(cfg.optimizer_impl))


def run_distillation(setup: DistillSetup, log: Callable[[str], None] = tqdm.write
                     ) -> dict[str, Any]:
    """Run (or resume) every epoch, checkpointing each; write the outputs, return the summary
    (what `summary.json` holds)."""
    job, loop = start_distillation(setup, log)
    loop.run()
    return finish_distillation(setup, job, loop)


def start_distillation(setup: DistillSetup, log: Callable[[str], None] = tqdm.write
                       ) -> tuple[DistillJob, TrainingLoop]:
    """Build the job and its loop (resuming if the setup carries a checkpoint)."""
    cfg, info, folder = setup.cfg, setup.info, setup.folder
    seed_everything(cfg.seed)
    main = rank() == 0
    if main and folder:
        folder.path.mkdir(parents=True, exist_ok=True)
        (folder / "grids").mkdir(exist_ok=True)
    job = DistillJob(setup)
    loop = TrainingLoop(job, folder, config=cfg.to_dict(), progress=cfg.progress, seed=cfg.seed,
                        log=log, tensorboard=cfg.tensorboard)
    if setup.resume_state is not None:
        loop.load(setup.resume_state)
        setup.resume_state = None
        log(f"resuming {setup.out} from {loop.where()}")
    elif main:
        folder.clear()
        if setup.test is not None:
            job.teacher_acc = evaluate(job.teacher, setup.test, job.augment.normalize,
                                       cfg.eval_batch_size)
            log(f"teacher {cfg.teacher}: {job.teacher_acc:.2f}% on the {info.name} "
                f"{'held-out' if cfg.holdout else 'test'} images")
    return job, loop


def finish_distillation(setup: DistillSetup, job: DistillJob, loop: TrainingLoop
                        ) -> dict[str, Any]:
    """After the last epoch: final weights, the synthetic pool if asked, summary.json."""
    cfg, folder = setup.cfg, setup.folder
    barrier()
    if rank() != 0:
        return {}
    if job.average is not None:  # the student handed back is the average
        job.student.load_state_dict(job.average.model.state_dict())
    if folder:
        save_weights(job.student, folder / "student.safetensors")
        if cfg.export_synthetic:
            job.pool.export(folder / "synthetic.safetensors")
    history = loop.history
    summary = {
        "teacher_acc": job.teacher_acc,
        "best_acc": job.best_acc if setup.test is not None else None,
        "best_epoch": job.best_epoch if setup.test is not None else None,
        "final_acc": history[-1].get("test_acc") if history else None, "epochs": cfg.epochs,
        **({} if job.average is None or not history
           else {"final_acc_trained": history[-1].get("test_acc_trained")}),
        "wall_s": loop.elapsed(),
        "synthesis_s": sum(r["synthesis_s"] for r in history),
        "distill_s": sum(r["distill_s"] for r in history),
        "eval_s": sum(r["eval_s"] for r in history),
        "images_synthesized": job.images_synthesized,
        "student_params": sum(p.numel() for p in job.student.parameters()),
        "teacher_params": sum(p.numel() for p in job.teacher.parameters()),
        "device": str(setup.device), "processes": job.world,
        "precision": job.phase.precision.name,
        "channels_last": channels_last_for(cfg.channels_last, setup.device),
        "config": cfg.to_dict(),
    }
    if folder and cfg.export == "onnx" and setup.test is not None:
        summary["onnx"] = export_student(job.student, setup.info, setup.test, folder.path,
                                         f"student {cfg.student}")
    folder.write_json("summary.json", summary)
    if folder:
        write_report(folder.path)
    return summary

