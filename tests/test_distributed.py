"""Multi-process distillation with torchrun (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import load_benchmark
from safetensors.torch import load_file

from rgal.distributed import leaving_when_done
from rgal.methods import distill_config

TINY = ["--epochs", "2", "--g-steps", "2", "--kd-steps", "3", "--batch-size", "8",
        "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
        "--device", "cpu", "--set", "diversity_samples=32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, data: str, teacher: str, out: str,
                 method: str, result_dir: str, extra: dict | None = None) -> None:
    """One rank: a full epoch, then the flattened student and the pool, saved for the parent."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    with leaving_when_done():
        from rgal.engine import StopSignals, TrainingLoop
        from rgal.train.distill import DistillJob
        from rgal.train.prepare import prepare_distillation

        cfg = distill_config({"method": method, "data_root": data, "teacher_weights": teacher,
                              "out": out, "epochs": 1, "g_steps": 2, "kd_steps": 2,
                              "batch_size": 8, "synthesis_batch_size": 16, "ngf": 8, "nz": 16,
                              "device": "cpu", "progress": False, "diversity_samples": 0,
                              **(extra or {})})
        setup = prepare_distillation(cfg, overwrite=True)
        if rank == 0:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "grids").mkdir(exist_ok=True)
        dist.barrier()
        job = DistillJob(setup)
        loop = TrainingLoop(job, setup.folder, config=cfg.to_dict(), progress=False)
        loop._epoch(1, StopSignals())
        flat = torch.cat([p.detach().flatten() for p in job.student.parameters()])
        gap = getattr(job.method, "class_gap", None)
        shared = job.method.shared_parameters(job.method.generator) \
            if hasattr(job.method, "shared_parameters") else []
        torch.save({"student": flat, "pool": job.pool.images.clone(),
                    "generator": [p.detach().clone() for p in shared],
                    "synthesized": job.images_synthesized,
                    "class_gap": None if gap is None else gap.clone()},
                   Path(result_dir) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rgal", "dfad"])
def test_ranks_agree_on_the_student_and_the_pool_after_an_epoch(tmp_path, fake_fmnist,
                                                                teacher_file, method):
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank_worker, args=(2, _free_port(), str(fake_fmnist), str(teacher_file),
                                 str(tmp_path / "out"), method, str(results)), nprocs=2)
    r0, r1 = (torch.load(results / f"rank{i}.pt") for i in range(2))
    assert torch.equal(r0["student"], r1["student"]), "student weights differ across ranks"
    assert torch.equal(r0["pool"], r1["pool"])
    if method == "rgal":
        assert r0["pool"].shape[0] == 16 and r0["synthesized"] == 16  # 8 per rank, gathered
        halves = r0["pool"][:8], r0["pool"][8:]
        assert not torch.equal(*halves), "each rank synthesizes its own share"


@pytest.mark.slow
def test_ranks_agree_on_the_class_shares_they_measured(tmp_path, fake_fmnist, teacher_file):
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank_worker, args=(2, _free_port(), str(fake_fmnist), str(teacher_file),
                                 str(tmp_path / "out"), "rgal", str(results),
                                 {"hard_classes": 0.5}), nprocs=2)
    r0, r1 = (torch.load(results / f"rank{i}.pt") for i in range(2))
    assert torch.equal(r0["class_gap"], r1["class_gap"])
    assert float(r0["class_gap"].sum()) > 0
    assert torch.equal(r0["student"], r1["student"])


@pytest.mark.slow
@pytest.mark.parametrize(("method", "extra"), [("rgal", {"reset_generator": True}),
                                               ("cmi", {}), ("nayer", {}), ("fast", {})])
def test_every_rank_keeps_the_same_generator_across_resets(tmp_path, fake_fmnist,
                                                           teacher_file, method, extra):
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank_worker, args=(2, _free_port(), str(fake_fmnist), str(teacher_file),
                                 str(tmp_path / "out"), method, str(results), extra), nprocs=2)
    r0, r1 = (torch.load(results / f"rank{i}.pt") for i in range(2))
    assert r0["generator"], "the method shares no generator parameters"
    for a, b in zip(r0["generator"], r1["generator"], strict=True):
        assert torch.equal(a, b), "the ranks' generators differ after a re-initialisation"
    assert torch.equal(r0["student"], r1["student"])


def _torchrun(nproc: int, out: Path, data: Path, teacher: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", "-m", "rgal", "distill", "--data-root", str(data),
           "--teacher-weights", str(teacher), "--out", str(out), *TINY]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_torchrun_two_processes_end_to_end_only_rank_0_writes(tmp_path, fake_fmnist,
                                                              teacher_file):
    out = tmp_path / "ddp"
    proc = _torchrun(2, out, fake_fmnist, teacher_file)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("student test acc (last)") == 1, "one summary table, from rank 0"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["accuracy.png", "checkpoint.pt", "grids", "metrics.jsonl",
                            "report.html", "student.safetensors", "student_best.safetensors",
                            "summary.json"]), names
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["images_synthesized"] == 32


@pytest.mark.slow
def test_torchrun_with_one_process_is_plain_distill(tmp_path, fake_fmnist, teacher_file):
    assert _torchrun(1, tmp_path / "one", fake_fmnist, teacher_file).returncode == 0
    plain = subprocess.run(  # same thread count as the torchrun worker: bit-identical results
        [sys.executable, "-m", "rgal", "distill", "--data-root", str(fake_fmnist),
         "--teacher-weights", str(teacher_file), "--out", str(tmp_path / "plain"), *TINY],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    a = load_file(tmp_path / "one" / "student.safetensors")
    b = load_file(tmp_path / "plain" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batches_must_split_evenly_across_processes(tmp_path, fake_fmnist, teacher_file,
                                                    monkeypatch, capsys):
    from rgal.cli import main

    monkeypatch.setenv("WORLD_SIZE", "3")
    out = tmp_path / "o"
    argv = ["distill", "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
            "--out", str(out), *TINY]
    assert main(argv) == 2
    assert "multiple of the 3 processes" in capsys.readouterr().err
    assert not out.exists()


def _fake_run(out: Path, final: float, processes: int, files: list[str]) -> None:
    out.mkdir(parents=True)
    for name in files:
        (out / name).write_text("x")
    (out / "summary.json").write_text(json.dumps(
        {"final_acc": final, "best_acc": final + 1, "epochs": 35, "wall_s": 400.0,
         "processes": processes}))


def test_ddp_benchmark_report_compares_accuracy_and_written_files(tmp_path):
    ddp = load_benchmark("ddp")
    _fake_run(tmp_path / "np1_seed0", 84.0, 1, ["a.png"])
    _fake_run(tmp_path / "np2_seed0", 83.5, 2, ["a.png"])
    _fake_run(tmp_path / "np2_seed1", 80.0, 2, ["a.png", "rank1.log"])
    assert ddp.finished(tmp_path / "np1_seed1") is None  # never ran
    results = {(n, s): ddp.finished(tmp_path / f"np{n}_seed{s}")
               for n, s in ((1, 0), (2, 0), (2, 1))}
    results[(1, 1)] = results[(2, 1)] | {"processes": 1, "files": ["a.png", "summary.json"]}
    text = ddp.report(results, [0, 1])
    assert "| 2 | 0 | 83.50 | 84.50 | 35 | 400 | 2 |" in text
    assert "Seed 0: 2 processes - 1 process = -0.50 points final; both runs wrote the same " \
           "files." in text
    assert "different files: ['rank1.log']" in text
