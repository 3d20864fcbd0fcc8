"""`rgal eval --per-class / --confusion`: where a student's errors are."""

from __future__ import annotations

import hashlib

import pytest
import torch
from PIL import Image

from rgal.cli import main
from rgal.data.augment import Normalize
from rgal.data.datasets import FASHION_CLASSES, describe_dataset, load_dataset
from rgal.engine.evaluate import confusion_matrix, per_class_rows, predict
from rgal.models import create_model
from rgal.models.weights import save_weights


def test_confusion_matrix_counts_true_by_predicted():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 1, 0])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.tolist() == [[1, 2, 0], [0, 2, 0], [1, 0, 0]]
    rows = per_class_rows(cm, ("a", "b", "c"))
    assert [r["images"] for r in rows] == [3, 2, 1]
    assert rows[0]["acc"] == pytest.approx(100 / 3)
    assert rows[0]["mistaken_for"] == "b" and rows[0]["mistaken_pct"] == pytest.approx(200 / 3)
    assert rows[1]["mistaken_for"] == "" and rows[1]["acc"] == 100.0  # never wrong
    assert rows[1]["predicted"] == pytest.approx(100 * 4 / 2)  # b predicted 4x for 2 images
    assert rows[2]["predicted"] == 0.0 and rows[2]["mistaken_for"] == "a"
    # names that do not fit fall back to indices
    assert [r["class"] for r in per_class_rows(cm, ("x",))] == ["0", "1", "2"]


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "m.safetensors"
    model = create_model("tinycnn", 10, 1)
    save_weights(model, path)
    return path, model


def test_per_class_table_and_picture_agree_with_the_predictions(
        tmp_path, fake_fmnist, weights, capsys):
    path, model = weights
    png = tmp_path / "cm.png"
    assert main(["eval", "--model", "tinycnn", "--weights", str(path), "--dataset",
                 "fashion-mnist", "--data-root", str(fake_fmnist), "--device", "cpu",
                 "--per-class", "--confusion", str(png)]) == 0
    out = capsys.readouterr().out
    info = describe_dataset("fashion-mnist", str(fake_fmnist))
    test = load_dataset("fashion-mnist", str(fake_fmnist), train=False, download=False)
    preds = predict(model, test, Normalize(info.mean, info.std))
    for c, name in enumerate(FASHION_CLASSES):
        mine = test.labels == c
        acc = 100.0 * (preds[mine] == c).sum().item() / mine.sum().item()
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert f"{acc:5.1f}%" in line, line
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300


def test_confusion_never_overwrites_and_is_refused_before_any_work(
        tmp_path, fake_fmnist, weights, capsys):
    path, _ = weights
    png = tmp_path / "cm.png"
    png.write_bytes(b"mine")
    base = ["eval", "--model", "tinycnn", "--weights", str(path), "--dataset", "fashion-mnist",
            "--data-root", str(fake_fmnist), "--device", "cpu"]
    digest = hashlib.sha256(png.read_bytes()).hexdigest()
    assert main([*base, "--confusion", str(png)]) == 2
    err = capsys.readouterr()
    assert "exists" in err.err and "test accuracy" not in err.out
    assert hashlib.sha256(png.read_bytes()).hexdigest() == digest
    assert main([*base, "--confusion", str(tmp_path / "cm.jpg")]) == 2
    assert main([*base, "--confusion", str(tmp_path / "no" / "cm.png")]) == 2
    assert not (tmp_path / "no").exists()
