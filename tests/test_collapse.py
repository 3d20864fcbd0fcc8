"""benchmarks/collapse.py: class histograms of a finished run's generator and student."""

from __future__ import annotations

import pytest
import torch
from conftest import load_benchmark

from rgal.cli import main
from rgal.engine import CHECKPOINT, load_checkpoint

TINY = ["--epochs", "1", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
        "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
        "--device", "cpu", "--set", "grid_every=0"]


@pytest.fixture(scope="module")
def collapse():
    return load_benchmark("collapse")


def test_occupied_counts_classes_with_one_percent(collapse):
    assert collapse.occupied([0, 0, 100]) == 1
    assert collapse.occupied([1, 99, 0]) == 2
    assert collapse.occupied([0, 200, 1]) == 1  # 1 of 201 is under 1%


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dfad", "rgal"])
def test_histograms_cover_every_image_and_leave_the_run_untouched(
        tmp_path, fake_fmnist, teacher_file, collapse, method, capsys):
    out = tmp_path / method
    assert main(["distill", "--method", method, "--data-root", str(fake_fmnist),
                 "--teacher-weights", str(teacher_file), "--out", str(out), *TINY]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    counts = collapse.inspect(out, 24)
    generated, student = counts.values()
    assert len(generated) == len(student) == 10
    pool = len(load_checkpoint(out / CHECKPOINT)["pool"]["labels"])
    # online: 24 fresh images (no pool); pool methods: the pool's newest 24 images
    assert sum(generated) == (24 if method == "dfad" else min(24, pool))
    assert (pool == 0) == (method == "dfad")
    assert sum(student) == 100  # every test image of the fake dataset
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert collapse.main([str(out)]) == 0
    assert f"{out}" in capsys.readouterr().out
    conf = collapse.inspect(out, 24, confidence=True)
    assert conf["teacher on generated images"] == generated  # the same images either way
    real = conf["teacher confidence, real test"]
    assert len(real) == 10 and all(v != v or 0.1 <= v <= 1.0 for v in real)  # nan: no image


def test_confidence_by_class_averages_the_top_probability_of_each_chosen_class(collapse):
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.7, 0.1]])
    conf = collapse.confidence_by_class(probs)
    assert conf[:2] == pytest.approx([0.75, 0.7])
    assert conf[2] != conf[2]  # nan: the teacher chose class 2 for no image


def test_a_folder_without_a_checkpoint_is_refused(tmp_path, collapse, capsys):
    assert collapse.main([str(tmp_path)]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err
    assert collapse.main([str(tmp_path), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
