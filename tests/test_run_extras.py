"""Optional run outputs: TensorBoard events (`--tensorboard`) and `rgal distill --export onnx`.

The events must hold every numeric field of metrics.jsonl (losses, learning rate, diversity,
timings) at the right step, and the image grid of each epoch; a missing extra is a one-line
error before anything is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rgal.cli import build_parser, main
from rgal.engine.tensorboard import scalar_fields, scalar_tag

TINY = ["--epochs", "2", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
        "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--set",
        "diversity_samples=32", "--no-progress", "--device", "cpu"]


def _distill(out: Path, data: Path, teacher: Path, *extra: str) -> int:
    return main(["distill", "--data-root", str(data), "--teacher-weights", str(teacher),
                 "--out", str(out), *TINY, *extra])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rgal: error:"), err
    return lines[0]


def test_a_true_false_flag_alone_means_true():
    parser = build_parser()
    assert parser.parse_args(["distill", "--tensorboard"]).tensorboard == "true"
    assert parser.parse_args(["distill", "--tensorboard", "false"]).tensorboard == "false"
    assert parser.parse_args(["distill", "--tensorboard", "--epochs", "3"]).epochs == "3"
    assert parser.parse_args(["quantize", "--tensorboard"]).tensorboard == "true"
    assert parser.parse_args(["incremental", "--tensorboard"]).tensorboard == "true"
    assert parser.parse_args(["distill", "--export", "onnx"]).export == "onnx"


def test_distill_events_hold_every_metric_and_each_epochs_grid(tmp_path, fake_fmnist,
                                                               teacher_file):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert _distill(out, fake_fmnist, teacher_file, "--tensorboard") == 0
    records = _records(out)
    events = _events(out)
    tags = set(events.Tags()["scalars"])
    expected = {scalar_tag(k) for r in records for k in scalar_fields(r)}
    assert expected <= tags
    for key in ("test_acc", "lr", "loss_kd", "loss_bn", "div_intra", "div_entropy",
                "synthesis_s"):
        assert scalar_tag(key) in tags, key
    assert scalar_tag("lr") == "optim/lr" and scalar_tag("div_intra").startswith("diversity/")
    for key in ("test_acc", "lr", "loss_student"):
        got = [(e.step, e.value) for e in events.Scalars(scalar_tag(key))]
        assert got == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in records], key
    grids = events.Images("synthetic/grid")
    assert [g.step for g in grids] == [1, 2]
    from PIL import Image

    with Image.open(out / "grids" / "epoch_002.png") as im:
        assert (grids[-1].width, grids[-1].height) == im.size


def test_quantize_and_incremental_events(tmp_path, fake_fmnist, teacher_file):
    pytest.importorskip("tensorboard")
    q = tmp_path / "q"
    assert main(["quantize", "--method", "gdfq", "--epochs", "2", "--iters", "2",
                 "--batch-size", "8", "--set", "ngf=8", "--set", "nz=8", "--weights",
                 str(teacher_file), "--data-root", str(fake_fmnist), "--out", str(q),
                 "--tensorboard", "--no-progress", "--device", "cpu"]) == 0
    tags = set(_events(q).Tags()["scalars"])
    assert {"loss/loss_oh", "loss/loss_kd", "accuracy/agree", "optim/lr", "accuracy/quant_acc",
            "accuracy/fp_acc"} <= tags
    assert "synthetic/grid" in _events(q).Tags()["images"]
    incr = tmp_path / "incr"
    assert main(["incremental", "--data-root", str(fake_fmnist), "--method", "abd", "--tasks",
                 "2", "--epochs", "0.5", "--batch-size", "8", "--inv-steps", "2",
                 "--inv-batch-size", "8", "--replay-size", "16", "--nz", "8", "--ngf", "8",
                 "--no-progress", "--device", "cpu", "--out", str(incr), "--tensorboard"]) == 0
    events = _events(incr)
    assert [e.step for e in events.Scalars("accuracy/acc_seen")] == [1, 2]
    assert {"loss/loss_ce", "loss/inv_oh", "accuracy/final_acc"} <= set(events.Tags()["scalars"])
    assert [g.step for g in events.Images("synthetic/grid")] == [1]  # the replay grid of task 1


def test_overwritten_run_keeps_no_stale_events(tmp_path, fake_fmnist, teacher_file):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert _distill(out, fake_fmnist, teacher_file, "--tensorboard") == 0
    assert _distill(out, fake_fmnist, teacher_file, "--tensorboard", "--epochs", "1",
                    "--overwrite") == 0
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in _events(out).Scalars("accuracy/test_acc")] == [1]


def test_resumed_run_continues_its_events_without_duplicates(tmp_path, fake_fmnist,
                                                             teacher_file):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert _distill(out, fake_fmnist, teacher_file, "--tensorboard") == 0
    assert _distill(out, fake_fmnist, teacher_file, "--tensorboard", "--epochs", "3",
                    "--resume", "--allow-config-change") == 0
    steps = [e.step for e in _events(out).Scalars("accuracy/test_acc")]
    assert steps == [1, 2, 3]
    values = [e.value for e in _events(out).Scalars("accuracy/test_acc")]
    assert values == [pytest.approx(r["test_acc"], rel=1e-6) for r in _records(out)]


@pytest.mark.parametrize("command", ["distill", "quantize", "incremental"])
def test_tensorboard_flag_without_the_extra_is_one_line(tmp_path, fake_fmnist, teacher_file,
                                                        monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    out = tmp_path / "run"
    argv = {"distill": ["distill", "--teacher-weights", str(teacher_file), *TINY],
            "quantize": ["quantize", "--weights", str(teacher_file), "--no-progress"],
            "incremental": ["incremental", "--no-progress"]}[command]
    assert main([*argv, "--data-root", str(fake_fmnist), "--out", str(out),
                 "--tensorboard"]) == 2
    line = _one_line_error(capsys)
    assert 'pip install "rgal[tensorboard]"' in line
    assert not out.exists()


def test_distill_export_onnx_writes_a_checked_student(tmp_path, fake_fmnist, teacher_file,
                                                      capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    assert _distill(out, fake_fmnist, teacher_file, "--export", "onnx") == 0
    summary = json.loads((out / "summary.json").read_text())
    onnx = summary["onnx"]
    assert onnx["file"] == "student.onnx" and (out / "student.onnx").is_file()
    assert onnx["rel_diff"] < 1e-4 and onnx["top1_agreement"] == 100.0
    assert onnx["ort_acc"] == pytest.approx(onnx["torch_acc"])
    assert onnx["torch_acc"] == pytest.approx(summary["final_acc"], abs=1e-6)  # all 100 images
    from rgal.data.datasets import dataset_info, load_dataset
    from rgal.export import ort_logits, ort_session, torch_logits, with_normalize
    from rgal.models import create_model
    from rgal.models.weights import load_weights

    # the file computes what the saved student computes, on every test image
    test = load_dataset("fashion-mnist", fake_fmnist, train=False, download=False)
    student = load_weights(create_model("tinycnn", 10, 1), out / "student.safetensors")
    info = dataset_info("fashion-mnist")
    x = test.images.float() / 255
    ref = torch_logits(with_normalize(student, (info.mean, info.std)), x)
    got = ort_logits(ort_session(out / "student.onnx"), x)
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_distill_export_refuses_an_unexportable_student_before_training(
        tmp_path, fake_fmnist, teacher_file, capsys):
    pytest.importorskip("onnxruntime")
    import torch

    from rgal.models.registry import _MODELS, register_model
    from rgal.models.small import SmallCNN

    class Cummax(SmallCNN):
        def forward(self, x):
            return torch.cummax(super().forward(x), 1).values

    def cummax_student(num_classes: int = 10, in_channels: int = 1, **_):
        return Cummax((16, 32, 64), (1, 2, 2), num_classes, in_channels)

    register_model(cummax_student)
    try:
        out = tmp_path / "run"
        assert _distill(out, fake_fmnist, teacher_file, "--student", "cummax_student",
                        "--export", "onnx") == 2
        assert "aten::cummax" in _one_line_error(capsys)
        assert not out.exists()
    finally:
        _MODELS.pop("cummax_student")
