"""Recipe options of the student and synthesis steps: mixing pool images, the first BN layer's
weight, and resuming runs written before an option existed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rgal.config import ConfigError, DistillConfig, legacy_values
from rgal.data.augment import Augment, mix_images, random_crop, random_hflip
from rgal.engine import check_resumable
from rgal.engine.checkpoint import CheckpointError, config_differences
from rgal.losses import BNStatistics
from rgal.methods import distill_config
from rgal.train.student import StudentPhase


def _constant_images(n: int = 64, size: int = 8) -> torch.Tensor:
    """Image i is the constant (i + 1) / (n + 1): a pixel tells which image it came from."""
    values = (torch.arange(n, dtype=torch.float32) + 1) / (n + 1)
    return values.view(n, 1, 1, 1).expand(n, 1, size, size).clone()


def test_mixup_blends_each_image_with_one_partner_and_keeps_the_larger_share():
    torch.manual_seed(0)
    x = _constant_images()
    out = mix_images(x, "mixup", alpha=1.0)
    values = x[:, 0, 0, 0]
    assert out.shape == x.shape and torch.all((out >= 0) & (out <= 1))
    for i in range(len(x)):
        c = out[i]
        assert torch.allclose(c, c.flatten()[0].expand_as(c))  # one blend over the whole image
        # c = l * v_i + (1 - l) * v_j with l >= 1/2: the partner's share is in [0, 1/2]
        share = (c.flatten()[0] - values[i]) / (values - values[i])
        ok = (share >= -1e-5) & (share <= 0.5 + 1e-5)
        ok[i] = bool(torch.isclose(c.flatten()[0], values[i]))
        assert ok.any(), f"image {i} is not a blend keeping its larger share"
    assert not torch.allclose(out, x)


def test_cutmix_pastes_one_box_from_one_partner_over_at_most_half_the_image():
    torch.manual_seed(1)
    x = _constant_images(size=16)
    out = mix_images(x, "cutmix", alpha=1.0)
    values = x[:, 0, 0, 0]
    pasted_any = False
    for i in range(len(x)):
        own = torch.isclose(out[i, 0], values[i])
        assert own.float().mean() >= 0.5
        others = out[i, 0][~own]
        if others.numel():
            pasted_any = True
            assert torch.all(others == others[0])  # a single partner
            assert torch.isclose(values, others[0]).any()
            rows, cols = (~own).nonzero(as_tuple=True)  # the pasted region is a rectangle
            assert (~own).sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert pasted_any


def test_no_mix_returns_the_batch_untouched_and_draws_no_random_numbers():
    x = _constant_images()
    state = torch.get_rng_state()
    assert mix_images(x, "none") is x
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="unknown mix"):
        mix_images(x, "blend")


class _Images:
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def sample(self, n: int):
        return self.x[:n].clone(), torch.arange(n)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_both_views_of_a_pair_show_the_same_mixture(kind):
    torch.manual_seed(2)
    x = _constant_images(n=16)
    method = SimpleNamespace(pair_sampling=True, augment_student=False)
    augment = Augment((0.0,), (1.0,))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    phase = StudentPhase(method, None, None, augment, opt, batch_size=16, mix=kind)
    views, labels = phase.batch(_Images(x))
    assert views.shape[0] == 32 and torch.equal(labels[:16], labels[16:])
    assert torch.equal(views[:16], views[16:])
    assert not torch.equal(views[:16], x)


def _ramp(n: int = 8, size: int = 16) -> torch.Tensor:
    """Each image is the same left-to-right ramp 0..1, so a crop shows as a narrower range."""
    row = torch.linspace(0, 1, size)
    return row.view(1, 1, 1, size).expand(n, 1, size, size).clone()


def test_student_crop_zooms_in_instead_of_padding_and_leaves_synthesis_views_alone():
    augment = Augment((0.0,), (1.0,), padding=4, hflip=False)
    method = SimpleNamespace(pair_sampling=False, augment_student=True)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    x = _ramp(n=64)
    torch.manual_seed(4)
    padded, _ = StudentPhase(method, None, None, augment, opt, batch_size=32).batch(_Images(x))
    torch.manual_seed(4)
    zoomed, _ = StudentPhase(method, None, None, augment, opt, batch_size=32,
                             crop_scale=0.25).batch(_Images(x))
    # the padded crop shifts in zeros (black borders) and keeps the ramp's step; a resized
    # crop of at least a quarter of the area stays inside the image: no zeros added, and
    # each view's visible range of the ramp is between 1/2 (area 1/4 at aspect 1) and 1
    assert (padded == 0).float().mean() > (x == 0).float().mean()
    assert (zoomed == 0).float().mean() <= (x == 0).float().mean()
    span = zoomed.amax((1, 2, 3)) - zoomed.amin((1, 2, 3))
    assert torch.all(span > 0.25) and torch.all(span <= 1 + 1e-6)
    assert (span < 0.9).any()  # some views zoom in
    assert zoomed.shape == padded.shape == (64, 1, 16, 16)
    # the same Augment called without crop_scale (as the synthesis views are) pads as before
    torch.manual_seed(4)
    assert torch.equal(augment(x), padded)


def test_student_crop_off_draws_the_same_views_as_before():
    augment = Augment((0.5,), (0.25,))
    x = torch.rand(16, 1, 12, 12)
    torch.manual_seed(5)  # the views before the option existed: padded crop, flip, normalise
    before = (random_hflip(random_crop(x, 4)) - 0.5) / 0.25
    torch.manual_seed(5)
    assert torch.equal(augment(x, crop_scale=0.0), before)


def test_student_padding_sets_the_shift_of_the_student_views_only():
    augment = Augment((0.0,), (1.0,), padding=4, hflip=False)
    method = SimpleNamespace(pair_sampling=False, augment_student=True)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    x = torch.ones(64, 1, 12, 12)

    def views(padding):
        torch.manual_seed(6)
        phase = StudentPhase(method, None, None, augment, opt, batch_size=32, padding=padding)
        return phase.batch(_Images(x))[0]

    def widest_border(v):  # the largest shift in any view: zero rows at the top or bottom
        rows = (v == 0).all(3).squeeze(1)  # (n, h) rows shifted in
        return int(rows.sum(1).max())

    assert torch.equal(views(0), x)  # no shift at all
    assert widest_border(views(1)) == 1
    assert widest_border(views(2)) == 2
    assert widest_border(views(None)) == 4  # the augmentation's own padding, 4
    torch.manual_seed(6)
    assert torch.equal(augment(x), views(None))  # the synthesis views keep it
    assert distill_config({"student_padding": 2}).student_padding == 2
    with pytest.raises(ConfigError):
        distill_config({"student_padding": -2})


class _Backwards(nn.Module):
    """Registers `late` before `early` but runs `early` first."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.BatchNorm2d(3)
        self.early = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.late(self.early(x) * 2 + 1)


def test_first_bn_weight_multiplies_the_layer_the_images_reach_first():
    torch.manual_seed(3)
    net = _Backwards().eval()
    x = torch.randn(8, 3, 4, 4) * 2
    plain, heavy = BNStatistics(net), BNStatistics(net, first_weight=10.0)
    net(x)
    total, first_heavy = plain.loss(), heavy.loss()
    early = (torch.linalg.vector_norm(x.mean((0, 2, 3)) - net.early.running_mean)
             + torch.linalg.vector_norm(x.var((0, 2, 3), unbiased=False)
                                        - net.early.running_var))
    assert first_heavy.item() == pytest.approx(total.item() + 9 * early.item(), rel=1e-5)
    net(x)  # the next pass weighs the same layer again
    assert heavy.loss().item() == pytest.approx(first_heavy.item(), rel=1e-6)


def test_a_run_written_before_an_option_existed_resumes_as_what_it_ran():
    legacy = legacy_values(DistillConfig)
    assert legacy == {"w_bn_first": 1.0, "mix": "none", "mix_alpha": 1.0, "boundary": 0.0,
                      "hard_classes": 0.0, "student_crop": 0.0, "generator_life": 0,
                      "reset_part": "all", "pool_window": 0, "real_subset": 0,
                      "student_padding": -1, "student_ema": 0.0, "mix_partner": "random"}
    current = distill_config({"method": "rgal", "mix": "none"}).to_dict()
    saved = {k: v for k, v in current.items() if k not in legacy}
    assert config_differences(saved, current) == ["boundary", "generator_life", "hard_classes",
                                                  "mix", "mix_alpha", "mix_partner",
                                                  "pool_window",
                                                  "real_subset", "reset_part", "student_crop",
                                                  "student_ema", "student_padding",
                                                  "w_bn_first"]
    assert config_differences(saved, current, legacy) == []
    assert check_resumable(saved, current, False, Path("run"), legacy) == []
    # an old run meant "no mixing", whatever today's default: asking for cutmix is a change
    changed = {**current, "mix": "cutmix"}
    assert config_differences(saved, changed, legacy) == ["mix"]
    with pytest.raises(CheckpointError, match="mix"):
        check_resumable(saved, changed, False, Path("run"), legacy)
    # today's default for rgal mixes (research.md section 32): an old run is not taken for one
    today = distill_config({"method": "rgal"}).to_dict()
    assert config_differences(saved, today, legacy) == ["mix"]
