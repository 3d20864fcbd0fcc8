"""`student_ema`: the run delivers a moving average of the student's weights, trains exactly as
without it, records the trained student's own last accuracy, and resumes exactly."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rgal.cli import main
from rgal.train.distill import WeightAverage
from rgal.train.student import StudentPhase

SMALL = ["--epochs", "3", "--g-steps", "2", "--kd-steps", "6", "--batch-size", "8",
         "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
         "--device", "cpu", "--set", "grid_every=0", "--set", "diversity_samples=16"]
TIMING = ("synthesis_s", "distill_s", "eval_s", "elapsed_s")


def _run(out: Path, data: Path, teacher: Path, *extra: str) -> int:
    return main(["distill", "--data-root", str(data), "--teacher-weights", str(teacher),
                 "--out", str(out), *SMALL, *extra])


def _records(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_weight_average_moves_each_value_by_one_minus_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    average = WeightAverage(model, decay=0.75)
    before = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 1, 5, 5))  # moves BN statistics and its batch counter
    average.update(model)
    now, trained = average.model.state_dict(), model.state_dict()
    for name, value in now.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * trained[name])
            assert not torch.equal(value, trained[name]), name
        else:
            assert torch.equal(value, trained[name]), name  # num_batches_tracked: copied
    assert not any(p.requires_grad for p in average.model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the trained model untouched


@pytest.fixture(scope="module")
def plain_and_averaged(tmp_path_factory, fake_fmnist, teacher_file) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ema")
    assert _run(root / "plain", fake_fmnist, teacher_file) == 0
    assert _run(root / "ema", fake_fmnist, teacher_file, "--set", "student_ema=0.5") == 0
    return root / "plain", root / "ema"


def test_average_changes_nothing_in_training_and_is_what_the_run_delivers(
        plain_and_averaged, fake_fmnist, capsys):
    plain, ema = plain_and_averaged
    a, b = _records(plain), _records(ema)
    for ra, rb in zip(a, b, strict=True):  # the same training, step for step
        for key in ("loss_kd", "loss_bn", "loss_adv", "pool_size", "div_intra"):
            assert ra[key] == rb[key], (key, ra["epoch"])
    assert "test_acc_trained" not in a[-1]
    assert [("test_acc_trained" in r) for r in b] == [False, False, True]
    assert b[-1]["test_acc_trained"] == a[-1]["test_acc"]  # the trained student, unchanged
    summary = json.loads((ema / "summary.json").read_text())
    assert summary["final_acc"] == b[-1]["test_acc"]
    assert summary["final_acc_trained"] == a[-1]["test_acc"]
    assert summary["config"]["student_ema"] == 0.5
    # the saved student is the average, not the trained weights
    w_plain, w_ema = (load_file(p / "student.safetensors") for p in (plain, ema))
    assert w_plain.keys() == w_ema.keys()
    assert any(not torch.equal(w_plain[k], w_ema[k]) for k in w_plain)
    capsys.readouterr()
    assert main(["eval", "--model", "tinycnn", "--weights", str(ema / "student.safetensors"),
                 "--dataset", "fashion-mnist", "--data-root", str(fake_fmnist),
                 "--device", "cpu"]) == 0
    assert f"{summary['final_acc']:.2f}%" in capsys.readouterr().out


def test_average_resumes_exactly_after_a_signal_mid_epoch(
        tmp_path, plain_and_averaged, fake_fmnist, teacher_file, monkeypatch):
    _, ema = plain_and_averaged
    out, orig, calls = tmp_path / "signalled", StudentPhase.step, []

    def step_then_signal(phase, *args, **kwargs):
        result = orig(phase, *args, **kwargs)
        calls.append(1)
        if len(calls) == 9:  # epoch 2, after its third student step
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    with monkeypatch.context() as m:
        m.setattr(StudentPhase, "step", step_then_signal)
        assert _run(out, fake_fmnist, teacher_file,
                    "--set", "student_ema=0.5") == 128 + signal.SIGTERM
    assert not (out / "student.safetensors").exists()
    assert _run(out, fake_fmnist, teacher_file, "--set", "student_ema=0.5", "--resume") == 0
    assert _records(out) == _records(ema)
    wa, wb = (load_file(p / "student.safetensors") for p in (out, ema))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
