"""The class-incremental run on the training loop: one loop epoch is one task (learn it on its
real images, with replay; measure; invert the model for the next task)."""

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

from ..amp import Precision
from ..config import ConfigError
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors, describe_dataset
from ..data.splits import evaluation_split
from ..engine import CHECKPOINT, Job, RunFolder, TrainingLoop
from ..engine.html_report import finish_run
from ..engine.inversion import weighted_sum
from ..engine.report import plot_curves, save_grid
from ..engine.tensorboard import require_tensorboard
from ..methods.rgal import RelationTerms
from ..models.build import build_model, check_model_name, require_batchnorm
from ..models.features import FeatureExtractor, freeze
from ..models.generator import Generator
from ..models.weights import save_weights
from ..utils import resolve_device, seed_everything
from .config import IncrementalConfig
from .inversion import GeneratorReplay, ModelInversion, PoolReplay
from .learners import TaskContext, create_learner
from .protocol import (
    TaskBatches,
    TaskStream,
    accuracy_row,
    incremental_metrics,
    relabel,
    split_classes,
)

RUN_OUTPUTS = ("summary.json", "metrics.jsonl", "acc_matrix.png", "accuracy.png",
               "model.safetensors", CHECKPOINT, "report.html")
INVERTING = ("deepinv-replay", "abd", "abd+rgal")


def incremental_folder(out: str | None) -> RunFolder:
    """The folder of a class-incremental run (writes nothing when `out` is None)."""
    return RunFolder(out, RUN_OUTPUTS, ("grids/replay_*.png", "events.out.tfevents.*"))


@dataclass
class IncrementalSetup:
    """A validated run: config, data description, split, data, model, device, output folder."""

    cfg: IncrementalConfig
    info: DatasetInfo
    split: list[list[int]]
    train: ImageTensors
    evaluation: ImageTensors
    model: nn.Module
    device: torch.device
    folder: RunFolder
    resume_state: dict | None = None

    @property
    def out(self):
        return self.folder.path


def prepare_incremental(cfg: IncrementalConfig, overwrite: bool = False,
                        resume_state: dict | None = None,
                        resume: bool = False) -> IncrementalSetup:
    """Validate every input before any work: dataset, model, split, device, output folder."""
    info = describe_dataset(cfg.dataset, cfg.data_root)
    check_model_name(cfg.model, "model")
    if cfg.tasks > info.num_classes:
        raise ConfigError(f"--tasks {cfg.tasks} exceeds the {info.num_classes} classes of "
                          f"{cfg.dataset}")
    device = resolve_device(cfg.device)
    folder = incremental_folder(cfg.out)
    folder.check(overwrite or resume or resume_state is not None)
    if cfg.tensorboard:
        require_tensorboard()
    split = split_classes(info.num_classes, cfg.tasks, cfg.seed)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, info.num_classes, info.channels, "model")
    if cfg.method in INVERTING and cfg.w_bn > 0:
        require_batchnorm(model, f"model {cfg.model}", "inversion needs w_bn=0")
    train, evaluation = evaluation_split(cfg.dataset, cfg.data_root,
                                         holdout=cfg.val_size if cfg.validation else 0,
                                         download=cfg.download, need_train=True, info=info)
    return IncrementalSetup(cfg, info, split, train, evaluation, model, device, folder,
                            resume_state)


def _save_heatmap(path, matrix: list[list[float | None]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = len(matrix)
    data = torch.full((t, t), float("nan"))
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None:
                data[i, j] = v
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * t, 1.0 + 0.6 * t), dpi=100)
    im = ax.imshow(data.numpy(), vmin=0, vmax=100, cmap="viridis")
    for i in range(t):
        for j in range(i + 1):
            v = float(data[i, j])
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v < 60 else "black")
    ax.set_xticks(range(t), [str(j + 1) for j in range(t)])
    ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after learning task")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class IncrementalJob(Job):
    """One loop epoch = one task: steps on the task's real images (+ replay), then the
    accuracy row, a frozen copy of the model and, for replay methods, the inversion."""

    name = "incremental"
    unit = "task"
    watch_name = "training"
    timing_names = ("setup_s", "train_s", "eval_s")

    def __init__(self, setup: IncrementalSetup) -> None:
        cfg, info, device = setup.cfg, setup.info, setup.device
        self.setup, self.cfg, self.info, self.device = setup, cfg, info, device
        self.folder = setup.folder
        self.stream = TaskStream(setup.train, setup.split)
        self.epochs = self.stream.num_tasks
        self.evaluation = relabel(setup.evaluation, setup.split)
        self.order = [c for task in setup.split for c in task]
        self.model = setup.model.to(device)
        self.augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
        hp = {k: getattr(cfg, k) for k in ("w_fkd", "w_kd", "tau", "w_rel_stu", "stu_sampler",
                                           "margin")}
        self.learner = create_learner(cfg.method, self.model, **hp).to(device)
        self.precision = Precision(cfg.precision, device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.matrix: list[list[float | None]] = []
        self.acc_seen: list[float] = []
        self.old: FeatureExtractor | None = None
        self.replay: PoolReplay | GeneratorReplay | None = None
        self.task: dict[str, Any] | None = None  # the current task's optimiser and batches

    # -- one task -----------------------------------------------------------------------------
    def steps(self, epoch: int) -> int:
        """The same number of steps for every method (joint draws them from all seen data)."""
        t = epoch - 1
        return max(1, math.ceil(self.cfg.epochs * len(self.stream.task_indices(t))
                                / self.cfg.batch_size))

    def _start_task(self, epoch: int) -> None:
        cfg, t = self.cfg, epoch - 1
        self.learner.begin_task(TaskContext(t, self.stream.first(t), self.stream.seen(t),
                                            self.old, self.replay))
        n = self.steps(epoch)
        opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n)
        batches = TaskBatches(self.stream, t, cfg.batch_size, self.gen,
                              self.learner.uses_past_data)
        self.task = {"opt": opt, "sched": sched, "batches": batches}

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        self._start_task(epoch)
        self.model.train()
        return {}

    def step(self, epoch: int, step: int, prelude: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg, task = self.cfg, self.task
        xb, yb = task["batches"].next()
        x = self.augment(xb.to(self.device).float().div_(255))
        y = yb.to(self.device)
        xs = ys = None
        if self.replay is not None and self.learner.uses_replay:
            xs, ys = self.replay.draw(x.shape[0], self.gen)
            xs = self.augment(xs)
        with self.precision.autocast():
            terms = self.learner.losses(x, y, xs, ys)
            loss = weighted_sum(terms, dict.fromkeys(terms, 1.0))  # terms come weighted
        task["opt"].zero_grad(set_to_none=True)
        self.precision.backward(loss)
        if cfg.clip_grad > 0:
            self.precision.unscale(task["opt"])
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.precision.step_only(task["opt"])
        task["sched"].step()
        return {k: v.detach() for k, v in terms.items()}

    def end_epoch(self, epoch: int, prelude: dict[str, Any], means: dict[str, float],
                  timings: dict[str, float]) -> dict[str, Any]:
        cfg, t, stream = self.cfg, epoch - 1, self.stream
        first, seen = stream.first(t), stream.seen(t)
        row, acc = accuracy_row(self.model, self.evaluation, stream.bounds, t,
                                self.augment.normalize, cfg.eval_batch_size)
        self.matrix.append(row)
        self.acc_seen.append(acc)
        record = {"task": epoch, "classes": [self.order[c] for c in range(first, seen)],
                  "steps": self.steps(epoch), "acc_seen": acc, "acc_row": row,
                  "train_s": timings["train_s"], **means}
        self.old = FeatureExtractor(freeze(copy.deepcopy(self.model)))
        self.task = None
        if self.learner.uses_replay and epoch < self.epochs:
            t_inv = time.time()
            self.replay, (images, labels), inv_losses = self._invert(seen)
            record.update({f"inv_{k.removeprefix('loss_')}": v for k, v in inv_losses.items()},
                          inversion_s=time.time() - t_inv,
                          replay_counts=torch.bincount(labels.cpu(), minlength=seen).tolist())
            if self.folder:
                original = torch.tensor(self.order)[labels.cpu()]  # rows named by dataset class
                save_grid(self.folder / "grids" / f"replay_task{epoch}.png", images, original,
                          self.info.classes or [str(c) for c in range(self.info.num_classes)])
        if cfg.progress:
            tqdm.write(f"task {epoch}/{self.epochs}: accuracy on {seen} seen classes "
                       f"{acc:.2f}%  (per task: {', '.join(f'{a:.1f}' for a in row)})")
        return record

    def grid_path(self, epoch: int) -> Path | None:
        return self.folder / "grids" / f"replay_task{epoch}.png" if self.folder else None

    def _inversion(self, frozen_model: nn.Module, seen: int) -> ModelInversion:
        cfg, info = self.cfg, self.info
        generator = Generator(cfg.nz, cfg.ngf, info.image_size, info.channels).to(self.device)
        rgal = cfg.method == "abd+rgal"
        return ModelInversion(
            frozen_model, generator, self.augment, seen, steps=cfg.inv_steps,
            batch_size=cfg.inv_batch_size, lr=cfg.lr_g, w_oh=cfg.w_oh, w_balance=cfg.w_balance,
            w_bn=cfg.w_bn, w_tv=cfg.w_tv, w_rel_syn=cfg.w_rel_syn if rgal else 0.0,
            relations=RelationTerms(direction=cfg.relation_direction, syn_sampler=cfg.syn_sampler,
                                    margin=cfg.margin),
            progress=cfg.progress)

    def _invert(self, seen: int
                ) -> tuple[PoolReplay | GeneratorReplay, tuple[torch.Tensor, torch.Tensor], dict]:
        """Train a generator on the frozen model.

        Returns the replay source of the next task, a class-balanced sample of uint8 images
        and labels (the pool itself with --replay pool; shown in the replay grid), and the
        mean inversion losses.
        """
        inversion = self._inversion(self.old.model, seen)
        losses = inversion.fit()
        images, labels = inversion.sample(self.cfg.replay_size)
        inversion.extractor.remove()
        uint8 = images.clamp(0, 1).mul(255).round().to(torch.uint8)
        source = (GeneratorReplay(inversion) if self.cfg.replay == "generator"
                  else PoolReplay(uint8, labels))
        return source, (uint8, labels), losses

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        replay: dict[str, Any] | None = None
        if isinstance(self.replay, PoolReplay):
            replay = {"images": self.replay.images.cpu(), "labels": self.replay.labels.cpu()}
        elif isinstance(self.replay, GeneratorReplay):
            replay = {"generator": self.replay.inversion.generator.state_dict(),
                      "seen": self.replay.inversion.seen}
        task = None
        if self.task is not None:
            task = {"opt": self.task["opt"].state_dict(),
                    "sched": self.task["sched"].state_dict(),
                    "batches": self.task["batches"].state_dict()}
        return {"model": self.model.state_dict(),
                "old": self.old.model.state_dict() if self.old is not None else None,
                "replay": replay, "matrix": self.matrix, "acc_seen": self.acc_seen,
                "batch_rng": self.gen.get_state(), "task": task,
                "precision": self.precision.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.matrix = [list(r) for r in state["matrix"]]
        self.acc_seen = list(state["acc_seen"])
        self.gen.set_state(state["batch_rng"])
        self.precision.scaler.load_state_dict(state["precision"])
        self.old = None
        if state["old"] is not None:
            old = copy.deepcopy(self.model)
            old.load_state_dict(state["old"])
            self.old = FeatureExtractor(freeze(old))
        self.replay = None
        replay = state["replay"]
        if replay is not None and "images" in replay:
            self.replay = PoolReplay(replay["images"].to(self.device),
                                     replay["labels"].to(self.device))
        elif replay is not None:
            inversion = self._inversion(self.old.model, replay["seen"])
            inversion.generator.load_state_dict(replay["generator"])
            self.replay = GeneratorReplay(inversion)
        if state["task"] is not None:
            epoch = len(self.matrix) + 1
            self._start_task(epoch)
            self.task["opt"].load_state_dict(state["task"]["opt"])
            self.task["sched"].load_state_dict(state["task"]["sched"])
            self.task["batches"].load_state_dict(state["task"]["batches"])
            self.model.train()


def run_incremental(setup: IncrementalSetup, log: Callable[[str], None] = tqdm.write) -> dict:
    """Learn every task in turn; write summary.json, metrics, pictures; return the summary."""
    cfg, folder = setup.cfg, setup.folder
    job = IncrementalJob(setup)
    loop = TrainingLoop(job, folder, config=cfg.to_dict(), progress=cfg.progress,
                        seed=cfg.seed, log=log, tensorboard=cfg.tensorboard)
    if setup.resume_state is not None:
        loop.load(setup.resume_state)
        setup.resume_state = None
        log(f"resuming {folder.path} from {loop.where()}")
    else:
        folder.clear()
    loop.run()
    matrix, acc_seen = job.matrix, job.acc_seen
    summary = {"method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
               "tasks": job.epochs, "seed": cfg.seed,
               "evaluated_on": "validation" if cfg.validation else "test",
               "class_order": setup.split, **incremental_metrics(matrix, acc_seen),
               "acc_seen": acc_seen, "acc_matrix": [row + [None] * (len(matrix) - len(row))
                                                    for row in matrix],
               "wall_s": loop.elapsed(), "config": cfg.to_dict()}
    if folder:
        save_weights(job.model, folder / "model.safetensors")
        folder.write_json("summary.json", summary)
        _save_heatmap(folder / "acc_matrix.png", matrix,
                      f"{cfg.method}: final {summary['final_acc']:.1f}%, "
                      f"forgetting {summary['forgetting']:.1f}")
        xs_ = list(range(1, len(acc_seen) + 1))
        plot_curves(folder / "accuracy.png", {cfg.method: (xs_, acc_seen)}, xlabel="task",
                    ylabel="accuracy on seen classes (%)",
                    title=f"{cfg.dataset}, {job.epochs} tasks")
        finish_run(folder.path, cfg.tensorboard, job.epochs,
                   {k: summary[k] for k in ("final_acc", "avg_inc_acc", "forgetting")})
    return {**summary, "_model": job.model}
