"""Mixed precision and memory layout: every mode gives finite losses and trains."""

from __future__ import annotations

import math

import pytest
import torch

from rgal.amp import Precision
from rgal.data.datasets import DatasetInfo
from rgal.data.pool import ImagePool
from rgal.methods import create_method
from rgal.models import create_model
from rgal.train.student import StudentPhase

INFO = DatasetInfo("tiny", 10, 1, 28, (0.5,), (0.5,), 2, False)


def _nets():
    torch.manual_seed(0)
    teacher = create_model("smallcnn", 10, 1).eval().requires_grad_(False)
    student = create_model("tinycnn", 10, 1)
    return teacher, student


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_synthesis_and_student_step_are_finite_in_low_precision(precision):
    t, s = _nets()
    syn = create_method("rgal", t, s, INFO, synthesis_batch_size=16, g_steps=2, nz=8, ngf=8,
                        precision=precision, w_cd=0.0, tau=4.0, progress=False)
    result = syn.synthesize()
    assert result.images.dtype == torch.float32 and torch.isfinite(result.images).all()
    assert all(math.isfinite(v) for v in result.losses.values()) and "loss_bn" in result.losses
    pool = ImagePool(1, 28)
    pool.add(result.images, result.labels)
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    phase = StudentPhase(syn, syn.teacher, syn.student, syn.augment, opt, batch_size=8,
                         precision=Precision(precision))
    before = [p.clone() for p in s.parameters()]
    terms = phase.step(pool)
    assert {"loss_kd", "loss_student"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, s.parameters(), strict=True))
    online = create_method("dfq", t, s, INFO, batch_size=4, lr_g=1e-3, nz=8, ngf=8,
                           w_balance=1.0, precision=precision)
    g_terms = online.generator_step()
    assert all(torch.isfinite(v) for v in g_terms.values())


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch):
    from rgal import amp

    monkeypatch.setattr(amp, "_cpu_flags", lambda: {"avx2", "fma"})
    assert Precision("auto", "cpu").name == "fp32"
    monkeypatch.setattr(amp, "_cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert Precision("auto", "cpu").name == "bf16"
    monkeypatch.setattr(amp, "_cpu_flags", lambda: {"avx512_bf16"})
    assert Precision("auto", "cpu").name == "bf16"
    assert Precision("auto", "mps").name == "fp32" and Precision("bf16", "cpu").name == "bf16"
    assert amp.channels_last_for("auto", "cpu") and not amp.channels_last_for("false", "cpu")
    assert not amp.channels_last_for("auto", "mps") and amp.channels_last_for(True, "mps")


def test_fp16_scales_the_loss_and_fp32_does_not():
    assert Precision("fp16").scaler.is_enabled() and not Precision("fp32").scaler.is_enabled()
    assert not Precision("bf16").scaler.is_enabled()
    with pytest.raises(ValueError, match="precision"):
        Precision("fp8")


def test_channels_last_run_matches_the_default_layout(tmp_path, fake_fmnist, teacher_file):
    from rgal.cli import main

    argv = ["distill", "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
            "--epochs", "1", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
            "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16",
            "--no-progress", "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "a"), "--channels-last", "false"]) == 0
    assert main(argv + ["--out", str(tmp_path / "b"), "--channels-last", "true"]) == 0
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / d / "student.safetensors") for d in "ab")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_optimizer_kernels_match_the_default(impl, tmp_path, fake_fmnist, teacher_file):
    from safetensors.torch import load_file

    from rgal.cli import main

    argv = ["distill", "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
            "--epochs", "1", "--g-steps", "2", "--kd-steps", "2", "--batch-size", "8",
            "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16",
            "--no-progress", "--device", "cpu", "--seed", "3"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert main(argv + ["--out", str(tmp_path / "b"), "--optimizer-impl", impl]) == 0
    a, b = (load_file(tmp_path / d / "student.safetensors") for d in "ab")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_optimizer_options():
    from rgal.amp import optimizer_options

    assert optimizer_options() == {} and optimizer_options("fused") == {"fused": True}
    with pytest.raises(ValueError, match="optimizer implementation"):
        optimizer_options("apex")
