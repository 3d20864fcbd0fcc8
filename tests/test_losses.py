"""Properties of the loss terms and the negative samplers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rgal.config import ConfigError
from rgal.losses import (
    BNStatistics,
    adversarial_loss,
    kd_loss,
    negative_probabilities,
    per_sample_kl,
    relation_loss,
    sample_triplets,
)
from rgal.losses.relation import FOCAL_BAND, log_inverse_density


def _clustered(n_per_class=6, classes=4, dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centers = torch.randn(classes, dim, generator=g)
    emb = centers[labels] + 0.6 * torch.randn(len(labels), dim, generator=g)
    return emb, labels


def test_sampled_negatives_have_other_label():
    emb, labels = _clustered()
    for sampler in ("focal", "distance", "random"):
        a, p, n = sample_triplets(emb, labels, sampler, torch.Generator().manual_seed(1))
        assert torch.all(labels[a] == labels[p])
        assert torch.all(a != p)
        assert torch.all(labels[a] != labels[n])


def test_focal_negatives_lie_in_band_when_one_exists():
    emb, labels = _clustered(dim=10, seed=3)
    e = F.normalize(emb, dim=1)
    dist = torch.cdist(e, e)
    probs = negative_probabilities(emb, labels, "focal")
    lo, hi = FOCAL_BAND
    in_band = (labels[:, None] != labels[None, :]) & (dist > lo) & (dist < hi)
    rows = in_band.any(1)
    assert rows.any(), "fixture should give some rows with in-band negatives"
    # all probability mass of such rows is on in-band negatives
    assert torch.allclose(probs[rows].sum(1), torch.ones(int(rows.sum())))
    assert torch.all(probs[rows][~in_band[rows]] == 0)
    a, _, n = sample_triplets(emb, labels, "focal", torch.Generator().manual_seed(0))
    has_band = rows[a]
    assert torch.all(in_band[a[has_band], n[has_band]])


def test_uniform_fallback_without_eligible_negative():
    # two tight, antipodal clusters: every negative is at distance ~2, outside the focal band
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    emb = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 3) + 1e-3 * torch.randn(6, 2)
    probs = negative_probabilities(emb, labels, "focal")
    neg = labels[:, None] != labels[None, :]
    assert torch.allclose(probs[neg], torch.full((18,), 1 / 3), atol=1e-6)
    assert torch.all(probs[~neg] == 0)


def test_no_positive_pair_gives_zero_loss_on_device():
    emb = torch.randn(5, 8, requires_grad=True)
    labels = torch.arange(5)
    loss = relation_loss(emb, labels, emb.detach(), "focal")
    assert loss.item() == 0.0 and loss.device == emb.device
    # all one label: no negative at all
    loss = relation_loss(emb, torch.zeros(5, dtype=torch.long), emb.detach(), "distance")
    assert loss.item() == 0.0


def test_weights_do_not_collapse_to_uniform_in_100_dims():
    # 100 classes, 2 samples each; each positive is a near-duplicate of its anchor (the case
    # where a row maximum taken over positives makes every negative weight underflow).
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(100).repeat(2)
    common = torch.randn(1, 100, generator=g)
    strength = torch.rand(100, 1, generator=g) * 2.5
    base = strength * common + 0.35 * torch.randn(100, 100, generator=g)
    emb = torch.cat([base, base + 1e-3 * torch.randn(100, 100, generator=g)])
    e = F.normalize(emb, dim=1)
    d = torch.cdist(e, e)
    neg = labels[:, None] != labels[None, :]
    for sampler, eligible in (("focal", neg & (d > 0.5) & (d < 1.0)),
                              ("distance", neg & (d > 0.55) & (d < 1.4))):
        probs = negative_probabilities(emb, labels, sampler)
        assert torch.all(torch.isfinite(probs))
        assert torch.allclose(probs.sum(1), torch.ones(200), atol=1e-5)
        checked = 0
        for row in range(200):
            cols = eligible[row].nonzero().squeeze(1)
            if len(cols) < 3:
                continue
            near, far = cols[d[row, cols].argmin()], cols[d[row, cols].argmax()]
            if d[row, far] - d[row, near] < 0.1:
                continue
            # the closer eligible negative is strictly more likely: not uniform
            assert probs[row, near] > 10 * probs[row, far], (sampler, row)
            checked += 1
        assert checked > 50, sampler


def test_inverse_density_weights_favour_closer_negatives():
    d = torch.tensor([0.6, 0.8, 0.95])
    w = log_inverse_density(d, 10)
    assert w[0] > w[1] > w[2]


def _one_step_distances(inverse: bool):
    torch.manual_seed(0)
    emb0, labels = _clustered(n_per_class=5, classes=3, dim=16, seed=1)
    emb = emb0.clone().requires_grad_(True)
    sampling = emb0.clone()
    gen = torch.Generator().manual_seed(5)
    a, p, n = sample_triplets(sampling, labels, "random", torch.Generator().manual_seed(5))

    def dists(x):
        e = F.normalize(x, dim=1)
        return (e[a] - e[p]).norm(dim=1).mean(), (e[a] - e[n]).norm(dim=1).mean()

    before = dists(emb0)
    loss = relation_loss(emb, labels, sampling, "random", margin=5.0, inverse=inverse,
                         generator=gen)
    loss.backward()
    with torch.no_grad():
        after = dists(emb - 0.5 * emb.grad)
    return before, after


def test_paper_direction_pushes_positives_apart_and_pulls_negatives():
    (ap0, an0), (ap1, an1) = _one_step_distances(inverse=True)
    assert ap1 > ap0 and an1 < an0


def test_ordinary_direction_pulls_positives_and_pushes_negatives():
    (ap0, an0), (ap1, an1) = _one_step_distances(inverse=False)
    assert ap1 < ap0 and an1 > an0


def test_bn_loss_zero_when_batch_matches_running_stats():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(2))
    x = torch.randn(16, 3, 8, 8)
    net(x)
    bn = net[1]
    with torch.no_grad():
        h = net[0](x)
        bn.running_mean.copy_(h.mean((0, 2, 3)))
        bn.running_var.copy_(h.var((0, 2, 3), unbiased=False))
    net.eval()
    stats = BNStatistics(net)
    net(x)
    assert stats.loss().item() < 1e-5
    net(torch.randn(16, 3, 8, 8) * 3 + 1)
    assert stats.loss().item() > 0.5


def test_kd_and_adversarial_terms():
    t = torch.randn(8, 10)
    assert kd_loss(t, t, tau=20).abs().item() < 1e-6
    s = torch.randn(8, 10)
    assert kd_loss(s, t, tau=4).item() > 0
    # where the student disagrees everywhere, the adversarial term is masked to zero
    s_dis = -t
    assert adversarial_loss(s_dis, t).item() == 0.0
    # where it agrees on the class, the term is minus the mean KL over the whole batch
    s_agree = 0.5 * t  # same argmax, flatter distribution
    agree = (s_agree.argmax(1) == t.argmax(1)).float()
    assert agree.all()
    expected = -(per_sample_kl(s_agree, t) * agree).mean()
    assert adversarial_loss(s_agree, t).item() == pytest.approx(expected.item())
    assert adversarial_loss(s_agree, t).item() < -1e-4
    mixed = torch.cat([s_agree[:4], s_dis[4:]])  # half the batch masked out: half the value
    assert adversarial_loss(mixed, t).item() == pytest.approx(
        -(per_sample_kl(s_agree[:4], t[:4])).sum().item() / 8)


def test_sampled_negative_frequencies_follow_the_weights():
    emb, labels = _clustered(n_per_class=4, classes=3, dim=6, seed=2)
    probs = negative_probabilities(emb, labels, "distance")
    counts = torch.zeros_like(probs)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        a, _, n = sample_triplets(emb, labels, "distance", g)
        counts.index_put_((a, n), torch.ones(len(a)), accumulate=True)
    freq = counts / counts.sum(1, keepdim=True)
    assert torch.all(counts[probs == 0] == 0)  # never a zero-weight (same-label) column
    assert (freq - probs).abs().max() < 0.05


def test_relation_loss_matches_a_direct_computation():
    emb, labels = _clustered(n_per_class=3, classes=3, dim=5, seed=4)
    a, p, n = sample_triplets(emb, labels, "random", torch.Generator().manual_seed(9))
    e = F.normalize(emb, dim=1)
    expected = F.relu((e[a] - e[p]).norm(dim=1) - (e[a] - e[n]).norm(dim=1) + 0.2).mean()
    got = relation_loss(emb, labels, emb, "random", generator=torch.Generator().manual_seed(9))
    assert torch.allclose(got, expected, atol=1e-5)


def test_finite_watch_names_the_earliest_non_finite_term_and_step():
    from rgal.losses import FiniteWatch, NonFiniteLoss

    watch = FiniteWatch("synthesis")
    one = torch.tensor(1.0)
    watch.update(0, {"loss_bn": one, "loss_oh": one})
    watch.update(1, {"loss_bn": one, "loss_oh": torch.tensor(float("inf"))})
    watch.update(2, {"loss_bn": torch.tensor(float("nan")), "loss_oh": one})
    with pytest.raises(NonFiniteLoss) as e:
        watch.check()
    assert (e.value.term, e.value.step) == ("loss_oh", 2)
    e.value.epoch = 5
    assert str(e.value) == "loss_oh is not finite (epoch 5, synthesis step 2)"
    watch.update(0, {"loss_bn": one})
    watch.check()  # reset after raising: finite terms pass


def test_synthesis_phase_stops_on_a_non_finite_loss():
    from rgal.data.datasets import DatasetInfo
    from rgal.losses import NonFiniteLoss
    from rgal.methods import create_method
    from rgal.models import create_model

    torch.manual_seed(0)
    teacher, student = create_model("smallcnn", 10, 1), create_model("tinycnn", 10, 1)
    info = DatasetInfo("tiny", 10, 1, 28, (0.5,), (0.5,), 2, False)
    syn = create_method("rgal", teacher, student, info, nz=8, ngf=8, synthesis_batch_size=8,
                        g_steps=3, progress=False)
    syn.cfg.w_bn = float("inf")  # an overflowing weight (the config refuses it up front)
    with pytest.raises(NonFiniteLoss) as e:
        syn.synthesize()
    assert e.value.phase == "synthesis" and e.value.step == 1
    assert e.value.term in ("loss_bn", "loss_syn")


@pytest.mark.parametrize("name,channels", [("smallcnn", 1), ("resnet20", 3), ("wrn16_1", 3)])
def test_folded_batchnorm_gives_the_same_outputs_and_bn_statistics_loss(name, channels):
    """Folding a frozen model's BatchNorms into the convolutions before them changes neither
    its outputs nor the BN-statistics loss, nor the loss's gradient w.r.t. the images."""
    from rgal.losses import BNStatistics
    from rgal.models import create_model
    from rgal.models.features import find_batchnorms
    from rgal.models.fold import fold_batchnorms

    torch.manual_seed(0)
    model = create_model(name, 10, channels).eval().requires_grad_(False)
    for bn in find_batchnorms(model):  # trained-looking statistics and affine maps
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    size = 28 if channels == 1 else 32
    x = torch.randn(6, channels, size, size)
    folded, folds = fold_batchnorms(model, x)
    remaining = len(find_batchnorms(folded))
    assert folds and remaining + len(folds) == len(find_batchnorms(model))
    if name != "wrn16_1":  # conv -> BN everywhere; WRN's pre-activation BNs stay
        assert remaining == 0
    assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    plain, fast = BNStatistics(model), BNStatistics(folded, folds=folds)
    xa = x.clone().requires_grad_(True)
    model(xa)
    a = plain.loss()
    a.backward()
    xb = x.clone().requires_grad_(True)
    folded(xb)
    b = fast.loss()
    b.backward()
    assert float(b) == pytest.approx(float(a), rel=1e-4)
    # the same gradient: in float64 the two computations agree to rounding
    model, x = model.double(), x.double()
    folded, folds = fold_batchnorms(model, x)
    plain, fast = BNStatistics(model), BNStatistics(folded, folds=folds)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(xa)
    plain.loss().backward()
    folded(xb)
    fast.loss().backward()
    assert float((xb.grad - xa.grad).abs().max() / xa.grad.abs().max()) < 1e-6


def test_focal_band_bounds_the_negatives_and_is_checked():
    from rgal.methods.rgal import RelationTerms, parse_band

    torch.manual_seed(3)
    emb = F.normalize(torch.randn(40, 6), dim=1)
    labels = torch.arange(40) % 4
    dist = torch.cdist(emb, emb)
    for band in ((0.5, 1.0), (1.0, 1.6)):
        probs = negative_probabilities(emb, labels, "focal", band)
        eligible = (labels[:, None] != labels[None, :]) & (dist > band[0]) & (dist < band[1])
        rows = eligible.any(1)
        assert rows.any()
        assert (probs[rows][~eligible[rows]] == 0).all()  # only inside the band
        assert torch.allclose(probs[rows].sum(1), torch.ones(int(rows.sum())))
    assert parse_band("0.2:1.5") == (0.2, 1.5)
    for bad in ("1.0:0.5", "0:3", "x", "0.5"):
        with pytest.raises(ConfigError, match="focal_band"):
            parse_band(bad)
    assert RelationTerms(focal_band="0.3:0.9").band == (0.3, 0.9)


def test_gradient_shares_are_each_terms_fraction_of_the_gradient_norms():
    from rgal.engine.inversion import gradient_shares

    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    terms = {"a": (w * torch.tensor([3.0, 4.0])).sum(), "b": w.sum(), "c": w[0] * 0 + 1.0,
             "off": w.pow(2).sum()}
    shares = gradient_shares(terms, {"a": 1.0, "b": 2.0, "c": 1.0}, [w])
    # |grad a| = 5, |grad 2b| = 2*sqrt(2), |grad c| = 0, "off" has no weight
    total = 5 + 2 * 2**0.5
    assert set(shares) == {"share_a", "share_b", "share_c"}
    assert float(shares["share_a"]) == pytest.approx(5 / total)
    assert float(shares["share_b"]) == pytest.approx(2 * 2**0.5 / total)
    assert float(shares["share_c"]) == 0.0
    assert w.grad is None  # measuring leaves no gradient behind
