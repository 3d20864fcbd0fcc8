"""benchmarks/per_class.py: each class's accuracy of two bench entries, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

from rgal.models import create_model
from rgal.models.weights import save_weights
from rgal.train.bench import entry_folder


@pytest.fixture(scope="module")
def script():
    return load_benchmark("per_class")


def fake_entry(bench: Path, entry: str, seeds, root: Path, init: int, holdout: int = 0) -> None:
    """Finished-run folders as `rgal bench` leaves them: a summary and the last student."""
    for seed in seeds:
        run = entry_folder(bench, entry) / f"seed{seed}"
        run.mkdir(parents=True)
        torch.manual_seed(init + seed)
        save_weights(create_model("tinycnn", 10, 1), run / "student.safetensors")
        cfg = {"dataset": "fashion-mnist", "data_root": str(root), "student": "tinycnn",
               "holdout": holdout}
        (run / "summary.json").write_text(json.dumps({"config": cfg}))


def test_an_entry_against_itself_differs_by_zero_and_others_pair_by_seed(
        tmp_path, fake_fmnist, script, capsys):
    fake_entry(tmp_path / "a", "rgal:mix=cutmix", [0, 1, 2], fake_fmnist, 0)
    fake_entry(tmp_path / "b", "kd-real", [1, 2, 3], fake_fmnist, 100)
    assert script.run([str(tmp_path / "a"), "rgal:mix=cutmix", str(tmp_path / "a"),
                       "rgal:mix=cutmix"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "class |" not in ln]
    assert len(rows) == 11  # ten classes and their mean
    assert all("+0.0 ± 0.0" in r or "+0.00 ± 0.00" in r for r in rows)
    accs, _ = script.class_accuracies(tmp_path / "a", "rgal:mix=cutmix")
    assert sorted(accs) == [0, 1, 2] and all(len(v) == 10 for v in accs.values())
    assert script.run([str(tmp_path / "a"), "rgal:mix=cutmix", str(tmp_path / "b"),
                       "kd-real"]) == 0
    assert "seeds [1, 2]" in capsys.readouterr().out  # only the seeds both have


def test_missing_entry_or_no_shared_seed_is_a_one_line_error(tmp_path, fake_fmnist, script,
                                                             capsys):
    fake_entry(tmp_path / "a", "rgal", [0], fake_fmnist, 0)
    fake_entry(tmp_path / "a", "nayer", [5], fake_fmnist, 0)
    assert script.run([str(tmp_path / "a"), "rgal", str(tmp_path / "a"), "cmi"]) == 2
    assert "no finished runs of 'cmi'" in capsys.readouterr().err
    assert script.run([str(tmp_path / "a"), "rgal", str(tmp_path / "a"), "nayer"]) == 2
    assert "share no seed" in capsys.readouterr().err


def test_held_out_runs_are_scored_on_their_held_out_images(tmp_path, fake_fmnist, script,
                                                           capsys):
    from rgal.data.augment import Normalize
    from rgal.data.datasets import describe_dataset
    from rgal.data.splits import evaluation_split
    from rgal.models.weights import load_weights

    fake_entry(tmp_path / "a", "rgal", [0, 1], fake_fmnist, 0, holdout=40)
    fake_entry(tmp_path / "a", "nayer", [0, 1], fake_fmnist, 7, holdout=40)
    fake_entry(tmp_path / "b", "kd-real", [0, 1], fake_fmnist, 100)
    accs, _ = script.class_accuracies(tmp_path / "a", "rgal")
    info = describe_dataset("fashion-mnist", str(fake_fmnist))
    held = evaluation_split("fashion-mnist", str(fake_fmnist), holdout=40, download=False)[1]
    model = load_weights(create_model("tinycnn", 10, 1),
                         entry_folder(tmp_path / "a", "rgal") / "seed0" / "student.safetensors")
    with torch.no_grad():
        pred = model.eval()(Normalize(info.mean, info.std)(held.images.float() / 255)).argmax(1)
    for c in range(10):
        mine = held.labels == c
        if mine.any():
            expect = 100.0 * float((pred[mine] == c).float().mean())
            assert accs[0][c] == pytest.approx(expect, abs=1e-6)
    assert script.run([str(tmp_path / "a"), "rgal", str(tmp_path / "a"), "nayer"]) == 0
    assert "held-out set (the last 40 training images)" in capsys.readouterr().out
    assert script.run([str(tmp_path / "a"), "rgal", str(tmp_path / "b"), "kd-real"]) == 2
    assert "scored on different images" in capsys.readouterr().err
