"""CIFAR-10 from the standard python batches (``cifar-10-batches-py/``).

Looked up under the data root (see :mod:`balance.data.root`) as ``cifar10/cifar-10-batches-py/``,
or ``cifar-10-batches-py/`` directly under the root. When batches are missing the official
archive is downloaded (unless ``download=False`` or ``BALANCE_OFFLINE=1``), md5-checked and the
batches extracted into ``<root>/cifar10/cifar-10-batches-py/``; otherwise the error names the
folder to put them in.

Each batch is a pickled dict with ``data`` (uint8 ``[10000, 3072]``, channel-major 3 x 32 x 32
rows) and ``labels`` (ints 0..9). Pickle can run arbitrary code, so batches are read with an
unpickler that accepts only the handful of numpy globals an array needs.
"""

from __future__ import annotations

import codecs
import os
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ._download import copy_stream_atomic, downloads_enabled, fetch, md5_file
from .errors import DataError
from .mnist import NOVERIFY_ENV
from .root import DATA_ENV, resolve_data_root

__all__ = ["CIFAR10_FILES", "CIFAR10_MD5", "cifar10_folder", "load_cifar10"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
#: md5 of the official batches (torchvision's table).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_EXTRACT = frozenset(CIFAR10_MD5) | {"readme.html"}

PathLike = str | os.PathLike[str]


def cifar10_folder(root: PathLike | None = None) -> Path:
    """The batches folder: ``<root>/cifar10/cifar-10-batches-py`` or ``<root>/cifar-10-batches-py``.

    The first that exists; the canonical first one when neither does (downloads go there).
    """
    base = resolve_data_root(root)
    candidates = (base / "cifar10" / CIFAR10_DIRNAME, base / CIFAR10_DIRNAME)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def _numpy_globals() -> dict[tuple[str, str], object]:
    # The objects an ndarray pickle refers to, found through numpy's own reduce methods so the
    # names of numpy 1.x ("numpy.core") and 2.x ("numpy._core") resolve without deprecated imports.
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # Python 3 pickles of bytes at protocol 2
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and numpy arrays."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: uint8 images ``[n, 3, 32, 32]`` and int64 labels ``[n]``."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OSError,
        MemoryError,
    ) as exc:
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {exc!r}. The file is truncated or not a "
            f"CIFAR-10 python batch: delete {path.parent} and load again to download it, or "
            f"replace it from cifar-10-python.tar.gz."
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels', has {list(batch)}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 [n, 3072] array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' rows hold {data.shape[1]} values, expected 3072")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' is not a list of integers") from exc
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _extract(archive: Path, dest: Path) -> None:
    """Extract the known batch files of ``cifar-10-python.tar.gz`` into ``dest``.

    Only regular files named ``cifar-10-batches-py/<known name>`` are written, through temporary
    files, so a hostile or damaged archive cannot write elsewhere.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if len(parts) != 2 or parts[0] != CIFAR10_DIRNAME or parts[1] not in _EXTRACT:
                    continue
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is not None:
                    copy_stream_atomic(source, dest / parts[1])
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}; delete it and load again.") from exc


def _download_and_extract(base: Path, verify: bool) -> Path:
    dest = base / "cifar10" / CIFAR10_DIRNAME
    archive = base / "cifar10" / "cifar-10-python.tar.gz"
    fetch([CIFAR10_URL], archive, CIFAR10_TGZ_MD5 if verify else None, progress=True)
    try:
        _extract(archive, dest)
    finally:
        archive.unlink(missing_ok=True)
    return dest


def load_cifar10(
    split: str = "train",
    root: PathLike | None = None,
    download: bool | None = None,
    *,
    verify: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a CIFAR-10 split.

    Args:
        split: ``"train"`` (data_batch_1..5, 50000 images) or ``"test"`` (test_batch, 10000).
        root: data root (default ``$BALANCE_DATA``, else the user cache folder).
        download: ``None`` downloads the official archive when batches are missing and the
            machine is online (not when ``BALANCE_OFFLINE=1``); ``False`` never does.
        verify: check the archive and each batch against the official md5. Pass ``False`` only
            for deliberately different files (e.g. test fixtures); structure is checked anyway.

    Returns:
        ``(images, labels)``: float32 ``[N, 3, 32, 32]`` with values ``byte / 255`` in ``[0, 1]``
        and int64 ``[N]`` in ``0..9``.

    Raises:
        DataError: missing batches that cannot be downloaded (the message names the folder),
            a failed md5 check, or a truncated / malformed batch.
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"split must be one of {sorted(CIFAR10_FILES)}, got {split!r}")
    names = CIFAR10_FILES[split]
    if verify is None:
        verify = os.environ.get(NOVERIFY_ENV, "") != "1"
    folder = cifar10_folder(root)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        where = (
            f"Put the python batches ({', '.join(names)}) of cifar-10-python.tar.gz "
            f"({CIFAR10_URL}) in {folder}, or point {DATA_ENV} (or root=) at a folder holding "
            f"cifar10/{CIFAR10_DIRNAME}/."
        )
        if not downloads_enabled(download):
            raise DataError(
                f"CIFAR-10 batches missing from {folder}: {', '.join(missing)}. {where} "
                f"(downloading is off: download=False or BALANCE_OFFLINE=1.)"
            )
        try:
            folder = _download_and_extract(resolve_data_root(root), verify)
        except DataError as exc:
            raise DataError(
                f"CIFAR-10 batches missing from {folder}: {', '.join(missing)}, and the download "
                f"failed ({exc}). {where}"
            ) from exc
        still = [name for name in names if not (folder / name).is_file()]
        if still:
            raise DataError(f"the downloaded archive lacks {', '.join(still)}; {where}")

    images, labels = [], []
    for name in names:
        path = folder / name
        if verify:
            got = md5_file(path)
            if got != CIFAR10_MD5[name]:
                raise DataError(
                    f"{path} has md5 {got}, expected {CIFAR10_MD5[name]}: the file is truncated "
                    f"or corrupt. Delete {folder} and run again to download the batches, or set "
                    f"{NOVERIFY_ENV}=1 (verify=False in Python) for deliberately different files."
                )
        data, label = _read_batch(path)
        images.append(data)
        labels.append(label)
    x = torch.from_numpy(np.concatenate(images)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(np.concatenate(labels))
    return x, y

