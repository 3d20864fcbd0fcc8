"""Dataset splits that ship inside the package, so that the default runs need no download.

Only the Fashion-MNIST test split ships (10,000 images, 4.4 MB as gzip IDX; MIT licence,
Zalando SE: `shipped/fashion-mnist/LICENSE`). The shipped teacher and every default run are
measured on it. It is the last place searched: `--data-root`, then the system copy, then the
user cache, then this copy. Its SHA-256 sums (`SHA256SUMS` beside the files) are checked
before it is read. The training split never ships.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .base import DatasetError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"

# (dataset, train) -> the files of that split in SHIPPED_DIR/<dataset>/
SHIPPED_SPLITS: dict[tuple[str, bool], tuple[str, ...]] = {
    ("fashion-mnist", False): ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SUMS_FILE = "SHA256SUMS"

_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already checked


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 digest of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    """`sha256sum` output (`<hex>  <name>` lines) as {name: hex}."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, _, name = line.strip().partition(" ")
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def shipped_idx_folder(name: str, train: bool) -> Path | None:
    """The package's own folder holding this split, checksum-verified; None if none ships.

    A shipped file whose SHA-256 differs from SHA256SUMS raises DatasetError (the
    installation is damaged); a package installed without its data files gives None.
    """
    files = SHIPPED_SPLITS.get((name, train))
    if files is None:
        return None
    folder = SHIPPED_DIR / name
    paths = [folder / f for f in files]
    if not all(p.is_file() for p in paths) or not (folder / SUMS_FILE).is_file():
        return None
    sums = read_sums(folder / SUMS_FILE)
    for path in paths:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            continue
        actual = file_sha256(path)
        if sums.get(path.name) != actual:
            raise DatasetError(f"the copy of {name} shipped with rgal is damaged ({path}: "
                               f"sha256 {actual}, expected {sums.get(path.name, 'a listed sum')}"
                               "); reinstall rgal or pass --data-root")
        _verified.add(key)
    return folder
