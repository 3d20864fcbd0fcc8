"""generator_life and reset_part: a persistent generator re-initialised, whole or its first
layer, every N-th synthesis phase."""

from __future__ import annotations

import pytest
import torch

from rgal.cli import main
from rgal.data.datasets import DatasetInfo
from rgal.methods import create_method
from rgal.models import create_model

INFO = DatasetInfo("tiny", 10, 1, 28, (0.3,), (0.4,), 2, True)
SMALL = {"nz": 8, "ngf": 8, "synthesis_batch_size": 20, "batch_size": 4, "progress": False,
         "g_steps": 1}


def _weights(method) -> torch.Tensor:
    return _weights_of(method.generator)


def _rgal(**settings):
    torch.manual_seed(0)
    teacher = create_model("smallcnn", 10, 1).eval()
    student = create_model("tinycnn", 10, 1)
    return create_method("rgal", teacher, student, INFO, **settings, **SMALL)


def _reinitialised_epochs(life: int, epochs: int = 7) -> list[int]:
    """The epochs whose phase starts from fresh weights (a real phase runs in every epoch, so
    the weights a phase keeps always differ from a fresh draw)."""
    method = _rgal(generator_life=life)
    fresh = []
    for epoch in range(1, epochs + 1):
        method.start_epoch(epoch)
        before = _weights(method)
        torch.manual_seed(100 + epoch)
        after = _weights_of(method.phase_generator())
        if not torch.equal(before, after):
            torch.manual_seed(100 + epoch)
            method.generator.reinit()  # the same seed: exactly what a re-initialisation draws
            assert torch.equal(after, _weights(method))
            fresh.append(epoch)
        method.synthesize()  # a real phase moves the weights on
    return fresh


def _weights_of(generator) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in generator.parameters()])


@pytest.mark.parametrize(("life", "expected"), [(0, []), (3, [4, 7]), (2, [3, 5, 7])])
def test_the_generator_is_reinitialised_at_the_start_of_every_nth_phase_after_the_first(
        life, expected):
    assert _reinitialised_epochs(life) == expected


def test_reset_generator_still_resets_every_phase():
    method = _rgal(reset_generator=True)
    for epoch in (1, 2, 3):
        method.start_epoch(epoch)
        with torch.no_grad():
            for p in method.generator.parameters():
                p.add_(1.0)
        torch.manual_seed(epoch)
        method.phase_generator()
        after = _weights(method)
        torch.manual_seed(epoch)
        method.generator.reinit()
        assert torch.equal(after, _weights(method))


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "dafl", "--generator-life", "2"], "generator_life"),
    (["--method", "nayer", "--generator-life", "2"], "nayer decides"),
    (["--method", "fast", "--generator-life", "2"], "fast decides"),
    (["--method", "rgal", "--generator-life", "2", "--reset-generator", "true"],
     "reset_generator"),
])
def test_settings_it_cannot_honour_exit_2_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["distill", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_reset_part_first_renews_the_first_layer_only():
    method = _rgal(reset_generator=True, reset_part="first")
    rest = [n for n, _ in method.generator.named_parameters() if not n.startswith("l1.")]
    assert rest  # the upsampling stages
    for epoch in (1, 2):
        method.start_epoch(epoch)
        with torch.no_grad():
            for p in method.generator.parameters():
                p.add_(1.0)  # what a phase's steps would have moved
        before = {n: p.detach().clone() for n, p in method.generator.named_parameters()}
        torch.manual_seed(epoch)
        method.phase_generator()
        after = dict(method.generator.named_parameters())
        assert all(torch.equal(after[n], before[n]) for n in rest)
        assert not torch.equal(after["l1.weight"], before["l1.weight"])
        torch.manual_seed(epoch)
        fresh = torch.empty_like(before["l1.weight"]).normal_(0.0, 0.02)
        assert torch.equal(after["l1.weight"], fresh)
        assert torch.count_nonzero(after["l1.bias"]) == 0


def test_reset_part_first_with_generator_life_waits_for_the_life():
    method = _rgal(generator_life=2, reset_part="first")
    for epoch, renewed in ((1, False), (2, False), (3, True)):
        method.start_epoch(epoch)
        before = method.generator.l1.weight.detach().clone()
        method.phase_generator()
        assert torch.equal(method.generator.l1.weight, before) != renewed


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "rgal", "--reset-part", "first"], "does nothing without"),
    (["--method", "nayer", "--reset-part", "first"], "nayer decides"),
    (["--method", "deepinv", "--reset-part", "first"], "reset_part"),
    (["--method", "dafl", "--reset-part", "first"], "reset_part"),
])
def test_reset_part_settings_it_cannot_honour_exit_2_before_any_work(tmp_path, capsys, args,
                                                                      message):
    out = tmp_path / "run"
    assert main(["distill", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
