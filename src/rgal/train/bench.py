"""`rgal bench`: several methods (and RGAL ablations) on one teacher, student and budget.

Every run is an ordinary `rgal distill` run in `OUT/runs/<entry>/seed<k>` (so an interrupted
bench continues where it stopped: finished runs are kept, a killed one resumes from its
checkpoint). The results are gathered into `results.csv`, `results.md` and three pictures.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import ConfigError, DistillConfig
from ..engine import CHECKPOINT, check_resumable, load_checkpoint
from ..engine.html_report import write_report
from ..methods import distill_config, get_method, list_ablations, list_methods


def default_suite() -> tuple[str, ...]:
    """Every registered method of the suite (data-free first, then references), then the
    ablations the methods declare."""
    methods = [m for m in list_methods() if get_method(m).in_suite]
    data_free = [m for m in methods if get_method(m).source != "real"]
    real = [m for m in methods if get_method(m).source == "real"]
    return (*data_free, *real, *list_ablations())


# The default budget: the whole suite with 2 seeds in about an hour on a 2-core CPU.
# Generator steps stay each method's own (Fast's few inner steps are its point).
DEFAULT_BUDGET: dict[str, Any] = {"epochs": 8, "kd_steps": 50}
DIVERSITY_KEYS = ("div_intra", "div_nearest_other", "div_entropy", "div_margin")
RESULTS = ("results.csv", "results.md", "accuracy_vs_epoch.png", "accuracy_vs_time.png",
           "samples.png")


def parse_entry(entry: str) -> dict[str, Any]:
    """`rgal`, an ablation name, or `method:key=value;key=value` -> config overrides."""
    from ..config import parse_set

    ablations = list_ablations()
    if entry in ablations:
        return dict(ablations[entry])
    method, _, rest = entry.partition(":")
    if method not in list_methods():
        raise ConfigError(f"unknown bench entry {entry!r}; methods: {', '.join(list_methods())}"
                          f"; ablations: {', '.join(ablations)}")
    overrides = parse_set([kv for kv in rest.split(";") if kv]) if rest else {}
    return {"method": method, **overrides}


def plan_runs(entries: list[str], seeds: list[int], out: Path,
              layers: list[dict[str, Any]]) -> list[tuple[str, int, DistillConfig]]:
    """Validated configs of every (entry, seed) run, before any of them starts."""
    if len(set(entries)) != len(entries):
        raise ConfigError("bench entries must be distinct")
    runs = []
    for entry in entries:
        overrides = parse_entry(entry)
        for seed in seeds:
            safe = "".join(c if c.isalnum() or c in "+-_." else "_" for c in entry)
            run_dir = out / "runs" / safe / f"seed{seed}"
            own = {"seed": seed, "out": str(run_dir), "progress": False}
            distill_config(overrides, own)  # an entry's own keys must all mean something
            cfg = distill_config(*layers, overrides, own, lenient=True)
            runs.append((entry, seed, cfg))
    return runs


def run_bench(runs: list[tuple[str, int, DistillConfig]], out: Path, *, progress: bool = True,
              log: Callable[[str], None] = tqdm.write) -> list[dict[str, Any]]:
    """Run (or resume, or reuse) every planned run; write and return the result rows."""
    from .distill import run_distillation
    from .prepare import prepare_distillation

    rows = []
    bar = tqdm(runs, desc="bench", disable=not progress)
    for entry, seed, cfg in bar:
        bar.set_postfix(run=f"{entry} seed {seed}")
        run_dir = Path(cfg.out)
        if (run_dir / "summary.json").exists():  # reuse a finished run only if it is this one
            done = json.loads((run_dir / "summary.json").read_text())["config"]
            check_resumable(done, cfg.to_dict(), False, run_dir)
        else:
            resume = (run_dir / CHECKPOINT).exists()
            state = load_checkpoint(run_dir / CHECKPOINT) if resume else None
            if state is not None:
                check_resumable(state["config"], cfg.to_dict(), False, run_dir / CHECKPOINT)
            setup = prepare_distillation(cfg, overwrite=not resume, resume_state=state,
                                         resume=resume)
            summary = run_distillation(setup, log=lambda _m: None)
            log(f"{entry} seed {seed}: {summary['final_acc']:.2f}% "
                f"({summary['wall_s']:.0f} s)")
        rows.append(result_row(entry, seed, run_dir))
        write_results(rows, out)
    write_report(out)
    return rows


def result_row(entry: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """One results.csv row from a finished run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = history[-1]
    row = {"method": entry, "seed": seed, "test_acc": summary["final_acc"],
           "best_acc": summary["best_acc"], "wall_s": round(summary["wall_s"], 2),
           "synthesis_s": round(summary["synthesis_s"], 2),
           "distill_s": round(summary["distill_s"], 2), "eval_s": round(summary["eval_s"], 2),
           "images_synthesized": summary["images_synthesized"],
           "teacher_acc": summary["teacher_acc"], "epochs": summary["epochs"]}
    for k in DIVERSITY_KEYS:
        row[k] = last.get(k)
    row["curve"] = [(r["epoch"], r["elapsed_s"], r["test_acc"]) for r in history]
    row["run_dir"] = str(run_dir)
    return row


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _grouped(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    return groups


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def mean_curve(rs: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean elapsed seconds, mean accuracy) over the seeds of one entry."""
    n = min(len(r["curve"]) for r in rs)
    epochs = [rs[0]["curve"][i][0] for i in range(n)]
    times = [statistics.fmean(r["curve"][i][1] for r in rs) for i in range(n)]
    accs = [statistics.fmean(r["curve"][i][2] for r in rs) for i in range(n)]
    return epochs, times, accs


def time_to_accuracy(times: list[float], accs: list[float], target: float) -> float | None:
    """Elapsed seconds at the first evaluation reaching `target`, or None if none does."""
    return next((t for t, a in zip(times, accs, strict=True) if a >= target), None)


def results_table(rows: list[dict[str, Any]], reference: str = "rgal") -> str:
    """The markdown table of results.md: one line per entry, mean ± std over seeds.

    With `reference` in the rows, a column gives when each entry's mean curve first reaches
    the reference's final mean accuracy, in seconds and as a fraction of the reference's
    wall time.
    """
    groups = _grouped(rows)
    ref = groups.get(reference)
    target = _mean_std([r["test_acc"] for r in ref])[0] if ref else None
    ref_wall = statistics.fmean(r["wall_s"] for r in ref) if ref else None
    reach = f" | reaches {reference}'s acc at (s, x its wall)" if ref else ""
    lines = ["| method | student acc (%) | seeds | wall (s) | synthesis / distill / eval (s) "
             "| images synthesized | intra-class dist | nearest other-class dist "
             "| teacher entropy | teacher margin" + reach + " |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if ref else "")]
    for method, rs in groups.items():
        acc, std = _mean_std([r["test_acc"] for r in rs])
        wall = statistics.fmean(r["wall_s"] for r in rs)
        split = " / ".join(f"{statistics.fmean(r[k] for r in rs):.0f}"
                           for k in ("synthesis_s", "distill_s", "eval_s"))
        images = statistics.fmean(r["images_synthesized"] for r in rs)
        div = [_mean_std([r[k] for r in rs])[0] for k in DIVERSITY_KEYS]
        line = (f"| {method} | {acc:.2f} ± {std:.2f} | {len(rs)} | {wall:.0f} | {split} "
                f"| {images:.0f} | " + " | ".join(_fmt(d) for d in div) + " |")
        if ref:
            _, times, accs = mean_curve(rs)
            t = time_to_accuracy(times, accs, target)
            line += " never |" if t is None else f" {t:.0f} ({t / ref_wall:.2f}) |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """results.csv, results.md and the pictures, from the rows so far."""
    out.mkdir(parents=True, exist_ok=True)
    columns = [k for k in rows[0] if k not in ("curve", "run_dir")]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    first = rows[0]
    cfg = json.loads((Path(first["run_dir"]) / "summary.json").read_text())["config"]
    header = (f"# Benchmark: {cfg['teacher']} -> {cfg['student']} on {cfg['dataset']}\n\n"
              f"Teacher test accuracy {first['teacher_acc']:.2f}%. Each run: {cfg['epochs']} "
              f"epochs of {cfg['g_steps']} generator steps (pool methods; online methods take "
              f"one generator step every `student_steps_per_g` student steps) and "
              f"{cfg['kd_steps']} student steps of {cfg['batch_size']}x2 views. Student test "
              "accuracy after the last epoch (not the best epoch), mean ± std over seeds. "
              "Diversity measures: the last epoch's synthetic set in the teacher's normalised "
              "penultimate features (for kd-real/scratch: real training images).\n\n")
    (out / "results.md").write_text(header + results_table(rows))
    _plots(rows, out)


def _plots(rows: list[dict[str, Any]], out: Path) -> None:
    from ..engine.report import plot_curves

    by_epoch, by_time = {}, {}
    for method, rs in _grouped(rows).items():
        epochs, times, accs = mean_curve(rs)
        by_epoch[method], by_time[method] = (epochs, accs), (times, accs)
    teacher = rows[0]["teacher_acc"]
    plot_curves(out / "accuracy_vs_epoch.png", by_epoch, title="student test accuracy",
                hlines={f"teacher {teacher:.2f}%": teacher})
    plot_curves(out / "accuracy_vs_time.png", by_time, xlabel="wall time (s)",
                title="student test accuracy", hlines={f"teacher {teacher:.2f}%": teacher})
    _sample_montage(rows, out / "samples.png")


def _sample_montage(rows: list[dict[str, Any]], path: Path) -> None:
    """The last synthetic-image grid of each method (first seed), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    grids = []
    for method, rs in _grouped(rows).items():
        found = sorted((Path(rs[0]["run_dir"]) / "grids").glob("epoch_*.png"))
        if found:
            grids.append((method, found[-1]))
    if not grids:
        return
    cols = min(4, len(grids))
    nrows = math.ceil(len(grids) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 4.2 * nrows), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (method, png) in zip(axes.flat, grids, strict=False):
        ax.imshow(Image.open(png))
        ax.set_title(method, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
