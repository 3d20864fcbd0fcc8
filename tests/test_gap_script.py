"""benchmarks/gap.py: where a data-free student's error lies (features, statistics or head)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark
from torch.nn import functional as F

from rgal.data.augment import Normalize
from rgal.data.datasets import ImageTensors
from rgal.models import create_model
from rgal.models.weights import save_weights
from rgal.train.bench import entry_folder


@pytest.fixture(scope="module")
def script():
    return load_benchmark("gap")


def fake_run(bench: Path, entry: str, seed: int, root: Path, teacher: Path, *,
             student: str = "tinycnn", weights: Path | None = None, holdout: int = 0,
             pool: int = 0) -> Path:
    """A finished run as `rgal bench` leaves it: summary, last student, and (with `pool` > 0)
    a checkpoint holding a synthetic pool of that many images."""
    run = entry_folder(bench, entry) / f"seed{seed}"
    run.mkdir(parents=True)
    torch.manual_seed(seed)
    if weights is None:
        save_weights(create_model(student, 10, 1), run / "student.safetensors")
    else:
        (run / "student.safetensors").write_bytes(weights.read_bytes())
    cfg = {"dataset": "fashion-mnist", "data_root": str(root), "student": student,
           "teacher": "smallcnn", "teacher_weights": str(teacher), "holdout": holdout}
    (run / "summary.json").write_text(json.dumps({"config": cfg}))
    if pool:
        g = torch.Generator().manual_seed(seed)
        torch.save({"pool": {"images": torch.randint(0, 256, (pool, 1, 28, 28), generator=g,
                                                     dtype=torch.uint8),
                             "labels": torch.randint(0, 10, (pool,), generator=g)}},
                   run / "checkpoint.pt")
    return run


def test_head_refit_lowers_its_loss_and_bias_refit_keeps_the_weights(script):
    torch.manual_seed(0)
    feats, labels = torch.randn(300, 8), torch.randint(0, 4, (300,))
    feats[torch.arange(300), labels] += 2.0  # separable enough for a linear head to learn
    head = torch.nn.Linear(8, 4).requires_grad_(False)
    before = F.cross_entropy(head(feats), labels).item()
    weight = head.weight.clone()
    script.refit_head(head, feats, labels, bias_only=True)
    assert torch.equal(head.weight, weight)
    after_bias = F.cross_entropy(head(feats), labels).item()
    assert after_bias < before
    script.refit_head(head, feats, labels)
    assert not torch.equal(head.weight, weight)
    assert F.cross_entropy(head(feats), labels).item() < after_bias
    assert not any(p.requires_grad for p in head.parameters())


def test_bn_statistics_are_the_average_over_the_real_images(script):
    torch.manual_seed(0)
    model = create_model("tinycnn", 10, 1).eval()
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    data = ImageTensors(images, torch.zeros(64, dtype=torch.long))
    norm = Normalize((0.5,), (0.25,))
    script.reestimate_bn(model, data, norm, batch_size=64)
    assert not model.training
    with torch.no_grad():
        first = model.stage1[0][0](norm(images.float() / 255))  # the first conv's output
    bn = model.stage1[0][1]
    assert torch.allclose(bn.running_mean, first.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, first.var((0, 2, 3), unbiased=True), rtol=1e-4)


def test_ridge_map_recovers_an_affine_map(script):
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    a, b = torch.randn(5, 3), torch.randn(3)
    f = script.ridge_map(x, x @ a + b, lam=1e-6)
    z = torch.randn(10, 5)
    assert torch.allclose(f(z), z @ a + b, atol=1e-3)


def test_nearest_index_finds_each_rows_own_direction(script):
    torch.manual_seed(0)
    bank = torch.randn(50, 6)
    order = torch.randperm(50)[:20]
    x = bank[order] * torch.rand(20, 1).add(0.5)  # the same directions, other lengths
    assert torch.equal(script.nearest_index(x, bank, batch_size=7), order)


def test_a_student_that_is_the_teacher_keeps_its_answers_when_transplanted(
        tmp_path, fake_fmnist, teacher_file, script):
    run = fake_run(tmp_path, "rgal", 0, fake_fmnist, teacher_file, student="smallcnn",
                   weights=teacher_file, pool=400)
    cfg = json.loads((run / "summary.json").read_text())["config"]
    train, evaluation = script.fit_images(cfg)
    out = script.run_variants(run, cfg, train, evaluation, real=64)
    assert set(out) == set(script.VARIANTS) | {script.NEAREST}
    assert out["transplant"] == out["as trained"]
    assert all(len(v) == 10 for v in out.values())


def test_oracle_images_never_include_the_held_out_ones(fake_fmnist, script):
    cfg = {"dataset": "fashion-mnist", "data_root": str(fake_fmnist), "holdout": 40}
    train, held = script.fit_images(cfg)
    assert len(train) == 128 - 40 and len(held) == 40
    assert not any(torch.equal(h, t) for h in held.images for t in train.images)


def test_the_report_pairs_by_seed_and_skips_transplant_without_a_pool(
        tmp_path, fake_fmnist, teacher_file, script, capsys):
    for seed in (0, 1):
        fake_run(tmp_path, "rgal", seed, fake_fmnist, teacher_file, holdout=40)
    assert script.run([str(tmp_path), "rgal", "--real", "64"]) == 0
    out = capsys.readouterr().out
    assert "held-out set (the last 40 training images)" in out and "seeds [0, 1]" in out
    rows = [ln.split(" | ")[0] for ln in out.splitlines() if ln.startswith("| ")]
    assert rows[1:5] == ["| as trained", "| bn", "| bias", "| head"]
    assert "| transplant" not in rows and script.NEAREST not in out


def test_bad_input_is_a_one_line_error(tmp_path, fake_fmnist, teacher_file, script, capsys):
    fake_run(tmp_path, "rgal", 0, fake_fmnist, teacher_file)
    assert script.run([str(tmp_path), "cmi"]) == 2
    assert "no finished runs of 'cmi'" in capsys.readouterr().err
    assert script.run([str(tmp_path), "rgal", "--real", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gap: error:") and err.count("\n") == 1
