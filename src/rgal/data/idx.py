"""Reader for the IDX format (MNIST, Fashion-MNIST), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IDXError(DatasetError):
    """Raised for a file that is not a well-formed IDX file (a DatasetError, hence a ValueError)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (`.gz` or raw) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"{path}: cannot read ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise IDXError(f"{path}: unknown IDX element type 0x{code:02x}")
    if ndim > 32:
        raise IDXError(f"{path}: implausible number of dimensions ({ndim})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXError(f"{path}: truncated or oversized: {len(data) - header} bytes of data, "
                       f"expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if the name ends in `.gz`)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
