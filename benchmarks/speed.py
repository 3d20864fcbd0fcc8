"""The side-by-side speed setting: `rgal distill` on the CIFAR shape, timed per phase.

    OMP_NUM_THREADS=1 python benchmarks/speed.py [--precision fp32|bf16|auto] [--device cpu]
                                                 [--profile] [--repeat 3]

Setting (the one the authors' released code was timed on, on this project's 2-core CPU):
wrn40_2 -> wrn16_1 with random weights, 2 epochs, 10 generator steps and 20 student steps per
epoch, synthesis batch 64, student batch 64 images x 2 views, one CPU thread. Printed: the
seconds spent in synthesis and in the student phase, summed over the two epochs (evaluation
and file writing excluded, as in the reference timing), and the ratio to the reference's
figures: the authors' released code on this setting, fp32, one thread, timed side by side
with this script on the project's 2-core AMD EPYC (AVX2) machine, idle: synthesis 99.3 s,
student phase 163.3 s, total 262.6 s (their code on torch 2.14.1, CPU-only, no checkpoint
load, timers around the two phases; benchmarks/throughput.md has the details). The ratio is
only meaningful on a machine like that one; elsewhere time their code yourself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from rgal.data.base import ImageTensors  # noqa: E402
from rgal.data.datasets import dataset_info  # noqa: E402
from rgal.methods import distill_config  # noqa: E402
from rgal.models import create_model  # noqa: E402
from rgal.train.bench import SUITE_SHARED  # noqa: E402
from rgal.train.distill import DistillSetup, run_distillation, run_folder  # noqa: E402

REFERENCE = {"synthesis": 99.3, "student": 163.3, "total": 262.6}  # authors' code, fp32, 1 thread
FMNIST = {"epochs": 2, "g_steps": 15, "kd_steps": 20, "grid_every": 0, "diversity_samples": 0,
          "progress": False}
SETTING = {"dataset": "cifar10", "teacher": "wrn40_2", "student": "wrn16_1", "epochs": 2,
           "g_steps": 10, "kd_steps": 20, "synthesis_batch_size": 64, "batch_size": 64,
           "nz": 256, "ngf": 64, "reset_generator": True, "grid_every": 0,
           "diversity_samples": 0, "progress": False, "teacher_weights": "random"}


def run_once(precision: str, device: str, setting: str = "cifar", **extra) -> dict[str, float]:
    """One 2-epoch run; seconds per phase summed over the epochs."""
    if setting == "fmnist":  # the embedded default's models (shipped teacher), short schedule
        from rgal.models.build import resolve_weights_path
        from rgal.models.weights import load_weights

        cfg = distill_config(FMNIST, {"precision": precision, "device": device, **extra},
                             under=SUITE_SHARED)  # the setting its figures were timed with
        info = dataset_info("fashion-mnist")
        teacher = create_model("smallcnn", 10, 1)
        load_weights(teacher, resolve_weights_path("builtin", "fashion-mnist", "smallcnn"))
        torch.manual_seed(0)
        student = create_model("tinycnn", 10, 1)
        shape = (1, 28, 28)
    else:
        cfg = distill_config(SETTING, {"precision": precision, "device": device, **extra})
        info = dataset_info("cifar10")
        torch.manual_seed(0)
        teacher = create_model("wrn40_2", 10, 3)
        student = create_model("wrn16_1", 10, 3)
        shape = (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    test = ImageTensors(torch.randint(0, 256, (500, *shape), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (500,), generator=g))
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out = tmp
        setup = DistillSetup(cfg, info, teacher, student, test, torch.device(device),
                             run_folder(tmp))
        t0 = time.time()
        summary = run_distillation(setup, log=lambda _m: None)
        wall = time.time() - t0
        history = [json.loads(line) for line in
                   (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return {"synthesis": summary["synthesis_s"], "student": summary["distill_s"],
            "total": summary["synthesis_s"] + summary["distill_s"], "wall": wall,
            "precision": summary.get("precision", precision),
            "epochs": [{k: r[k] for k in ("synthesis_s", "distill_s", "eval_s")}
                       for r in history]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--setting", default="cifar", choices=("cifar", "fmnist"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="runs (the median is reported)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--profile", action="store_true", help="a torch profile of one run")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    from rgal.config import parse_set

    extra = parse_set(args.set)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_once(args.precision, args.device, args.setting, **extra)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
        return 0
    runs = [run_once(args.precision, args.device, args.setting, **extra)
            for _ in range(args.repeat)]
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("synthesis", "student", "total", "wall")}
    print(f"{args.setting}: threads {torch.get_num_threads()}, precision {args.precision}, "
          f"device {args.device}, {' '.join(args.set)}, {args.repeat} runs (median)")
    # the reference was timed on this setting only: CPU, fp32, no changed settings
    comparable = (args.setting == "cifar" and args.device == "cpu" and not args.set
                  and args.precision == "fp32")
    for k in ("synthesis", "student", "total"):
        ref = (f"   reference {REFERENCE[k]:6.1f} s   x{REFERENCE[k] / med[k]:.2f}"
               if comparable else "")
        print(f"{k:10s} {med[k]:7.2f} s{ref}")
    if args.json:
        Path(args.json).write_text(json.dumps({"median": med, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
