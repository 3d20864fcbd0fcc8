"""The shared engines: every application resumes exactly after a signal or kill -9, stops on a
non-finite loss, and the options that only some runs use do what they say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rgal.cli import main
from rgal.engine import CHECKPOINT, load_checkpoint
from rgal.engine.loop import TrainingLoop

QUANT = ["quantize", "--method", "gdfq+rgal", "--epochs", "3", "--iters", "3",
         "--batch-size", "8", "--set", "nz=8", "--set", "ngf=8", "--no-progress",
         "--device", "cpu", "--model", "tinycnn"]
INCR = ["incremental", "--method", "abd+rgal", "--tasks", "3", "--epochs", "0.5", "--batch-size", "8",
        "--inv-steps", "2", "--replay-size", "16", "--set", "ngf=8", "--set", "nz=8",
        "--no-progress", "--device", "cpu"]
DISTILL = ["distill", "--epochs", "3", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
           "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
           "--device", "cpu", "--set", "diversity_samples=16"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _lines(path: Path) -> list[dict]:
    drop = ("elapsed_s", "train_s", "setup_s", "eval_s", "inversion_s", "synthesis_s",
            "distill_s")
    return [{k: v for k, v in json.loads(x).items() if k not in drop}
            for x in path.read_text().splitlines()]


class _SignalAfter:
    """SIGTERM to this process after the n-th call of TrainingLoop's job step."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def wrap(self, step):
        def stepped(job, *a, **k):
            out = step(job, *a, **k)
            self.calls += 1
            if self.calls == self.n:
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        return stepped


def _interrupt_then_resume(monkeypatch, argv: list[str], job_cls: type, n: int) -> None:
    hook = _SignalAfter(n)
    with monkeypatch.context() as m:
        m.setattr(job_cls, "step", hook.wrap(job_cls.step))
        assert main(argv) == 128 + signal.SIGTERM
    out = Path(argv[argv.index("--out") + 1])
    assert load_checkpoint(out / CHECKPOINT)["partial"] is not None
    assert main([*argv, "--resume"]) == 0


@pytest.fixture(scope="module")
def quant_reference(tmp_path_factory, fake_fmnist, teacher_file_tiny):
    out = tmp_path_factory.mktemp("q") / "ref"
    assert main([*QUANT, "--data-root", str(fake_fmnist), "--weights", str(teacher_file_tiny),
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def teacher_file_tiny(tmp_path_factory) -> Path:
    from rgal.models import create_model
    from rgal.models.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(create_model("tinycnn", 10, 1), path)
    return path


def test_quantize_resumes_exactly_after_a_signal_mid_epoch(
        tmp_path, fake_fmnist, teacher_file_tiny, quant_reference, monkeypatch):
    from rgal.quantization.methods import GDFQJob

    argv = [*QUANT, "--data-root", str(fake_fmnist), "--weights", str(teacher_file_tiny),
            "--out", str(tmp_path / "q")]
    _interrupt_then_resume(monkeypatch, argv, GDFQJob, 5)  # epoch 2, after iteration 2
    for name in ("quantized_fakequant.safetensors", "quantized_int.safetensors"):
        assert _same(quant_reference / name, tmp_path / "q" / name), name
    assert _lines(quant_reference / "metrics.jsonl") == _lines(tmp_path / "q" / "metrics.jsonl")
    ref = json.loads((quant_reference / "summary.json").read_text())
    got = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert (got["quant_acc"], got["activation_ranges"]) == (ref["quant_acc"],
                                                           ref["activation_ranges"])


def test_incremental_resumes_exactly_after_a_signal_mid_task(tmp_path, fake_fmnist, monkeypatch):
    from rgal.incremental.runner import IncrementalJob

    ref, out = tmp_path / "ref", tmp_path / "incr"
    assert main([*INCR, "--data-root", str(fake_fmnist), "--out", str(ref)]) == 0
    argv = [*INCR, "--data-root", str(fake_fmnist), "--out", str(out)]
    _interrupt_then_resume(monkeypatch, argv, IncrementalJob, 2)  # task 2 (after a replay)
    assert _same(ref / "model.safetensors", out / "model.safetensors")
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert (a["acc_matrix"], a["acc_seen"]) == (b["acc_matrix"], b["acc_seen"])


def test_teacher_training_resumes_exactly(tmp_path, fake_fmnist, monkeypatch):
    from rgal.train.teacher import SupervisedJob

    base = ["train-teacher", "--dataset", "fashion-mnist", "--model", "tinycnn", "--epochs",
            "2", "--batch-size", "32", "--data-root", str(fake_fmnist), "--no-progress",
            "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a.safetensors")]) == 0
    argv = [*base, "--out", str(tmp_path / "b.safetensors")]
    hook = _SignalAfter(3)  # epoch 1 of 2 (4 steps each), after step 3
    with monkeypatch.context() as m:
        m.setattr(SupervisedJob, "step", hook.wrap(SupervisedJob.step))
        assert main(argv) == 128 + signal.SIGTERM
    assert (tmp_path / "b.safetensors.checkpoint.pt").is_file()
    assert not (tmp_path / "b.safetensors").exists()
    assert main([*argv, "--resume"]) == 0
    assert _same(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors.checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["quantize", "incremental"])
def test_kill_9_then_resume_gives_identical_weights(kind, tmp_path, fake_fmnist,
                                                    teacher_file_tiny):
    """SIGKILL at a random moment (no chance to checkpoint the position), then --resume."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    base = ([*QUANT, "--weights", str(teacher_file_tiny)] if kind == "quantize" else INCR)
    base = [*base, "--data-root", str(fake_fmnist)]
    final = "quantized_fakequant.safetensors" if kind == "quantize" else "model.safetensors"

    def start(out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "rgal", *base, "--out", str(out),
                                 *extra], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    t0 = time.time()
    assert start(tmp_path / "ref").wait(timeout=300) == 0
    duration = time.time() - t0
    interrupted = 0
    for i, frac in enumerate((0.5, 0.8)):
        out = tmp_path / f"k{i}"
        proc = start(out)
        try:
            proc.wait(timeout=frac * duration)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            interrupted += 1
        for _ in range(10):
            if start(out, "--resume").wait(timeout=300) == 0:
                break
        assert _same(tmp_path / "ref" / final, out / final), f"kill point {i}"
    assert interrupted >= 1


def test_non_finite_losses_stop_quantize_and_incremental_naming_the_term(
        tmp_path, fake_fmnist, teacher_file_tiny, capsys):
    code = main([*QUANT, "--data-root", str(fake_fmnist), "--weights", str(teacher_file_tiny),
                 "--out", str(tmp_path / "q"), "--lr", "1e38", "--epochs", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "is not finite" in err and "epoch" in err
    code = main([*INCR, "--data-root", str(fake_fmnist), "--out", str(tmp_path / "i"),
                 "--lr", "1e38", "--set", "clip_grad=0"])
    err = capsys.readouterr().err
    assert code == 1 and "is not finite" in err and "task" in err


def test_quantize_in_bf16_trains_and_stays_finite(tmp_path, fake_fmnist, teacher_file_tiny):
    out = tmp_path / "q"
    assert main([*QUANT, "--data-root", str(fake_fmnist), "--weights", str(teacher_file_tiny),
                 "--out", str(out), "--precision", "bf16"]) == 0
    records = _lines(out / "metrics.jsonl")
    assert {"loss_oh", "loss_bn", "loss_rel_syn", "loss_kd", "loss_rel_stu"} <= set(records[-1])
    assert all(torch.isfinite(torch.tensor(v)) for r in records for k, v in r.items()
               if k.startswith("loss_"))


def test_gdfq_relation_term_only_with_rgal_and_a_weight(tmp_path, fake_fmnist, teacher_file_tiny):
    def terms(method: str, *extra: str) -> set[str]:
        out = tmp_path / f"{method}{len(extra)}"
        argv = [*QUANT, "--epochs", "2", "--iters", "2", "--method", method, "--data-root",
                str(fake_fmnist), "--weights", str(teacher_file_tiny), "--out", str(out), *extra]
        assert main(argv) == 0
        return {k for r in _lines(out / "metrics.jsonl") for k in r if k.startswith("loss_")}

    assert {"loss_rel_syn", "loss_rel_stu"} <= terms("gdfq+rgal")
    assert not {"loss_rel_syn", "loss_rel_stu"} & terms("gdfq")
    assert "loss_rel_syn" not in terms("gdfq+rgal", "--set", "w_rel_syn=0")


def test_grid_every_writes_only_those_grids_and_never_changes_training(
        tmp_path, fake_fmnist, teacher_file):
    for method in ("rgal", "dfad"):
        runs = {}
        for every in (1, 2, 0):
            out = tmp_path / f"{method}_{every}"
            assert main([*DISTILL, "--method", method, "--data-root", str(fake_fmnist),
                         "--teacher-weights", str(teacher_file), "--out", str(out),
                         "--grid-every", str(every)]) == 0
            runs[every] = out
        grids = {e: sorted(p.name for p in (o / "grids").glob("*.png")) for e, o in runs.items()}
        assert grids == {1: ["epoch_001.png", "epoch_002.png", "epoch_003.png"],
                         2: ["epoch_002.png", "epoch_003.png"], 0: []}
        for every in (2, 0):
            assert _same(runs[1] / "student.safetensors", runs[every] / "student.safetensors")


def test_export_synthetic_writes_the_final_pool(tmp_path, fake_fmnist, teacher_file):
    out = tmp_path / "x"
    assert main([*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights",
                 str(teacher_file), "--out", str(out), "--export-synthetic", "true"]) == 0
    exported = load_file(out / "synthetic.safetensors")
    pool = load_checkpoint(out / CHECKPOINT)["pool"]
    assert exported["images"].dtype == torch.uint8 and exported["images"].shape == (48, 1, 28, 28)
    assert torch.equal(exported["images"], pool["images"])
    assert torch.equal(exported["labels"], pool["labels"])


def test_fast_latents_take_their_own_learning_rate():
    from rgal.data.datasets import DatasetInfo
    from rgal.methods import create_method
    from rgal.models import create_model

    info = DatasetInfo("t", 10, 1, 28, (0.5,), (0.5,), 2, False)
    t, s = create_model("tinycnn", 10, 1), create_model("tinycnn", 10, 1)
    fast = create_method("fast", t, s, info, nz=8, ngf=8, lr_g=0.003, lr_z=0.07)
    z = torch.zeros(4, 8, requires_grad=True)
    groups = fast.optimizer(fast.generator, z).param_groups
    assert [g["lr"] for g in groups] == [0.003, 0.07] and groups[1]["params"][0] is z
    fast = create_method("fast", t, s, info, nz=8, ngf=8, lr_g=0.003, lr_z=0.0)
    assert [g["lr"] for g in fast.optimizer(fast.generator, z).param_groups] == [0.003, 0.003]


def test_incremental_clip_grad_bounds_every_update(tmp_path, fake_fmnist):
    from rgal.models import create_model

    torch.manual_seed(0)
    out = tmp_path / "clip"
    assert main([*INCR, "--method", "finetune", "--tasks", "2", "--data-root",
                 str(fake_fmnist), "--out", str(out), "--set", "clip_grad=1e-7",
                 "--set", "weight_decay=0", "--set", "momentum=0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = sum(r["steps"] for r in _lines(out / "metrics.jsonl"))
    torch.manual_seed(summary["seed"])
    start = create_model("tinycnn", 10, 1).state_dict()
    end = _weights(out / "model.safetensors")
    moved = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start
                           if k in end and start[k].is_floating_point() and "running" not in k))
    lr = 0.01
    assert moved <= steps * lr * 1e-7 * 1.001  # each step moves the weights by <= lr * clip


@pytest.mark.slow
def test_compile_gives_the_same_run(tmp_path, fake_fmnist, teacher_file):
    outs = []
    for flag in ("false", "true"):
        out = tmp_path / flag
        assert main([*DISTILL, "--epochs", "1", "--data-root", str(fake_fmnist),
                     "--teacher-weights", str(teacher_file), "--out", str(out), "--compile",
                     flag]) == 0
        outs.append(out)
    a, b = (_weights(o / "student.safetensors") for o in outs)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_the_loop_writes_nothing_without_a_folder():
    from rgal.engine import Job, RunFolder

    class Count(Job):
        epochs = 2

        def steps(self, epoch):
            return 3

        def step(self, epoch, step, prelude):
            return {"loss": torch.tensor(float(epoch * 10 + step))}

        def end_epoch(self, epoch, prelude, means, timings):
            return {"epoch": epoch, **means}

    loop = TrainingLoop(Count(), RunFolder(None), config={}, progress=False)
    history = loop.run()
    assert [r["loss"] for r in history] == [11.0, 21.0] and loop.checkpoint_path is None
