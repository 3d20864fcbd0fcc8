"""Shared fixtures: a small Fashion-MNIST-format folder and weights files written by the tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from rgal.data.idx import write_idx
from rgal.models import create_model
from rgal.models.weights import save_weights

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a fresh module, registered in sys.modules under
    `rgal_bench_<name>` (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"rgal_bench_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# one thread per pytest-xdist worker (the workers already use every core), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else
                      min(2, torch.get_num_threads()))


def write_fake_idx_dataset(root: Path, n_train: int = 128, n_test: int = 100, seed: int = 0,
                           num_classes: int = 10) -> Path:
    """Write the four gzip IDX files of an MNIST-format dataset with class-dependent images."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, num_classes, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):  # a bright bar whose position encodes the class
            images[i, 2 + 2 * y: 4 + 2 * y, 4:24] = 230
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def fake_fmnist(tmp_path_factory) -> Path:
    """A tiny dataset in the real Fashion-MNIST file format."""
    return write_fake_idx_dataset(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory) -> Path:
    """Random-initialised smallcnn weights (10 classes, 1 channel) as safetensors."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "teacher.safetensors"
    save_weights(create_model("smallcnn", 10, 1), path)
    return path
