"""`rgal bench`: several methods (and RGAL ablations) on one teacher, student and budget.

Every run is an ordinary `rgal distill` run in `OUT/runs/<entry>/seed<k>` (so an interrupted
bench continues where it stopped: finished runs are kept, a killed one resumes from its
checkpoint). The results are gathered into `results.csv`, `results.md` and three pictures.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import ConfigError, DistillConfig, legacy_values
from ..engine import CHECKPOINT, check_resumable, load_checkpoint
from ..engine.html_report import split_name, write_report
from ..engine.stats import Interval, mean_interval, paired_difference, verdict
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
# The suites' shared setting, in place of the demo's defaults (60 generator steps on 64 images,
# lr_g 0.003, one view per pool image, CutMix between pool images, 100 student steps of 64
# pool images, chosen later: benchmarks/research.md sections 26, 27, 32 and 41) and below each
# method's own defaults and tuned settings, so that every table stays reproducible (a bench's
# budget, DEFAULT_BUDGET or --set, still decides its student steps). `pair_sampling` applies
# to the methods with RGAL's section.
SUITE_SHARED: dict[str, Any] = {"g_steps": 15, "synthesis_batch_size": 128, "lr_g": 1e-3,
                                "pair_sampling": "true", "mix": "none",
                                "kd_steps": DEFAULT_BUDGET["kd_steps"],
                                "batch_size": 128}
DIVERSITY_KEYS = ("div_intra", "div_nearest_other", "div_entropy", "div_margin")
RESULTS = ("results.csv", "results.md", "accuracy_vs_epoch.png", "accuracy_vs_time.png",
           "samples.png", "search.md")


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


def entry_text(method: str, overrides: dict[str, Any]) -> str:
    """The bench entry of `method` with `overrides` (`method:key=value;...`)."""
    if not overrides:
        return method
    return f"{method}:" + ";".join(f"{k}={_yaml_scalar(v)}" for k, v in overrides.items())


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        return text if ("." in text or "inf" in text or "nan" in text) else f"{v:.6f}".rstrip("0")
    return str(v)


def search_entries(methods: list[str]) -> list[tuple[str, int, str]]:
    """(method, index, entry) for every configuration of each method's search space."""
    out = []
    for method in methods:
        space = get_method(method).search
        if not space:
            raise ConfigError(f"method {method!r} has no search space (the real-data references "
                              "are not tuned)")
        out += [(method, i, entry_text(method, o)) for i, o in enumerate(space)]
    return out


def default_search_methods() -> list[str]:
    """The suite's methods that declare a search space (the data-free ones)."""
    return [m for m in list_methods() if get_method(m).in_suite and get_method(m).search]


# -- tuned settings: what `rgal bench --search` chose, applied by `rgal bench` -----------------
MIN_SEEDS = 5  # fewer per entry and results.md says no claim should rest on it
TUNED_DIR = Path(__file__).resolve().parent / "tuned"


def tuned_path(dataset: str, teacher: str, student: str) -> Path:
    """Where the packaged tuned settings of a (dataset, teacher, student) setting live."""
    return TUNED_DIR / f"{dataset}_{teacher}_{student}.yaml"


def load_tuned(path: Path) -> dict[str, Any]:
    """A tuned-settings file: `setting` (where it was searched) and `methods` (overrides)."""
    from ..config import load_yaml

    data = load_yaml(path)
    methods = data.get("methods")
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"tuned settings {path} must map 'methods' to key/value mappings")
    for method, overrides in methods.items():
        distill_config({"method": method, **overrides})  # every key must mean something
    return data


def entry_folder(out: Path, entry: str) -> Path:
    """The folder of an entry's runs (`OUT/runs/<entry, with unsafe characters as _>/`)."""
    return Path(out) / "runs" / "".join(c if c.isalnum() or c in "+-_." else "_" for c in entry)


def finished_runs(out: Path, entry: str) -> list[tuple[int, Path, dict[str, Any]]]:
    """(seed, run folder, config) of each finished run of an entry in a bench folder, by seed;
    ConfigError if there is none."""
    folder = entry_folder(out, entry)
    runs = sorted((int(p.name[4:]), p) for p in folder.glob("seed*")
                  if (p / "summary.json").exists())
    if not runs:
        raise ConfigError(f"{folder}: no finished runs of {entry!r}")
    return [(seed, p, json.loads((p / "summary.json").read_text())["config"])
            for seed, p in runs]


def split_description(holdout: int) -> str:
    """The images a run is scored on, in words for a report heading: `split_name`'s word,
    with how many training images were held out."""
    return f"{split_name(holdout)} set" + (f" (the last {holdout} training images)"
                                           if holdout else "")


def plan_runs(entries: list[str], seeds: list[int], out: Path,
              layers: list[dict[str, Any]],
              tuned: dict[str, dict[str, Any]] | None = None
              ) -> list[tuple[str, int, DistillConfig]]:
    """Validated configs of every (entry, seed) run, before any of them starts.

    Order of precedence: defaults < `SUITE_SHARED` < the method's own defaults < its `tuned`
    settings < each of `layers` (the bench's shared settings) < the entry's own overrides <
    seed and folder.
    """
    if len(set(entries)) != len(entries):
        raise ConfigError("bench entries must be distinct")
    tuned = tuned or {}
    runs = []
    for entry in entries:
        overrides = parse_entry(entry)
        base = tuned.get(overrides["method"], {})
        for seed in seeds:
            run_dir = entry_folder(out, entry) / f"seed{seed}"
            own = {"seed": seed, "out": str(run_dir), "progress": False}
            distill_config(overrides, own)  # an entry's own keys must all mean something
            cfg = distill_config(base, *layers, overrides, own, lenient=True,
                                 under=SUITE_SHARED)
            runs.append((entry, seed, cfg))
    return runs


def run_one(cfg: DistillConfig) -> str | None:
    """Run (or resume) one planned run; reuse it if it already finished with these settings.
    Returns a line about the finished run, or None if it was reused."""
    from .distill import run_distillation
    from .prepare import prepare_distillation

    if _PARENT_GONE.is_set():  # a queued run of a bench that is gone: leave it unstarted
        os._exit(1)
    run_dir = Path(cfg.out)
    if (run_dir / "summary.json").exists():  # reuse a finished run only if it is this one
        done = json.loads((run_dir / "summary.json").read_text())["config"]
        check_resumable(done, cfg.to_dict(), False, run_dir, legacy_values(DistillConfig))
        return None
    resume = (run_dir / CHECKPOINT).exists()
    state = load_checkpoint(run_dir / CHECKPOINT) if resume else None
    if state is not None:
        check_resumable(state["config"], cfg.to_dict(), False, run_dir / CHECKPOINT,
                        legacy_values(DistillConfig))
    setup = prepare_distillation(cfg, overwrite=not resume, resume_state=state, resume=resume)
    summary = run_distillation(setup, log=lambda _m: None)
    return f"{summary['final_acc']:.2f}% ({summary['wall_s']:.0f} s)"


_PARENT_GONE = threading.Event()  # set in a --jobs worker whose bench died


def _worker_init(parent: int) -> None:
    """A `--jobs` worker: one thread, and it does not outlive the bench. When the bench
    process dies (even kill -9), the worker gets SIGTERM, so a run in progress checkpoints
    its exact position and stops (`--resume` continues it); 30 s later it exits regardless."""
    import signal

    import torch

    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _PARENT_GONE.set()  # no new run starts in this worker
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        os._exit(1)

    threading.Thread(target=watch, name="rgal-parent-watch", daemon=True).start()


def run_bench(runs: list[tuple[str, int, DistillConfig]], out: Path, *, progress: bool = True,
              log: Callable[[str], None] = tqdm.write, jobs: int = 1,
              write: Callable[[list[dict[str, Any]], Path], None] | None = None
              ) -> list[dict[str, Any]]:
    """Run (or resume, or reuse) every planned run; write and return the result rows.

    With `jobs` > 1 the runs go to that many worker processes of one thread each; the rows
    keep the plan's order whatever order the runs finish in.
    """
    write = write or write_results
    done: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(runs), desc="bench", disable=not progress)

    def finished(i: int, message: str | None) -> None:
        entry, seed, cfg = runs[i]
        if message:
            log(f"{entry} seed {seed}: {message}")
        done[i] = result_row(entry, seed, Path(cfg.out))
        write([done[k] for k in sorted(done)], out)
        bar.update()

    try:
        if jobs <= 1:
            for i, (entry, seed, cfg) in enumerate(runs):
                bar.set_postfix(run=f"{entry} seed {seed}")
                finished(i, run_one(cfg))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(run_one, cfg): i for i, (_, _, cfg) in enumerate(runs)}
                try:
                    for fut in as_completed(futures):
                        finished(futures[fut], fut.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    rows = [done[k] for k in sorted(done)]
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
    # `--set grad_shares=N`: each loss term's share of its phase's gradient norm, averaged
    # over the epochs that measured it
    for k in sorted({k for r in history for k in r if k.startswith("share_")}):
        row[k] = statistics.fmean(r[k] for r in history if k in r)
    row["curve"] = [(r["epoch"], r["elapsed_s"], r["test_acc"]) for r in history
                    if "test_acc" in r]  # eval_every > 1 measures some epochs only
    row["run_dir"] = str(run_dir)
    return row


def _mean(values: list[float]) -> float:
    return mean_interval(values).mean


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


def paired_against(rows: list[dict[str, Any]], reference: str
                   ) -> dict[str, Interval]:
    """Each entry's per-seed paired difference of last-epoch accuracy to `reference`."""
    groups = _grouped(rows)
    if reference not in groups:
        return {}
    ref = {r["seed"]: r["test_acc"] for r in groups[reference]}
    return {m: paired_difference({r["seed"]: r["test_acc"] for r in rs}, ref)
            for m, rs in groups.items() if m != reference}


def results_table(rows: list[dict[str, Any]], reference: str = "rgal") -> str:
    """The markdown table of results.md: one line per entry.

    Accuracy is the mean over seeds with its 95% t-interval. With `reference` in the rows, two
    columns give each entry's per-seed paired difference to it (mean ± 95% interval, and the
    verdict the interval allows), and one gives when each entry's mean curve first reaches
    the reference's final mean accuracy, in seconds and as a fraction of its wall time.
    """
    groups = _grouped(rows)
    ref = groups.get(reference)
    target = _mean([r["test_acc"] for r in ref]) if ref else None
    ref_wall = statistics.fmean(r["wall_s"] for r in ref) if ref else None
    paired = paired_against(rows, reference)
    extra = (f" | minus {reference}, paired by seed (points) | verdict "
             f"| reaches {reference}'s acc at (s, x its wall)") if ref else ""
    lines = ["| method | student acc (%), mean ± 95% CI | seeds" + extra +
             " | wall (s) | synthesis / distill / eval (s) | images synthesized "
             "| intra-class dist | nearest other-class dist | teacher entropy | teacher margin |",
             "|---|---|---|" + ("---|---|---|" if ref else "") + "---|---|---|---|---|---|---|"]
    for method, rs in groups.items():
        acc = mean_interval([r["test_acc"] for r in rs])
        line = f"| {method} | {acc.text()} | {len(rs)} |"
        if ref:
            if method == reference:
                line += " – | – |"
            else:
                d = paired[method]
                line += f" {d.text(signed=True)} | {verdict(d)} |"
            _, times, accs = mean_curve(rs)
            t = time_to_accuracy(times, accs, target)
            line += " never |" if t is None else f" {t:.0f} ({t / ref_wall:.2f}) |"
        wall = statistics.fmean(r["wall_s"] for r in rs)
        split = " / ".join(f"{statistics.fmean(r[k] for r in rs):.0f}"
                           for k in ("synthesis_s", "distill_s", "eval_s"))
        images = statistics.fmean(r["images_synthesized"] for r in rs)
        div = [_mean([r[k] for r in rs]) for k in DIVERSITY_KEYS]
        line += (f" {wall:.0f} | {split} | {images:.0f} | "
                 + " | ".join(_fmt(d) for d in div) + " |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _header(rows: list[dict[str, Any]], what: str) -> str:
    first = rows[0]
    cfg = json.loads((Path(first["run_dir"]) / "summary.json").read_text())["config"]
    on = (f"{cfg['holdout']} held-out training images" if cfg.get("holdout")
          else "the test set")
    steps: dict[int, list[str]] = {}  # generator steps are each method's own (Fast's are few)
    for entry, rs in _grouped(rows).items():
        method = parse_entry(entry)["method"]
        if get_method(method).source == "real":
            continue  # no generator
        run_cfg = json.loads((Path(rs[0]["run_dir"]) / "summary.json").read_text())["config"]
        named = steps.setdefault(run_cfg["g_steps"], [])
        if method not in named:
            named.append(method)
    g_steps = (str(cfg["g_steps"]) if len(steps) <= 1 else ", ".join(
        f"{n} ({', '.join(methods)})" for n, methods in steps.items()))
    return (f"# {what}: {cfg['teacher']} -> {cfg['student']} on {cfg['dataset']}\n\n"
            f"Teacher accuracy {first['teacher_acc']:.2f}%. Each run: {cfg['epochs']} "
            f"epochs of {g_steps} generator steps (pool methods; online methods take "
            f"one generator step every `student_steps_per_g` student steps) and "
            f"{cfg['kd_steps']} student steps of {cfg['batch_size']}x2 views. Student accuracy "
            f"on {on} after the last epoch (not the best epoch).\n\n")


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """results.csv, results.md and the pictures, from the rows so far."""
    _write_csv(rows, out)
    tuned = out / "tuned.yaml"
    searched = set(load_tuned(tuned)["methods"]) if tuned.exists() else set()
    untuned = sorted({m for m in (parse_entry(r["method"])["method"] for r in rows)
                      if get_method(m).search and m not in searched})
    used = (f"Each method's own hyper-parameters: `{tuned.name}` in this folder (chosen by "
            "`rgal bench --search` on held-out training images)." if searched
            else "Each method's own hyper-parameters: its defaults.")
    if untuned and searched:
        used += (f" **Not tuned (defaults, no search result): {', '.join(untuned)}; "
                 "comparisons with them are not equal treatment.**")
    used += "\n\n"
    fewest = min(len({r["seed"] for r in rs}) for rs in _grouped(rows).values())
    few = (f"**Only {fewest} seed(s) for some entries: fewer than {MIN_SEEDS}, so no "
           "difference here should be claimed.**\n\n" if fewest < MIN_SEEDS else "")
    (out / "results.md").write_text(
        _header(rows, "Benchmark") + used + few +
        "Accuracy: mean over seeds ± the half-width of its 95% confidence interval "
        "(Student t). Paired difference: each seed's accuracy minus the reference's with the "
        "same seed, mean ± 95% interval; the verdict is \"better\" or \"worse\" only when "
        "the interval excludes zero. Diversity measures: the last epoch's synthetic set in the "
        "teacher's normalised penultimate features (for kd-real/scratch: real training "
        "images).\n\n" + results_table(rows) + combination_table(rows) + shares_table(rows))
    _plots(rows, out)


def combination_table(rows: list[dict[str, Any]]) -> str:
    """Each `X+rgal` entry against plain `X` in the same bench, paired by seed: what RGAL's
    terms add to that method. Empty when no such pair is present."""
    parsed = {entry: parse_entry(entry) for entry in _grouped(rows)}
    plain = {p["method"]: entry for entry, p in parsed.items() if len(p) == 1}  # no overrides
    lines = []
    for entry, p in parsed.items():
        method = p["method"]
        base = plain.get(method.removesuffix("+rgal")) if method.endswith("+rgal") else None
        if base is None:
            continue
        d = paired_against(rows, base)[entry]
        lines.append(f"| {entry} | {base} | {d.text(signed=True)} | {verdict(d)} |")
    if not lines:
        return ""
    return ("\n## RGAL's terms on other methods\n\nEach `+rgal` entry minus the same method "
            "without them, paired by seed (mean ± 95% interval).\n\n"
            "| entry | minus | paired difference (points) | verdict |\n|---|---|---|---|\n"
            + "\n".join(lines) + "\n")


def shares_table(rows: list[dict[str, Any]]) -> str:
    """With `--set grad_shares=N`: each entry's loss terms as shares of their phase's gradient
    norm (mean over the measured steps' epochs and the seeds); empty otherwise."""
    keys = sorted({k for r in rows for k in r if k.startswith("share_")})
    if not keys:
        return ""
    names = [k.removeprefix("share_").removeprefix("loss_") for k in keys]
    lines = ["\n## Gradient shares\n\nEach loss term's share of the gradient norm of its "
             "phase (generator terms sum to 1, student terms sum to 1), measured every "
             "`grad_shares` steps, averaged over epochs and seeds; – where an entry has no "
             "such term.\n",
             "| method | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for method, rs in _grouped(rows).items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            cells.append(_fmt(statistics.fmean(vals)) if vals else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("curve", "run_dir")))
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# -- the search ---------------------------------------------------------------------------------
def choose_settings(rows: list[dict[str, Any]],
                    plan: list[tuple[str, int, str]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each method's best configuration by mean last-epoch accuracy over seeds (ties: the
    earlier configuration, so the defaults win a tie): method -> (index, overrides)."""
    groups = _grouped(rows)
    best: dict[str, tuple[float, int, dict[str, Any]]] = {}
    for method, index, entry in plan:
        if entry not in groups:
            continue
        acc = _mean([r["test_acc"] for r in groups[entry]])
        if method not in best or acc > best[method][0]:
            overrides = parse_entry(entry)
            overrides.pop("method")
            best[method] = (acc, index, overrides)
    return {m: (i, o) for m, (_, i, o) in best.items()}


def search_table(rows: list[dict[str, Any]], plan: list[tuple[str, int, str]]) -> str:
    """search.md's table: every configuration's accuracy, the chosen one in bold."""
    groups = _grouped(rows)
    chosen = choose_settings(rows, plan)
    lines = ["| method | # | settings (over its defaults) | accuracy (%) | seeds | wall (s) |",
             "|---|---|---|---|---|---|"]
    for method, index, entry in plan:
        rs = groups.get(entry)
        if not rs:
            continue
        acc = mean_interval([r["test_acc"] for r in rs])
        settings = entry.partition(":")[2].replace(";", ", ") or "defaults"
        mark = "**" if chosen.get(method, (None,))[0] == index else ""
        wall = statistics.fmean(r["wall_s"] for r in rs)
        lines.append(f"| {method} | {index} | {mark}{settings}{mark} | {mark}{acc.text()}{mark} "
                     f"| {len(rs)} | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def search_writer(plan: list[tuple[str, int, str]]
                  ) -> Callable[[list[dict[str, Any]], Path], None]:
    """The `write` of a search: results.csv, search.md and tuned.yaml (the chosen settings)."""
    import yaml

    def write(rows: list[dict[str, Any]], out: Path) -> None:
        _write_csv(rows, out)
        cfg = json.loads((Path(rows[0]["run_dir"]) / "summary.json").read_text())["config"]
        chosen = choose_settings(rows, plan)
        (out / "search.md").write_text(
            _header(rows, "Hyper-parameter search") +
            f"Every method tries {len(plan) // max(1, len({m for m, _, _ in plan}))} "
            "configurations of its own hyper-parameters (its `search` space; #0 is its "
            "defaults), with the same shared settings and budget. The chosen configuration "
            "(bold: the highest mean accuracy; a tie keeps the earlier) is written to "
            "`tuned.yaml`, which `rgal bench` applies.\n\n" + search_table(rows, plan))
        _plots(rows, out)
        setting = {k: cfg[k] for k in ("dataset", "teacher", "student", "epochs", "kd_steps",
                                       "holdout")}
        setting["seeds"] = sorted({r["seed"] for r in rows})
        data = {"setting": setting, "methods": {m: o for m, (_, o) in chosen.items()}}
        (out / "tuned.yaml").write_text(
            "# chosen by `rgal bench --search` (search.md beside it); `rgal bench --tuned`\n"
            + yaml.safe_dump(data, sort_keys=False))

    return write


def _plots(rows: list[dict[str, Any]], out: Path) -> None:
    from ..engine.report import plot_curves

    by_epoch, by_time = {}, {}
    for method, rs in _grouped(rows).items():
        epochs, times, accs = mean_curve(rs)
        by_epoch[method], by_time[method] = (epochs, accs), (times, accs)
    teacher = rows[0]["teacher_acc"]
    cfg = json.loads((Path(rows[0]["run_dir"]) / "summary.json").read_text())["config"]
    split = split_name(cfg.get("holdout"))
    for name, curves, xlabel in (("accuracy_vs_epoch.png", by_epoch, "epoch"),
                                 ("accuracy_vs_time.png", by_time, "wall time (s)")):
        plot_curves(out / name, curves, xlabel=xlabel, ylabel=f"{split} accuracy (%)",
                    title=f"student {split} accuracy", hlines={f"teacher {teacher:.2f}%": teacher})
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
