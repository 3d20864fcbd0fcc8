"""Boundary targets: a share of each synthesis batch aimed between a class and its neighbour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rgal.cli import main
from rgal.config import ConfigError
from rgal.data.datasets import DatasetInfo
from rgal.losses.boundary import boundary_targets, classifier_weight, partner_probabilities
from rgal.methods import create_method
from rgal.models import create_model

INFO = DatasetInfo("tiny", 10, 1, 28, (0.3,), (0.4,), 2, True)
SMALL = {"nz": 8, "ngf": 8, "synthesis_batch_size": 16, "batch_size": 4, "progress": False,
         "g_steps": 1}


def test_partners_are_the_classes_whose_classifier_rows_point_the_same_way():
    torch.manual_seed(0)
    w = torch.randn(5, 16)
    w[1] = w[0] + 0.05 * torch.randn(16)  # 0 and 1 nearly parallel
    w[3] = -w[2]  # 2 and 3 opposite
    p = partner_probabilities(w)
    assert torch.allclose(p.sum(1), torch.ones(5))
    assert torch.equal(p.diagonal(), torch.zeros(5))
    assert p[0, 1] > 0.99 and p[1, 0] > 0.99
    assert p[2, 3] < 1e-6 and p[3, 2] < 1e-6
    assert torch.allclose(p, partner_probabilities(3 * w))  # the rows' scale does not matter


def test_shipped_teacher_pairs_shirt_with_t_shirt_and_sneaker_with_boot():
    from rgal.models.build import resolve_weights_path
    from rgal.models.weights import read_state_dict

    path = resolve_weights_path("builtin", "fashion-mnist", "smallcnn")
    weight = read_state_dict(path)["fc.weight"]
    nearest = partner_probabilities(weight).argmax(1).tolist()
    # t-shirt 0, pullover 2, coat 4, shirt 6, sneaker 7, boot 9
    assert nearest[6] == 0 and nearest[0] == 6 and nearest[4] == 2
    assert nearest[7] == 9 and nearest[9] == 7


def test_boundary_targets_keep_the_class_as_the_larger_share():
    torch.manual_seed(0)
    partners = partner_probabilities(torch.randn(10, 32))
    y = torch.randint(0, 10, (4000,))
    assert torch.equal(boundary_targets(y, partners, 0.0), F.one_hot(y, 10).float())
    q = boundary_targets(y, partners, 0.3)
    assert torch.allclose(q.sum(1), torch.ones(len(y)))
    assert torch.equal(q.argmax(1), y)
    own = q.gather(1, y[:, None]).flatten()
    soft = own < 1
    assert 0.27 < soft.float().mean() < 0.33  # the share asked for
    assert float(own.min()) > 0.5  # the partner takes less than half
    assert bool(((q > 0).sum(1)[soft] == 2).all())  # exactly one partner, never the class
    # partners drawn as partner_probabilities says: the most likely partner of each class
    # is the one drawn most often
    q = boundary_targets(y, partners, 1.0)
    for c in range(10):
        rows = q[y == c].clone()
        rows[:, c] = 0
        assert int((rows > 0).sum(0).argmax()) == int(partners[c].argmax())


def test_a_teacher_without_a_classifier_of_k_outputs_is_refused():
    with pytest.raises(ConfigError, match="nn.Linear with 10 outputs"):
        classifier_weight(nn.Sequential(nn.Conv2d(1, 10, 3), nn.Flatten()), 10)
    assert classifier_weight(create_model("smallcnn", 10, 1), 10).shape[0] == 10


def test_the_one_hot_term_uses_the_soft_targets_only_when_asked():
    torch.manual_seed(0)
    teacher, student = create_model("smallcnn", 10, 1).eval(), create_model("tinycnn", 10, 1)
    plain = create_method("rgal", teacher, student, INFO, **SMALL)
    y = torch.arange(10).repeat(2)
    plain.draw_targets(y)
    assert plain.one_hot_target(y) is y
    method = create_method("rgal", teacher, student, INFO, boundary=1.0, **SMALL)
    method.draw_targets(y)
    q = method.one_hot_target(y)
    assert q.shape == (20, 10) and torch.equal(q.argmax(1), y) and bool((q.max(1).values < 1).all())
    assert method.one_hot_target(y.clone()) is not q  # another phase's labels: not these targets
    result = method.synthesize()  # a whole phase runs and keeps the integer labels
    assert result.labels.dtype == torch.long and result.labels.shape == (16,)
    only_oh = create_method("rgal", teacher, student, INFO, boundary=1.0, w_bn=0.0, w_adv=0.0,
                            w_rel_syn=0.0, **SMALL)
    only_oh.draw_targets(y)
    q = only_oh.one_hot_target(y)
    logits = torch.randn(20, 10)
    feats = type("T", (), {"logits": logits})()
    terms = only_oh.synthesis_terms(None, None, y, feats, None)
    assert set(terms) == {"loss_oh"}
    assert float(terms["loss_oh"]) == pytest.approx(float(F.cross_entropy(logits, q)))
    assert float(terms["loss_oh"]) != pytest.approx(float(F.cross_entropy(logits, y)))


def test_boundary_with_an_online_method_exits_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "dafl", "--boundary", "0.5", "--out", str(out)]) == 2
    assert "boundary" in capsys.readouterr().err
    assert not out.exists()
