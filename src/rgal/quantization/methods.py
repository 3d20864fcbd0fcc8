"""The quantization methods: calibration-only baselines and GDFQ with optional RGAL losses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..losses import BNStatistics, kd_loss, relation_loss
from ..models.features import FeatureExtractor, freeze
from ..models.weights import save_weights
from ..synthesis.base import frozen_student
from ..train.evaluate import evaluate
from ..train.extras import TensorBoardWriter, finish_run  # hook: optional run outputs
from ..train.report import save_grid
from ..utils import seed_everything
from .config import QuantizeConfig
from .generator import ConditionalGenerator
from .quantizer import QuantizedModel

QUANT_OUTPUTS = ("summary.json", "metrics.jsonl", "quantized_fakequant.safetensors",
                 "quantized_int.safetensors", "synthetic.png")


@dataclass
class QuantizeSetup:
    """A validated run: the full-precision model, evaluation split, optional calibration data."""

    cfg: QuantizeConfig
    info: DatasetInfo
    model: nn.Module
    eval_data: ImageTensors
    calib_data: ImageTensors | None
    device: torch.device
    out: Path


def quantized_extractor(q: QuantizedModel, model: nn.Module) -> FeatureExtractor:
    """Feature access to the quantized copy under the original model's stage names."""
    fe = FeatureExtractor(model)
    stages = tuple(q.inner_name(n) for n in fe.stage_names)
    classifier = q.inner_name(fe.classifier_name)
    fe.remove()
    return FeatureExtractor(q, stage_names=stages, classifier_name=classifier)


@torch.no_grad()
def calibrate(q: QuantizedModel, batches) -> None:
    """Run every (normalised) batch through `q` with range updates on, then freeze the ranges."""
    with q.calibration(True):
        for x in batches:
            q(x)
    q.freeze_ranges()


def noise_batches(cfg: QuantizeConfig, info: DatasetInfo, device: torch.device):
    """Standard Gaussian noise in the model's (normalised) input space."""
    for _ in range(cfg.calib_batches):
        yield torch.randn(cfg.batch_size, info.channels, info.image_size, info.image_size,
                          device=device)


def real_batches(cfg: QuantizeConfig, data: ImageTensors, normalize: nn.Module,
                 device: torch.device):
    """Random training images, normalised."""
    idx = torch.randperm(len(data))[:cfg.calib_batches * cfg.batch_size]
    for i in range(0, len(idx), cfg.batch_size):
        yield normalize(data.images[idx[i:i + cfg.batch_size]].to(device).float().div(255))


def train_gdfq(cfg: QuantizeConfig, info: DatasetInfo, teacher: nn.Module, q: QuantizedModel,
               augment: Augment, device: torch.device, metrics_path: Path,
               log: Callable[[str], None], tb: TensorBoardWriter | None = None
               ) -> ConditionalGenerator:
    """GDFQ (and GDFQ+RGAL): generator warm-up with range calibration, then joint training."""
    rgal = cfg.method == "gdfq+rgal"
    gen = ConditionalGenerator(info.num_classes, cfg.nz, cfg.ngf, info.image_size,
                               info.channels).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_q = torch.optim.SGD(q.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                            weight_decay=cfg.weight_decay)
    tune_steps = (cfg.epochs - cfg.warmup_epochs) * cfg.iters
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_q, T_max=tune_steps)
    t_ext = FeatureExtractor(teacher)
    q_ext = quantized_extractor(q, teacher)
    bn_stats = BNStatistics(teacher)
    normalize = augment.normalize
    q.eval()  # BN keeps the full-precision running statistics; its affine terms are tuned
    with torch.no_grad(), q.calibration(True):  # create the activation quantizers
        q(normalize(gen.sample(cfg.batch_size, device)[0]))
    bar = tqdm(total=cfg.epochs * cfg.iters, desc=cfg.method, disable=not cfg.progress)
    t_start = time.time()
    for epoch in range(cfg.epochs):
        warm = epoch < cfg.warmup_epochs
        sums: dict[str, float] = {}
        for _ in range(cfg.iters):
            x, y = gen.sample(cfg.batch_size, device)
            v = augment(x) if cfg.augment else normalize(x)
            # generator step
            t = t_ext(v)
            terms = {"g_ce": F.cross_entropy(t.logits, y), "g_bn": bn_stats.loss()}
            loss_g = cfg.w_ce_g * terms["g_ce"] + cfg.w_bn * terms["g_bn"]
            if rgal and cfg.w_tri > 0:
                with frozen_student(q), q.calibration(False):
                    s = q_ext(v)
                emb = s.stages[-1] if s.stages else s.feature
                terms["g_rel"] = relation_loss(emb, t.logits.argmax(1), t.logits,
                                               sampler=cfg.syn_sampler, margin=cfg.margin,
                                               inverse=cfg.relation_direction == "paper")
                loss_g = loss_g + cfg.w_tri * terms["g_rel"]
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            v, t_logits = v.detach(), t.logits.detach()
            if warm:
                with torch.no_grad(), q.calibration(True):
                    q(v)
            else:
                s = q_ext(v)
                terms["q_kd"] = kd_loss(s.logits, t_logits, cfg.tau)
                terms["q_ce"] = F.cross_entropy(s.logits, y)
                loss_q = cfg.w_kd * terms["q_kd"] + cfg.w_ce * terms["q_ce"]
                if rgal and cfg.w_stri > 0:
                    terms["q_rel"] = relation_loss(s.feature, t_logits.argmax(1), s.logits,
                                                   sampler=cfg.stu_sampler, margin=cfg.margin)
                    loss_q = loss_q + cfg.w_stri * terms["q_rel"]
                terms["q_agree"] = (s.logits.argmax(1) == t_logits.argmax(1)).float().mean()
                opt_q.zero_grad(set_to_none=True)
                loss_q.backward()
                opt_q.step()
                sched.step()
            for k, val in terms.items():
                sums[k] = sums.get(k, 0.0) + float(val.detach())
            bar.update(1)
        if epoch == cfg.warmup_epochs - 1:
            q.freeze_ranges()
        record = {"epoch": epoch + 1, "phase": "warm-up" if warm else "fine-tune",
                  **{k: v / cfg.iters for k, v in sums.items()},
                  "lr": opt_q.param_groups[0]["lr"], "elapsed_s": time.time() - t_start}
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if tb is not None:  # hook: TensorBoard events of this epoch
            tb.log_epoch(record["epoch"], record)
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("g_ce", "q_kd", "q_agree")
                         if k in record})
    bar.close()
    bn_stats.remove()
    t_ext.remove()
    q_ext.remove()
    return gen


def run_quantization(setup: QuantizeSetup, log: Callable[[str], None] = tqdm.write) -> dict:
    """Quantize, calibrate or fine-tune, evaluate, write the outputs; return the summary."""
    cfg, info, device, out = setup.cfg, setup.info, setup.device, setup.out
    t_start = time.time()
    seed_everything(cfg.seed)
    tb = TensorBoardWriter(out) if cfg.tensorboard else None  # hook: refuses before writing
    out.mkdir(parents=True, exist_ok=True)
    for name in QUANT_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    teacher = freeze(setup.model.to(device))
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    normalize = augment.normalize
    split = f"train[-{cfg.holdout}:]" if cfg.holdout else "test"
    fp_acc = evaluate(teacher, setup.eval_data, normalize, cfg.eval_batch_size)
    log(f"full precision {cfg.model}: {fp_acc:.2f}% on {info.name} {split}")
    q = QuantizedModel(teacher, cfg.wbits, cfg.abits, cfg.keep_first_last_8bit,
                       cfg.act_momentum).to(device)
    t0 = time.time()
    if cfg.method == "ptq-noise":
        batches = list(noise_batches(cfg, info, device))
        calibrate(q, batches)
        shown = (batches[0] * normalize.std + normalize.mean).clamp(0, 1)
        shown_labels = torch.zeros(len(shown), dtype=torch.long)
    elif cfg.method == "ptq-real":
        batches = list(real_batches(cfg, setup.calib_data, normalize, device))
        calibrate(q, batches)
        shown = batches[0] * normalize.std + normalize.mean
        with torch.no_grad():
            shown_labels = teacher(batches[0]).argmax(1)
    else:
        gen = train_gdfq(cfg, info, teacher, q, augment, device, metrics_path, log, tb)
        gen.eval()
        with torch.no_grad():
            y = torch.arange(info.num_classes, device=device).repeat_interleave(8)
            shown = gen(torch.randn(len(y), cfg.nz, device=device), y)
            shown_labels = y
    train_s = time.time() - t0
    quant_acc = evaluate(q, setup.eval_data, normalize, cfg.eval_batch_size)
    fq = q.fakequant_state_dict()
    save_weights(fq, out / "quantized_fakequant.safetensors")
    save_weights(q.integer_state_dict(), out / "quantized_int.safetensors")
    float_copy = _load_copy(teacher, fq)
    weights_only_acc = evaluate(float_copy, setup.eval_data, normalize, cfg.eval_batch_size)
    save_grid(out / "synthetic.png", shown, shown_labels, info.classes)
    summary = {
        "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset, "wbits": cfg.wbits,
        "abits": cfg.abits, "eval_split": split, "fp_acc": fp_acc, "quant_acc": quant_acc,
        "weights_only_acc": weights_only_acc, "wall_s": time.time() - t_start,
        "train_s": train_s, "layer_bits": q.layer_bits,
        "activation_ranges": q.activation_ranges(), "device": str(device),
        "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finish_run(out, tb, {k: summary[k] for k in ("fp_acc", "quant_acc", "weights_only_acc")},
               step=cfg.epochs if cfg.method.startswith("gdfq") else 0,
               grid=out / "synthetic.png")  # hook: end-of-run outputs (train/extras.py)
    return summary


def _load_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    import copy

    m = copy.deepcopy(model)
    m.load_state_dict(state, strict=True)
    return m
