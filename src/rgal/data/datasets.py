"""Dataset descriptions and in-memory loading of the supported datasets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .base import DatasetError, ImageTensors, UnknownDatasetError
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR_LAYOUTS, load_cifar
from .download import download_url
from .idx import read_idx
from .imagefolder import image_folder_classes, load_image_folder
from .imagenet import IMAGENET_NUM_CLASSES, IMAGENET_SIZE, imagenet_classes, load_imagenet
from .shipped import shipped_idx_folder

__all__ = [
    "DATASETS", "DYNAMIC_DATASETS", "IDX_SOURCES", "SYSTEM_DATASET_DIRS", "DatasetError",
    "DatasetInfo", "ImageTensors", "UnknownDatasetError", "available_datasets", "dataset_info",
    "default_root", "describe_dataset", "download_idx_split", "find_idx_folder",
    "load_dataset", "load_idx_split",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the library needs to know about a dataset."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    hflip: bool = True
    classes: tuple[str, ...] = field(default=(), repr=False)


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), 2, True,
                                 FASHION_CLASSES),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), 2, False,
                         tuple(str(i) for i in range(10))),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465),
                           (0.2023, 0.1994, 0.2010), 4, True, CIFAR10_CLASSES),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), 4, True, CIFAR100_CLASSES),
    # Class names (wnids) are read from the folder by describe_dataset when a root is given.
    "imagenet": DatasetInfo("imagenet", IMAGENET_NUM_CLASSES, 3, IMAGENET_SIZE, IMAGENET_MEAN,
                            IMAGENET_STD, IMAGENET_SIZE // 8, True),
}

# Datasets whose description depends on files on disk (see describe_dataset).
DYNAMIC_DATASETS: tuple[str, ...] = ("imagefolder",)

# Read-only system-wide copies searched after `root`.
SYSTEM_DATASET_DIRS: dict[str, Path] = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
}

# name -> (base URL, {file name: md5}) for the IDX-format datasets.
IDX_SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83fd310",
    }),
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
}


def available_datasets() -> tuple[str, ...]:
    """Every name `load_dataset` accepts, sorted."""
    return tuple(sorted((*DATASETS, *DYNAMIC_DATASETS)))


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset's static description by name (UnknownDatasetError if unknown)."""
    if name not in DATASETS:
        if name in DYNAMIC_DATASETS:
            raise UnknownDatasetError(f"dataset {name!r} has no static description; "
                                      f"use describe_dataset({name!r}, root)")
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: "
                                  f"{', '.join(available_datasets())}")
    return DATASETS[name]


def describe_dataset(name: str, root: str | Path | None = None,
                     image_size: int = 32) -> DatasetInfo:
    """Static info for known names; for `imagefolder`, an info built from the folder at `root`;
    for `imagenet` with a root, the static info with the folder's wnids as class names."""
    if name == "imagefolder":
        if root is None:
            raise DatasetError("dataset 'imagefolder' needs a root folder")
        classes = image_folder_classes(root)
        return DatasetInfo("imagefolder", len(classes), 3, image_size, IMAGENET_MEAN,
                           IMAGENET_STD, max(1, image_size // 8), True, classes)
    if name == "imagenet" and root is not None:
        return replace(dataset_info(name), classes=imagenet_classes(root))
    return dataset_info(name)


def default_root(name: str) -> Path:
    """Per-user cache folder for a dataset: `~/.cache/rgal/<name>`."""
    return Path.home() / ".cache" / "rgal" / name


_IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.is_file():
            return cand
    return None


def load_idx_split(root: str | Path, train: bool, num_classes: int | None = None) -> ImageTensors:
    """Load an MNIST-family split from a folder holding the four IDX files."""
    root = Path(root)
    img_stem, lbl_stem = _IDX_FILES[train]
    img_path, lbl_path = _find(root, img_stem), _find(root, lbl_stem)
    if img_path is None or lbl_path is None:
        raise DatasetError(f"{root}: missing {img_stem}[.gz] or {lbl_stem}[.gz]")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: image/label files disagree ({images.shape} vs {labels.shape})")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(f"{img_path}, {lbl_path}: expected uint8 data, got "
                           f"{images.dtype} and {labels.dtype}")
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        raise DatasetError(f"{lbl_path}: label {int(labels.max())} outside [0, {num_classes})")
    return ImageTensors(torch.from_numpy(images[:, None]).contiguous(),
                        torch.from_numpy(labels.astype(np.int64)))


def find_idx_folder(name: str, root: str | Path | None, train: bool) -> Path | None:
    """The folder holding a split: `root` or `root/<name>` if a root is given (nothing else, so
    an incomplete folder is reported, not silently replaced); else the system copy, the cache,
    and last the split shipped inside the package (Fashion-MNIST's test split, data/shipped.py)."""
    if root is not None:
        candidates = [Path(root), Path(root) / name]
    else:
        candidates = [SYSTEM_DATASET_DIRS[name]] if name in SYSTEM_DATASET_DIRS else []
        candidates.append(default_root(name))
    for cand in candidates:
        if all(_find(cand, stem) for stem in _IDX_FILES[train]):
            return cand
    return shipped_idx_folder(name, train) if root is None else None  # hook: shipped split


def download_idx_split(name: str, dest: str | Path, train: bool, progress: bool = True) -> Path:
    """Download (md5-verified) the two gzip IDX files of one split into `dest`; return `dest`."""
    if name not in IDX_SOURCES:
        raise DatasetError(f"no download source for dataset {name!r}")
    base, md5s = IDX_SOURCES[name]
    dest = Path(dest)
    for stem in _IDX_FILES[train]:
        if _find(dest, stem) is None:
            fname = f"{stem}.gz"
            download_url(base + fname, dest / fname, md5s[fname], progress=progress)
    return dest


def load_dataset(name: str, root: str | Path | None = None, train: bool = True,
                 download: bool = True, *, image_size: int = 32,
                 max_per_class: int | None = None) -> ImageTensors:
    """Load a split of a named dataset into memory (images uint8 (N, C, H, W), labels int64).

    `image_size` is used by `imagefolder` only, `max_per_class` (a balanced subset) by
    `imagenet` only. Every failure raises DatasetError.
    """
    if name == "imagenet":
        return load_imagenet(root, train, max_per_class)
    if name == "imagefolder":
        if root is None:
            raise DatasetError("dataset 'imagefolder' needs a root folder")
        return load_image_folder(root, train, image_size)
    info = dataset_info(name)
    if name in CIFAR_LAYOUTS:
        return load_cifar(name, Path(root) if root is not None else default_root(name),
                          train, download)
    folder = find_idx_folder(name, root, train)
    if folder is None:
        dest = Path(root) if root is not None else default_root(name)
        if not download:
            searched = [str(dest)] + ([str(SYSTEM_DATASET_DIRS[name])]
                                      if root is None and name in SYSTEM_DATASET_DIRS else [])
            raise DatasetError(f"dataset {name!r} not found under {', '.join(searched)} "
                               f"(download disabled)")
        folder = download_idx_split(name, dest, train)
    return load_idx_split(folder, train, info.num_classes)
