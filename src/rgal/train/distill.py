"""The data-free distillation loop: synthesis phase, student phase, evaluation, outputs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import DistillConfig
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..models.features import FeatureExtractor, freeze, num_stage_channels
from ..models.generator import Generator
from ..models.weights import save_weights
from ..synthesis import ImagePool, RGALSynthesizer
from ..utils import seed_everything
from .evaluate import evaluate
from .report import plot_curves, save_grid
from .student import FeatureProjector, StudentPhase, paired_stages


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


RUN_OUTPUTS = ("metrics.jsonl", "summary.json", "student.safetensors", "student_best.safetensors",
               "accuracy.png", "synthetic.safetensors")


def clear_run_outputs(out: Path) -> None:
    """Remove the files an earlier run wrote in `out` (used when overwriting a run)."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for grid in (out / "grids").glob("epoch_*.png"):
        grid.unlink()


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).mean()) if values else 0.0


def run_distillation(setup: DistillSetup,
                     log: Callable[[str], None] = tqdm.write) -> dict:
    """Run every epoch, write the outputs under `setup.out`, return the summary."""
    cfg, info, device, out = setup.cfg, setup.info, setup.device, setup.out
    t_start = time.time()
    seed_everything(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    clear_run_outputs(out)
    (out / "grids").mkdir(exist_ok=True)
    teacher = freeze(setup.teacher.to(device))
    student = setup.student.to(device)
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    t_ext, s_ext = FeatureExtractor(teacher), FeatureExtractor(student)
    in_shape = (info.channels, info.image_size, info.image_size)
    t_ch, _ = num_stage_channels(teacher, t_ext, in_shape, device)
    s_ch, _ = num_stage_channels(student, s_ext, in_shape, device)
    pairs = paired_stages(len(s_ch), len(t_ch), cfg.cd_start_stage)
    projector = FeatureProjector([s_ch[i] for i in pairs[0]],
                                 [t_ch[j] for j in pairs[1]]).to(device)

    teacher_acc = evaluate(teacher, setup.test, augment.normalize, cfg.eval_batch_size)
    log(f"teacher {cfg.teacher}: {teacher_acc:.2f}% on the {info.name} test set")

    generator = Generator(cfg.nz, cfg.ngf, info.image_size, info.channels).to(device)
    synthesizer = RGALSynthesizer(
        t_ext, s_ext, generator, augment, info.num_classes,
        batch_size=cfg.synthesis_batch_size, g_steps=cfg.g_steps, lr_g=cfg.lr_g,
        w_bn=cfg.w_bn, w_oh=cfg.w_oh, w_adv=cfg.w_adv, w_tri=cfg.w_tri,
        direction=cfg.relation_direction, sampler=cfg.syn_sampler, margin=cfg.margin,
        relation_feature=cfg.syn_relation_feature, reset_generator=cfg.reset_generator,
        progress=cfg.progress)
    params = list(student.parameters()) + list(projector.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    phase = StudentPhase(t_ext, s_ext, augment, optimizer, projector, pairs,
                         batch_size=cfg.batch_size, tau=cfg.tau, w_cd=cfg.w_cd,
                         w_stri=cfg.w_stri, sampler=cfg.stu_sampler, margin=cfg.margin,
                         pair_sampling=cfg.pair_sampling)
    pool = ImagePool(info.channels, info.image_size, device)

    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    history: list[dict] = []
    best_acc, best_epoch = -1.0, 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="distill", disable=not cfg.progress)
    for epoch in bar:
        t0 = time.time()
        result = synthesizer.synthesize()
        pool.add(result.images, result.labels)
        t1 = time.time()
        student.train()
        terms: dict[str, list[torch.Tensor]] = {}
        for _ in tqdm(range(cfg.kd_steps), desc="student", leave=False,
                      disable=not cfg.progress):
            for k, v in phase.step(pool).items():
                terms.setdefault(k, []).append(v)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        t2 = time.time()
        acc = evaluate(student, setup.test, augment.normalize, cfg.eval_batch_size)
        t3 = time.time()
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            save_weights(student, out / "student_best.safetensors")
        if cfg.grid_every and (epoch % cfg.grid_every == 0 or epoch == cfg.epochs):
            save_grid(out / "grids" / f"epoch_{epoch:03d}.png", result.images, result.labels,
                      info.classes)
        record = {"epoch": epoch, "test_acc": round(acc, 4), **result.losses,
                  **{k: _mean(v) for k, v in terms.items()}, "lr": lr,
                  "pool_size": len(pool), "synthesis_s": t1 - t0, "distill_s": t2 - t1,
                  "eval_s": t3 - t2, "elapsed_s": time.time() - t_start}
        history.append(record)
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(acc=f"{acc:.2f}", best=f"{best_acc:.2f}", pool=len(pool))
        plot_curves(out / "accuracy.png",
                    {f"student {cfg.student}": ([r["epoch"] for r in history],
                                                [r["test_acc"] for r in history])},
                    title=f"{cfg.method}: {cfg.teacher} -> {cfg.student} on {info.name}",
                    hlines={f"teacher {teacher_acc:.2f}%": teacher_acc})

    save_weights(student, out / "student.safetensors")
    if cfg.export_synthetic:
        pool.export(out / "synthetic.safetensors")
    summary = {
        "teacher_acc": teacher_acc, "best_acc": best_acc, "best_epoch": best_epoch,
        "final_acc": history[-1]["test_acc"], "epochs": cfg.epochs,
        "wall_s": time.time() - t_start,
        "synthesis_s": sum(r["synthesis_s"] for r in history),
        "distill_s": sum(r["distill_s"] for r in history),
        "eval_s": sum(r["eval_s"] for r in history),
        "images_synthesized": len(pool),
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "device": str(device), "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
