"""Reader for the CIFAR-10/100 python-pickle releases, with a restricted unpickler."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DatasetError, ImageTensors
from .download import download_and_extract

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

try:
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _np_scalar

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR release keeps its files and which keys its pickles use."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url: str
    md5: str


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",), "batches.meta", b"labels", b"label_names", 10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a"),
    "cifar100": CifarLayout(
        "cifar100", "cifar-100-python", ("train",), ("test",), "meta", b"fine_labels",
        b"fine_label_names", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85"),
}

# Only containers and numpy's array reconstruction; `__builtin__` and `numpy.core` are the
# Python 2 / numpy 1 spellings found in the original files (find_class sees names unmapped).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    (module, name): obj
    for module in ("builtins", "__builtin__")
    for name, obj in (("dict", dict), ("list", list), ("tuple", tuple), ("set", set),
                      ("frozenset", frozenset))
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _np_reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _np_scalar
_ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
_ALLOWED_GLOBALS[("numpy", "dtype")] = np.dtype


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only builtin containers and numpy array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global, or raise DatasetError for anything else."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(f"forbidden global {module}.{name} in pickle") from None

    def persistent_load(self, pid: Any) -> Any:
        """Reject persistent ids: the CIFAR files have none."""
        raise DatasetError("persistent ids are not allowed in pickle")


def restricted_load(path: str | Path) -> Any:
    """Unpickle a file with `encoding='bytes'` through RestrictedUnpickler; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({' '.join(str(e).split())})") from e
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DatasetError as e:
        raise DatasetError(f"{path}: {e}") from e
    except RecursionError as e:
        raise DatasetError(f"{path}: corrupt pickle (nested too deeply)") from e
    except Exception as e:  # noqa: BLE001 - any parse failure of an untrusted file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DatasetError(f"{path}: corrupt or truncated pickle ({reason})") from e


def _as_str(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def read_cifar_batch(path: str | Path, label_key: bytes = b"labels",
                     num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file into uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    path = Path(path)
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
    if b"data" not in obj or label_key not in obj:
        raise DatasetError(f"{path}: missing key b'data' or {label_key!r}")
    data, labels = obj[b"data"], obj[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{path}: b'data' must be a uint8 array (N, 3072), got {desc}")
    try:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DatasetError(f"{path}: labels are not integers ({e})") from e
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or (num_classes is not None
                                             and labels.max() >= num_classes)):
        raise DatasetError(f"{path}: labels outside [0, {num_classes})")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def read_cifar_classes(folder: str | Path, name: str) -> tuple[str, ...]:
    """Class names from a CIFAR folder's meta file (batches.meta / meta)."""
    layout = _layout(name)
    path = Path(folder) / layout.meta_file
    obj = restricted_load(path)
    names = obj.get(layout.names_key) if isinstance(obj, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != layout.num_classes:
        raise DatasetError(f"{path}: expected {layout.num_classes} entries under "
                           f"{layout.names_key!r}")
    return tuple(_as_str(n) for n in names)


def _layout(name: str) -> CifarLayout:
    if name not in CIFAR_LAYOUTS:
        raise DatasetError(f"not a CIFAR dataset: {name!r}")
    return CIFAR_LAYOUTS[name]


def find_cifar_folder(name: str, roots: Iterable[str | Path]) -> Path | None:
    """First `<root>/<folder>`, `<root>/<name>/<folder>` or `<root>` that holds the batches."""
    layout = _layout(name)
    for root in roots:
        root = Path(root)
        for cand in (root / layout.folder, root / name / layout.folder, root):
            if (cand / layout.train_files[0]).is_file() or (cand / layout.test_files[0]).is_file():
                return cand
    return None


def read_cifar_folder(folder: str | Path, name: str, train: bool = True) -> ImageTensors:
    """Load the train or test split from an extracted CIFAR folder."""
    layout = _layout(name)
    folder = Path(folder)
    files = layout.train_files if train else layout.test_files
    images, labels = [], []
    for fname in files:
        path = folder / fname
        if not path.is_file():
            raise DatasetError(f"{path}: missing CIFAR batch file")
        x, y = read_cifar_batch(path, layout.label_key, layout.num_classes)
        images.append(x)
        labels.append(y)
    return ImageTensors(torch.from_numpy(np.concatenate(images)),
                        torch.from_numpy(np.concatenate(labels)))


def load_cifar(name: str, root: str | Path, train: bool = True,
               download: bool = True) -> ImageTensors:
    """Load a CIFAR split from `root`, downloading and extracting the archive if allowed."""
    layout = _layout(name)
    root = Path(root)
    folder = find_cifar_folder(name, [root])
    if folder is None:
        if not download:
            raise DatasetError(f"{name}: no {layout.folder} folder under {root} "
                               f"(download disabled)")
        download_and_extract(layout.url, root, layout.md5)
        folder = find_cifar_folder(name, [root])
        if folder is None:
            raise DatasetError(f"{layout.url}: archive did not contain {layout.folder} "
                               f"(extracted into {root})")
    return read_cifar_folder(folder, name, train)
