"""hard_classes: a share of each synthesis batch's labels drawn towards the classes the student
gets most wrong on earlier synthetic images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rgal.cli import main
from rgal.data.datasets import DatasetInfo
from rgal.methods import create_method
from rgal.models import create_model

INFO = DatasetInfo("tiny", 10, 1, 28, (0.3,), (0.4,), 2, True)
SMALL = {"nz": 8, "ngf": 8, "synthesis_batch_size": 40, "batch_size": 4, "progress": False,
         "g_steps": 1}


def _models():
    torch.manual_seed(0)
    return create_model("smallcnn", 10, 1).eval(), create_model("tinycnn", 10, 1)


def test_off_by_default_the_labels_are_the_uniform_draw_as_before():
    teacher, student = _models()
    method = create_method("rgal", teacher, student, INFO, **SMALL)
    assert method.class_gap is None
    assert "class_gap" not in method.run_state()  # checkpoints as before
    torch.manual_seed(5)
    y = method.phase_labels(40, torch.device("cpu"))
    torch.manual_seed(5)
    assert torch.equal(y, torch.randint(0, 10, (40,)).sort().values)


def test_labels_follow_the_measured_gaps():
    teacher, student = _models()
    method = create_method("rgal", teacher, student, INFO, hard_classes=1.0, **SMALL)
    torch.manual_seed(1)
    y = method.phase_labels(4000, torch.device("cpu"))  # nothing measured yet: uniform
    assert y.bincount(minlength=10).min() > 300
    method.class_gap.zero_()
    method.class_gap[3] = 1.0
    assert bool((method.phase_labels(200, torch.device("cpu")) == 3).all())
    half = create_method("rgal", teacher, student, INFO, hard_classes=0.5, **SMALL)
    half.class_gap.fill_(1.0)
    half.class_gap[3] = 11.0  # g_3 / sum g = 11 / 20: p_3 = 0.05 + 0.5 * 0.55 = 0.325
    share = float((half.phase_labels(20000, torch.device("cpu")) == 3).float().mean())
    assert share == pytest.approx(0.325, abs=0.015)


def test_observing_a_phase_averages_the_students_kl_per_class():
    teacher, student = _models()
    method = create_method("rgal", teacher, student, INFO, hard_classes=0.5, **SMALL)
    x = torch.rand(12, 1, 28, 28)
    labels = torch.tensor([0, 0, 0, 2, 2, 2, 2, 5, 5, 5, 5, 5])
    student.train()
    method.observe_classes(x, labels)
    assert student.training  # the student's mode is given back
    v = method.augment(x, augment=False)
    with torch.no_grad():
        log_t = F.log_softmax(teacher(v), 1)
        log_s = F.log_softmax(student.eval()(v), 1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    first = torch.zeros(10)
    for c in (0, 2, 5):
        first[c] = kl[labels == c].mean()
    assert torch.allclose(method.class_gap, first, atol=1e-5)
    assert bool((first[[0, 2, 5]] > 0).all())
    method.observe_classes(x[:3], labels[:3])  # class 0 again: a moving average
    expected = first.clone()
    expected[0] = 0.8 * first[0] + 0.2 * kl[:3].mean()
    assert torch.allclose(method.class_gap, expected, atol=1e-5)
    assert torch.equal(method.run_state()["class_gap"], method.class_gap)


@pytest.mark.parametrize("name", ["rgal", "nayer"])
def test_a_phase_measures_the_classes_it_made(name):
    teacher, student = _models()
    method = create_method(name, teacher, student, INFO, hard_classes=0.5, **SMALL)
    result = method.synthesize()
    made = result.labels.unique()
    assert bool((method.class_gap[made] > 0).all())
    others = torch.ones(10, dtype=torch.bool)
    others[made] = False
    assert bool((method.class_gap[others] == 0).all())


def test_hard_classes_with_an_online_method_exits_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "dafl", "--hard-classes", "0.5", "--out", str(out)]) == 2
    assert "hard_classes" in capsys.readouterr().err
    assert not out.exists()
