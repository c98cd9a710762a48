"""Checksums, downloads and atomic writes shared by the loaders (standard library only).

Downloads go to a temporary file in the destination folder, are checked against their md5, and
only then renamed into place, so an interrupted or corrupt download never leaves a file that
looks complete. ``BALANCE_OFFLINE=1`` turns the default "download when missing" off.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

OFFLINE_ENV = "BALANCE_OFFLINE"
_LOG = logging.getLogger(__name__)


def md5_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def downloads_enabled(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$BALANCE_OFFLINE`` is set to 1/true/yes."""
    if download is not None:
        return bool(download)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {"1", "true", "yes"}


def _urlopen(url: str, timeout: float):
    """The one network call of the package (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed https/http URLs)


def fetch(
    urls: Iterable[str],
    dest: Path,
    md5: str | None,
    *,
    timeout: float = 60.0,
    progress: bool = False,
) -> None:
    """Download the first of ``urls`` that works to ``dest``, md5-checked, atomically.

    Raises :class:`DataError` listing every URL tried and why it failed; on failure nothing is
    left at ``dest`` or beside it.
    """
    from tqdm import tqdm

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder {dest.parent} for {dest.name}: {exc}") from exc
    failures: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(url, timeout) as response:
                headers = getattr(response, "headers", None)
                length = headers.get("Content-Length") if headers is not None else None
                total = int(length) if length and str(length).isdigit() else None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=f"downloading {dest.name}",
                    disable=not progress,
                    leave=False,
                ) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
            if md5 is not None:
                got = md5_file(tmp)
                if got != md5:
                    failures.append(f"{url}: md5 {got} != expected {md5} (incomplete or altered)")
                    continue
            os.replace(tmp, dest)
            _LOG.info("downloaded %s from %s", dest, url)
            return
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name}: " + "; ".join(failures))


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temporary file and a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def copy_stream_atomic(source, dest: Path) -> None:
    """Copy a binary file object to ``dest`` through a temporary file and a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
