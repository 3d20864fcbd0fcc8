"""Tests for the data layer: IDX, CIFAR pickles, image folders, downloads (all offline)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgal.data import cifar as cifar_mod
from rgal.data import datasets as ds_mod
from rgal.data.base import DatasetError, UnknownDatasetError
from rgal.data.cifar import read_cifar_classes, restricted_load
from rgal.data.datasets import (
    DATASETS,
    describe_dataset,
    load_dataset,
    load_idx_split,
)
from rgal.data.download import download_and_extract, download_url, file_md5, safe_extract
from rgal.data.idx import IDXError, read_idx, write_idx
from rgal.data.imagefolder import load_image_folder

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- helpers


class _Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 `str` opcodes, like the original CIFAR files (cPickle, proto 2)."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_pickle(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the real files) spells the module numpy.core.multiarray.
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _batch(images: np.ndarray, labels: list[int], label_key: bytes) -> dict:
    return {b"batch_label": b"test batch", label_key: labels,
            b"data": images.reshape(len(images), 3072),
            b"filenames": [b"img_%d.png" % i for i in range(len(images))]}


def _make_cifar10(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = _images(5 * per_batch, 0)
    train_labels = [i % 10 for i in range(5 * per_batch)]
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        _py2_pickle(_batch(train[sl], train_labels[sl], b"labels"), folder / f"data_batch_{b + 1}")
    test = _images(per_batch, 1)
    test_labels = [9 - i % 10 for i in range(per_batch)]
    _py2_pickle(_batch(test, test_labels, b"labels"), folder / "test_batch")
    names = [n.encode() for n in cifar_mod.CIFAR10_CLASSES]
    _py2_pickle({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
                folder / "batches.meta")
    return {"train": train, "train_labels": np.array(train_labels),
            "test": test, "test_labels": np.array(test_labels)}


def _make_cifar100(root: Path, n: int = 6) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, seed in (("train", 2), ("test", 3)):
        images = _images(n, seed)
        fine = [(7 * i + seed) % 100 for i in range(n)]
        batch = _batch(images, fine, b"fine_labels")
        batch[b"coarse_labels"] = [f % 20 for f in fine]
        _py2_pickle(batch, folder / split)
        out[split], out[f"{split}_labels"] = images, np.array(fine)
    _py2_pickle({b"fine_label_names": [n.encode() for n in cifar_mod.CIFAR100_CLASSES],
                 b"coarse_label_names": [b"c%d" % i for i in range(20)]}, folder / "meta")
    return out


def _make_idx(root: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(root / name, arr)
    return arrays


def _tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Evil:
    """Pickles into a call of os.system: must never run when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- registry


def test_registry_entries() -> None:
    c10, c100 = DATASETS["cifar10"], DATASETS["cifar100"]
    assert (c10.num_classes, c10.channels, c10.image_size, c10.crop_padding, c10.hflip) == \
        (10, 3, 32, 4, True)
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2023, 0.1994, 0.2010)
    assert c100.num_classes == 100 and len(c100.classes) == 100 == len(set(c100.classes))
    assert c100.mean == (0.5071, 0.4865, 0.4409) and c100.std == (0.2673, 0.2564, 0.2762)
    assert c10.classes[0] == "airplane" and c100.classes[-1] == "worm"
    assert {"fashion-mnist", "mnist"} <= set(DATASETS)
    assert describe_dataset("cifar10") is c10


def test_unknown_name_is_dataset_error_and_key_error() -> None:
    for exc in (DatasetError, KeyError):
        with pytest.raises(exc, match="unknown dataset"):
            load_dataset("no-such-set", download=False)
    with pytest.raises(UnknownDatasetError):
        ds_mod.dataset_info("imagefolder")


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path: Path) -> None:
    ref = _make_cifar10(tmp_path)
    train = load_dataset("cifar10", tmp_path, train=True, download=False)
    test = load_dataset("cifar10", tmp_path, train=False, download=False)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype.is_floating_point is False
    assert str(train.labels.dtype) == "torch.int64" and len(test) == 4
    assert np.array_equal(train.images.numpy(), ref["train"])
    assert np.array_equal(train.labels.numpy(), ref["train_labels"])
    assert np.array_equal(test.images.numpy(), ref["test"])
    assert np.array_equal(test.labels.numpy(), ref["test_labels"])
    # Layout: row = 1024 R values, then G, then B, each row-major over (y, x).
    row = ref["train"][0].reshape(3072)
    assert np.array_equal(train.images[0, 0].numpy(), row[:1024].reshape(32, 32))
    assert int(train.images[0, 1, 2, 5]) == int(row[1024 + 2 * 32 + 5])
    assert int(train.images[0, 2, 31, 0]) == int(row[2048 + 31 * 32])
    folder = tmp_path / "cifar-10-batches-py"
    assert read_cifar_classes(folder, "cifar10") == cifar_mod.CIFAR10_CLASSES
    # The folder itself (or root/<name>/<folder>) is accepted as root too.
    assert len(load_dataset("cifar10", folder, train=False, download=False)) == 4


def test_cifar100_round_trip(tmp_path: Path) -> None:
    ref = _make_cifar100(tmp_path / "cifar100")
    for split, train in (("train", True), ("test", False)):
        data = load_dataset("cifar100", tmp_path, train=train, download=False)
        assert data.images.shape == (6, 3, 32, 32)
        assert np.array_equal(data.images.numpy(), ref[split])
        assert np.array_equal(data.labels.numpy(), ref[f"{split}_labels"])
    classes = read_cifar_classes(tmp_path / "cifar100" / "cifar-100-python", "cifar100")
    assert classes == cifar_mod.CIFAR100_CLASSES


def test_cifar_protocol4_pickle_also_loads(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = _images(3, 5)
    with open(folder / "test", "wb") as f:
        pickle.dump(_batch(images, [1, 2, 3], b"fine_labels"), f, protocol=4)
    data = load_dataset("cifar100", tmp_path, train=False, download=False)
    assert np.array_equal(data.images.numpy(), images) and data.labels.tolist() == [1, 2, 3]


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="data_batch_3") as err:
        load_dataset("cifar10", tmp_path, train=True, download=False)
    assert "\n" not in str(err.value)
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, train=True, download=False)


def test_cifar_bad_shape_and_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    bad = {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}
    _py2_pickle(bad, folder / "test_batch")
    with pytest.raises(DatasetError, match="test_batch.*3072"):
        load_dataset("cifar10", tmp_path, train=False, download=False)
    _py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, folder / "test_batch")
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path, train=False, download=False)
    _py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, folder / "test_batch")
    with pytest.raises(DatasetError, match="outside"):
        load_dataset("cifar10", tmp_path, train=False, download=False)
    _py2_pickle([1, 2, 3], folder / "test_batch")
    with pytest.raises(DatasetError, match="expected a dict"):
        load_dataset("cifar10", tmp_path, train=False, download=False)


def test_cifar_forbidden_global_does_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    payload = {b"data": _Evil(marker), b"labels": [0]}
    _py2_pickle(payload, folder / "test_batch")
    with pytest.raises(DatasetError, match=r"test_batch: forbidden global \w+\.system"):
        load_dataset("cifar10", tmp_path, train=False, download=False)
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=5))
    with pytest.raises(DatasetError, match=r"forbidden global \w+\.system"):
        restricted_load(folder / "test_batch")
    assert not marker.exists()
    pickle.loads(pickle.dumps(payload, protocol=5))  # control: the payload is live unrestricted
    assert marker.exists()


def test_cifar_missing_folder_no_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path / "nope", download=False)
    with pytest.raises(DatasetError, match="cifar-100-python"):
        load_dataset("cifar100", tmp_path, download=False)


def test_cifar_download_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    ref = _make_cifar10(src, per_batch=2)
    folder = src / "cifar-10-batches-py"
    archive = _tar_gz(tmp_path / "cifar-10-python.tar.gz",
                      {f"cifar-10-batches-py/{p.name}": p.read_bytes()
                       for p in sorted(folder.iterdir())})
    layout = dataclasses.replace(cifar_mod.CIFAR_LAYOUTS["cifar10"], url=archive.as_uri(),
                                 md5=file_md5(archive))
    monkeypatch.setitem(cifar_mod.CIFAR_LAYOUTS, "cifar10", layout)
    root = tmp_path / "root"
    data = load_dataset("cifar10", root, train=False, download=True)
    assert np.array_equal(data.images.numpy(), ref["test"])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # archive removed
    monkeypatch.setitem(cifar_mod.CIFAR_LAYOUTS, "cifar10",
                        dataclasses.replace(layout, md5="0" * 32))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("cifar10", tmp_path / "root2", download=True)
    assert list((tmp_path / "root2").iterdir()) == []


# ----------------------------------------------------------------------------- IDX


def test_idx_round_trip(tmp_path: Path) -> None:
    arrays = _make_idx(tmp_path / "mnist")
    train = load_dataset("mnist", tmp_path, train=True, download=False)  # finds root/<name>
    test = load_dataset("mnist", tmp_path / "mnist", train=False, download=False)
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert str(test.labels.dtype) == "torch.int64"


def test_idx_truncated_and_corrupt(tmp_path: Path) -> None:
    _make_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", tmp_path, download=False)
    with pytest.raises(IDXError):
        read_idx(path)
    path.write_bytes(gzip.compress(raw)[:50])  # truncated gzip stream
    with pytest.raises(DatasetError, match="train-images"):
        load_idx_split(tmp_path, train=True)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="train-images"):
        load_dataset("mnist", tmp_path, download=False)


def test_idx_labels_out_of_range(tmp_path: Path) -> None:
    _make_idx(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
    with pytest.raises(DatasetError, match="outside"):
        load_dataset("mnist", tmp_path, train=False, download=False)


def test_idx_missing_no_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found under .*nope"):
        load_dataset("mnist", tmp_path / "nope", download=False)


def test_idx_download_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _make_idx(tmp_path / "mirror")
    md5s = {name: file_md5(tmp_path / "mirror" / name) for name in arrays}
    monkeypatch.setitem(ds_mod.IDX_SOURCES, "mnist", ((tmp_path / "mirror").as_uri() + "/", md5s))
    data = load_dataset("mnist", tmp_path / "dl", train=False, download=True)
    assert np.array_equal(data.labels.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setitem(ds_mod.IDX_SOURCES, "mnist", ((tmp_path / "gone").as_uri() + "/", md5s))
    with pytest.raises(DatasetError, match="could not download .*place the files in .*dl2"):
        load_dataset("mnist", tmp_path / "dl2", train=True, download=True)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="no system Fashion-MNIST copy")
def test_real_fashion_mnist() -> None:
    train = load_dataset("fashion-mnist", download=False)
    test = load_dataset("fashion-mnist", train=False, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert sorted(test.labels.unique().tolist()) == list(range(10))


# ----------------------------------------------------------------------------- downloads


def test_download_md5_ok_and_mismatch(tmp_path: Path) -> None:
    payload = os.urandom(3000)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    out = tmp_path / "out"
    assert download_url(src.as_uri(), out / "a.bin", _md5(payload), progress=False).read_bytes() \
        == payload
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        download_url(src.as_uri(), out / "b.bin", "f" * 32, progress=False)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["a.bin"]  # no temp file, no b.bin


def test_download_network_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="could not download .*place the files in"):
        download_url((tmp_path / "missing").as_uri(), tmp_path / "d" / "x", progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_safe_extract_rejects_traversal(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    for bad in ("../evil.txt", "ok/../../evil.txt", "/tmp/evil_rgal_abs.txt"):
        archive = _tar_gz(tmp_path / "bad.tar.gz", {"fine.txt": b"x", bad: b"evil"})
        with pytest.raises(DatasetError, match="unsafe member"):
            safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not dest.joinpath("fine.txt").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="refusing link"):
        safe_extract(link, dest)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DatasetError, match="junk.tar.gz"):
        safe_extract(tmp_path / "junk.tar.gz", dest)


def test_download_and_extract(tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path / "a.tar.gz", {"pkg/x.txt": b"hello"})
    root = download_and_extract(archive.as_uri(), tmp_path / "r", file_md5(archive),
                                progress=False)
    assert (root / "pkg" / "x.txt").read_bytes() == b"hello"
    assert not (root / "a.tar.gz").exists()


# ----------------------------------------------------------------------------- image folder


def _make_image_folder(root: Path) -> None:
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, count in (("train", 2), ("val", 1)):
        for cls, colour in colours.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40 + 8 * i, 20), colour).save(root / split / cls / f"{i}.png")
    (root / "train" / "dog" / "notes.txt").write_text("ignored")


def test_image_folder_loads(tmp_path: Path) -> None:
    _make_image_folder(tmp_path)
    train = load_dataset("imagefolder", tmp_path, train=True, image_size=16)
    assert train.images.shape == (4, 3, 16, 16) and train.labels.tolist() == [0, 0, 1, 1]
    assert train.images[0, 0].eq(255).all() and train.images[0, 1:].eq(0).all()
    assert train.images[3, 2].eq(255).all() and train.images[3, :2].eq(0).all()
    val = load_dataset("imagefolder", tmp_path, train=False, image_size=16)
    assert val.images.shape == (2, 3, 16, 16) and val.labels.tolist() == [0, 1]
    gray = load_image_folder(tmp_path, train=False, image_size=8, grayscale=True)
    assert gray.images.shape == (2, 1, 8, 8)
    info = describe_dataset("imagefolder", tmp_path)
    assert (info.num_classes, info.channels, info.image_size, info.classes) == \
        (2, 3, 32, ("cat", "dog"))
    assert info.mean == (0.485, 0.456, 0.406)


def test_image_folder_test_split_and_errors(tmp_path: Path) -> None:
    _make_image_folder(tmp_path)
    (tmp_path / "val").rename(tmp_path / "test")
    assert len(load_dataset("imagefolder", tmp_path, train=False, image_size=8)) == 2
    bad = tmp_path / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_dataset("imagefolder", tmp_path, train=True, image_size=8)
    with pytest.raises(DatasetError, match="empty: not an image folder"):
        describe_dataset("imagefolder", tmp_path / "empty")
    bad.unlink()
    for img in (tmp_path / "test").rglob("*.png"):
        img.unlink()
    with pytest.raises(DatasetError, match="test: no images"):
        load_dataset("imagefolder", tmp_path, train=False)
    (tmp_path / "test" / "cow").mkdir()
    with pytest.raises(DatasetError, match="cow: class not present"):
        load_dataset("imagefolder", tmp_path, train=False)
