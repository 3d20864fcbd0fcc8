"""The class-incremental loop: learn task after task, invert, replay, measure, write outputs."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import ConfigError
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors, describe_dataset, load_dataset
from ..models.features import FeatureExtractor, find_batchnorms, freeze
from ..models.generator import Generator
from ..models.weights import save_weights
from ..train.extras import TensorBoardWriter, finish_run  # hook: optional run outputs
from ..train.prepare import build_model, check_model_name
from ..train.report import plot_curves, save_grid
from ..utils import resolve_device, seed_everything
from .config import IncrementalConfig
from .inversion import GeneratorReplay, ModelInversion, PoolReplay
from .learners import TaskContext, create_learner
from .protocol import TaskStream, accuracy_row, incremental_metrics, relabel, split_classes

RUN_OUTPUTS = ("summary.json", "metrics.jsonl", "acc_matrix.png", "accuracy.png",
               "model.safetensors")


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
    out: Path


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding an earlier run unless overwriting; then clear its outputs."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    found = [m for m in RUN_OUTPUTS if (out / m).exists()]
    if found and not overwrite:
        raise ConfigError(f"output folder {out} already holds a run ({found[0]}); "
                          "pass --overwrite or choose another --out")


def clear_outputs(out: Path) -> None:
    """Remove the files an earlier run wrote in `out`."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for grid in (out / "grids").glob("replay_*.png"):
        grid.unlink()


def prepare_incremental(cfg: IncrementalConfig, overwrite: bool = False) -> IncrementalSetup:
    """Validate every input before any work: dataset, model, split, device, output folder."""
    info = describe_dataset(cfg.dataset, cfg.data_root)
    check_model_name(cfg.model, "model")
    if cfg.tasks > info.num_classes:
        raise ConfigError(f"--tasks {cfg.tasks} exceeds the {info.num_classes} classes of "
                          f"{cfg.dataset}")
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    check_output_dir(out, overwrite)
    split = split_classes(info.num_classes, cfg.tasks, cfg.seed)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, info, "model")
    if cfg.method in ("deepinv-replay", "abd", "abd+rgal") and not find_batchnorms(model) \
            and cfg.w_bn > 0:
        raise ConfigError(f"model {cfg.model} has no BatchNorm layer; inversion needs w_bn=0")
    train = load_dataset(cfg.dataset, cfg.data_root, train=True, download=cfg.download)
    if cfg.validation:
        if cfg.val_size >= len(train):
            raise ConfigError(f"val_size {cfg.val_size} leaves no training image "
                              f"({len(train)} in all)")
        cut = len(train) - cfg.val_size
        evaluation = ImageTensors(train.images[cut:], train.labels[cut:])
        train = ImageTensors(train.images[:cut], train.labels[:cut])
    else:
        evaluation = load_dataset(cfg.dataset, cfg.data_root, train=False, download=cfg.download)
    if int(train.labels.max()) >= info.num_classes:
        raise ConfigError(f"training labels exceed the {info.num_classes} classes of "
                          f"{cfg.dataset}")
    return IncrementalSetup(cfg, info, split, train, evaluation, model, device, out)


def _save_heatmap(path: Path, matrix: list[list[float | None]], title: str) -> None:
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


def run_incremental(setup: IncrementalSetup) -> dict:
    """Learn every task in turn; write summary.json, metrics, pictures; return the summary."""
    cfg, info, device, out = setup.cfg, setup.info, setup.device, setup.out
    t0 = time.time()
    tb = TensorBoardWriter(out) if cfg.tensorboard else None  # hook: refuses before writing
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    stream = TaskStream(setup.train, setup.split)
    evaluation = relabel(setup.evaluation, setup.split)
    order = [c for task in setup.split for c in task]
    model = setup.model.to(device)
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    hp = {k: getattr(cfg, k) for k in ("mu", "w_kd", "tau", "w_stri", "stu_sampler", "margin")}
    learner = create_learner(cfg.method, model, **hp).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    matrix: list[list[float | None]] = []
    acc_seen: list[float] = []
    old: FeatureExtractor | None = None
    replay: PoolReplay | GeneratorReplay | None = None
    metrics = (out / "metrics.jsonl").open("w")
    try:
        for t in range(stream.num_tasks):
            first, seen = stream.first(t), stream.seen(t)
            learner.begin_task(TaskContext(t, first, seen, old, replay))
            # the same number of steps for every method (joint draws them from all seen data)
            steps = max(1, math.ceil(cfg.epochs * len(stream.task_indices(t)) / cfg.batch_size))
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            model.train()
            sums: dict[str, float] = {}
            t_task = time.time()
            bar = tqdm(stream.batches(t, cfg.batch_size, steps, gen, learner.uses_past_data),
                       total=steps, desc=f"{cfg.method} task {t + 1}/{stream.num_tasks}",
                       disable=not cfg.progress, leave=False)
            for i, (xb, yb) in enumerate(bar):
                x = augment(xb.to(device).float().div_(255))
                y = yb.to(device)
                xs = ys = None
                if replay is not None and learner.uses_replay:
                    xs, ys = replay.draw(x.shape[0], gen)
                    xs = augment(xs)
                terms = learner.losses(x, y, xs, ys)
                loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                sched.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if i % 25 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            train_s = time.time() - t_task
            row, acc = accuracy_row(model, evaluation, stream.bounds, t, augment.normalize,
                                    cfg.eval_batch_size)
            matrix.append(row)
            acc_seen.append(acc)
            record = {"task": t + 1, "classes": [order[c] for c in range(first, seen)],
                      "steps": steps, "acc_seen": acc, "acc_row": row, "train_s": train_s,
                      **{k: v / steps for k, v in sums.items()}}
            old = FeatureExtractor(freeze(copy.deepcopy(model)))
            if learner.uses_replay and t + 1 < stream.num_tasks:
                t_inv = time.time()
                replay, (images, labels), inv_losses = _invert(cfg, info, old.model, augment,
                                                               seen, device)
                record.update(inv_losses, inversion_s=time.time() - t_inv,
                              replay_counts=torch.bincount(labels.cpu(),
                                                           minlength=seen).tolist())
                original = torch.tensor(order)[labels.cpu()]  # rows named by dataset class
                save_grid(out / "grids" / f"replay_task{t + 1}.png", images, original,
                          info.classes or [str(c) for c in range(info.num_classes)])
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if tb is not None:  # hook: TensorBoard events of this task
                tb.log_epoch(t + 1, record, out / "grids" / f"replay_task{t + 1}.png")
            if cfg.progress:
                tqdm.write(f"task {t + 1}/{stream.num_tasks}: accuracy on {seen} seen classes "
                           f"{acc:.2f}%  (per task: {', '.join(f'{a:.1f}' for a in row)})")
    finally:
        metrics.close()
    wall = time.time() - t0
    summary = {"method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
               "tasks": stream.num_tasks, "seed": cfg.seed,
               "evaluated_on": "validation" if cfg.validation else "test",
               "class_order": setup.split, **incremental_metrics(matrix, acc_seen),
               "acc_seen": acc_seen, "acc_matrix": [row + [None] * (len(matrix) - len(row))
                                                    for row in matrix],
               "wall_s": wall, "config": cfg.to_dict()}
    save_weights(model, out / "model.safetensors")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _save_heatmap(out / "acc_matrix.png", matrix,
                  f"{cfg.method}: final {summary['final_acc']:.1f}%, "
                  f"forgetting {summary['forgetting']:.1f}")
    xs_ = list(range(1, len(acc_seen) + 1))
    plot_curves(out / "accuracy.png", {cfg.method: (xs_, acc_seen)}, xlabel="task",
                ylabel="accuracy on seen classes (%)",
                title=f"{cfg.dataset}, {stream.num_tasks} tasks")
    finish_run(out, tb, {k: summary[k] for k in ("final_acc", "avg_inc_acc", "forgetting")},
               step=stream.num_tasks)  # hook: end-of-run outputs (train/extras.py)
    return summary


def _invert(cfg: IncrementalConfig, info: DatasetInfo, frozen: nn.Module, augment: Augment,
            seen: int, device: torch.device
            ) -> tuple[PoolReplay | GeneratorReplay, tuple[torch.Tensor, torch.Tensor], dict]:
    """Train a generator on the frozen model.

    Returns the replay source of the next task, a class-balanced sample of uint8 images
    and labels (the pool itself with --replay pool; shown in the replay grid), and the
    mean inversion losses.
    """
    generator = Generator(cfg.nz, cfg.ngf, info.image_size, info.channels).to(device)
    rgal = cfg.method == "abd+rgal"
    inversion = ModelInversion(
        frozen, generator, augment, seen, steps=cfg.inv_steps, batch_size=cfg.inv_batch_size,
        lr=cfg.lr_g, w_ce=cfg.w_ce, w_div=cfg.w_div, w_bn=cfg.w_bn, w_smooth=cfg.w_smooth,
        w_tri=cfg.w_tri if rgal else 0.0, sampler=cfg.syn_sampler, margin=cfg.margin,
        inverse=cfg.relation_direction == "paper", progress=cfg.progress)
    losses = inversion.fit()
    images, labels = inversion.sample(cfg.replay_size)
    inversion.extractor.remove()
    uint8 = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    source = GeneratorReplay(inversion) if cfg.replay == "generator" else PoolReplay(uint8,
                                                                                    labels)
    return source, (uint8, labels), losses
