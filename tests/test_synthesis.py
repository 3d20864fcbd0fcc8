"""Generator, pool, augmentation, feature access and one RGAL epoch on tiny models."""

from __future__ import annotations

import torch
from torch import nn

from rgal.data.augment import random_crop
from rgal.data.datasets import DatasetInfo
from rgal.data.pool import ImagePool
from rgal.methods import create_method
from rgal.models import create_model
from rgal.models.features import FeatureExtractor, find_batchnorms, freeze, paired_stages
from rgal.models.generator import Generator
from rgal.train.student import StudentPhase

INFO = DatasetInfo("tiny", 10, 1, 28, (0.5,), (0.5,), 2, True)
TINY_GEN = {"nz": 16, "ngf": 8}


def test_generator_output_follows_dataset_shape():
    for size, ch in ((28, 1), (32, 3)):
        g = Generator(nz=16, ngf=8, img_size=size, channels=ch)
        x = g(torch.randn(4, 16))
        assert x.shape == (4, ch, size, size)
        assert x.min() >= 0 and x.max() <= 1


def test_generator_reinit_draws_fresh_weights():
    g = Generator(nz=16, ngf=8, img_size=28, channels=1)
    before = [p.clone() for p in g.parameters()]
    g.reinit()
    changed = [not torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True)]
    assert any(changed)
    bn_w = g.conv_blocks[0].weight
    assert abs(bn_w.mean().item() - 1.0) < 0.02 and bn_w.std().item() < 0.05


def test_pool_grows_quantises_and_samples_distinct_images():
    pool = ImagePool(1, 4)
    for k in range(5):
        pool.add(torch.full((3, 1, 4, 4), k / 10), torch.full((3,), k))
    assert len(pool) == 15 and pool.images.dtype == torch.uint8
    assert pool.images[3, 0, 0, 0].item() == round(0.1 * 255)
    x, y = pool.sample(10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 4, 4) and x.dtype == torch.float32
    # images of label k all carry value k/10 (after 8-bit rounding): labels stay aligned
    assert torch.allclose(x[:, 0, 0, 0], torch.round(y.float() / 10 * 255) / 255)
    x, _ = pool.sample(100)
    assert x.shape[0] == 15
    state = pool.state_dict()
    other = ImagePool(1, 4)
    other.load_state_dict(state)
    assert torch.equal(other.images, pool.images) and torch.equal(other.labels, pool.labels)


def test_random_crop_is_a_per_sample_shift_and_differentiable():
    x = torch.rand(6, 2, 8, 8, requires_grad=True)
    y = random_crop(x, 2)
    assert y.shape == x.shape
    for i in range(6):  # every output is some shift of its input
        xp = nn.functional.pad(x[i].detach(), (2, 2, 2, 2))
        assert any(torch.equal(y[i].detach(), xp[:, r:r + 8, c:c + 8])
                   for r in range(5) for c in range(5))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


class UserNet(nn.Module):
    """A user's own teacher: no stage_names, no classifier_name."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_feature_access_on_a_user_module_and_on_zoo_models():
    net = UserNet()
    ext = FeatureExtractor(net)
    f = ext(torch.randn(3, 1, 28, 28))
    assert f.logits.shape == (3, 10) and f.feature.shape == (3, 8) and f.stages == []
    assert torch.allclose(net.head(f.feature), f.logits)
    assert len(find_batchnorms(net)) == 1
    ext = FeatureExtractor(net, stage_names=("body.2",))
    assert ext(torch.randn(3, 1, 28, 28)).stages[0].shape == (3, 8, 28, 28)
    zoo = create_model("resnet20", 10, 3)
    f = FeatureExtractor(zoo)(torch.randn(2, 3, 32, 32))
    assert [s.shape[1] for s in f.stages] == [16, 32, 64] and f.feature.shape == (2, 64)


def _tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    teacher = freeze(create_model("tinycnn", 10, 1))
    for m in find_batchnorms(teacher):  # non-trivial running statistics
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    student = create_model("tinycnn", 10, 1)
    return teacher, student


def test_rgal_synthesis_phase_keeps_models_untouched():
    teacher, student = _tiny_setup()
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    for direction in ("paper", "code"):
        syn = create_method("rgal", teacher, student, INFO, synthesis_batch_size=24, g_steps=3,
                            relation_direction=direction, progress=False, **TINY_GEN)
        res = syn.synthesize()
        assert res.images.shape == (24, 1, 28, 28) and res.labels.shape == (24,)
        assert 0 <= res.images.min() and res.images.max() <= 1
        for k in ("loss_bn", "loss_oh", "loss_adv", "loss_rel_syn", "loss_syn"):
            assert k in res.losses and torch.isfinite(torch.tensor(res.losses[k])), k
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    for k, v in student.state_dict().items():
        assert torch.equal(v, s_before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.parameters())
    assert student.training and not teacher.training
    assert all(p.requires_grad for p in student.parameters())
    syn.train()
    assert not teacher.training  # the teacher stays in eval mode whatever train() says


def test_student_phase_changes_student_only():
    teacher, student = _tiny_setup(1)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pairs = paired_stages(3, 3, 1)
    assert pairs == ([1, 2], [1, 2])
    method = create_method("rgal", teacher, student, INFO, tau=4.0, cd_start_stage=1,
                           **TINY_GEN)
    assert (method.s_stages, method.t_stages) == pairs
    opt = torch.optim.SGD(list(student.parameters()) + method.student_parameters(), lr=0.1)
    phase = StudentPhase(method, method.teacher, method.student, method.augment, opt,
                         batch_size=8)
    pool = ImagePool(1, 28)
    pool.add(torch.rand(16, 1, 28, 28), torch.arange(16) % 10)
    w0 = student.fc.weight.clone()
    terms = phase.step(pool)
    assert set(terms) >= {"loss_kd", "loss_cd", "loss_rel_stu", "loss_student"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert not torch.equal(w0, student.fc.weight)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    assert paired_stages(2, 3, 0) == ([0, 1], [1, 2])
