"""Where a data-free run's student sits near chance: what its generator makes and what its
student predicts.

For each finished run folder (one with a `checkpoint.pt`), rebuilds the run from its
checkpoint and prints the teacher's predicted classes on N fresh generator images (online
methods; pool methods: the newest N images of their pool) and the student's predicted classes on the test set,
each as a count per class, with the number of classes that get at least 1% of the images.
`--confidence` adds, per class, the teacher's mean probability of its chosen class on the
generated images it assigns to that class and on the real test images it assigns there: a
synthetic set whose hard classes look easier than the real ones teaches less about them.

    python benchmarks/collapse.py runs/bench/runs/dfad/seed0 [more run folders] [--n 1024]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from rgal.engine import CHECKPOINT, load_checkpoint
from rgal.engine.evaluate import batched_outputs, predict
from rgal.methods import distill_config
from rgal.train.distill import DistillJob
from rgal.train.prepare import prepare_distillation


def histogram(labels: torch.Tensor, classes: int) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=classes).tolist()


def confidence_by_class(probs: torch.Tensor) -> list[float]:
    """Mean top probability of the images whose top class is c, per class (nan: none)."""
    top, cls = probs.max(1)
    return [float(top[cls == c].mean()) if (cls == c).any() else float("nan")
            for c in range(probs.shape[1])]


def occupied(counts: list[int]) -> int:
    """Classes with at least 1% of the images."""
    total = sum(counts)
    return sum(c >= 0.01 * total for c in counts)


@torch.no_grad()
def inspect(folder: Path, n: int, confidence: bool = False) -> dict[str, list]:
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
    logits = job.teacher(job.augment(x.to(job.device), augment=False))
    preds = predict(job.student, job.setup.test, job.augment.normalize)
    out = {"teacher on generated images": histogram(logits.argmax(1), classes),
           "student on the test set": histogram(preds, classes)}
    if confidence:
        real = batched_outputs(job.teacher, job.setup.test, job.augment.normalize,
                               head=lambda y: y.softmax(1))
        out["teacher confidence, generated"] = confidence_by_class(logits.softmax(1))
        out["teacher confidence, real test"] = confidence_by_class(real)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with a checkpoint.pt")
    parser.add_argument("--n", type=int, default=1024, help="generated images to classify")
    parser.add_argument("--confidence", action="store_true",
                        help="also the teacher's mean confidence per class, generated and real")
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
        for name, values in inspect(folder, args.n, args.confidence).items():
            if name.startswith("teacher confidence"):
                print(f"  {name}: [{', '.join(f'{v:.3f}' for v in values)}]")
            else:
                print(f"  {name}: {values} ({occupied(values)} classes with >= 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
