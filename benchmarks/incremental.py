"""Regenerate benchmarks/incremental.md: every `rgal incremental` method x 3 seeds.

    OMP_NUM_THREADS=1 python benchmarks/incremental.py --jobs 2

Each run is `rgal incremental --method M --seed S --out RUNS/M-sS` with the default
settings (Fashion-MNIST, tinycnn, 5 tasks of 2 classes, CPU); finished runs are reused,
so an interrupted benchmark resumes. `--validation` evaluates on the held-out last
10,000 training images instead of the test set (how the settings were chosen).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("finetune", "lwf", "deepinv-replay", "abd", "abd+rgal", "joint")

NOTES = """## Reading the table

- Settings: `rgal incremental` defaults (4 epochs of the task's images per task, batch 64
  real + 64 replayed, SGD lr 0.01 cosine per task, gradient clipping 2; after each task 100
  generator steps, 4,096 class-balanced replay images; feature-distillation weight mu 10;
  `abd+rgal`: inversion relation weight 0.1, training relation weight 1.0, margin 0.2).
  `joint` gets the same number of steps per task, drawn from every real image seen so far.
- `lwf` equals `finetune` here: with 2 new classes per task and no old images, distilling
  old logits on new-class images keeps their relative order but not their level against the
  new classes, so no old class is ever predicted (accuracy 0 on every earlier task).
- `abd+rgal` ends above `abd` on every seed (+2.3 / +0.5 / +0.6), but by a margin within the
  seed spread. It trades old tasks for the newest one: after the last task, that task
  scores 85.5 against 71.2, the first task 32.2 against 40.0, and average forgetting is
  higher (47 against 37).
- The target of 60% final accuracy for `abd+rgal` is missed on the test set (56.4). On the
  held-out training images the same settings gave 65.1 / 58.3 / 58.9 (mean 60.8).
- The earlier settings (lr 0.05, training relation weight 0.1) gave, on the test set,
  abd 52.8 ± 3.4 and abd+rgal 54.0 ± 4.6 with 2 epochs per task, and 52.4 ± 3.4 and
  56.5 ± 7.2 with 4 epochs per task.
- A seed count below 3 means the remaining runs did not finish within the time this
  benchmark was given; `--report-only` tabulates what has finished.

"""

TUNING = """## How the settings were chosen

On held-out training data only: `--validation true` trains on the first 50,000 training
images and reports accuracy on the last 10,000. Final accuracy on those images (4 epochs per
task, 100 generator steps, mu 10, unless a row says otherwise):

| `abd+rgal` on held-out images | seed 0 | seed 1 | seed 2 |
|---|---|---|---|
| epochs 4, lr 0.05, training relation weight 0.1 (the earlier settings, with 4 epochs) | 60.4 | | |
| same, 400 generator steps | 65.2 | 47.6 | |
| same, 100 steps, fresh replay batches from the generator (`replay=generator`) | | 39.6 | |
| lr 0.05, mu 30 / mu 100 | | 48.1 / 45.2 | |
| lr 0.01, relation weight 0.1 | | 50.9 | |
| lr 0.01, relation weight 0.1, feature distillation on replayed images only | | 50.0 | |
| **lr 0.01, relation weight 1.0** | **65.1** | **58.3** | **58.9** |
| lr 0.01, relation weight 0.5 / 3.0 | | 54.7 / 49.0 | |
| lr 0.005, relation weight 1.0 | | 51.6 | 53.8 |

Kept: lr 0.01, training relation weight 1.0 (`w_stri`), 4 epochs per task. Seed 1's class
order is the hard one: its first task (sandal, shirt) is later confused with ankle boot,
sneaker, pullover and coat, and at lr 0.05 drops to 4-10% by the end. A lower learning rate
keeps the old features closer; a stronger relation loss during training separates
the new classes from replayed old ones that look like them. At weight 3 it
separates too much and the newest task takes over. Everything else is as first tuned, on
seed 0 with 1-2 epochs per task:

| abd variant (seed 0, 150 generator steps) | after task 3 | final |
|---|---|---|
| mu 1, no clipping, 1 epoch/task | 56.0 | 38.3 |
| mu 3, no clipping, 1 epoch/task | 40.8 (BN running statistics blow up: inversion BN loss 342) | stopped |
| mu 10, no clipping, 1 epoch/task (unbalanced replay) | 36.3 (BN loss 46,000) | stopped |
| mu 1, no clipping, 1 epoch/task (unbalanced replay) | 50.8 | stopped |
| mu 10, clip 2, 1 epoch/task | 71.2 | 50.5 |
| same, `abd+rgal` | 76.5 | 53.9 |
| mu 10, clip 2, 2 epochs/task | 79.0 | stopped (time) |
| same with BN weight 10 | 78.1 | stopped (time) |

Kept from that round: mu 10, gradient-norm clipping 2, BN weight 1, class-balanced replay
selection, 100 generator steps. The inversion's relation weight stays the paper's 0.1.
"""
ROOT = Path(__file__).resolve().parent.parent


def run_one(method: str, seed: int, runs: Path, extra: list[str]) -> dict:
    """One run (skipped when its summary already exists); returns its summary."""
    out = runs / f"{method.replace('+', '_')}-s{seed}"
    summary = out / "summary.json"
    if not summary.exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        cmd = [sys.executable, "-m", "rgal", "incremental", "--method", method, "--seed",
               str(seed), "--out", str(out), "--overwrite", "--no-progress", "--device", "cpu",
               *extra]
        t0 = time.time()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        print(f"{method} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return json.loads(summary.read_text())


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def write_report(results: dict[str, list[dict]], md: Path, png: Path, extra: list[str]) -> None:
    """Markdown table (mean ± std over seeds) and a plot of mean accuracy after each task."""
    sys.path.insert(0, str(ROOT / "src"))
    from rgal.engine.report import plot_curves

    first = next(iter(results.values()))[0]
    where = first["evaluated_on"]
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    counts = {m: len(r) for m, r in results.items()}
    lines = [
        "# Class-incremental learning benchmark (`rgal incremental`)",
        "",
        f"{first['dataset']}, `{first['model']}` trained from scratch, {first['tasks']} tasks "
        f"of 2 classes (class order drawn from the seed), accuracy on the {where} set over "
        f"every class seen so far (no task identity). Seeds {', '.join(map(str, seeds))}; "
        "mean ± std. One CPU thread per run (`OMP_NUM_THREADS=1`), two runs at a time on a "
        "2-core machine, so each run had a core to itself.",
        "",
        "Regenerate: `OMP_NUM_THREADS=1 python benchmarks/incremental.py --jobs 2`"
        + (f" (extra: `{' '.join(extra)}`)" if extra else ""),
        "",
        "| method | seeds | final acc (%) | final, per seed | avg incremental acc (%) | avg forgetting | "
        "acc after each task (mean) | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    curves = {}
    for method, runs in results.items():
        per_task = [statistics.mean(r["acc_seen"][t] for r in runs)
                    for t in range(first["tasks"])]
        curves[method] = (list(range(1, first["tasks"] + 1)), per_task)
        per_seed = " / ".join(f"{r['final_acc']:.1f}" for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| {method} | {counts[method]} | {mean_std([r['final_acc'] for r in runs])} | "
                     f"{per_seed} | "
                     f"{mean_std([r['avg_inc_acc'] for r in runs])} | "
                     f"{mean_std([r['forgetting'] for r in runs])} | "
                     f"{' / '.join(f'{a:.0f}' for a in per_task)} | "
                     f"{statistics.mean(r['wall_s'] for r in runs):.0f} |")
    lines += ["", f"![accuracy after each task]({png.name})", "", NOTES, TUNING]
    md.write_text("\n".join(lines) + "\n")
    plot_curves(png, curves, xlabel="task", ylabel="accuracy on seen classes (%)",
                title=f"{first['dataset']}, {first['tasks']} tasks (mean of {len(seeds)} seeds)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--runs", default="runs/bench_incremental", help="folder of the runs")
    p.add_argument("--md", default=str(ROOT / "benchmarks" / "incremental.md"))
    p.add_argument("--validation", action="store_true", help="evaluate on held-out training data")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--report-only", action="store_true",
                   help="no new runs: tabulate the finished ones (seed counts shown)")
    args = p.parse_args()
    extra = (["--validation", "true"] if args.validation else []) + \
        [a for kv in args.set for a in ("--set", kv)]
    runs = Path(args.runs)
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    if args.report_only:
        jobs = [(m, s) for m, s in jobs
                if (runs / f"{m.replace('+', '_')}-s{s}" / "summary.json").exists()]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda ms: run_one(*ms, runs, extra), jobs))
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for (m, _), summary in zip(jobs, done, strict=True):
        results[m].append(summary)
    results = {m: r for m, r in results.items() if r}
    md = Path(args.md)
    write_report(results, md, md.with_suffix(".png"), extra)
    print(md.read_text())


if __name__ == "__main__":
    main()
