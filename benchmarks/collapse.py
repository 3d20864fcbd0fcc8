"""Where a data-free run's student sits near chance: what its generator makes and what its
student predicts.

For each finished run folder (one with a `checkpoint.pt`), rebuilds the run from its
checkpoint and prints the teacher's predicted classes on N fresh generator images (online
methods; pool methods: the newest N images of their pool) and the student's predicted classes on the test set,
each as a count per class, with the number of classes that get at least 1% of the images.

    python benchmarks/collapse.py runs/bench/runs/dfad/seed0 [more run folders] [--n 1024]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from rgal.engine import CHECKPOINT, load_checkpoint
from rgal.engine.evaluate import predict
from rgal.methods import distill_config
from rgal.train.distill import DistillJob
from rgal.train.prepare import prepare_distillation


def histogram(labels: torch.Tensor, classes: int) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=classes).tolist()


def occupied(counts: list[int]) -> int:
    """Classes with at least 1% of the images."""
    total = sum(counts)
    return sum(c >= 0.01 * total for c in counts)


@torch.no_grad()
def inspect(folder: Path, n: int) -> dict[str, list[int]]:
    state = load_checkpoint(folder / CHECKPOINT)
    with tempfile.TemporaryDirectory() as tmp:  # nothing is written into the run's folder
        cfg = distill_config({**state["config"], "out": str(Path(tmp) / "run"),
                              "device": "cpu"})
        job = DistillJob(prepare_distillation(cfg))
    job.load_state_dict(state)
    classes = job.info.num_classes
    method = job.method
    if method.source == "online":
        x, _ = method.sample(n, torch.Generator(job.device).manual_seed(0))
    else:
        x = job.pool.state_dict()["images"][-n:].float() / 255
    job.teacher.eval()
    synth = histogram(job.teacher(job.augment(x.to(job.device), augment=False)).argmax(1),
                      classes)
    preds = predict(job.student, job.setup.test, job.augment.normalize)
    return {"teacher on generated images": synth,
            "student on the test set": histogram(preds, classes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with a checkpoint.pt")
    parser.add_argument("--n", type=int, default=1024, help="generated images to classify")
    args = parser.parse_args(argv)
    if args.n < 1:
        print(f"error: --n must be at least 1, got {args.n}", file=sys.stderr)
        return 2
    for folder in args.runs:
        if not (folder / CHECKPOINT).is_file():
            print(f"error: {folder} has no {CHECKPOINT}", file=sys.stderr)
            return 2
    for folder in args.runs:
        print(folder)
        for name, counts in inspect(folder, args.n).items():
            print(f"  {name}: {counts} ({occupied(counts)} classes with >= 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
