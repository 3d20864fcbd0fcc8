"""Where a gap between two bench entries lies: each class's test accuracy, paired by seed.

Reads the last-epoch students (`student.safetensors`) of two entries of finished `rgal bench`
folders, scores them on the images their runs were scored on (the test set, or with
`holdout` the same held-out training images), and prints, per class, each entry's
mean accuracy ± 95% interval and the per-seed paired difference (A minus B) with its verdict.
The two entries may live in different bench folders.

    python benchmarks/per_class.py BENCH_A ENTRY_A BENCH_B ENTRY_B
    python benchmarks/per_class.py runs/bench_long rgal runs/bench_long kd-real
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rgal.config import ConfigError
from rgal.data.augment import Normalize
from rgal.data.datasets import describe_dataset
from rgal.data.splits import evaluation_split
from rgal.engine.evaluate import confusion_matrix, per_class_rows, predict
from rgal.engine.stats import mean_interval, paired_difference, verdict
from rgal.models.build import build_model, load_model_weights
from rgal.train.bench import finished_runs, split_description


def class_accuracies(bench: Path, entry: str) -> tuple[dict[int, list[float]], dict]:
    """{seed: per-class accuracy (%)} of an entry's finished runs, and one run's config."""
    out, cfg, data = {}, {}, {}
    for seed, run, cfg in finished_runs(bench, entry):
        key = (cfg["dataset"], cfg.get("data_root"), cfg.get("holdout", 0))
        if key not in data:
            info = describe_dataset(cfg["dataset"], cfg.get("data_root"))
            data[key] = info, evaluation_split(*key[:2], holdout=key[2], download=False)[1]
        info, test = data[key]
        model = build_model(cfg["student"], info.num_classes, info.channels, "student")
        load_model_weights(model, str(run / "student.safetensors"), "student")
        preds = predict(model, test, Normalize(info.mean, info.std))
        rows = per_class_rows(confusion_matrix(preds, test.labels, info.num_classes),
                              info.classes)
        out[seed] = [r["acc"] for r in rows]
        cfg["classes"] = [r["class"] for r in rows]
        cfg["split"] = split_description(key[2])
    return out, cfg


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_a")
    p.add_argument("entry_a")
    p.add_argument("bench_b")
    p.add_argument("entry_b")
    args = p.parse_args(argv)
    try:
        a, cfg = class_accuracies(Path(args.bench_a), args.entry_a)
        b, cfg_b = class_accuracies(Path(args.bench_b), args.entry_b)
    except (ConfigError, OSError) as e:
        print(f"per_class: error: {e}", file=sys.stderr)
        return 2
    if ((cfg["dataset"], cfg["classes"], cfg["split"])
            != (cfg_b["dataset"], cfg_b["classes"], cfg_b["split"])):
        print("per_class: error: the two entries were scored on different images "
              f"({cfg['dataset']} {cfg['split']} against {cfg_b['dataset']} {cfg_b['split']})",
              file=sys.stderr)
        return 2
    seeds = sorted(set(a) & set(b))
    if not seeds:
        print("per_class: error: the two entries share no seed", file=sys.stderr)
        return 2
    print(f"{cfg['dataset']} {cfg['split']}, last epoch, seeds {seeds}: {args.entry_a} minus "
          f"{args.entry_b}, paired by seed\n")
    print(f"| class | {args.entry_a} (%) | {args.entry_b} (%) | difference (points) | verdict |")
    print("|---|---|---|---|---|")
    for c, name in enumerate(cfg["classes"]):
        xa = {s: a[s][c] for s in seeds}
        xb = {s: b[s][c] for s in seeds}
        diff = paired_difference(xa, xb)
        print(f"| {name} | {mean_interval(list(xa.values())).text(1)} | "
              f"{mean_interval(list(xb.values())).text(1)} | {diff.text(1, signed=True)} | "
              f"{verdict(diff) if len(seeds) > 1 else '-'} |")
    ta = {s: sum(a[s]) / len(a[s]) for s in seeds}
    tb = {s: sum(b[s]) / len(b[s]) for s in seeds}
    print(f"| mean of the classes | {mean_interval(list(ta.values())).text(2)} | "
          f"{mean_interval(list(tb.values())).text(2)} | "
          f"{paired_difference(ta, tb).text(2, signed=True)} | |")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run())
