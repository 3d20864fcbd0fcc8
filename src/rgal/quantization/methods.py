"""The quantization methods: calibration-only baselines, and GDFQ (with optional RGAL losses)
as a job on the training loop whose generator steps run on the inversion engine."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..amp import Precision, optimizer_options
from ..data.augment import Augment
from ..data.datasets import DatasetInfo, ImageTensors
from ..engine import CHECKPOINT, InversionEngine, Job, RunFolder, TrainingLoop, frozen
from ..engine.evaluate import evaluate
from ..engine.html_report import finish_run
from ..engine.inversion import weighted_sum
from ..engine.report import save_grid
from ..losses import BNStatistics, kd_loss
from ..methods.rgal import RelationTerms
from ..models.features import FeatureExtractor, Features, freeze
from ..models.quantized import QuantizedModel
from ..models.weights import save_weights
from ..utils import seed_everything
from .config import QuantizeConfig
from .generator import ConditionalGenerator

QUANT_OUTPUTS = ("summary.json", "metrics.jsonl", "quantized_fakequant.safetensors",
                 "quantized_int.safetensors", "synthetic.png", CHECKPOINT, "report.html")


def quantize_folder(out: str | None) -> RunFolder:
    """The folder of a quantization run (writes nothing when `out` is None)."""
    return RunFolder(out, QUANT_OUTPUTS, ("events.out.tfevents.*",))


@dataclass
class QuantizeSetup:
    """A validated run: the full-precision model, evaluation split, optional calibration data."""

    cfg: QuantizeConfig
    info: DatasetInfo
    model: nn.Module
    eval_data: ImageTensors | None
    calib_data: ImageTensors | None
    device: torch.device
    folder: RunFolder
    resume_state: dict | None = None

    @property
    def out(self):
        return self.folder.path


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


class GDFQJob(Job):
    """GDFQ (and GDFQ+RGAL) on the training loop.

    Each iteration: one generator step (the teacher's cross entropy on the generator's labels
    + BN statistics, + RGAL's synthesis relation loss on the quantized model's features), then
    one step of the quantized model on the same images (temperature KD from the full-precision
    model + cross entropy, + RGAL's student relation loss). During the warm-up epochs only the
    generator trains, while the activation ranges calibrate on its images; they are frozen
    at the end of the warm-up.
    """

    name = "quantize"
    step_name = "iteration"
    watch_name = "quantization"
    timing_names = ("setup_s", "train_s", "eval_s")

    def __init__(self, cfg: QuantizeConfig, info: DatasetInfo, teacher: nn.Module,
                 q: QuantizedModel, augment: Augment, device: torch.device) -> None:
        self.cfg, self.info, self.device = cfg, info, device
        self.epochs = cfg.epochs
        self.q, self.augment = q, augment
        self.rgal = cfg.method == "gdfq+rgal"
        self.gen = ConditionalGenerator(info.num_classes, cfg.nz, cfg.ngf, info.image_size,
                                        info.channels).to(device)
        opt = optimizer_options("default")
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999),
                                      **opt)
        self.opt_q = torch.optim.SGD(q.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     nesterov=True, weight_decay=cfg.weight_decay)
        tune_steps = (cfg.epochs - cfg.warmup_epochs) * cfg.iters
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_q, T_max=tune_steps)
        self.t_ext = FeatureExtractor(teacher)
        self.q_ext = quantized_extractor(q, teacher)
        self.precision = Precision(cfg.precision, device)
        self.relations = RelationTerms(direction=cfg.relation_direction,
                                       syn_sampler=cfg.syn_sampler, stu_sampler=cfg.stu_sampler,
                                       margin=cfg.margin)
        view = augment if cfg.augment else augment.normalize
        self.engine = InversionEngine(self.t_ext, view=view, student=self.q_ext,
                                      bn=BNStatistics(teacher), precision=self.precision,
                                      student_context=self._quantized_frozen)
        q.eval()  # BN keeps the full-precision running statistics; its affine terms are tuned
        with torch.no_grad(), q.calibration(True):  # create the activation quantizers
            q(augment.normalize(self.gen.sample(cfg.batch_size, device)[0]))

    @contextmanager
    def _quantized_frozen(self):
        with ExitStack() as stack:
            stack.enter_context(frozen(self.q))
            stack.enter_context(self.q.calibration(False))
            yield

    def close(self) -> None:
        """Detach every hook this job placed."""
        self.engine.bn.remove()
        self.t_ext.remove()
        self.q_ext.remove()

    def warm(self, epoch: int) -> bool:
        """Epochs 1..warmup_epochs train only the generator."""
        return epoch <= self.cfg.warmup_epochs

    def steps(self, epoch: int) -> int:
        return self.cfg.iters

    def _generator_terms(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: Features,
                         s: Features | None) -> dict[str, torch.Tensor]:
        terms = {"loss_oh": F.cross_entropy(t.logits, y), "loss_bn": self.engine.bn.loss()}
        if s is not None:
            terms["loss_rel_syn"] = self.relations.synthesis(s, t.logits.argmax(1), t.logits)
        return terms

    def step(self, epoch: int, step: int, prelude: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        g = self.engine.step(lambda: self.gen.sample(cfg.batch_size, self.device),
                             self._generator_terms,
                             {"loss_oh": cfg.w_oh, "loss_bn": cfg.w_bn,
                              "loss_rel_syn": cfg.w_rel_syn},
                             self.opt_g, use_student=self.rgal and cfg.w_rel_syn > 0)
        terms = {k: v.detach() for k, v in g.terms.items()}
        v, t_logits, y = g.v.detach(), g.t.logits.detach(), g.y
        if self.warm(epoch):
            with torch.no_grad(), self.q.calibration(True):
                self.q(v)
            return terms
        with self.precision.autocast():
            s = self.q_ext(v)
            q_terms = {"loss_kd": kd_loss(s.logits, t_logits, cfg.tau),
                       "loss_ce": F.cross_entropy(s.logits, y)}
            if self.rgal and cfg.w_rel_stu > 0:
                q_terms["loss_rel_stu"] = self.relations.student(s, t_logits.argmax(1), s.logits)
            loss_q = weighted_sum(q_terms, {"loss_kd": cfg.w_kd, "loss_ce": cfg.w_ce,
                                            "loss_rel_stu": cfg.w_rel_stu})
        self.opt_q.zero_grad(set_to_none=True)
        self.precision.step(loss_q, self.opt_q)
        self.sched.step()
        terms.update({k: v.detach() for k, v in q_terms.items()})
        terms["agree"] = (s.logits.argmax(1) == t_logits.argmax(1)).float().mean()
        return terms

    def finish_epoch(self, epoch: int) -> None:
        if epoch == self.cfg.warmup_epochs:
            self.q.freeze_ranges()

    def end_epoch(self, epoch: int, prelude: dict[str, Any], means: dict[str, float],
                  timings: dict[str, float]) -> dict[str, Any]:
        return {"epoch": epoch, "phase": "warm-up" if self.warm(epoch) else "fine-tune",
                **means, "lr": self.opt_q.param_groups[0]["lr"], **timings, "eval_s": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.state_dict(), "quantized": self.q.state_dict(),
                "calibrating": self.q._calibrating, "opt_g": self.opt_g.state_dict(),
                "opt_q": self.opt_q.state_dict(), "sched": self.sched.state_dict(),
                "precision": self.precision.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["generator"])
        self.q.load_state_dict(state["quantized"])
        self.q.set_calibrating(bool(state["calibrating"]))
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_q.load_state_dict(state["opt_q"])
        self.sched.load_state_dict(state["sched"])
        self.precision.scaler.load_state_dict(state["precision"])


def run_quantization(setup: QuantizeSetup, log: Callable[[str], None] = tqdm.write) -> dict:
    """Quantize, calibrate or fine-tune, evaluate, write the outputs; return the summary.

    The summary also holds the quantized model under `_model` (not written to summary.json).
    """
    cfg, info, device, folder = setup.cfg, setup.info, setup.device, setup.folder
    t_start = time.time()
    seed_everything(cfg.seed)
    teacher = freeze(setup.model.to(device))
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    normalize = augment.normalize
    split = f"train[-{cfg.holdout}:]" if cfg.holdout else "test"
    fp_acc = None
    if setup.eval_data is not None:
        fp_acc = evaluate(teacher, setup.eval_data, normalize, cfg.eval_batch_size)
        log(f"full precision {cfg.model}: {fp_acc:.2f}% on {info.name} {split}")
    q = QuantizedModel(teacher, cfg.wbits, cfg.abits, cfg.keep_first_last_8bit,
                       cfg.act_momentum).to(device)
    t0 = time.time()
    history: list[dict[str, Any]] = []
    if cfg.method == "ptq-noise":
        folder.clear()
        batches = list(noise_batches(cfg, info, device))
        calibrate(q, batches)
        shown = (batches[0] * normalize.std + normalize.mean).clamp(0, 1)
        shown_labels = torch.zeros(len(shown), dtype=torch.long)
    elif cfg.method == "ptq-real":
        folder.clear()
        batches = list(real_batches(cfg, setup.calib_data, normalize, device))
        calibrate(q, batches)
        shown = batches[0] * normalize.std + normalize.mean
        with torch.no_grad():
            shown_labels = teacher(batches[0]).argmax(1)
    else:
        job = GDFQJob(cfg, info, teacher, q, augment, device)
        loop = TrainingLoop(job, folder, config=cfg.to_dict(), progress=cfg.progress,
                            seed=cfg.seed, log=log, tensorboard=cfg.tensorboard)
        if setup.resume_state is not None:
            loop.load(setup.resume_state)
            setup.resume_state = None
            log(f"resuming {folder.path} from {loop.where()}")
        else:
            folder.clear()
        history = loop.run()
        job.close()
        gen = job.gen
        gen.eval()
        with torch.no_grad():
            y = torch.arange(info.num_classes, device=device).repeat_interleave(8)
            shown = gen(torch.randn(len(y), cfg.nz, device=device), y)
            shown_labels = y
    train_s = time.time() - t0
    fq = q.fakequant_state_dict()
    quant_acc = weights_only_acc = None
    if setup.eval_data is not None:
        quant_acc = evaluate(q, setup.eval_data, normalize, cfg.eval_batch_size)
        float_copy = copy.deepcopy(teacher)
        float_copy.load_state_dict(fq, strict=True)
        weights_only_acc = evaluate(float_copy, setup.eval_data, normalize,
                                    cfg.eval_batch_size)
    if folder:
        save_weights(fq, folder / "quantized_fakequant.safetensors")
        save_weights(q.integer_state_dict(), folder / "quantized_int.safetensors")
        save_grid(folder / "synthetic.png", shown, shown_labels, info.classes)
    summary = {
        "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset, "wbits": cfg.wbits,
        "abits": cfg.abits, "eval_split": split, "fp_acc": fp_acc, "quant_acc": quant_acc,
        "weights_only_acc": weights_only_acc, "wall_s": time.time() - t_start,
        "train_s": train_s, "layer_bits": q.layer_bits,
        "activation_ranges": q.activation_ranges(), "device": str(device),
        "config": cfg.to_dict(),
    }
    folder.write_json("summary.json", summary)
    if folder:
        finish_run(folder.path, cfg.tensorboard, len(history),
                   {k: summary[k] for k in ("fp_acc", "quant_acc", "weights_only_acc")},
                   folder / "synthetic.png")
    return {**summary, "_model": q, "_history": history}
