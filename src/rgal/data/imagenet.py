"""ImageNet-1k (ILSVRC-2012) as an image folder: `root/{train,val}/<wnid>/*.JPEG`.

Labels are the indices of the sorted wnid folder names, the convention of torchvision's
ImageFolder under which the usual ImageNet checkpoints were trained. Test images are resized
(shorter side 256) and center-cropped to 224, the standard evaluation transform.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, ImageTensors
from .imagefolder import image_folder_classes, load_image_folder

IMAGENET_NUM_CLASSES = 1000
IMAGENET_SIZE = 224
IMAGENET_RESIZE = 256
# 50,000 val images x 3 x 224 x 224 bytes: what the whole val split takes in memory as uint8.
IMAGENET_VAL_BYTES = 50_000 * 3 * IMAGENET_SIZE ** 2


def imagenet_classes(root: str | Path) -> tuple[str, ...]:
    """The 1000 wnid folder names of an ImageNet folder (DatasetError if the layout is wrong)."""
    classes = image_folder_classes(root)
    if len(classes) != IMAGENET_NUM_CLASSES:
        raise DatasetError(
            f"{root}: an ImageNet folder needs {IMAGENET_NUM_CLASSES} class folders (wnids) in "
            f"train/ or val/, found {len(classes)}; sort a flat val folder into per-wnid "
            "folders first, or use dataset 'imagefolder' for other class sets")
    return classes


def load_imagenet(root: str | Path | None, train: bool = False,
                  max_per_class: int | None = None) -> ImageTensors:
    """Load the val split (or, with `max_per_class`, a subset of train) as uint8 224x224.

    The full val split takes 7.5 GB of memory; `max_per_class=10` keeps 10,000 images (1.5 GB).
    """
    if root is None:
        raise DatasetError("dataset 'imagenet' needs a root folder (data_root) holding "
                           "train/<wnid>/ and/or val/<wnid>/; it cannot be downloaded")
    imagenet_classes(root)
    if train and max_per_class is None:
        raise DatasetError(f"{root}: the ImageNet train split (1.28M images, about 190 GB as "
                           "uint8) is not loaded into memory whole; pass max_per_class")
    return load_image_folder(root, train, IMAGENET_SIZE, resize_size=IMAGENET_RESIZE,
                             max_per_class=max_per_class)
