"""The Python API on a user's own modules: distill, quantize, synthesize; out=None writes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import rgal
from rgal.config import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def _net(width: int, classes: int = 10, channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))


TINY = {"epochs": 2, "g_steps": 2, "kd_steps": 3, "batch_size": 8, "synthesis_batch_size": 16,
        "nz": 16, "ngf": 8, "device": "cpu", "progress": False, "diversity_samples": 16}


def _data(n: int = 60):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_readme_example_runs_and_writes_no_file(tmp_path, monkeypatch):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has a Python API example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, rgal.DistillResult) and result.out is None
    assert len(result.history) == result.summary["epochs"]
    assert result.final_acc == result.history[-1]["test_acc"]
    assert list(tmp_path.iterdir()) == []  # out=None: nothing written anywhere


def test_distill_on_user_modules_trains_the_student_and_names_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    teacher, student = _net(16), _net(8)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = rgal.distill(teacher, student, data=_data(), **TINY)
    assert result.student is student
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items()
               if v.is_floating_point())
    assert all(torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.best_acc == pytest.approx(max(r["test_acc"] for r in result.history), abs=1e-3)
    assert result.summary["config"]["teacher"] == "Sequential"
    assert list(tmp_path.iterdir()) == []


def test_distill_to_a_folder_writes_the_run_and_resumes(tmp_path):
    torch.manual_seed(0)
    teacher = _net(16)
    first = rgal.distill(teacher, _net(8), data=_data(), out=tmp_path / "run", **TINY)
    for name in ("metrics.jsonl", "summary.json", "student.safetensors", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    with pytest.raises(ConfigError, match="already holds a run"):
        rgal.distill(teacher, _net(8), data=_data(), out=tmp_path / "run", **TINY)
    again = rgal.distill(teacher, _net(8), data=_data(), out=tmp_path / "run", resume=True,
                         **TINY)
    assert [r["test_acc"] for r in again.history] == [r["test_acc"] for r in first.history]
    assert all(torch.equal(a, b) for a, b in zip(first.student.state_dict().values(),
                                                 again.student.state_dict().values(),
                                                 strict=True))


def test_an_image_spec_runs_without_evaluation():
    spec = rgal.ImageSpec(channels=1, size=28, mean=(0.5,), std=(0.25,))
    result = rgal.distill(_net(16), _net(8), data=spec, **{**TINY, "epochs": 1})
    assert result.final_acc is None and result.best_acc is None
    assert "test_acc" not in result.history[0] and "loss_kd" in result.history[0]


def test_synthesize_gives_images_and_the_teachers_labels(tmp_path):
    torch.manual_seed(0)
    teacher = _net(16).eval()
    spec = rgal.ImageSpec(channels=1, size=28, mean=(0.5,), std=(0.25,), classes=tuple("abcdefghij"))
    images, labels = rgal.synthesize(teacher, 20, data=spec, out=tmp_path / "calib",
                                     **{k: v for k, v in TINY.items() if k != "kd_steps"})
    assert images.shape == (20, 1, 28, 28) and 0 <= float(images.min())
    assert float(images.max()) <= 1 and labels.shape == (20,)
    with torch.no_grad():
        expected = teacher((images - 0.5) / 0.25).argmax(1)
    assert torch.equal(labels, expected)
    rows = (tmp_path / "calib" / "labels.csv").read_text().splitlines()
    assert len(rows) == 21 and rows[0] == "file,label,class"
    first = rows[1].split(",")
    assert (tmp_path / "calib" / first[0]).is_file() and first[0].startswith(first[2] + "/")
    with pytest.raises(ConfigError, match="inversion method"):
        rgal.synthesize(teacher, 4, data=spec, method="dfad")


def test_quantize_a_user_module_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = _net(16)
    result = rgal.quantize(model, data=_data(), method="gdfq", wbits=4, abits=4, epochs=2,
                           iters=2, batch_size=8, nz=8, ngf=8, device="cpu", progress=False)
    from rgal.data.augment import Normalize
    from rgal.data.base import ImageTensors
    from rgal.engine.evaluate import evaluate

    images, labels = _data()
    x = (images * 255).round().to(torch.uint8)
    mean, std = tuple(images.mean((0, 2, 3)).tolist()), tuple(images.std((0, 2, 3)).tolist())
    assert result.quant_acc == pytest.approx(evaluate(
        result.model, ImageTensors(x, labels), Normalize(mean, std)), abs=1e-4)
    assert result.fp_acc == pytest.approx(evaluate(
        model, ImageTensors(x, labels), Normalize(mean, std)), abs=1e-4)
    assert [r["phase"] for r in result.history] == ["warm-up", "fine-tune"]
    assert result.model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert list(tmp_path.iterdir()) == []


def test_bad_api_input_is_a_config_error():
    with pytest.raises(ConfigError, match="data must be"):
        rgal.distill(_net(16), _net(8), data=42, **TINY)
    with pytest.raises(ConfigError, match="BatchNorm"):
        no_bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        rgal.distill(no_bn, _net(8), data=_data(), **TINY)
    with pytest.raises(ConfigError, match="unknown config key"):
        rgal.distill(_net(16), _net(8), data=_data(), no_such_key=1)
