"""The default runs work on a fresh machine: no network, no system dataset copy, empty cache.

Only Fashion-MNIST's test split ships inside the package; anything needing the training split
still searches, then downloads, and says so in one line when it cannot.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import write_fake_idx_dataset

from rgal.cli import main
from rgal.data import datasets as ds_mod
from rgal.data import shipped
from rgal.data.datasets import DatasetError, find_idx_folder, load_dataset
from rgal.models.build import builtin_teacher_record

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "1", "--g-steps", "1", "--kd-steps", "1", "--batch-size", "16",
        "--synthesis-batch-size", "16", "--set", "diversity_samples=32", "--no-progress",
        "--device", "cpu"]


@pytest.fixture()
def offline(tmp_path, monkeypatch) -> list[str]:
    """No system copy, an empty HOME (so an empty cache), and no network at all.

    Returns the list of URLs something tried to open.
    """
    tried: list[str] = []

    def no_network(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network disabled by the test")

    def no_socket(self, *args, **kwargs):
        raise OSError("network disabled by the test")

    import matplotlib

    # matplotlib keeps its font cache under HOME: keep using the real one (rebuilding is slow)
    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())
    monkeypatch.setitem(ds_mod.SYSTEM_DATASET_DIRS, "fashion-mnist", tmp_path / "no-system-copy")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    assert not Path.home().joinpath(".cache", "rgal").exists()
    return tried


def test_default_distill_runs_offline_on_the_shipped_test_split(tmp_path, offline, capsys):
    """`make demo`'s command with a tiny budget: teacher and test images from the package."""
    out = tmp_path / "demo"
    assert main(["distill", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the shipped teacher scores on the shipped split exactly what its record says
    record = builtin_teacher_record("fashion-mnist", "smallcnn")
    assert summary["teacher_acc"] == pytest.approx(record["test_acc"], abs=1e-6)
    assert offline == []  # nothing tried to download
    assert not (tmp_path / "home" / ".cache" / "rgal").exists()  # nor wrote into the cache
    assert "student test acc (last)" in capsys.readouterr().out


def test_training_split_does_not_ship_and_its_download_fails_in_one_line(tmp_path, offline,
                                                                         capsys):
    with pytest.raises(DatasetError, match="could not download .*train-images"):
        load_dataset("fashion-mnist", train=True)
    assert offline and "train-images" in offline[0]
    # `rgal incremental` trains on real images: a one-line error, nothing written
    out = tmp_path / "incr"
    assert main(["incremental", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rgal: error: could not download")
    assert not out.exists()


def test_search_order_data_root_system_cache_then_shipped(tmp_path, offline):
    shipped_dir = shipped.SHIPPED_DIR / "fashion-mnist"
    assert find_idx_folder("fashion-mnist", None, train=False) == shipped_dir
    assert find_idx_folder("fashion-mnist", None, train=True) is None
    cache = write_fake_idx_dataset(tmp_path / "home" / ".cache" / "rgal" / "fashion-mnist")
    assert find_idx_folder("fashion-mnist", None, train=False) == cache
    system = write_fake_idx_dataset(tmp_path / "no-system-copy")
    assert find_idx_folder("fashion-mnist", None, train=False) == system
    root = write_fake_idx_dataset(tmp_path / "root")
    assert find_idx_folder("fashion-mnist", root, train=False) == root
    # an explicit --data-root is the only place searched: never the shipped copy
    assert find_idx_folder("fashion-mnist", tmp_path / "empty", train=False) is None


def test_shipped_files_licence_and_checksums():
    folder = shipped.SHIPPED_DIR / "fashion-mnist"
    sums = shipped.read_sums(folder / shipped.SUMS_FILE)
    assert set(sums) == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for name, digest in sums.items():
        assert shipped.file_sha256(folder / name) == digest
    licence = (folder / "LICENSE").read_text()
    assert "MIT License" in licence and "Zalando SE" in licence
    assert not list(folder.glob("train-*"))  # the training split never ships
    test = load_dataset("fashion-mnist", folder, train=False, download=False)
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    # ... and the files are package data, so a wheel carries them
    assert '"data/shipped/*/*"' in (ROOT / "pyproject.toml").read_text()


def test_damaged_shipped_copy_is_refused_in_one_line(tmp_path, offline, monkeypatch, capsys):
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    labels = copy / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # a valid file with one wrong label
    labels.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", copy)
    assert main(["eval", "--model", "smallcnn", "--weights", "builtin",
                 "--dataset", "fashion-mnist", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shipped with rgal is damaged" in err[0]
