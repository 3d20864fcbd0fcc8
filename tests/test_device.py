"""What must hold on the device a run trains on. By default the CPU; `RGAL_TEST_DEVICE=cuda`
(as `benchmarks/gpu_check.sh` sets it) runs the same checks on a GPU."""

from __future__ import annotations

import math
import os

import pytest
import torch

from rgal.amp import Precision
from rgal.models import create_model

DEVICE = os.environ.get("RGAL_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="RGAL_TEST_DEVICE asks for CUDA and none is available")

TINY = {"epochs": 2, "g_steps": 2, "kd_steps": 3, "batch_size": 8, "synthesis_batch_size": 16,
        "ngf": 8, "nz": 16, "progress": False, "diversity_samples": 32, "grid_every": 0}


def _trained_looking(model):
    from rgal.models.features import find_batchnorms

    for bn in find_batchnorms(model):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("precision", ["fp32", "auto", "bf16"])
def test_distill_trains_on_the_device_in_each_precision(tmp_path, fake_fmnist, teacher_file,
                                                        precision):
    from rgal.methods import distill_config
    from rgal.train.distill import run_distillation
    from rgal.train.prepare import prepare_distillation

    cfg = distill_config(TINY, {"data_root": str(fake_fmnist), "teacher_weights":
                                str(teacher_file), "device": DEVICE, "precision": precision,
                                "out": str(tmp_path / "run")})
    setup = prepare_distillation(cfg)
    assert setup.device.type == torch.device(DEVICE).type
    summary = run_distillation(setup, log=lambda _m: None)
    assert summary["precision"] == Precision(precision, DEVICE).name
    assert math.isfinite(summary["final_acc"])
    history = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 2


def test_folded_teacher_is_exact_on_the_device():
    from rgal.losses import BNStatistics
    from rgal.models.fold import fold_batchnorms

    torch.manual_seed(0)
    model = _trained_looking(create_model("wrn16_1", 10, 3)).eval().requires_grad_(False)
    model = model.to(DEVICE)
    x = torch.randn(8, 3, 32, 32, device=DEVICE)
    folded, folds = fold_batchnorms(model, x)
    assert torch.allclose(folded(x), model(x), atol=1e-3, rtol=1e-3)
    plain, fast = BNStatistics(model), BNStatistics(folded, folds=folds)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(xa)
    a = plain.loss()
    a.backward()
    folded(xb)
    b = fast.loss()
    b.backward()
    assert float(b) == pytest.approx(float(a), rel=1e-3)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5, rtol=1e-2)


def test_channels_last_and_fused_kernels_agree_with_the_defaults_on_the_device(tmp_path,
                                                                               fake_fmnist,
                                                                               teacher_file):
    from safetensors.torch import load_file

    from rgal.cli import main

    argv = ["distill", "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
            "--epochs", "1", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
            "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16",
            "--set", "grid_every=0", "--no-progress", "--device", DEVICE, "--seed", "1"]
    variants = {"a": ["--channels-last", "false"], "b": ["--channels-last", "true"],
                "c": ["--channels-last", "false", "--optimizer-impl", "fused"]}
    for name, extra in variants.items():
        assert main(argv + ["--out", str(tmp_path / name), *extra]) == 0
    a, b, c = (load_file(tmp_path / d / "student.safetensors") for d in "abc")
    for other in (b, c):
        assert all(torch.allclose(a[k].float(), other[k].float(), atol=1e-3) for k in a)


def test_quantize_and_incremental_run_on_the_device(tmp_path, fake_fmnist):
    from rgal.cli import main
    from rgal.models.weights import save_weights

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(create_model("tinycnn", 10, 1), weights)
    common = ["--data-root", str(fake_fmnist), "--device", DEVICE, "--no-progress",
              "--set", "nz=8", "--set", "ngf=8", "--batch-size", "8"]
    assert main(["quantize", "--method", "gdfq+rgal", "--epochs", "2", "--iters", "2",
                 "--model", "tinycnn", "--weights", str(weights), *common,
                 "--out", str(tmp_path / "q")]) == 0
    assert main(["incremental", "--method", "abd+rgal", "--tasks", "2", "--epochs", "0.5",
                 "--inv-steps", "2", "--replay-size", "16", *common,
                 "--out", str(tmp_path / "i")]) == 0
    for run in ("q", "i"):
        assert (tmp_path / run / "report.html").is_file(), run
