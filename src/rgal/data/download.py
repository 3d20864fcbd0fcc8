"""Download a file with a progress bar, verify its md5, and extract tar archives safely."""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .base import DatasetError

_CHUNK = 1 << 20
_USER_AGENT = "rgal-dataset-downloader/0.1"


def _one_line(err: BaseException) -> str:
    """An exception as a short single-line reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def file_md5(path: str | Path) -> str:
    """Hex md5 digest of a file's contents."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: str | Path, md5: str | None = None, *, timeout: float = 60.0,
                 progress: bool = True, place_hint: str | Path | None = None) -> Path:
    """Stream `url` to `dest` via a temporary file, verifying `md5`; return `dest`.

    An existing `dest` with the right checksum is reused. Network failures and checksum
    mismatches raise DatasetError; the temporary file never survives a failure.
    """
    dest = Path(dest)
    place = Path(place_hint) if place_hint is not None else dest.parent
    if dest.is_file() and (md5 is None or file_md5(dest) == md5.lower()):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DatasetError(f"cannot write into {dest.parent} ({_one_line(e)}); "
                           f"place the files in {place}") from e
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=dest.name, disable=not progress, leave=False) as bar:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise DatasetError(f"could not download {url} ({_one_line(e)}); "
                                   f"place the files in {place}") from e
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DatasetError(f"checksum mismatch for {url}: md5 {digest.hexdigest()}, "
                               f"expected {md5.lower()}; place the files in {place}")
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise DatasetError(f"cannot move the download to {dest} ({_one_line(e)})") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path, dest: Path) -> None:
    """Raise DatasetError unless `member` stays inside `dest` and is a plain file/dir/safe link."""
    name = member.name

    def unsafe(target: str) -> bool:
        parts = PurePosixPath(target.replace("\\", "/")).parts
        if target.startswith(("/", "\\")) or os.path.isabs(target) or ".." in parts:
            return True
        if parts and len(parts[0]) >= 2 and parts[0][1] == ":":  # Windows drive
            return True
        resolved = (dest / target).resolve()
        return resolved != dest and dest not in resolved.parents

    if unsafe(name):
        raise DatasetError(f"{archive}: refusing unsafe member path {name!r}")
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():
            target = str(PurePosixPath(name).parent / target)
        if unsafe(target):
            raise DatasetError(f"{archive}: refusing link {name!r} -> {member.linkname!r}")
    elif not (member.isfile() or member.isdir()):
        raise DatasetError(f"{archive}: refusing special member {name!r}")


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a (possibly compressed) tar archive into `dest`, rejecting unsafe members.

    Every member is checked before anything is written: absolute paths, `..` components,
    links leaving `dest`, and device files raise DatasetError. Returns the extracted paths.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        dest_resolved = dest.resolve()
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive, dest_resolved)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(dest, members=members)
    except DatasetError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: cannot extract ({_one_line(e)})") from e
    return [dest / m.name for m in members]


def download_and_extract(url: str, root: str | Path, md5: str | None = None, *,
                         filename: str | None = None, remove_archive: bool = True,
                         progress: bool = True) -> Path:
    """Download a tar archive into `root`, verify it, extract it there, and return `root`."""
    root = Path(root)
    archive = root / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    download_url(url, archive, md5, progress=progress)
    safe_extract(archive, root)
    if remove_archive:
        archive.unlink(missing_ok=True)
    return root
