"""MNIST from the four official idx ``.gz`` files, md5-verified.

Files live in ``<data root>/mnist/`` (see :mod:`balance.data.root`). When some are missing they
are downloaded from the usual public mirrors (unless ``download=False`` or ``BALANCE_OFFLINE=1``);
when that is impossible the error names the missing files and the folder to put them in.

The idx format (LeCun et al.): a big-endian header ``0x00 0x00 <type=0x08 ubyte> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the raw bytes. Images are ``idx3`` (N x 28 x 28), labels
``idx1`` (N).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ._download import downloads_enabled, fetch, md5_file
from .errors import DataError
from .root import DATA_ENV, resolve_data_root

#: Set to 1 to skip the md5 and size checks of the data files (deliberately different files).
NOVERIFY_ENV = "BALANCE_DATA_NOVERIFY"

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: md5 of the official files (as published by torchvision and checked in shared/data/PROVENANCE.md).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_SIZES = {"train": 60000, "test": 10000}
ALL_FILES = tuple(name for pair in MNIST_FILES.values() for name in pair)


def mnist_folder(root: str | os.PathLike[str] | None = None) -> Path:
    """``<data root>/mnist``."""
    return resolve_data_root(root) / "mnist"


def _where_to_put(folder: Path) -> str:
    return (
        f"Put the official files ({', '.join(ALL_FILES)}) in {folder}, "
        f"or point {DATA_ENV} (or root=) at a folder holding mnist/ with them."
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse a gzip-compressed idx file of unsigned bytes with ``ndim`` dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(
            f"cannot decompress {path}: {exc}. The file is truncated or not gzip data: "
            f"delete it and load again to download it, or replace it with the official file."
        ) from exc
    header = 4 + 4 * ndim
    magic = 0x0800 | ndim  # 0x00 0x00, type 0x08 (unsigned byte), ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = f"0x{int.from_bytes(raw[:4], 'big'):08x}" if len(raw) >= 4 else "nothing"
        raise DataError(
            f"{path} is not an idx{ndim} unsigned-byte file (magic 0x{magic:08x} expected, "
            f"found {found}); replace it with the official file."
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the idx header announces shape {dims} ({expected} bytes) but the file "
            f"holds {len(raw) - header} bytes; it is truncated or corrupt: replace it with the "
            f"official file."
        )
    # np.frombuffer reads the bytes in place; the copy makes the array writable for torch.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _ensure_files(
    folder: Path, names: tuple[str, ...], download: bool | None, verify: bool
) -> None:
    """Make sure ``names`` exist in ``folder`` (downloading when allowed) and match their md5."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        if not downloads_enabled(download):
            raise DataError(
                f"MNIST files missing from {folder}: {', '.join(missing)}. {_where_to_put(folder)} "
                f"(downloading is off: download=False or BALANCE_OFFLINE=1.)"
            )
        for name in missing:
            try:
                fetch(
                    [mirror + name for mirror in MNIST_MIRRORS],
                    folder / name,
                    MNIST_MD5[name] if verify else None,
                )
            except DataError as exc:
                raise DataError(
                    f"MNIST files missing from {folder}: {', '.join(missing)}, and the download "
                    f"failed ({exc}). {_where_to_put(folder)}"
                ) from exc
    if not verify:
        return
    for name in names:
        got = md5_file(folder / name)
        if got == MNIST_MD5[name]:
            continue
        if download is True:
            try:
                fetch([mirror + name for mirror in MNIST_MIRRORS], folder / name, MNIST_MD5[name])
            except DataError as exc:
                raise DataError(
                    f"{folder / name} has md5 {got}, expected {MNIST_MD5[name]}, and downloading "
                    f"a fresh copy failed ({exc}). {_where_to_put(folder)}"
                ) from exc
            continue
        raise DataError(
            f"{folder / name} has md5 {got}, expected {MNIST_MD5[name]}: the file is truncated "
            f"or corrupt. Delete it and run again (it is downloaded when missing; download=True "
            f"in Python), or set {NOVERIFY_ENV}=1 (verify=False in Python) to use a deliberately "
            "different file."
        )


def load_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    *,
    verify: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an official MNIST split as continuous pixels.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images), the official split.
        root: data root (default: ``$BALANCE_DATA``, else the user cache folder).
        download: ``None`` downloads missing files when online (not when ``BALANCE_OFFLINE=1``);
            ``True`` also replaces files whose md5 is wrong; ``False`` never uses the network.
        verify: check each file against the official md5 and the official sample count. Pass
            ``False`` only for deliberately different files (e.g. small test fixtures); the idx
            structure is checked either way.

    Returns:
        ``(images, labels)``: images float32 ``[N, 1, 28, 28]`` with values ``byte / 255`` in
        ``[0, 1]``; labels int64 ``[N]`` in ``0..9``.

    Raises:
        DataError: missing files that cannot be downloaded (the message names the files and the
            folder), a failed md5 check, or a truncated / malformed file.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    folder = mnist_folder(root)
    image_name, label_name = MNIST_FILES[split]
    if verify is None:
        verify = os.environ.get(NOVERIFY_ENV, "") != "1"
    _ensure_files(folder, (image_name, label_name), download, verify)

    images = _read_idx(folder / image_name, ndim=3)
    labels = _read_idx(folder / label_name, ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{folder / image_name}: images are {images.shape[1:]}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{folder}: {image_name} holds {images.shape[0]} images but {label_name} holds "
            f"{labels.shape[0]} labels; replace them with the official files."
        )
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{folder / label_name}: labels outside 0..9; replace it.")

    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels).to(torch.int64)
    return x, y
