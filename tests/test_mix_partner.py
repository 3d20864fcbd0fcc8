"""Mix partners chosen by class (`mix_partner`): the same class, or a class the teacher confuses
the image with, estimated on the pool."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rgal.cli import main
from rgal.data.augment import Augment, mix_images, mix_partners
from rgal.models import FeatureExtractor
from rgal.train.student import StudentPhase

DISTILL = ["distill", "--epochs", "2", "--g-steps", "2", "--kd-steps", "3", "--batch-size", "8",
           "--synthesis-batch-size", "16", "--set", "ngf=8", "--set", "nz=16", "--no-progress",
           "--device", "cpu", "--set", "diversity_samples=16"]


def test_same_class_partners_are_other_images_of_the_class():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has one image only
    for _ in range(20):
        idx = mix_partners(labels, "same")
        alone = labels == 3
        assert torch.equal(labels[idx][~alone], labels[~alone])
        assert (idx != torch.arange(len(labels))).all()  # never itself, even when alone


def test_confused_partners_follow_the_rows_of_the_confusion_matrix():
    torch.manual_seed(1)
    labels = torch.arange(4).repeat(8)
    confusion = torch.zeros(4, 4)
    confusion[0, 1] = confusion[1, 0] = 1.0  # 0 <-> 1 always
    confusion[2, 1], confusion[2, 3] = 0.25, 0.75
    confusion[3, 2] = 1.0
    partner = labels[mix_partners(labels, "confused", confusion)]
    assert torch.equal(partner[labels == 0], torch.ones(8, dtype=torch.long))
    assert torch.equal(partner[labels == 1], torch.zeros(8, dtype=torch.long))
    assert torch.equal(partner[labels == 3], torch.full((8,), 2))
    draws = torch.cat([labels[mix_partners(labels, "confused", confusion)][labels == 2]
                       for _ in range(200)])
    assert set(draws.tolist()) == {1, 3}
    assert 0.65 < (draws == 3).float().mean().item() < 0.85
    assert mix_partners(labels, "random") is None
    with pytest.raises(ValueError, match="confusion"):
        mix_partners(labels, "confused")
    with pytest.raises(ValueError, match="unknown mix partner"):
        mix_partners(labels, "nearest")


def test_a_given_partner_index_is_the_image_pasted_or_blended_in():
    torch.manual_seed(2)
    x = torch.arange(1, 9, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 6, 6).clone()
    index = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    for kind in ("mixup", "cutmix"):
        out = mix_images(x, kind, partner_index=index)
        for i in range(8):
            own, other = float(x[i, 0, 0, 0]), float(x[index[i], 0, 0, 0])
            if kind == "cutmix":
                assert set(out[i].unique().tolist()) <= {own, other}
            else:  # a blend of the two, own share >= 1/2
                share = (out[i, 0, 0, 0] - other) / (own - other)
                assert 0.5 - 1e-6 <= float(share) <= 1 + 1e-6


class _Scores(nn.Module):
    """A 'teacher' whose logits are fixed per pixel value: value k/255 -> row k of `table`."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.head = nn.Linear(table.shape[0], table.shape[1], bias=False)
        self.head.weight.data.copy_(table.t())

    def forward(self, x):
        k = (x[:, 0, 0, 0] * 255).round().long()
        return self.head(nn.functional.one_hot(k, self.head.in_features).float())


def test_the_confusion_is_each_class_mean_probability_of_the_others():
    table = torch.full((4, 3), -20.0)
    table[0, 0], table[0, 1] = 0.0, 0.0          # a class-0 image: half 0, half 1
    table[1, 0], table[1, 2] = 0.0, float(torch.log(torch.tensor(3.0)))  # 1/4 class 0, 3/4 class 2
    table[2, 2] = 0.0                             # a class-1 image the teacher calls 2
    teacher = FeatureExtractor(_Scores(table))
    phase = StudentPhase(SimpleNamespace(), teacher, None, Augment((0.0,), (1.0,)),
                         torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), batch_size=4,
                         mix_partner="confused")
    images = torch.tensor([0, 1, 2], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    labels = torch.tensor([0, 0, 1])  # class 2 has no image in the pool
    phase.refresh_confusion(images, labels, 3)
    c = phase.confusion
    assert torch.allclose(c.sum(1), torch.ones(3))
    assert torch.allclose(c.diagonal(), torch.zeros(3))
    # class 0: mean probabilities (3/8, 1/4, 3/8) -> 1 : 3/8 off the diagonal
    assert c[0].tolist() == pytest.approx([0.0, 0.4, 0.6], abs=1e-4)
    assert c[1].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-4)
    assert c[2].tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-4)  # none seen: uniform
    random_phase = StudentPhase(SimpleNamespace(), teacher, None, Augment((0.0,), (1.0,)),
                                torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1),
                                batch_size=4)
    random_phase.refresh_confusion(images, labels, 3)
    assert random_phase.confusion is None  # only the confused partner needs it


def test_a_run_with_confused_partners_resumes_mid_epoch_to_the_same_student(
        tmp_path, fake_fmnist, teacher_file, monkeypatch):
    common = [*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights", str(teacher_file),
              "--set", "mix_partner=confused"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*common, "--out", str(straight)]) == 0
    step, calls = StudentPhase.step, []

    def stop_in_epoch_two(phase, source):  # SIGTERM after the first student step of epoch 2
        result = step(phase, source)
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    with monkeypatch.context() as m:
        m.setattr(StudentPhase, "step", stop_in_epoch_two)
        assert main([*common, "--out", str(split)]) == 128 + signal.SIGTERM
    assert main([*common, "--out", str(split), "--resume"]) == 0  # partners from the saved pool
    a, b = load_file(straight / "student.safetensors"), load_file(split / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = tmp_path / "plain"
    assert main([*DISTILL, "--data-root", str(fake_fmnist), "--teacher-weights",
                 str(teacher_file), "--out", str(plain)]) == 0
    c = load_file(plain / "student.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the partners changed the student


@pytest.mark.parametrize("args, word", [
    (["--set", "mix_partner=same", "--set", "mix=none"], "set mix to mixup or cutmix"),
    (["--method", "kd-real", "--set", "mix=cutmix", "--set", "mix_partner=same"],
     "kd-real has none"),
    (["--set", "mix_partner=nearest"], "mix_partner"),
])
def test_partners_without_mixing_or_without_a_pool_are_refused(tmp_path, capsys, args, word):
    out = tmp_path / "run"
    assert main(["distill", *args, "--out", str(out)]) == 2
    assert word in capsys.readouterr().err
    assert not out.exists()
