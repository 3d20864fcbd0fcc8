"""The evaluation split of a run: the test set, or held-out training images for tuning."""

from __future__ import annotations

from ..config import ConfigError
from .base import ImageTensors
from .datasets import DatasetInfo, load_dataset


def check_labels(data: ImageTensors, info: DatasetInfo, what: str = "labels") -> None:
    """Raise ConfigError if a label is outside the dataset's classes."""
    if len(data) and int(data.labels.max()) >= info.num_classes:
        raise ConfigError(f"{what} exceed the {info.num_classes} classes of {info.name}")


def holdout_split(train: ImageTensors, holdout: int, dataset: str
                  ) -> tuple[ImageTensors, ImageTensors]:
    """(the first N - holdout training images, the last `holdout`): train and held-out parts."""
    if not 0 < holdout < len(train):
        raise ConfigError(f"holdout={holdout} leaves no training image ({len(train)} in "
                          f"{dataset})")
    return (ImageTensors(train.images[:-holdout], train.labels[:-holdout]),
            ImageTensors(train.images[-holdout:], train.labels[-holdout:]))


def evaluation_split(dataset: str, root: str | None, *, holdout: int = 0, download: bool = True,
                     need_train: bool = False, max_per_class: int | None = None,
                     info: DatasetInfo | None = None
                     ) -> tuple[ImageTensors | None, ImageTensors]:
    """(training images or None, evaluation images) of a run.

    With `holdout` N > 0 the last N training images are the evaluation split (the test split is
    never read) and the training part excludes them; otherwise the test split is evaluated on,
    and the training split is loaded only if `need_train`.
    """
    train = None
    if need_train or holdout:
        train = load_dataset(dataset, root, train=True, download=download)
    if holdout:
        train, evaluation = holdout_split(train, holdout, dataset)
    else:
        evaluation = load_dataset(dataset, root, train=False, download=download,
                                  max_per_class=max_per_class)
    if info is not None:
        check_labels(evaluation, info, "evaluation labels")
        if train is not None:
            check_labels(train, info, "training labels")
    return train, evaluation
