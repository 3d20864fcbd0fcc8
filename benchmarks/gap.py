"""Where a data-free student's error lies: in its features or in its classifier.

Oracle diagnostics for the finished runs of a `rgal bench` entry. Each run's last student is
scored on the images its run was scored on (the test set, or the held-out split) as trained,
and again after one part of it is re-fitted on real, labelled training images that the
evaluation never sees (the training part of the split):

    bn          every BatchNorm's running statistics re-estimated on the real images
    bias        the linear head's bias re-fitted (cross-entropy), its weights kept
    head        the whole linear head re-fitted on the frozen penultimate features
                (a linear probe; the convolutional features stay as trained)

and one data-free counterpart, for runs whose checkpoint holds the synthetic pool:

    transplant  the teacher's own head applied to the student's features, mapped into the
                teacher's feature space by a ridge regression fitted on the pool images

For those runs the per-class table also shows, for each class, the share of its evaluation
images whose nearest pool image in the student's features (cosine) was made for that class.

The oracle rows read real labels: they bound what a better data-free recipe could gain in
each part of the student; they are not a method.

    python benchmarks/gap.py BENCH ENTRY [--real N]
    python benchmarks/gap.py runs/long5_def rgal
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rgal.config import ConfigError
from rgal.data.augment import Normalize
from rgal.data.datasets import ImageTensors, describe_dataset
from rgal.data.splits import evaluation_split
from rgal.engine.evaluate import batched_outputs, confusion_matrix, per_class_rows
from rgal.engine.stats import mean_interval, paired_difference, verdict
from rgal.models.build import build_model, load_model_weights, resolve_weights_path
from rgal.models.features import FeatureExtractor, default_classifier_name, find_batchnorms
from rgal.train.bench import finished_runs, split_description

VARIANTS = {
    "as trained": "-",
    "bn": "real images (oracle)",
    "bias": "real labels (oracle)",
    "head": "real labels (oracle)",
    "transplant": "the run's synthetic pool (data-free)",
}
NEAREST = "nearest pool image of its class"  # a per-class column, not a student


def nearest_index(x: torch.Tensor, bank: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """For each row of x, the index of the row of `bank` with the highest cosine similarity."""
    bank = F.normalize(bank, dim=1)
    return torch.cat([(F.normalize(x[i:i + batch_size], dim=1) @ bank.T).argmax(1)
                      for i in range(0, len(x), batch_size)])


def features(model: nn.Module, data: ImageTensors, norm: Normalize) -> torch.Tensor:
    """The model's penultimate feature (the input of its linear head) for every image."""
    extractor = FeatureExtractor(model)
    try:
        return batched_outputs(extractor, data, norm, head=lambda f: f.feature)
    finally:
        extractor.remove()


def head_of(model: nn.Module) -> nn.Linear:
    return model.get_submodule(default_classifier_name(model))


@torch.no_grad()
def reestimate_bn(model: nn.Module, data: ImageTensors, norm: Normalize,
                  batch_size: int = 500) -> None:
    """Every BatchNorm's running mean and variance as the average over `data`'s batches."""
    for bn in find_batchnorms(model):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    for i in range(0, len(data), batch_size):
        model(norm(data.images[i:i + batch_size].float() / 255))
    model.eval()


def refit_head(head: nn.Linear, feats: torch.Tensor, labels: torch.Tensor,
               bias_only: bool = False, weight_decay: float = 1e-4) -> nn.Linear:
    """Minimise the head's cross-entropy on (feats, labels) from its current weights (L-BFGS);
    with `bias_only` the weight matrix stays as it is."""
    head.requires_grad_(True)
    head.weight.requires_grad_(not bias_only)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(feats), labels)
        if not bias_only:
            loss = loss + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head.requires_grad_(False)
    return head


def ridge_map(x: torch.Tensor, y: torch.Tensor, lam: float = 0.1):
    """The affine map x -> y of least squares with an L2 penalty `lam` (on the weights and the
    offset), as a function."""
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1).double()
    a = x1.T @ x1 + lam * torch.eye(x1.shape[1], dtype=torch.double)
    w = torch.linalg.solve(a, x1.T @ y.double()).float()
    return lambda z: torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1) @ w


def fit_images(cfg: dict) -> tuple[ImageTensors, ImageTensors]:
    """(real training images the run's evaluation never sees, the run's evaluation images)."""
    train, evaluation = evaluation_split(cfg["dataset"], cfg.get("data_root"),
                                         holdout=cfg.get("holdout", 0), download=False,
                                         need_train=True)
    return train, evaluation


def run_variants(run: Path, cfg: dict, train: ImageTensors, evaluation: ImageTensors,
                 real: int) -> dict[str, list[float]]:
    """{variant: per-class accuracy (%)} of one finished run."""
    info = describe_dataset(cfg["dataset"], cfg.get("data_root"))
    norm = Normalize(info.mean, info.std)
    real_part = ImageTensors(train.images[:real], train.labels[:real])

    def student() -> nn.Module:
        model = build_model(cfg["student"], info.num_classes, info.channels, "student")
        load_model_weights(model, str(run / "student.safetensors"), "student")
        return model.eval().requires_grad_(False)

    def classes(preds: torch.Tensor) -> list[float]:
        cm = confusion_matrix(preds, evaluation.labels, info.num_classes)
        return [r["acc"] for r in per_class_rows(cm, info.classes)]

    out = {}
    model = student()
    feats = features(model, evaluation, norm)
    out["as trained"] = classes(head_of(model)(feats).argmax(1))
    bn_model = student()
    reestimate_bn(bn_model, real_part, norm)
    out["bn"] = classes(batched_outputs(bn_model, evaluation, norm).argmax(1))
    real_feats = features(model, real_part, norm)
    for name, bias_only in (("bias", True), ("head", False)):
        head = refit_head(head_of(student()), real_feats, real_part.labels, bias_only)
        out[name] = classes(head(feats).argmax(1))
    ckpt = run / "checkpoint.pt"
    pool = (torch.load(ckpt, map_location="cpu", weights_only=False).get("pool")
            if ckpt.exists() else None)
    if pool is not None and pool.get("labels") is not None and len(pool["images"]):
        teacher = build_model(cfg["teacher"], info.num_classes, info.channels, "teacher")
        load_model_weights(teacher, resolve_weights_path(cfg["teacher_weights"], cfg["dataset"],
                                                         cfg["teacher"]), "teacher")
        teacher.eval().requires_grad_(False)
        synthetic = ImageTensors(pool["images"], pool["labels"])
        pool_feats = features(model, synthetic, norm)
        to_teacher = ridge_map(pool_feats, features(teacher, synthetic, norm))
        out["transplant"] = classes(head_of(teacher)(to_teacher(feats)).argmax(1))
        out[NEAREST] = classes(synthetic.labels[nearest_index(feats, pool_feats)])
    return out


def entry_gap(bench: Path, entry: str, real: int) -> tuple[dict[int, dict], dict]:
    """{seed: {variant: per-class accuracy}} of an entry's finished runs, and one config."""
    out, splits, cfg = {}, {}, {}
    for seed, run, cfg in finished_runs(bench, entry):
        key = (cfg["dataset"], cfg.get("data_root"), cfg.get("holdout", 0))
        if key not in splits:
            splits[key] = fit_images(cfg)
        out[seed] = run_variants(run, cfg, *splits[key], real)
    cfg["classes"] = list(describe_dataset(cfg["dataset"], cfg.get("data_root")).classes)
    cfg["split"] = split_description(cfg.get("holdout", 0))
    return out, cfg


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench")
    p.add_argument("entry")
    p.add_argument("--real", type=int, default=50000,
                   help="real training images the oracle rows fit on (the first N of the "
                        "training part; default 50000)")
    args = p.parse_args(argv)
    if args.real < 1:
        print("gap: error: --real must be at least 1", file=sys.stderr)
        return 2
    try:
        gap, cfg = entry_gap(Path(args.bench), args.entry, args.real)
    except (ConfigError, OSError) as e:
        print(f"gap: error: {e}", file=sys.stderr)
        return 2
    seeds = sorted(gap)
    mean = {v: {s: sum(gap[s][v]) / len(gap[s][v]) for s in seeds if v in gap[s]}
            for v in VARIANTS}
    print(f"{args.entry}: {cfg['dataset']} {cfg['split']}, last epoch, seeds {seeds}; oracle "
          f"rows fitted on the first {args.real} images of the training part\n")
    print("| student | fitted on | mean class acc (%) ± 95% CI | minus as trained, paired | verdict "
          "| per seed |")
    print("|---|---|---|---|---|---|")
    for v, uses in VARIANTS.items():
        if not mean[v]:
            continue
        diff = paired_difference(mean[v], mean["as trained"])
        print(f"| {v} | {uses} | {mean_interval(list(mean[v].values())).text(2)} | "
              + ("- | - | " if v == "as trained" else
                 f"{diff.text(2, signed=True)} | "
                 f"{verdict(diff) if len(seeds) > 1 else '-'} | ")
              + " ".join(f"{mean[v][s]:.2f}" for s in seeds) + " |")
    shown = [v for v in VARIANTS if mean[v]] + ([NEAREST] if NEAREST in gap[seeds[0]] else [])
    print("\nPer class, mean over the seeds (%):\n")
    print("| class | " + " | ".join(shown) + " |")
    print("|---|" + "---|" * len(shown))
    for c, name in enumerate(cfg["classes"]):
        cells = [mean_interval([gap[s][v][c] for s in seeds if v in gap[s]]).mean
                 for v in shown]
        print(f"| {name} | " + " | ".join(f"{x:.1f}" for x in cells) + " |")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run())
