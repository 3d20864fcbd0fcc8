"""pool_window: the pool keeps only the last N synthesis phases' images."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rgal.cli import main
from rgal.data.pool import ImagePool

DISTILL = ["distill", "--epochs", "3", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
           "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
           "--device", "cpu", "--set", "diversity_samples=16", "--export-synthetic", "true"]


def test_keep_last_keeps_the_newest_images_in_order_and_the_pool_still_grows():
    pool = ImagePool(1, 2)
    for b in range(3):
        pool.add(torch.full((4, 1, 2, 2), (b + 1) / 255), torch.full((4,), b))
    pool.keep_last(6)
    assert pool.images[:, 0, 0, 0].tolist() == [2, 2, 3, 3, 3, 3]
    assert pool.labels.tolist() == [1, 1, 2, 2, 2, 2]
    pool.keep_last(10)  # holds fewer: nothing changes
    assert len(pool) == 6
    pool.add(torch.full((5, 1, 2, 2), 4 / 255), torch.full((5,), 3))
    assert pool.labels.tolist() == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="n >= 0"):
        pool.keep_last(-1)


def test_a_run_with_a_window_keeps_exactly_the_last_phases_of_the_same_run(
        tmp_path, fake_fmnist, teacher_file):
    common = [*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file)]
    full, window = tmp_path / "full", tmp_path / "window"
    assert main([*common, "--out", str(full)]) == 0
    assert main([*common, "--out", str(window), "--pool-window", "2"]) == 0
    kept, every = load_file(window / "synthetic.safetensors"), load_file(full / "synthetic.safetensors")
    assert every["images"].shape[0] == 48 and kept["images"].shape[0] == 32
    # epochs 1-3 synthesise the same images (the student differs only from epoch 3's steps on)
    assert torch.equal(kept["images"], every["images"][16:])
    assert torch.equal(kept["labels"], every["labels"][16:])
    a = load_file(full / "student.safetensors")
    b = load_file(window / "student.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # epoch 3 trained on fewer images


def test_a_method_without_a_pool_refuses_a_window(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "dafl", "--pool-window", "2", "--out", str(out)]) == 2
    assert "pool_window" in capsys.readouterr().err
    assert not out.exists()
