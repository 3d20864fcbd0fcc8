"""The data-free distillation loop: synthesis phase, student phase, evaluation, outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision, optimizer_options
from ..config import ONLINE_METHODS, REAL_DATA_METHODS, DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..distributed import all_gather_cat, any_rank, barrier, broadcast_module, rank, world_size
from ..losses import FiniteWatch, NonFiniteLoss
from ..models.features import FeatureExtractor, freeze, num_stage_channels
from ..models.weights import save_weights
from ..synthesis import ImagePool
from ..synthesis.methods import build_synthesizer
from ..utils import atomic_path, rng_state, seed_everything, set_rng_state
from .checkpoint import CHECKPOINT, save_checkpoint
from .diversity import teacher_diversity
from .evaluate import evaluate
from .extras import DistillExtras  # hook: optional run outputs
from .report import plot_curves, save_grid
from .student import FeatureProjector, RealImages, StudentPhase, paired_stages


@dataclass
class DistillSetup:
    """Everything a run needs, already validated and on its device."""

    cfg: DistillConfig
    info: DatasetInfo
    teacher: nn.Module
    student: nn.Module
    test: ImageTensors
    device: torch.device
    out: Path
    resume_state: dict | None = None
    train: ImageTensors | None = None  # the real training set, for kd-real and scratch


RUN_OUTPUTS = ("metrics.jsonl", "summary.json", "student.safetensors", "student_best.safetensors",
               "accuracy.png", "synthetic.safetensors", CHECKPOINT)
TIMING_KEYS = ("synthesis_s", "distill_s", "eval_s", "elapsed_s")


class RunInterrupted(Exception):
    """SIGTERM/SIGINT stopped the run after a checkpoint of its exact position was written."""

    def __init__(self, signum: int, epoch: int, step: int, path: Path,
                 repeat_epoch: bool = False) -> None:
        super().__init__(signum, epoch, step, path)
        self.signum, self.epoch, self.step, self.path = signum, epoch, step, path
        self.repeat_epoch = repeat_epoch

    def __str__(self) -> str:
        where = (f"epoch {self.epoch}, after student step {self.step}" if self.step > 0
                 else f"epoch {self.epoch}, after synthesis" if self.step == 0
                 else f"the end of epoch {self.epoch}")
        again = f" (epoch {self.epoch} starts again)" if self.repeat_epoch else ""
        return (f"stopped by {signal.Signals(self.signum).name} at {where}; checkpoint "
                f"{self.path}; continue with --resume{again}")


class _StopSignals:
    """While active, the first SIGTERM/SIGINT only sets `signum`; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def clear_run_outputs(out: Path) -> None:
    """Remove the files an earlier run wrote in `out` (used when overwriting a run)."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for grid in (out / "grids").glob("epoch_*.png"):
        grid.unlink()


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).mean()) if values else 0.0


def _write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))


class _Run:
    """The objects of one distillation run and the state a checkpoint must carry."""

    def __init__(self, setup: DistillSetup) -> None:
        cfg, info, device = setup.cfg, setup.info, setup.device
        self.setup, self.cfg, self.info, self.device = setup, cfg, info, device
        self.world, self.rank = world_size(), rank()
        # under torchrun every rank synthesizes and trains on its share of each batch
        local = dataclasses.replace(cfg, batch_size=cfg.batch_size // self.world,
                                    synthesis_batch_size=cfg.synthesis_batch_size // self.world)
        self.teacher = freeze(setup.teacher.to(device))
        self.student = setup.student.to(device)
        self.augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
        self.t_ext, s_ext = FeatureExtractor(self.teacher), FeatureExtractor(self.student)
        in_shape = (info.channels, info.image_size, info.image_size)
        t_ch, t_dim = num_stage_channels(self.teacher, self.t_ext, in_shape, device)
        s_ch, _ = num_stage_channels(self.student, s_ext, in_shape, device)
        pairs = paired_stages(len(s_ch), len(t_ch), cfg.cd_start_stage)
        self.projector = FeatureProjector([s_ch[i] for i in pairs[0]],
                                          [t_ch[j] for j in pairs[1]]).to(device)
        self.kind = ("online" if cfg.method in ONLINE_METHODS else
                     "real" if cfg.method in REAL_DATA_METHODS else "pool")
        self.synthesizer = build_synthesizer(local, self.t_ext, s_ext, self.augment, info, t_dim,
                                             device)
        self._speed_ups(cfg)
        params = list(self.student.parameters()) + list(self.projector.parameters())
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay,
                                         **optimizer_options(cfg.optimizer_impl))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer,
                                                                    T_max=cfg.epochs)
        objective = {"dfad": "l1", "scratch": "ce"}.get(cfg.method, "kd")
        self.phase = StudentPhase(self.t_ext, s_ext, self.augment, self.optimizer,
                                  self.projector, pairs, batch_size=local.batch_size, tau=cfg.tau,
                                  w_cd=cfg.w_cd, w_stri=cfg.w_stri, sampler=cfg.stu_sampler,
                                  margin=cfg.margin, pair_sampling=cfg.pair_sampling,
                                  objective=objective, w_at=cfg.w_at,
                                  at_pairs=paired_stages(len(s_ch), len(t_ch), 0),
                                  precision=Precision(cfg.precision, device))
        self.pool = ImagePool(info.channels, info.image_size, device)
        self.source = (self.pool if self.kind == "pool" else self.synthesizer
                       if self.kind == "online" else RealImages(setup.train, device))
        self.images_synthesized = 0
        self.teacher_acc = 0.0
        self.epoch = 0  # last completed epoch
        self.history: list[dict] = []
        self.best_acc, self.best_epoch = -1.0, 0
        self.elapsed_before = 0.0  # wall time of earlier (interrupted) segments
        self.partial: dict | None = None  # position inside an epoch, for a signal checkpoint
        for module in (self.student, self.projector, self.synthesizer):
            if module is not None:
                broadcast_module(module)  # identical starting points on every rank

    def _speed_ups(self, cfg: DistillConfig) -> None:
        """channels-last layout and torch.compile, where the config asks for them."""
        nets = [self.teacher, self.student]
        generator = getattr(self.synthesizer, "generator", None)
        if generator is not None:
            nets.append(generator)
        for net in nets:
            if cfg.channels_last:
                net.to(memory_format=torch.channels_last)
            if cfg.compile:
                net.compile()

    def state(self, elapsed: float) -> dict:
        """Everything needed to continue the run exactly."""
        return {"config": self.cfg.to_dict(), "epoch": self.epoch,
                "student": self.student.state_dict(), "projector": self.projector.state_dict(),
                "synthesizer": self.synthesizer.run_state() if self.synthesizer else {},
                "images_synthesized": self.images_synthesized,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "pool": self.pool.state_dict(),
                "rng": rng_state(), "teacher_acc": self.teacher_acc, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "history": self.history, "elapsed_s": elapsed,
                "partial": self.partial}

    def load(self, state: dict) -> None:
        """Restore a checkpoint; settings changed on resume take effect from here on."""
        cfg = self.cfg
        self.student.load_state_dict(state["student"])
        self.projector.load_state_dict(state["projector"])
        if self.synthesizer:
            self.synthesizer.load_run_state(state["synthesizer"])
        self.images_synthesized = state["images_synthesized"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.T_max = cfg.epochs
        self.scheduler.base_lrs = [cfg.lr for _ in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.scheduler._get_closed_form_lr(),
                             strict=True):
            group.update(lr=lr, initial_lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)
        self.pool.load_state_dict(state["pool"])
        self.teacher_acc = state["teacher_acc"]
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]
        self.elapsed_before = state["elapsed_s"]
        self.partial = state["partial"]
        set_rng_state(state["rng"])


def run_distillation(setup: DistillSetup,
                     log: Callable[[str], None] = tqdm.write) -> dict:
    """Run (or resume) every epoch, checkpointing each; write the outputs, return the summary."""
    cfg, info, out = setup.cfg, setup.info, setup.out
    t_start = time.time()
    seed_everything(cfg.seed)
    main = rank() == 0
    extras = DistillExtras(setup, log) if main else None  # hook: refuses before writing
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "grids").mkdir(exist_ok=True)
    run = _Run(setup)
    run.extras = extras  # hook: per-epoch TensorBoard events
    if setup.resume_state is not None:
        run.load(setup.resume_state)
        setup.resume_state = None
        where = (f"epoch {run.partial['epoch']}, student step {run.partial['kd_done']}"
                 if run.partial else f"the end of epoch {run.epoch}")
        log(f"resuming {out} from {where}")
    elif main:
        clear_run_outputs(out)
        run.teacher_acc = evaluate(run.teacher, setup.test, run.augment.normalize,
                                   cfg.eval_batch_size)
        log(f"teacher {cfg.teacher}: {run.teacher_acc:.2f}% on the {info.name} test set")
    if main:
        _write_metrics(out / "metrics.jsonl", run.history)

    def elapsed() -> float:
        return run.elapsed_before + time.time() - t_start

    with _StopSignals() as stop:
        bar = tqdm(range(run.epoch + 1, cfg.epochs + 1), desc="distill",
                   disable=not (cfg.progress and main), initial=run.epoch, total=cfg.epochs)
        for epoch in bar:
            _run_epoch(run, epoch, elapsed, stop)
            if main:
                bar.set_postfix(acc=f"{run.history[-1]['test_acc']:.2f}",
                                best=f"{run.best_acc:.2f}")

    barrier()
    if not main:
        return {}
    save_weights(run.student, out / "student.safetensors")
    if cfg.export_synthetic:
        run.pool.export(out / "synthetic.safetensors")
    history = run.history
    summary = {
        "teacher_acc": run.teacher_acc, "best_acc": run.best_acc, "best_epoch": run.best_epoch,
        "final_acc": history[-1]["test_acc"], "epochs": cfg.epochs,
        "wall_s": elapsed(),
        "synthesis_s": sum(r["synthesis_s"] for r in history),
        "distill_s": sum(r["distill_s"] for r in history),
        "eval_s": sum(r["eval_s"] for r in history),
        "images_synthesized": run.images_synthesized,
        "student_params": sum(p.numel() for p in run.student.parameters()),
        "teacher_params": sum(p.numel() for p in run.teacher.parameters()),
        "device": str(setup.device), "processes": run.world, "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if extras is not None:  # hook: end-of-run outputs (train/extras.py)
        extras.finish(run.student, summary)
    return summary


def _diversity(run: _Run, epoch: int) -> dict[str, float]:
    """Diversity measures of up to `diversity_samples` images of the method's current set.

    The sample is drawn with its own seeded generator, so measuring never shifts the run's
    random streams.
    """
    n = run.cfg.diversity_samples
    if n == 0 or (run.kind == "pool" and len(run.pool) == 0):
        return {}
    gen = torch.Generator(device="cpu" if run.kind != "online" else run.device)
    gen.manual_seed(run.cfg.seed * 100_003 + epoch)
    images, _ = run.source.sample(n, generator=gen)
    measures = teacher_diversity(run.teacher, run.t_ext, images, run.augment.normalize,
                                 run.cfg.eval_batch_size)
    return {k: v if math.isfinite(v) else None for k, v in measures.items()}  # valid JSON


def _run_epoch(run: _Run, epoch: int, elapsed: Callable[[], float], stop: _StopSignals) -> None:
    """Synthesis phase, student phase, evaluation, outputs and checkpoint of one epoch.

    A pending stop signal is honoured after the synthesis phase and after every student step:
    the exact position is checkpointed and RunInterrupted raised.
    """
    cfg, out = run.cfg, run.setup.out
    ckpt_path = out / CHECKPOINT

    def checkpoint_here(make_part: Callable[[], dict], step: int) -> None:
        """Honour a pending stop signal: checkpoint this exact position and stop."""
        if run.world > 1:  # ranks agree to stop; the last epoch checkpoint is the resume point
            if any_rank(stop.signum is not None, run.device):
                raise RunInterrupted(stop.signum or signal.SIGTERM, epoch, step, ckpt_path,
                                     repeat_epoch=True)
            return
        if stop.signum is not None:
            watch.check()
            run.partial = make_part()
            save_checkpoint(ckpt_path, run.state(elapsed()))
            raise RunInterrupted(stop.signum, epoch, step, ckpt_path)

    if run.world > 1:  # per-rank streams that depend only on (seed, epoch, rank): resumable
        torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1009 + run.rank)
    watch = FiniteWatch("student")
    try:
        part = run.partial if run.partial and run.partial["epoch"] == epoch else None
        if part is None:
            part = {"epoch": epoch, "kd_done": 0, "images": None, "labels": None,
                    "syn_losses": {}, "synthesis_s": 0.0, "distill_s": 0.0, "terms": {},
                    "lr": run.optimizer.param_groups[0]["lr"]}
            if run.kind == "pool":
                t0 = time.time()
                result = run.synthesizer.synthesize()
                images = all_gather_cat(result.images.detach())
                labels = all_gather_cat(result.labels)
                run.pool.add(images, labels)  # every rank keeps the same pool
                run.images_synthesized += images.shape[0]
                part.update(images=images.cpu(), labels=labels.cpu(),
                            syn_losses=result.losses, synthesis_s=time.time() - t0)
                checkpoint_here(lambda: part, 0)
        run.student.train()
        terms = {k: list(v.to(run.device)) for k, v in part["terms"].items()}
        views = 2 * cfg.batch_size
        t1 = time.time()
        for step in tqdm(range(part["kd_done"], cfg.kd_steps), desc="student", leave=False,
                         disable=not cfg.progress, initial=part["kd_done"], total=cfg.kd_steps):
            step_terms = {}
            if run.kind == "online":
                if step % cfg.student_steps_per_g == 0:
                    step_terms = run.synthesizer.generator_step()
                run.images_synthesized += views // (2 if cfg.pair_sampling else 1)
            step_terms.update(run.phase.step(run.source))
            watch.update(step, step_terms)
            for k, v in step_terms.items():
                terms.setdefault(k, []).append(v)
            checkpoint_here(lambda step=step: {
                **part, "kd_done": step + 1, "distill_s": part["distill_s"] + time.time() - t1,
                "terms": {k: torch.stack(v).cpu() for k, v in terms.items()}}, step + 1)
        watch.check()
    except NonFiniteLoss as e:
        e.epoch = epoch
        raise
    run.partial = None
    run.scheduler.step()
    t2 = time.time()
    broadcast_module(run.student)  # BN running statistics as rank 0's
    run.epoch = epoch
    stopping = (any_rank(stop.signum is not None, run.device) if run.world > 1
                else stop.signum is not None)
    if run.rank == 0:
        _epoch_outputs(run, epoch, part, terms, t2 - t1, elapsed)
    if stopping and epoch < cfg.epochs:  # after the last epoch: just finish
        raise RunInterrupted(stop.signum or signal.SIGTERM, epoch, -1, ckpt_path)


def _epoch_outputs(run: _Run, epoch: int, part: dict, terms: dict[str, list[torch.Tensor]],
                   distill_s: float, elapsed: Callable[[], float]) -> None:
    """Rank 0: evaluate, keep the best student, grid, metrics line, plot, checkpoint."""
    cfg, out = run.cfg, run.setup.out
    t2 = time.time()
    acc = evaluate(run.student, run.setup.test, run.augment.normalize, cfg.eval_batch_size)
    if acc > run.best_acc:
        run.best_acc, run.best_epoch = acc, epoch
        save_weights(run.student, out / "student_best.safetensors")
    diversity = _diversity(run, epoch)
    t3 = time.time()
    if cfg.grid_every and (epoch % cfg.grid_every == 0 or epoch == cfg.epochs):
        images, labels = part["images"], part["labels"]
        if run.kind == "online":
            images, _ = run.synthesizer.sample(cfg.synthesis_batch_size)
            labels = run.synthesizer.teacher_labels(images)
        if images is not None:
            save_grid(out / "grids" / f"epoch_{epoch:03d}.png", images, labels,
                      run.info.classes)
    record = {"epoch": epoch, "test_acc": round(acc, 4), **part["syn_losses"],
              **{k: _mean(v) for k, v in terms.items()}, **diversity, "lr": part["lr"],
              "pool_size": len(run.pool), "images_synthesized": run.images_synthesized,
              "synthesis_s": part["synthesis_s"], "distill_s": part["distill_s"] + distill_s,
              "eval_s": t3 - t2, "elapsed_s": elapsed()}
    run.history.append(record)
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    if getattr(run, "extras", None) is not None:  # hook: TensorBoard events of this epoch
        run.extras.epoch(record, out / "grids" / f"epoch_{epoch:03d}.png")
    plot_curves(out / "accuracy.png",
                {f"student {cfg.student}": ([r["epoch"] for r in run.history],
                                            [r["test_acc"] for r in run.history])},
                title=f"{cfg.method}: {cfg.teacher} -> {cfg.student} on {run.info.name}",
                hlines={f"teacher {run.teacher_acc:.2f}%": run.teacher_acc})
    save_checkpoint(out / CHECKPOINT, run.state(elapsed()))
