"""Loader for `root/<split>/<class_name>/*.png|jpg|...` image folders, decoded with Pillow."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .base import DatasetError, ImageTensors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")


def split_dir(root: str | Path, train: bool = True) -> Path:
    """The folder of the train split (`train`) or eval split (`val`, else `test`)."""
    root = Path(root)
    names = TRAIN_SPLITS if train else EVAL_SPLITS
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{root}: no {' or '.join(names)} folder")


def _class_dirs(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list ({' '.join(str(e).split())})") from e


def image_folder_classes(root: str | Path) -> tuple[str, ...]:
    """Class names (sorted) of an image folder, taken from its train split, else its eval split."""
    root = Path(root)
    try:
        folder = split_dir(root, train=True)
    except DatasetError:
        try:
            folder = split_dir(root, train=False)
        except DatasetError:
            raise DatasetError(f"{root}: not an image folder (no train, val or test "
                               f"subfolder)") from None
    classes = tuple(_class_dirs(folder))
    if not classes:
        raise DatasetError(f"{folder}: no class subfolders")
    return classes


def list_image_folder(root: str | Path, train: bool = True, max_per_class: int | None = None
                      ) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """(path, label) pairs of one split, sorted by class then file name, and the class names.

    With `max_per_class`, only the first that many files (by name) of each class are kept.
    """
    classes = image_folder_classes(root)
    folder = split_dir(root, train)
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    for name in _class_dirs(folder):
        if name not in index:
            raise DatasetError(f"{folder / name}: class not present in the train split")
        try:
            files = sorted(p for p in (folder / name).iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        except OSError as e:
            raise DatasetError(f"{folder / name}: cannot list ({e})") from e
        samples.extend((p, index[name]) for p in files[:max_per_class])
    if not samples:
        raise DatasetError(f"{folder}: no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return samples, classes


def load_image(path: str | Path, image_size: int, grayscale: bool = False,
               resize_size: int | None = None) -> np.ndarray:
    """Decode an image, resize its shorter side to `resize_size` (default `image_size`), take
    the central `image_size` square; uint8 (C, S, S)."""
    path = Path(path)
    mode = "L" if grayscale else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")
                im = im.convert(mode)
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ValueError("empty image")
        short = max(resize_size or image_size, image_size)
        scale = short / min(w, h)
        nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
        arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DatasetError(f"{path}: cannot read image ({reason})") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(root: str | Path, train: bool = True, image_size: int = 32,
                      grayscale: bool = False, resize_size: int | None = None,
                      max_per_class: int | None = None) -> ImageTensors:
    """Load a split of an image folder into memory as uint8 (N, C, S, S) images.

    Each image is resized (shorter side `resize_size`, default `image_size`) and center-cropped;
    `max_per_class` keeps only the first files of each class (a smaller, balanced subset).
    """
    if image_size <= 0:
        raise DatasetError(f"{root}: image_size must be positive, got {image_size}")
    if max_per_class is not None and max_per_class <= 0:
        raise DatasetError(f"{root}: max_per_class must be positive, got {max_per_class}")
    samples, _ = list_image_folder(root, train, max_per_class)
    channels = 1 if grayscale else 3
    images = np.empty((len(samples), channels, image_size, image_size), dtype=np.uint8)
    for i, (path, _label) in enumerate(tqdm(samples, desc=f"decoding {Path(root).name}",
                                            leave=False, disable=len(samples) < 5000)):
        images[i] = load_image(path, image_size, grayscale, resize_size)
    labels = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels))
