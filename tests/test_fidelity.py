"""Behaviours that make each method the one its authors' code runs (benchmarks/FIDELITY.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rgal.data.datasets import DatasetInfo
from rgal.methods import create_method
from rgal.methods.deepinv import jensen_shannon
from rgal.methods.rgal import RelationTerms
from rgal.models import create_model
from rgal.models.features import FeatureExtractor, find_batchnorms

INFO = DatasetInfo("tiny", 10, 1, 28, (0.3,), (0.4,), 2, True)
SMALL = {"nz": 8, "ngf": 8, "synthesis_batch_size": 8, "batch_size": 4, "progress": False}


def _models(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("smallcnn", 10, 1).eval(), create_model("tinycnn", 10, 1)


def test_deepinversion_optimises_free_clipped_pixels_and_keeps_the_last_iterate():
    t, s = _models()
    di = create_method("deepinv", t, s, INFO, g_steps=3, lr_g=0.5, **SMALL)
    opt = di.optimizer(di.generator, torch.zeros(1))
    assert opt.param_groups[0]["betas"] == (0.5, 0.99) and di.cfg.lr_g == 0.5
    result = di.synthesize()
    u = di.generator.u.detach()
    lo, hi = -0.3 / 0.4, 0.7 / 0.4
    assert float(u.min()) >= lo - 1e-6 and float(u.max()) <= hi + 1e-6
    assert bool((u <= lo + 1e-6).any() or (u >= hi - 1e-6).any())  # lr 0.5 reaches a bound
    assert torch.allclose(result.images, (u * 0.4 + 0.3).clamp(0, 1))  # the final pixels
    assert "loss_adv" in result.losses and result.losses["loss_adv"] <= 0


def test_jensen_shannon_is_symmetric_clamped_and_zero_on_agreement():
    a, b = torch.randn(6, 10), torch.randn(6, 10)
    assert float(jensen_shannon(a, a, 3.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(jensen_shannon(a, b, 3.0)) == pytest.approx(float(jensen_shannon(b, a, 3.0)))
    p, q = F.softmax(a / 3, 1), F.softmax(b / 3, 1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    by_hand = 0.5 * (m * (m.log() - p.clamp(0.01, 0.99).log())).sum(1).mean() + \
        0.5 * (m * (m.log() - q.clamp(0.01, 0.99).log())).sum(1).mean()
    assert float(jensen_shannon(a, b, 3.0)) == pytest.approx(float(by_hand), rel=1e-5)


def test_cmi_contrasts_bn_input_means_against_a_sampled_bank():
    t, s = _models()
    cmi = create_method("cmi", t, s, INFO, g_steps=2, bank_size=32, negatives=5, **SMALL)
    width = sum(m.num_features for m in find_batchnorms(t))
    assert cmi.means.width() == width and cmi.head.net[0].in_features == width
    assert cmi.bank.features.shape == (32, 2 * width) and cmi.cfg.w_adv == 0.5
    head_before = [p.clone() for p in cmi.head.parameters()]
    cmi.synthesize()
    assert len(cmi.bank) == 8  # the kept batch's [local, global] features
    steps = cmi.head_optimizer.state[next(iter(cmi.head.parameters()))]["step"]
    assert int(steps) == 2 and any(not torch.equal(a, b) for a, b in
                                   zip(head_before, cmi.head.parameters(), strict=True))
    result = cmi.synthesize()  # the head's Adam keeps its state across phases
    assert int(cmi.head_optimizer.state[next(iter(cmi.head.parameters()))]["step"]) == 4
    assert len(cmi.bank) == 16 and math.isfinite(result.losses["loss_cr"])
    assert cmi.bank.sample(5).shape == (5, 2 * width)


def test_zskt_student_learns_from_its_pseudo_batch_after_the_generator_update():
    t, s = _models()
    zskt = create_method("zskt", t, s, INFO, **SMALL)
    assert zskt.generator.normalized_output and zskt.cfg.online.student_batch == "after"
    running = [b.clone() for b in s.buffers()]
    zskt.generator_step()
    # the student ran in train mode in the generator step: its BN statistics moved
    assert any(not torch.equal(a, b) for a, b in zip(running, s.buffers(), strict=True))
    first, _ = zskt.sample(8)
    again, _ = zskt.sample(8)
    assert torch.equal(first, again)  # the same pseudo-batch for the next student steps
    fresh, _ = zskt.sample(8, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(first, fresh)  # pictures draw their own images


def test_dafl_student_learns_from_the_generator_steps_own_images():
    t, s = _models()
    dafl = create_method("dafl", t, s, INFO, **SMALL)
    seen = {}
    step = dafl.engine.step

    def spy(produce, *a, **kw):
        out = step(produce, *a, **kw)
        seen["x"] = out.x.detach()
        return out

    dafl.engine.step = spy
    terms = dafl.generator_step()
    x, _ = dafl.sample(8)
    assert torch.allclose(x, seen["x"] * 0.4 + 0.3)  # the step's images, mapped to [0, 1]
    assert dafl.cfg.student_optimizer == "adam" and "loss_ie" in terms
    # DAFL's information entropy in log10: the nats form divided by ln 10
    assert dafl.cfg.dafl.w_ie == 5.0


def test_dfad_and_dfq_generators_follow_their_code():
    t, s = _models()
    dfad = create_method("dfad", t, s, INFO, **SMALL)
    assert dfad.generator.output == "tanh_bn" and dfad.cfg.lr == 0.01
    assert not dfad.augment_student and dfad.cfg.online.adv_student_mode == "train"
    dfq = create_method("dfq", t, s, INFO, **SMALL)
    assert dfq.generator.first_channels == 4 * 8 and dfq.steps_per_generator_step == 10
    dfq.generator.train()
    dfq.sample(4)
    assert dfq.generator.training  # sampled in eval mode, then back to train


def test_rgal_relation_and_cd_layers_follow_the_reference():
    t, s = _models()
    rgal = create_method("rgal", t, s, INFO, **SMALL)
    assert rgal.cfg.rgal.cd_start_stage == 0
    assert (rgal.s_stages, rgal.t_stages) == ([0, 1, 2], [0, 1, 2])  # every block pair
    torch.manual_seed(0)
    resnet = create_model("resnet18", 10, 3)
    feats = FeatureExtractor(resnet)(torch.randn(4, 3, 32, 32))
    chosen = RelationTerms(syn_feature="stages", stages="2:4").embedding(feats)
    assert [m.shape[1] for m in chosen] == [256, 512]  # layer3 and layer4
    wrn = create_model("wrn16_1", 10, 3)
    feats = FeatureExtractor(wrn)(torch.randn(4, 3, 32, 32))
    assert [m.shape[1] for m in RelationTerms(syn_feature="stages").embedding(feats)] == [64]


def test_nayer_loops_noisy_layers_and_generator_life(tmp_path):
    from rgal.config import ConfigError
    from rgal.methods.nayer import balanced_labels, load_class_embeddings

    t, s = _models()
    nayer = create_method("nayer", t, s, INFO, g_steps=2, g_life=3, **SMALL)
    gen = nayer.generator
    e = gen.embeddings
    assert torch.allclose(e @ e.t(), torch.eye(10), atol=1e-5)  # random orthonormal, per class
    assert len(gen.noisy) == 1 and not hasattr(gen, "z")  # ceil(8 / 10) chunks, no latent
    assert balanced_labels(23, 10, torch.device("cpu"))[:20].tolist() == list(range(10)) * 2
    body = [p.clone() for p in gen.body.parameters()]
    result = nayer.synthesize()  # epoch 1: a new generator, two loops
    assert result.images.shape[0] == 2 * 8 and nayer.cfg.nayer.g_loops == 2
    noisy = gen.noisy[0].weight.clone()
    trained = [p.clone() for p in gen.body.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(body, trained, strict=True))
    nayer.start_epoch(2)
    nayer.synthesize()  # the body persists; the noisy layer is redrawn
    assert not torch.equal(noisy, gen.noisy[0].weight)
    assert float(gen.noisy[0].weight.std()) > 0.5  # N(0, 1), not the trained layer
    path = tmp_path / "emb.pt"
    torch.save(torch.randn(10, 7), path)
    assert load_class_embeddings(path, 10).shape == (10, 7)
    with pytest.raises(ConfigError, match="one"):
        load_class_embeddings(path, 5)
    with pytest.raises(ConfigError, match="rgal\\[clip\\]|could not load"):
        create_method("nayer", t, s, INFO, embeddings="clip", **SMALL)
