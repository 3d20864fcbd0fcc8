"""Crash safety: checkpoints, exact resume after kill -9 or a signal, torn writes, hostile files,
non-finite losses, and one-line exit-2 errors for every invalid input."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from rgal.cli import main
from rgal.engine import CHECKPOINT, CheckpointError, load_checkpoint, save_checkpoint
from rgal.engine import checkpoint as ckpt_mod
from rgal.methods.rgal import RGAL
from rgal.models.registry import _MODELS, register_model
from rgal.models.weights import save_weights
from rgal.train.student import StudentPhase

SMALL = ["--epochs", "4", "--g-steps", "2", "--kd-steps", "6", "--batch-size", "8",
         "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
         "--device", "cpu"]
TIMING = ("synthesis_s", "distill_s", "eval_s", "elapsed_s")


def _argv(out: Path, data: Path, teacher: Path, *extra: str) -> list[str]:
    return ["distill", "--data-root", str(data), "--teacher-weights", str(teacher),
            "--out", str(out), *SMALL, *extra]


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_run(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return same_weights and _metrics(a) == _metrics(b)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, fake_fmnist, teacher_file) -> Path:
    """One uninterrupted run per session, to compare resumed runs with (never modified)."""
    out = tmp_path_factory.mktemp("reliability") / "reference"
    assert main(_argv(out, fake_fmnist, teacher_file)) == 0
    return out


@pytest.fixture()
def reference(tmp_path, pristine) -> Path:
    """A private copy of the uninterrupted run that a test may damage or resume."""
    import shutil

    return Path(shutil.copytree(pristine, tmp_path / "reference"))


def test_checkpoint_holds_the_full_state(pristine):
    state = load_checkpoint(pristine / CHECKPOINT)
    assert state["epoch"] == 4 and state["partial"] is None
    for key in ("student", "method", "optimizer", "scheduler", "pool", "rng", "best_acc",
                "best_epoch", "history", "config"):
        assert key in state, key
    assert state["pool"]["images"].shape == (64, 1, 28, 28)
    assert state["pool"]["images"].dtype == torch.uint8
    assert any(k.startswith("generator.") for k in state["method"])
    assert any(k.startswith("projector.") for k in state["method"])
    assert not any(k.startswith(("teacher.", "student.")) for k in state["method"])
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert len(state["history"]) == 4 and state["scheduler"]["last_epoch"] == 4
    assert state["optimizer"]["state"], "momentum buffers are saved"


class _SignalAt:
    """Send SIGTERM to this process on the n-th call of a method (then behave normally)."""

    def __init__(self, cls: type, name: str, n: int) -> None:
        self.cls, self.name, self.n, self.calls = cls, name, n, 0
        self.orig = getattr(cls, name)

    def __call__(self, obj, *args, **kwargs):
        result = self.orig(obj, *args, **kwargs)
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGTERM)
        return result


@pytest.mark.parametrize(("cls", "name", "n", "position"), [
    (StudentPhase, "step", 9, (2, 3)),  # epoch 2, after student step 3
    (RGAL, "synthesize", 3, (3, 0)),  # epoch 3, right after synthesis
])
def test_signal_checkpoints_the_exact_position_and_resume_is_identical(
        tmp_path, fake_fmnist, teacher_file, pristine, monkeypatch, capsys, cls, name, n,
        position):
    out = tmp_path / "signalled"
    hook = _SignalAt(cls, name, n)
    with monkeypatch.context() as m:
        m.setattr(cls, name, lambda obj, *a, **k: hook(obj, *a, **k))
        assert main(_argv(out, fake_fmnist, teacher_file)) == 128 + signal.SIGTERM
    assert "SIGTERM" in capsys.readouterr().err
    state = load_checkpoint(out / CHECKPOINT)
    assert (state["partial"]["epoch"], state["partial"]["done"]) == position
    assert not (out / "student.safetensors").exists()
    assert main(_argv(out, fake_fmnist, teacher_file, "--resume")) == 0
    assert _same_run(pristine, out)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_identical_weights(
        tmp_path, fake_fmnist, teacher_file):
    """Kill the run with SIGKILL at random moments; `--resume` must end bit-identical."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "rgal"]

    def start(out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(cmd + _argv(out, fake_fmnist, teacher_file, *extra), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    t0 = time.time()
    ref = start(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    duration = time.time() - t0
    points = int(os.environ.get("RGAL_KILL_POINTS", "3"))
    rng = random.Random(1234)
    interrupted = 0
    for i in range(points):
        out = tmp_path / f"killed{i}"
        proc = start(out)
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.0) * duration)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            interrupted += 1
        for _ in range(10):  # a kill before the first checkpoint restarts from epoch 1
            proc = start(out, "--resume")
            if proc.wait(timeout=300) == 0:
                break
        assert _same_run(tmp_path / "ref", out), f"kill point {i} differs"
    print(f"\nkill -9: {points} points tried, {interrupted} interrupted a run; all identical")
    assert interrupted >= 1


def test_torn_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(4)})
    first = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash between write and rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            save_checkpoint(path, {"epoch": 2, "w": torch.arange(8)})
    assert path.read_bytes() == first and load_checkpoint(path)["epoch"] == 1
    # a process killed mid-write leaves a half-written temporary file behind: harmless
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(first[: len(first) // 2])
    assert load_checkpoint(path)["epoch"] == 1
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(2)})
    assert load_checkpoint(path)["epoch"] == 3 and not tmp.exists()


def test_truncated_checkpoint_is_refused_in_one_line(tmp_path, fake_fmnist, teacher_file,
                                                      reference, capsys):
    data = (reference / CHECKPOINT).read_bytes()
    (reference / CHECKPOINT).write_bytes(data[: len(data) // 3])
    assert main(_argv(reference, fake_fmnist, teacher_file, "--resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgal: error:") and err.count("\n") == 1 and CHECKPOINT in err


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickle_payload_is_refused_and_not_run(tmp_path, fake_fmnist,
                                                               teacher_file, reference, capsys):
    marker = tmp_path / "pwned"
    with open(reference / CHECKPOINT, "wb") as f:
        pickle.dump({"format": 1, "epoch": 0, "config": _Payload(marker)}, f)
    assert main(_argv(reference, fake_fmnist, teacher_file, "--resume")) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(reference / CHECKPOINT)
    assert not marker.exists()


def test_resume_with_another_config_is_refused_naming_the_keys(
        tmp_path, fake_fmnist, teacher_file, reference, capsys):
    before = (reference / CHECKPOINT).read_bytes()
    code = main(_argv(reference, fake_fmnist, teacher_file, "--resume", "--lr", "0.5",
                      "--set", "w_tri=0.3"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "lr (0.1 -> 0.5)" in err and "rgal.w_rel_syn (0.1 -> 0.3)" in err
    code = main(_argv(reference, fake_fmnist, teacher_file, "--resume", "--student", "smallcnn",
                      "--allow-config-change"))
    assert code == 2 and "student" in capsys.readouterr().err
    assert (reference / CHECKPOINT).read_bytes() == before
    # flags that do not change results are free, and a finished run resumes to itself
    assert main(_argv(reference, fake_fmnist, teacher_file, "--resume",
                      "--eval-batch-size", "7")) == 0


def test_resume_uses_the_checkpoint_config_when_no_flags_are_given(
        tmp_path, fake_fmnist, teacher_file, reference, capsys):
    code = main(["distill", "--out", str(reference), "--resume", "--data-root", str(fake_fmnist),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((reference / "summary.json").read_text())["config"]["g_steps"] == 2


def test_non_finite_loss_stops_keeps_the_checkpoint_and_resumes_with_a_new_lr(
        tmp_path, fake_fmnist, teacher_file, capsys):
    out = tmp_path / "nan"
    assert main(_argv(out, fake_fmnist, teacher_file, "--epochs", "1")) == 0
    good = (out / CHECKPOINT).read_bytes()
    code = main(_argv(out, fake_fmnist, teacher_file, "--epochs", "3", "--lr", "1e30",
                      "--resume", "--allow-config-change"))
    err = capsys.readouterr().err
    assert code == 1 and "not finite" in err and "epoch 2" in err and "step" in err
    assert err.split(" is not finite")[0].split()[-1].startswith("loss_")
    assert (out / CHECKPOINT).read_bytes() == good
    assert len(_metrics(out)) == 1
    code = main(_argv(out, fake_fmnist, teacher_file, "--epochs", "3", "--lr", "0.05",
                      "--resume", "--allow-config-change"))
    assert code == 0
    history = _metrics(out)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["lr"] == pytest.approx(0.05 * 0.75)  # cosine at epoch 1 of 3, new base


# ---- input validation: one line, exit 2, nothing written -------------------------------------

class _NoBatchNorm(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _expect_exit_2(argv: list[str], out: Path, capsys, word: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rgal: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert word in err, err
    assert not out.exists()


def test_teacher_without_batchnorm_is_refused(tmp_path, fake_fmnist, capsys):
    def nobn_test(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
        return _NoBatchNorm(num_classes, in_channels)

    register_model(nobn_test)
    try:
        weights = tmp_path / "nobn.safetensors"
        save_weights(_NoBatchNorm(), weights)
        out = tmp_path / "o"
        _expect_exit_2(["distill", "--teacher", "nobn_test", "--teacher-weights", str(weights),
                        "--data-root", str(fake_fmnist), "--out", str(out)], out, capsys,
                       "BatchNorm")
    finally:
        _MODELS.pop("nobn_test")


@pytest.mark.parametrize(("damage", "word"), [("truncated", "t10k-images"),
                                              ("corrupt", "t10k-images"),
                                              ("missing file", "not found")])
def test_damaged_dataset_folder_is_refused(tmp_path, fake_fmnist, teacher_file, capsys, damage,
                                           word):
    root = tmp_path / "data"
    root.mkdir()
    for f in fake_fmnist.iterdir():
        (root / f.name).write_bytes(f.read_bytes())
    victim = root / "t10k-images-idx3-ubyte.gz"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "corrupt":
        victim.write_bytes(gzip.compress(b"\x00\x00\x08\x03 not an idx file"))
    else:
        victim.unlink()
    out = tmp_path / "o"
    _expect_exit_2(_argv(out, root, teacher_file, "--download", "false"), out, capsys, word)


def test_full_output_disk_is_refused(tmp_path, fake_fmnist, teacher_file, capsys, monkeypatch):
    import shutil

    from rgal.engine import outputs

    real = shutil.disk_usage
    monkeypatch.setattr(outputs.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=10 * 2**20))
    out = tmp_path / "o"
    _expect_exit_2(_argv(out, fake_fmnist, teacher_file), out, capsys, "MiB free")


def test_output_path_that_is_a_file_or_unwritable_is_refused(tmp_path, fake_fmnist, teacher_file,
                                                             capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    _expect_exit_2(_argv(blocker, fake_fmnist, teacher_file), tmp_path / "none", capsys,
                   "not a folder")
    _expect_exit_2(_argv(blocker / "sub", fake_fmnist, teacher_file), blocker / "sub", capsys,
                   "not writable")
    assert blocker.read_text() == "keep me"


def test_resume_and_overwrite_together_are_refused(tmp_path, fake_fmnist, teacher_file,
                                                   reference, capsys):
    before = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    assert main(_argv(reference, fake_fmnist, teacher_file, "--resume", "--overwrite")) == 2
    assert "exclude" in capsys.readouterr().err
    assert main(_argv(reference, fake_fmnist, teacher_file, "--allow-config-change")) == 2
    assert "--resume" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    assert before == after


# ---- random command lines: exit 0 (valid) or 2 with one line, never a traceback --------------

FLAGS = ["--epochs", "--g-steps", "--kd-steps", "--batch-size", "--synthesis-batch-size",
         "--lr", "--momentum", "--weight-decay", "--lr-g", "--w-bn", "--w-tri", "--tau",
         "--relation-direction", "--syn-sampler", "--stu-sampler", "--pair-sampling", "--margin",
         "--seed", "--device", "--teacher", "--student", "--dataset", "--nz", "--ngf",
         "--cd-start-stage", "--grid-every", "--method", "--config", "--set", "--teacher-weights",
         "--resume", "--overwrite", "--allow-config-change", "--bogus"]
VALUES = st.one_of(st.integers(-5, 300).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["paper", "code", "focal", "distance", "random", "cpu",
                                    "cuda:9", "tinycnn", "smallcnn", "wrn16_1", "cifar10",
                                    "mnist", "true", "no", "rgal", "epochs=0", "lr=-1", "x=1",
                                    "builtin", "", "-", "[1]", "{a: 1}"]),
                   st.text(max_size=8))


def test_random_command_lines_never_give_a_traceback(tmp_path, fake_fmnist, teacher_file,
                                                     monkeypatch, capsys):
    """Random flag/value sequences: exit 0 (valid: the run is stubbed) or 2 with one line."""
    from rgal.train import distill

    summary = {"teacher_params": 1, "student_params": 1, "teacher_acc": 0.0, "final_acc": 0.0,
               "best_acc": 0.0, "best_epoch": 1, "images_synthesized": 0, "wall_s": 0,
               "synthesis_s": 0, "distill_s": 0, "eval_s": 0}
    monkeypatch.setattr(distill, "run_distillation", lambda setup: summary)
    out = tmp_path / "never"
    tried = {"inputs": 0, "valid": 0}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(args=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=5))
    def check(args):
        argv = ["distill", "--teacher-weights", str(teacher_file)]
        for flag, value in args:
            switch = flag in ("--resume", "--overwrite", "--allow-config-change")
            argv += [flag] if switch else [flag, value]
        # the last --set wins: keep every run offline, on the fake data, in a fresh folder
        argv += ["--set", "download=false", "--set", f"out={out}", "--set",
                 f"data_root={fake_fmnist}"]
        tried["inputs"] += 1
        code = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if code == 0:
            tried["valid"] += 1
        else:
            assert code == 2, (argv, err)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("rgal: error:"), (argv, err)
        assert not (out / CHECKPOINT).exists()

    check()
    print(f"\nrandom command lines tried: {tried['inputs']} ({tried['valid']} valid)")
    assert tried["inputs"] >= 1000 and 0 < tried["valid"] < tried["inputs"]


def test_checkpoint_module_names_free_and_structural_keys_consistently():
    assert not ckpt_mod.RESUME_FREE_KEYS & ckpt_mod.STRUCTURAL_KEYS
    from dataclasses import fields

    from rgal.config import DistillConfig
    from rgal.incremental.config import IncrementalConfig
    from rgal.quantization.config import QuantizeConfig

    names = {f.name for cls in (DistillConfig, QuantizeConfig, IncrementalConfig)
             for f in fields(cls)} | {"tensorboard"}
    assert ckpt_mod.RESUME_FREE_KEYS <= names and ckpt_mod.STRUCTURAL_KEYS <= names
