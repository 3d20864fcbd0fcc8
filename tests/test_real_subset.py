"""real_subset: kd-real and scratch train on N real training images, drawn from the run's seed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rgal.cli import main
from rgal.config import ConfigError
from rgal.data.datasets import ImageTensors
from rgal.train.student import RealImages

DISTILL = ["distill", "--method", "kd-real", "--epochs", "1", "--kd-steps", "3",
           "--batch-size", "8", "--no-progress", "--device", "cpu",
           "--set", "diversity_samples=0"]


def tensors(n: int) -> ImageTensors:
    """n one-pixel-distinct images whose label is their index."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    return ImageTensors(images, torch.arange(n))


def test_a_subset_is_that_many_distinct_images_drawn_from_the_seed():
    data = tensors(50)
    a = RealImages(data, torch.device("cpu"), subset=10, seed=3)
    again = RealImages(data, torch.device("cpu"), subset=10, seed=3)
    other = RealImages(data, torch.device("cpu"), subset=10, seed=4)
    assert len(a) == 10 and len(set(a.labels.tolist())) == 10
    assert torch.equal(a.labels, again.labels)
    assert not torch.equal(a.labels, other.labels)
    # each kept image keeps its own label
    assert torch.equal(a.images[:, 0, 0, 0].long(), a.labels)
    x, y = a.sample(64)  # a batch never holds more than the subset
    assert len(y) == 10 and set(y.tolist()) == set(a.labels.tolist())
    assert len(RealImages(data, torch.device("cpu"))) == 50  # 0: every image


def test_a_subset_larger_than_the_training_set_is_refused():
    with pytest.raises(ConfigError, match="larger than the training set"):
        RealImages(tensors(5), torch.device("cpu"), subset=6)


def test_a_kd_real_run_on_a_subset_trains_on_other_images(tmp_path, fake_fmnist, teacher_file):
    common = [*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file)]
    full, few, same = tmp_path / "full", tmp_path / "few", tmp_path / "full_again"
    assert main([*common, "--out", str(full)]) == 0
    assert main([*common, "--out", str(same), "--real-subset", "0"]) == 0
    assert main([*common, "--out", str(few), "--real-subset", "16"]) == 0
    a, b, c = (load_file(p / "student.safetensors") for p in (full, same, few))
    assert all(torch.equal(a[k], b[k]) for k in a)  # 0 leaves a run as it was
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_a_data_free_method_refuses_a_real_subset(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "rgal", "--real-subset", "100", "--out", str(out)]) == 2
    assert "real_subset" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_asking_for_more_real_images_than_there_are_writes_nothing(
        tmp_path, fake_fmnist, teacher_file, capsys):
    out = tmp_path / "run"
    argv = [*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
            "--out", str(out), "--real-subset", "129"]  # the fake training split holds 128
    assert main(argv) == 2
    assert "larger than the training set (128 images)" in capsys.readouterr().err
    assert not out.exists()
