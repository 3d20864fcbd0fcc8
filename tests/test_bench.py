"""`rgal bench`: search spaces, the held-out search, tuned settings, parallel runs, statistics."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from rgal.cli import main
from rgal.config import ConfigError
from rgal.engine.stats import mean_interval, paired_difference, t_quantile, verdict
from rgal.methods import distill_config, get_method, list_methods
from rgal.methods.base import SEARCH_BUDGET
from rgal.train import bench

TINY = {"epochs": 1, "g_steps": 2, "kd_steps": 2, "batch_size": 8, "synthesis_batch_size": 16,
        "ngf": 8, "nz": 16, "device": "cpu", "diversity_samples": 32, "grid_every": 0}


def _argv(out, fake_fmnist, teacher_file, *extra):
    argv = ["bench", "--out", str(out), "--data-root", str(fake_fmnist), "--no-progress",
            "--set", f"teacher_weights={teacher_file}", *extra]
    return argv + [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]


def test_every_data_free_method_searches_the_same_number_of_valid_configurations():
    searched = bench.default_search_methods()
    for name in list_methods():
        cls = get_method(name)
        if not cls.in_suite:
            continue
        if cls.source == "real":  # the references are not tuned
            assert cls.search == () and name not in searched
            continue
        assert name in searched
        space = cls.search
        assert len(space) == SEARCH_BUDGET, name
        assert space[0] == {}, name  # the defaults come first
        assert len({json.dumps(o, sort_keys=True) for o in space}) == SEARCH_BUDGET, name
        for overrides in space:
            cfg = distill_config({"method": name, **overrides})
            for key, value in overrides.items():  # each override reaches the config
                section = next((s for s in cfg.sections.values() if hasattr(s, key)), cfg)
                assert getattr(section, key) == value, (name, key)
            # the entry text of a configuration parses back to it
            assert bench.parse_entry(bench.entry_text(name, overrides)) == {"method": name,
                                                                             **overrides}


def test_t_intervals_and_paired_verdicts():
    assert t_quantile(4) == pytest.approx(2.776)
    assert t_quantile(1000) == pytest.approx(1.962, abs=1e-3)
    iv = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # sd = sqrt(2.5)
    assert iv.mean == 3.0 and iv.n == 5
    assert iv.half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert math.isnan(mean_interval([7.0]).half) and mean_interval([]).n == 0
    ref = {0: 80.0, 1: 70.0, 2: 75.0, 3: 60.0, 4: 90.0}
    # a constant +1 over very different seeds: paired, the interval is exactly 1
    up = paired_difference({s: a + 1.0 for s, a in ref.items()}, ref)
    assert up.mean == pytest.approx(1.0) and up.half == pytest.approx(0.0)
    assert verdict(up) == "better"
    noisy = paired_difference({0: 81.0, 1: 69.0, 2: 76.0, 3: 59.0, 4: 90.0}, ref)
    assert verdict(noisy) == "no measurable difference"
    down = paired_difference({s: a - 2.0 + 0.1 * s for s, a in ref.items()}, ref)
    assert verdict(down) == "worse"
    only_some = paired_difference({0: 1.0, 9: 5.0}, {0: 0.0, 1: 3.0})
    assert only_some.n == 1 and verdict(only_some) == "too few paired seeds"


def test_results_table_gives_intervals_and_paired_differences():
    def row(method, seed, acc):
        return {"method": method, "seed": seed, "test_acc": acc, "wall_s": 10.0,
                "synthesis_s": 1.0, "distill_s": 1.0, "eval_s": 1.0, "images_synthesized": 10,
                **{k: 0.5 for k in bench.DIVERSITY_KEYS}, "curve": [(1, 10.0, acc)]}

    rows = [row("rgal", s, 80.0 + s) for s in range(5)]
    rows += [row("cmi", s, 78.0 + s + 0.1 * (s % 2)) for s in range(5)]
    rows += [row("fast", s, 80.0 + s + (1 if s % 2 else -1)) for s in range(5)]
    lines = {ln.split("|")[1].strip(): ln for ln in bench.results_table(rows).splitlines()}
    cells = [c.strip() for c in lines["cmi"].split("|")]
    assert cells[2].startswith("80.04 ± ")  # mean of 78.0..82.2
    assert cells[4].startswith("-1.96 ± ") and cells[5] == "worse"
    assert [c.strip() for c in lines["fast"].split("|")][5] == "no measurable difference"


def test_search_refuses_the_test_set_and_bad_input(tmp_path, capsys):
    out = tmp_path / "s"
    for extra in (["--search"], ["--search", "--set", "holdout=10", "--methods", "kd-real"],
                  ["--jobs", "0"], ["--tuned", str(tmp_path / "missing.yaml")],
                  ["--first-seed", "-1"]):
        assert main(["bench", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("rgal: error:") and err.count("\n") == 1, (extra, err)
    assert not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {rgal: {no_such_key: 1}}\n")
    with pytest.raises(ConfigError, match="no_such_key"):
        bench.load_tuned(bad)


@pytest.mark.slow
def test_search_writes_tuned_settings_that_the_bench_applies(tmp_path, fake_fmnist, teacher_file,
                                                             capsys):
    out = tmp_path / "search"
    argv = _argv(out, fake_fmnist, teacher_file, "--search", "--methods", "dfad",
                 "--seeds", "1", "--set", "holdout=40")
    assert main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == SEARCH_BUDGET
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())
    assert tuned["setting"]["holdout"] == 40 and tuned["setting"]["seeds"] == [0]
    accs = {r["method"]: float(r["test_acc"]) for r in rows}
    best = max(accs.values())
    chosen = bench.entry_text("dfad", tuned["methods"]["dfad"])
    assert accs[chosen] == best
    # ties keep the earlier configuration
    first_best = next(bench.entry_text("dfad", o) for o in get_method("dfad").search
                      if accs[bench.entry_text("dfad", o)] == best)
    assert chosen == first_best
    md = (out / "search.md").read_text()
    assert "held-out training images" in md and f"**{accs[chosen]:.2f}**" in md
    page = (out / "report.html").read_text()
    assert "<strong>" in page and "**" not in page  # the chosen row in bold, not asterisks
    assert "teacher held-out acc" in page and (out / "accuracy_vs_epoch.png").is_file()
    # the comparison applies the chosen settings under the bench's own settings
    capsys.readouterr()
    cmp_out = tmp_path / "cmp"
    argv = _argv(cmp_out, fake_fmnist, teacher_file, "--methods", "dfad,zskt", "--seeds", "1",
                 "--tuned", str(out / "tuned.yaml"), "--set", "lr_g=0.123",
                 "--first-seed", "7")  # seeds the search did not see
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (cmp_out / "runs" / "dfad").iterdir()) == ["seed7"]
    cfg = json.loads((cmp_out / "runs" / "dfad" / "seed7" / "summary.json").read_text())
    assert cfg["config"]["seed"] == 7
    for key, value in tuned["methods"]["dfad"].items():
        if key != "lr_g":
            got = cfg["config"].get(key, cfg["config"]["online"].get(key))
            assert got == value, key
    assert cfg["config"]["lr_g"] == 0.123  # the user's --set wins over the tuned value
    assert (cmp_out / "tuned.yaml").read_text() == (out / "tuned.yaml").read_text()
    cmp_md = (cmp_out / "results.md").read_text()
    assert "tuned.yaml" in cmp_md
    assert "Only 1 seed(s) for some entries: fewer than 5" in cmp_md
    assert "Not tuned (defaults, no search result): zskt;" in cmp_md  # unequal: said so


@pytest.mark.slow
def test_parallel_jobs_give_the_same_results_as_one_process(tmp_path, fake_fmnist, teacher_file,
                                                            capsys):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers run one thread each
    try:
        results = {}
        for jobs in (1, 2):
            out = tmp_path / f"j{jobs}"
            argv = _argv(out, fake_fmnist, teacher_file, "--methods", "rgal,dfad",
                         "--seeds", "2", "--jobs", str(jobs), "--tuned", "none")
            assert main(argv) == 0, capsys.readouterr().err
            rows = list(csv.DictReader((out / "results.csv").open()))
            results[jobs] = [(r["method"], r["seed"], r["test_acc"]) for r in rows]
    finally:
        torch.set_num_threads(threads)
    assert results[1] == results[2]  # same order (the plan's) and the same accuracies
    assert [m for m, _, _ in results[2]] == ["rgal", "rgal", "dfad", "dfad"]


def _workers_of(parent: int) -> list[int]:
    """pids of the multiprocessing workers (not the resource tracker) started by `parent`."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and "spawn_main" in cmd and "resource_tracker" not in cmd:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs /proc")
def test_killing_a_parallel_bench_stops_its_workers_with_a_checkpoint(tmp_path, fake_fmnist,
                                                                      teacher_file):
    """kill -9 of `rgal bench --jobs 2` leaves no worker running on: each checkpoints its run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "b"
    argv = _argv(out, fake_fmnist, teacher_file, "--methods", "rgal", "--seeds", "3",
                 "--jobs", "2", "--tuned", "none", "--set", "epochs=500")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rgal", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = [out / "runs" / "rgal" / f"seed{s}" / "metrics.jsonl" for s in (0, 1)]
    deadline = time.monotonic() + 240
    while not all(m.exists() and m.read_text().count("\n") >= 1 for m in metrics):
        assert proc.poll() is None and time.monotonic() < deadline, "runs did not start"
        time.sleep(0.5)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(os.path.exists(f"/proc/{w}") and "Z" not in open(f"/proc/{w}/stat").read()
              .rpartition(")")[2].split()[:1] for w in workers):
        assert time.monotonic() < deadline, "workers outlived the bench"
        time.sleep(0.5)
    for m in metrics:  # each stopped run checkpointed its position: --resume continues it
        assert (m.parent / "checkpoint.pt").is_file()
    assert not (out / "runs" / "rgal" / "seed2").exists()  # the queued run never started


def test_results_header_names_each_methods_own_generator_steps(tmp_path):
    """Fast's few inner steps are its own: a header over methods with different generator
    steps lists each count with its entries instead of the first run's."""
    def row(entry, g_steps):
        run = tmp_path / entry
        run.mkdir()
        cfg = {"teacher": "t", "student": "s", "dataset": "d", "epochs": 8, "g_steps": g_steps,
               "kd_steps": 50, "batch_size": 128, "holdout": 0}
        (run / "summary.json").write_text(json.dumps({"config": cfg}))
        return {"method": entry, "seed": 0, "teacher_acc": 90.0, "run_dir": str(run)}

    mixed = bench._header([row("rgal", 15), row("fast", 5), row("cmi", 15), row("kd-real", 15),
                           row("rgal:w_adv=0.5", 15)],  # kd-real has no generator: not listed
                          "Benchmark")
    assert "8 epochs of 15 (rgal, cmi), 5 (fast) generator steps" in mixed
    same = bench._header([row("nayer", 15)], "Benchmark")
    assert "8 epochs of 15 generator steps" in same and "the test set" in same
