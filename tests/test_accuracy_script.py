"""benchmarks/accuracy.py: which bench it asks for and where its table lands."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_benchmark


@pytest.fixture
def script(tmp_path, monkeypatch):
    mod = load_benchmark("accuracy")
    monkeypatch.setattr(mod, "HERE", tmp_path / "benchmarks")
    (tmp_path / "benchmarks").mkdir()
    calls = []

    def fake_bench(argv):  # what `rgal bench` leaves in --out, tagged by the call
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(" ".join(argv))
        for plot in ("accuracy_vs_epoch.png", "accuracy_vs_time.png"):
            (out / plot).write_bytes(b"png")
        return 0

    monkeypatch.setattr(mod, "main", fake_bench)
    mod.calls = calls
    return mod


def test_long_runs_the_demo_schedule_and_keeps_the_short_table(script, tmp_path):
    out = tmp_path / "bench_long"
    assert script.run(["--long", "--out", str(out)]) == 0
    (argv,) = script.calls
    assert argv[argv.index("--set") + 1] == f"epochs={script.LONG_EPOCHS}" == "epochs=35"
    methods = argv[argv.index("--methods") + 1].split(",")
    assert {"rgal", "kd-real", "rgal-no-rel", "rgal:g_steps=60"} <= set(methods)
    from rgal.train import bench

    planned = bench.plan_runs(methods, [0], out, [bench.DEFAULT_BUDGET, {"epochs": 35}])
    assert {cfg.g_steps for _, _, cfg in planned} == {15, 60}  # every entry is a valid run
    here = tmp_path / "benchmarks"
    assert (here / "results_long.md").read_text() == " ".join(argv)
    assert (here / "results_long_accuracy_vs_time.png").exists()
    assert not (here / "results.md").exists()  # the short suite's table is left alone


def test_long_with_methods_runs_only_those_and_resumes(script, tmp_path):
    out = tmp_path / "bench_long"
    out.mkdir()
    (out / "results.csv").write_text("")
    assert script.run(["--long", "--methods", "rgal,kd-real", "--out", str(out)]) == 0
    (argv,) = script.calls
    assert argv[argv.index("--methods") + 1] == "rgal,kd-real"
    assert "--resume" in argv


def test_long_and_search_exclude_each_other(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.run(["--long", "--search"])
    assert e.value.code == 2
    assert not script.calls
