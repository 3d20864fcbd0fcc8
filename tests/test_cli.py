"""The `rgal` command: outputs of a tiny run, and one-line exit-2 errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rgal.cli import main
from rgal.models import create_model
from rgal.models.weights import save_weights

TINY = ["--epochs", "2", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
        "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
        "--device", "cpu"]


def _distill(tmp_path: Path, fake_fmnist: Path, teacher_file: Path, *extra: str,
             out: Path | None = None) -> int:
    out = out or tmp_path / "run"
    return main(["distill", "--data-root", str(fake_fmnist), "--teacher-weights",
                 str(teacher_file), "--out", str(out), *TINY, *extra])


@pytest.mark.slow
def test_tiny_distill_writes_every_output(tmp_path, fake_fmnist, teacher_file, capsys):
    assert _distill(tmp_path, fake_fmnist, teacher_file) == 0
    out = tmp_path / "run"
    for name in ("metrics.jsonl", "summary.json", "student.safetensors",
                 "student_best.safetensors", "accuracy.png", "grids/epoch_001.png",
                 "grids/epoch_002.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for key in ("test_acc", "synthesis_s", "distill_s", "loss_bn", "loss_oh", "loss_adv",
                    "loss_rel_syn", "loss_kd", "loss_cd", "loss_rel_stu"):
            assert key in r, key
        assert r["test_acc"] == pytest.approx(round(r["test_acc"]))  # k of 100 test images
    summary = json.loads((out / "summary.json").read_text())
    for key in ("teacher_acc", "best_acc", "final_acc", "epochs", "wall_s", "config"):
        assert key in summary, key
    assert summary["config"]["g_steps"] == 2 and summary["epochs"] == 2
    assert summary["best_acc"] == max(r["test_acc"] for r in records)
    assert summary["images_synthesized"] == 32
    printed = capsys.readouterr().out
    assert "student test acc (last)" in printed and "teacher test acc" in printed
    # the saved student evaluates to the accuracy the run reported
    assert main(["eval", "--model", "tinycnn", "--weights", str(out / "student.safetensors"),
                 "--dataset", "fashion-mnist", "--data-root", str(fake_fmnist),
                 "--device", "cpu"]) == 0
    assert f"{summary['final_acc']:.2f}%" in capsys.readouterr().out


def test_eval_every_measures_some_epochs_and_leaves_training_unchanged(tmp_path, fake_fmnist,
                                                                       teacher_file):
    extra = ("--epochs", "3", "--set", "diversity_samples=16", "--set", "grid_every=0")
    assert _distill(tmp_path, fake_fmnist, teacher_file, *extra, out=tmp_path / "every") == 0
    assert _distill(tmp_path, fake_fmnist, teacher_file, *extra, "--set", "eval_every=2",
                    out=tmp_path / "sparse") == 0

    def records(name):
        return [json.loads(line) for line in
                (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    every, sparse = records("every"), records("sparse")
    assert all("test_acc" in r and "div_intra" in r for r in every)
    # epoch 2 (a multiple of 2) and the last epoch are measured, epoch 1 is not
    assert ["test_acc" in r for r in sparse] == [False, True, True]
    assert ["div_intra" in r for r in sparse] == [False, True, True]
    for a, b in zip(every, sparse, strict=True):  # measuring never shifts the training
        for key in ("test_acc", "div_intra", "loss_kd", "loss_bn", "pool_size"):
            if key in b:
                assert a[key] == b[key], (key, a["epoch"])
    s_every, s_sparse = (json.loads((tmp_path / n / "summary.json").read_text())
                         for n in ("every", "sparse"))
    assert s_sparse["final_acc"] == s_every["final_acc"]
    assert (tmp_path / "sparse" / "accuracy.png").is_file()


def test_existing_run_is_refused_then_overwritten(tmp_path, fake_fmnist, teacher_file, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"keep": true}')
    (out / "grids").mkdir()
    (out / "grids" / "epoch_009.png").write_bytes(b"old")
    assert _distill(tmp_path, fake_fmnist, teacher_file, "--epochs", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text()) == {"keep": True}
    assert _distill(tmp_path, fake_fmnist, teacher_file, "--epochs", "1", "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert not (out / "grids" / "epoch_009.png").exists()  # no stale picture of the old run


def _weights(tmp_path: Path, name: str, classes: int = 10, channels: int = 1) -> Path:
    path = tmp_path / f"{name}_{classes}.pth"
    torch.save({"state_dict": create_model(name, classes, channels).state_dict()}, path)
    return path


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_cases(tmp_path: Path, fake_fmnist: Path, teacher_file: Path) -> dict[str, list[str]]:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil(str(tmp_path / "pwned"))}, evil)
    wrong_arch = _weights(tmp_path, "tinycnn")
    wrong_classes = _weights(tmp_path, "smallcnn", classes=100)
    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    base = ["distill", "--data-root", str(fake_fmnist), *TINY]
    w = ["--teacher-weights", str(teacher_file)]
    return {
        "missing weights": base + ["--teacher-weights", str(tmp_path / "nope.pth")],
        "corrupt weights": base + ["--teacher-weights", str(corrupt)],
        "pickle payload": base + ["--teacher-weights", str(evil)],
        "architecture mismatch": base + ["--teacher-weights", str(wrong_arch)],
        "class-count mismatch": base + ["--teacher-weights", str(wrong_classes)],
        "unknown teacher": base + w + ["--teacher", "resnet9000"],
        "unknown student": base + w + ["--student", "nonet"],
        "unknown dataset": base + w + ["--dataset", "imagenet-77"],
        "dataset files absent": ["distill", "--dataset", "mnist", "--data-root", str(empty),
                                 "--download", "false", *w, *TINY],
        "negative epochs": base + w + ["--epochs", "-3"],
        "non-numeric lr": base + w + ["--lr", "fast"],
        "bad direction": base + w + ["--relation-direction", "sideways"],
        "unknown key": base + w + ["--set", "no_such_key=1"],
        "unknown device": base + w + ["--device", "quantum:7"],
        "absent cuda device": base + w + ["--device", "cuda:3"],
        "seed out of range": base + w + ["--seed", "1e30"],
        "list for a number": base + w + ["--set", "epochs=[1, 2]"],
        "infinite lr": base + w + ["--set", "lr=.inf"],
        "bad --set": base + w + ["--set", "novalue"],
        "missing config file": base + w + ["--config", str(tmp_path / "none.yaml")],
        "unknown flag": base + w + ["--frobnicate"],
        "eval unknown model": ["eval", "--model", "x", "--weights", str(teacher_file),
                               "--dataset", "fashion-mnist"],
        "eval mismatch": ["eval", "--model", "tinycnn", "--weights", str(teacher_file),
                          "--dataset", "fashion-mnist", "--data-root", str(fake_fmnist)],
        "teacher bad epochs": ["train-teacher", "--dataset", "fashion-mnist", "--model",
                               "tinycnn", "--epochs", "0", "--out", str(tmp_path / "t.pth")],
    }


def test_every_bad_input_exits_2_with_one_line(tmp_path, fake_fmnist, teacher_file, capsys):
    cases = _bad_cases(tmp_path, fake_fmnist, teacher_file)
    for name, argv in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        if argv[0] == "distill":
            argv = argv + ["--out", str(out)]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, name
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("rgal: error:"), (name, err)
        assert "Traceback" not in err
        assert not out.exists(), f"{name}: wrote {out}"
    assert not (tmp_path / "pwned").exists(), "pickle payload was executed"


def test_error_messages_name_the_problem(tmp_path, fake_fmnist, teacher_file, capsys):
    cases = _bad_cases(tmp_path, fake_fmnist, teacher_file)
    expect = {"missing weights": "not found", "pickle payload": "refused",
              "architecture mismatch": "does not fit", "class-count mismatch": "shape",
              "unknown teacher": "resnet9000", "unknown dataset": "imagenet-77",
              "negative epochs": "epochs", "non-numeric lr": "'lr'", "unknown key":
              "no_such_key", "dataset files absent": "not found"}
    for name, word in expect.items():
        argv = cases[name] + (["--out", str(tmp_path / "o")] if cases[name][0] == "distill"
                              else [])
        main(argv)
        assert word in capsys.readouterr().err, name


def test_console_script_bad_input_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rgal", "distill", "--teacher", "nonet",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nonet" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_teacher_writes_weights_that_eval_reads(tmp_path, fake_fmnist, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["train-teacher", "--dataset", "fashion-mnist", "--model", "tinycnn",
                 "--epochs", "1", "--batch-size", "32", "--data-root", str(fake_fmnist),
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "tinycnn" and meta["epochs"] == 1
    capsys.readouterr()
    assert main(["eval", "--model", "tinycnn", "--weights", str(out), "--dataset",
                 "fashion-mnist", "--data-root", str(fake_fmnist), "--device", "cpu"]) == 0
    assert f"{meta['test_acc']:.2f}%" in capsys.readouterr().out
    # refuses to overwrite the file it wrote
    assert main(["train-teacher", "--dataset", "fashion-mnist", "--model", "tinycnn",
                 "--epochs", "1", "--data-root", str(fake_fmnist), "--out", str(out)]) == 2


def test_weights_with_module_prefix_load(tmp_path, fake_fmnist, capsys):
    model = create_model("tinycnn", 10, 1)
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "epoch": 7}, path)
    assert main(["eval", "--model", "tinycnn", "--weights", str(path), "--dataset",
                 "fashion-mnist", "--data-root", str(fake_fmnist), "--device", "cpu"]) == 0
    save_weights(model, tmp_path / "m.safetensors")
    assert main(["eval", "--model", "tinycnn", "--weights", str(tmp_path / "m.safetensors"),
                 "--dataset", "fashion-mnist", "--data-root", str(fake_fmnist)]) == 0


@pytest.mark.slow
def test_default_run_on_real_fashion_mnist_with_shipped_teacher(tmp_path, capsys):
    """`rgal distill` with only a tiny budget: the embedded default on the real test set."""
    from rgal.models.build import builtin_teacher_record

    out = tmp_path / "demo"
    assert main(["distill", "--out", str(out), "--epochs", "1", "--g-steps", "2",
                 "--kd-steps", "3", "--synthesis-batch-size", "32", "--batch-size", "16",
                 "--no-progress", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    record = builtin_teacher_record("fashion-mnist", "smallcnn")
    # the shipped teacher scores on the real test set exactly what its record says
    assert summary["teacher_acc"] == pytest.approx(record["test_acc"], abs=1e-6)
    assert summary["teacher_acc"] >= 91.0
    assert summary["config"]["teacher"] == "smallcnn" and summary["config"]["student"] == "tinycnn"
    assert (out / "grids" / "epoch_001.png").is_file() and (out / "accuracy.png").is_file()


@pytest.mark.slow
def test_student_learns_from_synthetic_images_alone(tmp_path):
    """A one-minute RGAL run lifts the student far above chance on the real test set."""
    out = tmp_path / "learn"
    assert main(["distill", "--out", str(out), "--epochs", "5", "--g-steps", "10",
                 "--kd-steps", "40", "--no-progress", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_acc"] > 35.0, records
    assert records[-1]["loss_kd"] < records[0]["loss_kd"]
