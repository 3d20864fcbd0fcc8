"""Throughput of RGAL's two phases, the split of an epoch, and the achieved FLOP rate.

Usage (from the repository root, with `rgal` importable):

    python benchmarks/throughput.py                  # full table -> benchmarks/throughput.md
    python benchmarks/throughput.py --tiny --out /tmp/t.md   # seconds; used by the tests
    python benchmarks/throughput.py --device cuda --threads 8

Settings measured: CIFAR wrn40_2 -> wrn16_1 (configs/cifar10_wrn40_2_wrn16_1.yaml, random
weights: speed does not depend on them) and the Fashion-MNIST default (DistillConfig defaults,
the shipped teacher) under the suites' setting (`SUITE_SHARED`: 15 generator steps on 128
images, two views per pool image), which throughput.md was measured with; the demo itself now
runs other values. Steps are the library's own: `RGALSynthesizer.synthesize` and
`StudentPhase.step`; the epoch split comes from `run_distillation` on a short run.

FLOP counting rule: only Conv2d and Linear layers of teacher, student and generator are
counted (batch norm, activations, pooling, augmentation and losses are not), biases ignored.
Forward = 2 x multiply-accumulates, measured with forward hooks on the executed shapes.
Backward, per layer, as executed: + forward FLOPs for the input gradient when the layer's
input requires a gradient, + forward FLOPs for the weight gradient when its weight does.
In a synthesis step teacher and student are frozen but the images require gradients, so
their layers cost 2x forward in total and the generator's cost 3x forward; in a student step
the teacher runs without gradients (1x) and the student costs 3x (2x for its first layer).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from rgal.amp import Precision, optimizer_options  # noqa: E402
from rgal.config import DistillConfig, load_yaml  # noqa: E402
from rgal.data.augment import Augment  # noqa: E402
from rgal.data.base import DatasetError, ImageTensors  # noqa: E402
from rgal.data.datasets import dataset_info, load_dataset  # noqa: E402
from rgal.data.pool import ImagePool  # noqa: E402
from rgal.methods import distill_config, get_method, method_context  # noqa: E402
from rgal.methods.base import Method  # noqa: E402
from rgal.models import create_model  # noqa: E402
from rgal.models.build import resolve_weights_path  # noqa: E402
from rgal.models.features import FeatureExtractor, freeze  # noqa: E402
from rgal.models.weights import load_weights  # noqa: E402
from rgal.train.bench import SUITE_SHARED  # noqa: E402
from rgal.train.distill import DistillSetup, run_distillation, run_folder  # noqa: E402
from rgal.train.student import StudentPhase  # noqa: E402
from rgal.utils import resolve_device, seed_everything  # noqa: E402

CIFAR_CONFIG = ROOT / "configs" / "cifar10_wrn40_2_wrn16_1.yaml"


# ----------------------------------------------------------------------------- FLOP counting

@dataclass
class FlopCount:
    """FLOPs of the counted layers in one region of code, split by pass and model."""

    forward: dict[str, float] = field(default_factory=dict)
    backward: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.forward.values()) + sum(self.backward.values())


def layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one Conv2d/Linear forward with output `out`."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    return out.numel() * module.in_features


class FlopCounter:
    """Forward hooks on the Conv2d/Linear layers of named models; counts while active."""

    def __init__(self, models: dict[str, nn.Module]) -> None:
        self.count = FlopCount()
        self.active = False
        self._handles = []
        for name, model in models.items():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    self._handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, inputs, out):
            if not self.active:
                return
            fwd = 2.0 * layer_macs(module, out)
            self.count.forward[name] = self.count.forward.get(name, 0.0) + fwd
            if torch.is_grad_enabled():
                bwd = fwd * (int(inputs[0].requires_grad) + int(module.weight.requires_grad))
                self.count.backward[name] = self.count.backward.get(name, 0.0) + bwd
        return hook

    @contextlib.contextmanager
    def measure(self):
        """Count the FLOPs of the enclosed code into a fresh `self.count`."""
        self.count, self.active = FlopCount(), True
        try:
            yield self.count
        finally:
            self.active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


# ----------------------------------------------------------------------------- timing helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds: on a shared CPU the CPU time excludes time spent waiting."""
    return time.perf_counter(), time.process_time()


@dataclass
class Rate:
    """A median duration measured on the wall clock and in process CPU time."""

    wall: float
    cpu: float

    @staticmethod
    def median(marks: list[tuple[float, float]]) -> Rate:
        walls = [b[0] - a[0] for a, b in zip(marks[::2], marks[1::2], strict=True)]
        cpus = [b[1] - a[1] for a, b in zip(marks[::2], marks[1::2], strict=True)]
        return Rate(statistics.median(walls), statistics.median(cpus))


def matmul_gflops(device: torch.device, n: int, repeats: int) -> tuple[float, float]:
    """Median GFLOP/s (wall, CPU time) of an n x n x n float32 matmul (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    c = a @ b  # warm-up
    marks = []
    for _ in range(repeats):
        sync(device)
        marks.append(clock())
        c = torch.mm(a, b, out=c)
        sync(device)
        marks.append(clock())
    r = Rate.median(marks)
    return 2.0 * n ** 3 / r.wall / 1e9, 2.0 * n ** 3 / max(r.cpu, 1e-9) / 1e9


class StepClock:
    """Per-step wall times of a synthesis phase: a pre-hook marks each generator forward."""

    def __init__(self, generator: nn.Module, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []
        self._h = generator.register_forward_pre_hook(self._mark)

    def _mark(self, _m, _inp) -> None:
        sync(self.device)
        self.marks.append(clock())

    def run(self, fn):
        self.marks = []
        out = fn()
        sync(self.device)
        self.marks.append(clock())
        return out

    def steps(self, skip: int) -> Rate:
        """Median step duration after the first `skip` steps."""
        marks = self.marks[skip:]
        return Rate.median([m for a, b in zip(marks, marks[1:], strict=False) for m in (a, b)])

    def remove(self) -> None:
        self._h.remove()


# ----------------------------------------------------------------------------- one setting

@dataclass
class Setting:
    """A named configuration and the models and test split it runs with."""

    name: str
    cfg: DistillConfig
    teacher: nn.Module
    student: nn.Module
    test: ImageTensors
    note: str = ""


def cifar_setting(tiny: bool, device: str) -> Setting:
    """CIFAR-10 wrn40_2 -> wrn16_1 with random weights and a random 10k-image test split."""
    over = {"device": device, "progress": False, "teacher_weights": "random"}
    if tiny:
        over.update(synthesis_batch_size=16, batch_size=8, ngf=16)
    cfg = distill_config(load_yaml(CIFAR_CONFIG), over)
    info = dataset_info("cifar10")
    torch.manual_seed(0)
    teacher = create_model(cfg.teacher, info.num_classes, info.channels)
    student = create_model(cfg.student, info.num_classes, info.channels)
    n = 200 if tiny else 10_000
    g = torch.Generator().manual_seed(0)
    test = ImageTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (n,), generator=g))
    return Setting("CIFAR-10 wrn40_2 -> wrn16_1", cfg, teacher, student, test,
                   "random weights; random 10k test images of CIFAR shape")


def fmnist_setting(tiny: bool, device: str) -> Setting:
    """The Fashion-MNIST default: shipped smallcnn teacher, tinycnn student, real test split."""
    over = {"device": device, "progress": False}
    if tiny:
        over.update(synthesis_batch_size=16, batch_size=8)
    cfg = distill_config(over, under=SUITE_SHARED)
    info = dataset_info(cfg.dataset)
    teacher = create_model(cfg.teacher, info.num_classes, info.channels)
    load_weights(teacher, resolve_weights_path(cfg.teacher_weights, cfg.dataset, cfg.teacher))
    student = create_model(cfg.student, info.num_classes, info.channels)
    note = "shipped teacher; real Fashion-MNIST test split"
    try:
        test = load_dataset(cfg.dataset, cfg.data_root, train=False, download=False)
    except DatasetError:
        g = torch.Generator().manual_seed(0)
        test = ImageTensors(torch.randint(0, 256, (10_000, 1, 28, 28), dtype=torch.uint8,
                                          generator=g), torch.randint(0, 10, (10_000,)))
        note = "shipped teacher; random 10k test images (Fashion-MNIST files not found)"
    if tiny:
        test = ImageTensors(test.images[:200], test.labels[:200])
    return Setting("Fashion-MNIST default (smallcnn -> tinycnn)", cfg, teacher, student, test,
                   note)


@dataclass
class Result:
    """Everything measured for one setting."""

    name: str
    note: str
    syn_batch: int
    kd_batch: int
    syn_step: Rate
    kd_step: Rate
    syn_flops: FlopCount
    kd_flops: FlopCount
    epoch: dict[str, float]
    epoch_steps: tuple[int, int]
    full_steps: tuple[int, int]
    profile: str = ""

    @property
    def syn_gflops(self) -> float:
        return self.syn_flops.total / self.syn_step_s / 1e9

    @property
    def syn_step_s(self) -> float:
        return self.syn_step.wall

    @property
    def kd_step_s(self) -> float:
        return self.kd_step.wall

    @property
    def kd_gflops(self) -> float:
        return self.kd_flops.total / self.kd_step_s / 1e9


def profile_synthesis(synth: Method, device: torch.device, rows: int = 15) -> str:
    """torch.profiler table (self time, top ops) of a 2-step synthesis phase."""
    from torch.profiler import ProfilerActivity, profile

    g_steps = synth.g_steps
    synth.g_steps = 2
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        synth.synthesize()
    synth.g_steps = g_steps
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)


@dataclass
class Phases:
    """The objects of one setting's two phases, built as `run_distillation` builds them."""

    teacher: nn.Module
    student: nn.Module
    generator: nn.Module
    synth: Method
    phase: StudentPhase
    t_ext: FeatureExtractor
    s_ext: FeatureExtractor

    def remove(self) -> None:
        self.t_ext.remove()
        self.s_ext.remove()


def build_phases(setting: Setting, device: torch.device, g_steps: int, *,
                 precision: str = "fp32", channels_last: bool = False,
                 compiled: bool = False, optimizer_impl: str = "default") -> Phases:
    """Synthesizer (g_steps per phase) and student phase of a setting, with speed options."""
    cfg = setting.cfg
    info = dataset_info(cfg.dataset)
    seed_everything(cfg.seed)
    teacher = freeze(copy.deepcopy(setting.teacher).to(device))
    student = copy.deepcopy(setting.student).to(device)
    augment = Augment(info.mean, info.std, info.crop_padding, info.hflip).to(device)
    t_ext, s_ext = FeatureExtractor(teacher), FeatureExtractor(student)
    run_cfg = distill_config(cfg.to_dict(), {"g_steps": g_steps, "precision": precision,
                                             "optimizer_impl": optimizer_impl,
                                             "progress": False})
    synth = get_method(run_cfg.method)(method_context(run_cfg, t_ext, s_ext, augment, info,
                                                      device))
    generator = synth.generator
    for net in (teacher, student, generator):
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if compiled:
            net.compile()
    opt = torch.optim.SGD(list(student.parameters()) + synth.student_parameters(),
                          lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          **optimizer_options(optimizer_impl))
    phase = StudentPhase(synth, t_ext, s_ext, augment, opt, batch_size=cfg.batch_size,
                         precision=Precision(precision, device))
    return Phases(teacher, student, generator, synth, phase, t_ext, s_ext)


def filled_pool(setting: Setting, device: torch.device, images: torch.Tensor,
                labels: torch.Tensor) -> ImagePool:
    """A pool holding four student batches of the given synthetic images."""
    info = dataset_info(setting.cfg.dataset)
    pool = ImagePool(info.channels, info.image_size, device)
    while len(pool) < 4 * setting.cfg.batch_size:
        pool.add(images, labels)
    return pool


def time_student_steps(ph: Phases, pool: ImagePool, device: torch.device, steps: int,
                       warmup: int, counter: FlopCounter | None = None) -> tuple[Rate, FlopCount]:
    """Median `StudentPhase.step` time (after `warmup` steps); FLOPs of the first timed one."""
    ph.student.train()
    marks, flops = [], FlopCount()
    for i in range(warmup + steps):
        counting = counter is not None and i == warmup
        with counter.measure() if counting else contextlib.nullcontext():
            sync(device)
            t0 = clock()
            ph.phase.step(pool)
            sync(device)
        if counting:
            flops = counter.count
        if i >= warmup:
            marks += [t0, clock()]
    return Rate.median(marks), flops


def measure(setting: Setting, device: torch.device, steps: int, warmup: int,
            epoch_steps: tuple[int, int], do_profile: bool = False) -> Result:
    """Median step times and FLOPs of both phases, then a short real run for the epoch split."""
    cfg = setting.cfg
    ph = build_phases(setting, device, warmup + steps)
    counter = FlopCounter({"teacher": ph.teacher, "student": ph.student,
                           "generator": ph.generator})

    # synthesis: one phase of warmup + steps generator steps, timed per step
    step_clock = StepClock(ph.generator, device)
    with counter.measure() as syn_count:
        result = step_clock.run(ph.synth.synthesize)
    step_clock.remove()
    syn_step = step_clock.steps(warmup)
    profile = profile_synthesis(ph.synth, device) if do_profile else ""
    n_steps = warmup + steps
    syn_flops = FlopCount({k: v / n_steps for k, v in syn_count.forward.items()},
                          {k: v / n_steps for k, v in syn_count.backward.items()})

    # student phase: a pool of synthetic images, then timed StudentPhase.step calls
    pool = filled_pool(setting, device, result.images, result.labels)
    kd_step, kd_flops = time_student_steps(ph, pool, device, steps, warmup, counter)
    counter.remove()
    ph.remove()

    epoch = epoch_split(setting, device, epoch_steps)
    return Result(setting.name, setting.note, cfg.synthesis_batch_size, 2 * cfg.batch_size,
                  syn_step, kd_step, syn_flops,
                  kd_flops, epoch, epoch_steps, (cfg.g_steps, cfg.kd_steps), profile)


# The speed options of `rgal distill`, each measured against fp32 / contiguous / eager.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
    "compile": {"compiled": True},
    "foreach": {"optimizer_impl": "foreach"},
    "fused": {"optimizer_impl": "fused"},
}


def measure_variants(setting: Setting, device: torch.device, steps: int, warmup: int,
                     names: list[str]) -> dict[str, tuple[Rate, Rate]]:
    """Median (synthesis step, distillation step) of each speed option on one setting."""
    out = {}
    for name in names:
        print(f"  option {name} ...", file=sys.stderr, flush=True)
        ph = build_phases(setting, device, warmup + steps, **VARIANTS[name])
        step_clock = StepClock(ph.generator, device)
        result = step_clock.run(ph.synth.synthesize)
        step_clock.remove()
        pool = filled_pool(setting, device, result.images, result.labels)
        kd_step, _ = time_student_steps(ph, pool, device, steps, warmup)
        ph.remove()
        out[name] = (step_clock.steps(warmup), kd_step)
    return out


def variants_table(setting_names: list[str],
                   results: list[dict[str, tuple[Rate, Rate]]]) -> str:
    """Markdown: each option's step times and speed-up over fp32, per setting."""
    lines = ["", "## Speed options (`--precision`, `--channels-last`, `--compile`, `--optimizer-impl`)", "",
             "Median step time (wall / CPU time where on a CPU) and speed-up over fp32 "
             "(CPU time on a CPU, wall on a GPU).", "",
             "| option | " + " | ".join(f"{n}: synthesis step | {n}: distillation step"
                                       for n in setting_names) + " |",
             "|---|" + "---|---|" * len(setting_names)]
    for name in results[0]:
        cells = []
        for res in results:
            base = res["fp32"]
            for i in (0, 1):
                r = res[name][i]
                ref = base[i].cpu if r.cpu > 0 and base[i].cpu > 0 else base[i].wall
                now = r.cpu if r.cpu > 0 and base[i].cpu > 0 else r.wall
                cells.append(f"{fmt_s(r.wall)} / {fmt_s(r.cpu)} (x{ref / now:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


IO_FUNCS = {"save_checkpoint": "checkpoint", "save_grid": "grid PNG",
            "plot_curves": "accuracy plot", "save_weights": "best weights"}


@contextlib.contextmanager
def timed_io(*modules):
    """Wrap the file writers the modules call by name; yields a list of (name, start, end)."""
    calls: list[tuple[str, float, float]] = []
    saved = {(module, name): getattr(module, name) for module in modules for name in IO_FUNCS
             if hasattr(module, name)}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                calls.append((name, t0, time.perf_counter()))
        return timed

    for (module, name), fn in saved.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)


@contextlib.contextmanager
def skip_teacher_eval(module, teacher: nn.Module):
    """The run's opening teacher evaluation is not part of any epoch: skip it (report 0)."""
    evaluate = module.evaluate
    module.evaluate = lambda model, *a, **k: 0.0 if model is teacher else evaluate(model, *a, **k)
    try:
        yield
    finally:
        module.evaluate = evaluate


def epoch_split(setting: Setting, device: torch.device, steps: tuple[int, int]) -> dict:
    """Wall-time split of the second epoch of a real 2-epoch `run_distillation`.

    The epoch runs from the end of epoch 1's checkpoint to the end of its own. The file
    writers (checkpoint, grid, plot, weights) are timed by wrapping them; the metrics line
    is written inline and falls into 'host'.
    """
    import rgal.engine.loop as loop_module
    import rgal.train.distill as distill_module

    g_steps, kd_steps = steps
    cfg = distill_config(setting.cfg.to_dict(),
                         {"epochs": 2, "g_steps": g_steps, "kd_steps": kd_steps,
                          "progress": False, "grid_every": 1})
    info = dataset_info(cfg.dataset)
    student = create_model(cfg.student, info.num_classes, info.channels)  # fresh: untrained
    with tempfile.TemporaryDirectory(prefix="rgal-throughput-") as tmp:
        cfg.out = tmp
        setup = DistillSetup(cfg=cfg, info=info, teacher=setting.teacher, student=student,
                             test=setting.test, device=device, folder=run_folder(tmp))
        with timed_io(distill_module, loop_module) as calls, \
                skip_teacher_eval(distill_module, setting.teacher):
            run_distillation(setup, log=lambda _msg: None)
        hist = [json.loads(line) for line in
                (Path(tmp) / "metrics.jsonl").read_text().splitlines() if line]
    second = hist[1]
    ckpts = [c for c in calls if c[0] == "save_checkpoint"]
    t_begin, t_end = ckpts[0][2], ckpts[1][2]
    wall = t_end - t_begin
    parts = {"synthesis": second["synthesis_s"], "distillation": second["distill_s"],
             "evaluation": second["eval_s"]}
    epoch2 = [(n, b - a) for n, a, b in calls if a >= t_begin and b <= t_end]
    io = {label: sum(t for n, t in epoch2 if n == name) for name, label in IO_FUNCS.items()}
    parts["I/O (files)"] = sum(io.values())
    parts["host (other)"] = max(0.0, wall - sum(parts.values()))
    parts["io"] = io
    parts["wall"] = wall
    parts["pool"] = second["pool_size"]
    return parts


# ----------------------------------------------------------------------------- report

PARTS = ("synthesis", "distillation", "evaluation", "I/O (files)", "host (other)")


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(results: list[Result], matmul: tuple[float, float], device: torch.device,
          threads: int, tiny: bool, loaded: str, mm_n: int = 2048) -> str:
    """The markdown report of every setting."""
    cpu = device.type == "cpu"
    mm_wall, mm_cpu = matmul

    def both(wall: str, cpu_time: str) -> str:
        return f"{wall} / {cpu_time}" if cpu else wall

    suffix = " (wall / CPU time)" if cpu else ""
    lines = [
        "# Throughput",
        "",
        f"Device: {describe_device(device)}; torch {torch.__version__}; "
        f"{threads} thread(s); float32.{' TINY MODE (small batches, few steps).' if tiny else ''}",
        f"Measured float32 matmul rate ({mm_n}^3) on the same device and threads: "
        f"**{both(f'{mm_wall:.1f}', f'{mm_cpu:.1f}')} GFLOP/s**{suffix}.",
    ]
    if cpu:
        lines.append("Wall: elapsed time. CPU time: the process's CPU seconds, which leave out "
                     "the time other jobs held the core; on a shared CPU the CPU-time rates "
                     "are the ones to compare.")
    if loaded:
        lines.append(loaded)
    lines += ["", "| | " + " | ".join(r.name for r in results) + " |",
              "|---|" + "---|" * len(results)]

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("synthesis batch (images)", lambda r: str(r.syn_batch))
    row("student batch (views)", lambda r: str(r.kd_batch))
    row("median synthesis step" + suffix,
        lambda r: both(fmt_s(r.syn_step.wall), fmt_s(r.syn_step.cpu)))
    row("synthesis images/s", lambda r: f"{r.syn_batch / r.syn_step_s:.1f}")
    row("median distillation step" + suffix,
        lambda r: both(fmt_s(r.kd_step.wall), fmt_s(r.kd_step.cpu)))
    row("distillation views/s", lambda r: f"{r.kd_batch / r.kd_step_s:.1f}")
    row("synthesis step GFLOP (fwd + bwd)", lambda r: f"{r.syn_flops.total / 1e9:.2f}")
    row("  of which teacher / student / generator",
        lambda r: " / ".join(f"{(r.syn_flops.forward.get(k, 0) + r.syn_flops.backward.get(k, 0)) / 1e9:.2f}"
                             for k in ("teacher", "student", "generator")))
    row("synthesis achieved GFLOP/s" + suffix,
        lambda r: both(f"{r.syn_gflops:.1f}", f"{r.syn_flops.total / r.syn_step.cpu / 1e9:.1f}"))
    row("synthesis / matmul rate" + suffix,
        lambda r: both(f"{100 * r.syn_gflops / mm_wall:.0f}%",
                       f"{100 * r.syn_flops.total / r.syn_step.cpu / 1e9 / mm_cpu:.0f}%"))
    row("distillation step GFLOP", lambda r: f"{r.kd_flops.total / 1e9:.2f}")
    row("distillation achieved GFLOP/s" + suffix,
        lambda r: both(f"{r.kd_gflops:.1f}", f"{r.kd_flops.total / r.kd_step.cpu / 1e9:.1f}"))
    row("short epoch (g_steps, kd_steps)", lambda r: f"{r.epoch_steps[0]}, {r.epoch_steps[1]}")
    row("short epoch wall", lambda r: fmt_s(r.epoch["wall"]))
    for part in PARTS:
        row(f"  {part}", lambda r, p=part: f"{fmt_s(r.epoch[p])} "
                                           f"({100 * r.epoch[p] / r.epoch['wall']:.1f}%)")
    row("  I/O: " + " / ".join(IO_FUNCS.values()),
        lambda r: " / ".join(fmt_s(r.epoch["io"][k]) for k in IO_FUNCS.values()))
    row("recipe (g_steps, kd_steps)", lambda r: f"{r.full_steps[0]}, {r.full_steps[1]}")
    row("recipe epoch, projected", lambda r: fmt_s(projected(r)["wall"]))
    for part in PARTS:
        row(f"  {part}", lambda r, p=part: f"{100 * projected(r)[p] / projected(r)['wall']:.1f}%")
    lines += ["", "Notes:"]
    for r in results:
        lines.append(f"- {r.name}: {r.note}; the short epoch is epoch 2 of a real "
                     f"`run_distillation` (pool of {r.epoch['pool']} images). 'I/O (files)' "
                     "is the time in the file writers (full checkpoint, grid PNG, accuracy "
                     "plot, best weights); 'host (other)' is the rest of the epoch's wall time "
                     "(metrics line, pool append, scheduler, Python between phases).")
    lines += [
        "- Recipe epoch, projected: g_steps x median synthesis step + kd_steps x median "
        "distillation step, plus the evaluation, I/O and host time measured in the short "
        "epoch (the checkpoint grows with the pool, so late epochs spend more on I/O).",
        "- FLOPs: Conv2d and Linear layers only, 2 x MACs forward; backward adds the forward "
        "FLOPs once for an input gradient and once for a weight gradient, as executed (frozen "
        "teacher/student pass gradients to the images; the generator also gets weight "
        "gradients). BN, activations, augmentation and losses are not counted.",
    ]
    for r in results:
        if r.profile:
            lines += ["", f"Profile of a 2-step synthesis phase, {r.name} (top ops by self "
                      "time):", "", "```", r.profile.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def projected(r: Result) -> dict[str, float]:
    g, k = r.full_steps
    parts = {"synthesis": g * r.syn_step_s, "distillation": k * r.kd_step_s,
             **{p: r.epoch[p] for p in PARTS[2:]}}
    parts["wall"] = sum(parts.values())
    return parts


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores visible)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per phase")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    p.add_argument("--settings", default="cifar,fmnist", help="comma list: cifar, fmnist")
    p.add_argument("--tiny", action="store_true", help="small batches and few steps (seconds)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "throughput.md"),
                   help="markdown file written (default benchmarks/throughput.md)")
    p.add_argument("--note", default="", help="a line added under the header, e.g. load")
    p.add_argument("--options", default="",
                   help="also time speed options, comma list of "
                        f"{', '.join(VARIANTS)} or 'all' (fp32 is always the reference)")
    p.add_argument("--profile", action="store_true",
                   help="append a torch.profiler table of a 2-step synthesis phase")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steps = args.steps or (2 if args.tiny else 5)
    warmup = args.warmup if args.warmup is not None else 1
    epoch_steps = (2, 2) if args.tiny else (5, 5)
    makers = {"cifar": cifar_setting, "fmnist": fmnist_setting}
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in names if s not in makers]
    if unknown or not names:
        raise SystemExit(f"throughput.py: unknown setting(s) {unknown}; use cifar, fmnist")
    options = list(VARIANTS) if args.options == "all" else \
        [o.strip() for o in args.options.split(",") if o.strip()]
    bad = [o for o in options if o not in VARIANTS]
    if bad:
        raise SystemExit(f"throughput.py: unknown option(s) {bad}; use {', '.join(VARIANTS)}")
    if options and "fp32" not in options:
        options.insert(0, "fp32")
    mm_n = 256 if args.tiny else 2048
    matmul = matmul_gflops(device, mm_n, 3 if args.tiny else 10)
    results, variants = [], []
    for name in names:
        setting = makers[name](args.tiny, str(device))
        print(f"measuring {setting.name} ...", file=sys.stderr, flush=True)
        results.append(measure(setting, device, steps, warmup, epoch_steps, args.profile))
        if options:
            variants.append(measure_variants(setting, device, steps, warmup, options))
    report = table(results, matmul, device, args.threads, args.tiny, args.note, mm_n)
    if options:
        report += variants_table([r.name for r in results], variants)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
