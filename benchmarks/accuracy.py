"""The accuracy benchmark: every method and RGAL ablation on the Fashion-MNIST default.

Runs `rgal bench` with its default suite (shipped teacher, the demo's student, 2 seeds, the
default budget) into runs/bench_accuracy and copies the table to benchmarks/results.md and
the accuracy plots and a half-size sample montage to benchmarks/results_*.png.
Interrupted? Run it again: finished runs are kept and a killed one resumes.

    python benchmarks/accuracy.py [--seeds 2] [--out runs/bench_accuracy] [--holdout]

`--holdout` evaluates on the last 10,000 training images instead of the test set: the
split on which settings are chosen (the table is then not copied).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rgal.cli import main

HERE = Path(__file__).resolve().parent


def run(argv: list[str] | None = None) -> int:
    """Run the suite; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", default=None,
                   help="bench folder (default runs/bench_accuracy[_holdout])")
    p.add_argument("--methods", default=None, help="a subset of the suite (comma-separated)")
    p.add_argument("--holdout", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out or ("runs/bench_accuracy_holdout" if args.holdout
                            else "runs/bench_accuracy"))
    cmd = ["bench", "--out", str(out), "--seeds", str(args.seeds)]
    if any((out / f).exists() for f in ("results.csv", "results.md")):
        cmd.append("--resume")
    if args.methods:
        cmd += ["--methods", args.methods]
    if args.holdout:
        cmd += ["--set", "holdout=10000"]
    code = main(cmd)
    if code == 0 and not args.holdout:
        shutil.copy(out / "results.md", HERE / "results.md")
        for plot in ("accuracy_vs_epoch.png", "accuracy_vs_time.png"):
            shutil.copy(out / plot, HERE / f"results_{plot}")
        from PIL import Image  # a matplotlib dependency

        with Image.open(out / "samples.png") as im:  # half size: the full one is ~2 MB
            im.resize((im.width // 2, im.height // 2), Image.LANCZOS).save(
                HERE / "results_samples.png", optimize=True)
        print(f"table and plots -> {HERE / 'results.md'}, {HERE}/results_*.png")
    return code


if __name__ == "__main__":
    sys.exit(run())
