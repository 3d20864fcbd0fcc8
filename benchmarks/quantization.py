"""Regenerate benchmarks/quantization.md: every method at W4A4 and W3A3, 3 seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/quantization.py [--jobs 2]

Each run is `rgal quantize` with its defaults (the shipped Fashion-MNIST teacher) and one
method, bit width and seed; finished runs (a summary.json in their folder) are reused, so an
interrupted benchmark resumes. Accuracies are on the test set, after the last epoch.
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

METHODS = ("ptq-noise", "ptq-real", "gdfq", "gdfq+rgal")
HERE = Path(__file__).resolve().parent


def run_one(runs: Path, method: str, bits: int, seed: int) -> dict:
    """One `rgal quantize` run (skipped when its summary exists); its summary."""
    out = runs / f"{method}_w{bits}a{bits}_s{seed}"
    summary = out / "summary.json"
    if not summary.exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "rgal", "quantize", "--method", method, "--wbits", str(bits),
               "--abits", str(bits), "--seed", str(seed), "--out", str(out), "--no-progress",
               "--device", "cpu", "--overwrite"]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def mean_std(xs: list[float]) -> str:
    """'mean ± std' (sample std) of a list."""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f} ± {sd:.2f}"


def write_report(path: Path, results: dict, seeds: list[int], bits: list[int], notes: str) -> None:
    """The markdown table of every method and bit width."""
    fp = next(iter(results.values()))[0]["fp_acc"]
    lines = [
        "# Data-free quantization benchmark (Fashion-MNIST)",
        "",
        f"Full-precision model: the shipped `smallcnn` teacher, {fp:.2f}% test accuracy.",
        f"Test-set top-1 % after the last epoch, mean ± std over seeds {seeds}; wall time per "
        "run on one CPU thread (shared 2-core machine, so times are indicative). "
        "'weights only' is the float model with the fake-quantized weights and float "
        "activations (what `rgal eval` reports for `quantized_fakequant.safetensors`).",
        "",
        "Regenerate with `OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/quantization.py`.",
        "",
        "| method | " + " | ".join(f"W{b}A{b}" for b in bits) + " | "
        + " | ".join(f"W{b}A{b} weights only" for b in bits) + " | wall s / run |",
        "|---|" + "---|" * (2 * len(bits) + 1),
    ]
    for m in METHODS:
        accs = [mean_std([s["quant_acc"] for s in results[(m, b)]]) for b in bits]
        wo = [mean_std([s["weights_only_acc"] for s in results[(m, b)]]) for b in bits]
        wall = statistics.mean(s["wall_s"] for b in bits for s in results[(m, b)])
        lines.append(f"| {m} | " + " | ".join(accs) + " | " + " | ".join(wo)
                     + f" | {wall:.0f} |")
    lines += ["", "Per seed (quantized accuracy):", "",
              "| method | bits | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    for m in METHODS:
        for b in bits:
            lines.append(f"| {m} | W{b}A{b} | "
                         + " | ".join(f"{s['quant_acc']:.2f}" for s in results[(m, b)]) + " |")
    if notes:
        lines += ["", notes.strip()]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/bench_quantization", help="folder of the runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    p.add_argument("--notes", default=str(HERE / "quantization_notes.md"),
                   help="markdown appended under the tables")
    p.add_argument("--report", default=str(HERE / "quantization.md"))
    args = p.parse_args()
    runs = Path(args.runs)
    jobs = [(m, b, s) for b in args.bits for m in METHODS for s in args.seeds]
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda j: run_one(runs, *j), jobs))
    results: dict = {}
    for (m, b, _), s in zip(jobs, done, strict=True):
        results.setdefault((m, b), []).append(s)
    notes_path = Path(args.notes)
    notes = notes_path.read_text() if notes_path.exists() else ""
    write_report(Path(args.report), results, args.seeds, args.bits, notes)
    print(f"{len(jobs)} runs in {time.time() - t0:.0f} s -> {args.report}")


if __name__ == "__main__":
    main()
