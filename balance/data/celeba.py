"""CelebA (aligned) from ``img_align_celeba/`` and the official ``list_eval_partition.txt``.

Layout under the data root (see :mod:`balance.data.root`)::

    celeba/list_eval_partition.txt          "000001.jpg 0" per line (CRLF), 0/1/2 = train/valid/test
    celeba/img_align_celeba/000001.jpg ...  178 x 218 originals
    celeba/img_align_celeba_89x109/...      optional half-resolution copy (``folder=`` selects it)

Preprocessing (the usual CelebA-64 / CelebA-128 of the RAE and WAE papers): a centred square crop
of side 140 (for 64 x 64) or 128 (for 128 x 128) pixels *at the original width of 178*, then a
bilinear (antialiased) resize to the target side. The crop side scales with the image width, so
an 89-pixel-wide copy gets a 70 (or 64) pixel crop of the same region of the face (to within
the half pixel of centring). Integral crop sides give exactly torchvision's ``CenterCrop(side)``
then ``Resize(R)`` on PIL images.

A folder may hold only some of the ids (the project's shared copy is a non-contiguous sample):
the loader takes the ids of the requested split that are present, in id order. Decoding
thousands of JPEGs takes seconds, so the decoded uint8 array is cached as ``.npy`` (see
:func:`balance.data.root.resolve_cache_dir`), keyed by the folder, split, resolution, limit and
a fingerprint of the selected files (names, sizes and modification times: a replaced image
gets a new cache); a corrupt cache file is rebuilt. The partition list must be the official
file (its md5 is checked) unless ``$BALANCE_CELEBA_CUSTOM_PARTITION=1``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .root import CACHE_ENV, DATA_ENV, resolve_cache_dir, resolve_data_root

__all__ = [
    "CELEBA_SPLITS",
    "CROP_AT_REFERENCE_WIDTH",
    "celeba_ids",
    "load_celeba",
    "preprocess_image",
    "read_partition",
]

CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}
#: Crop side (pixels) at the original image width ``REFERENCE_WIDTH`` for each output resolution.
CROP_AT_REFERENCE_WIDTH = {64: 140, 128: 128}
REFERENCE_WIDTH = 178
DEFAULT_FOLDER = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
PARTITION_MD5 = "d32c9cbf5e040fd4025c592c306e6668"  # official file (CRLF), torchvision's md5
#: Set to 1 to read a partition file other than the official one (a custom split).
CUSTOM_PARTITION_ENV = "BALANCE_CELEBA_CUSTOM_PARTITION"
#: Bump when the preprocessing changes, so stale caches are not reused.
_CACHE_VERSION = "celeba-v1"
_LOG = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _celeba_dir(root: PathLike | None) -> Path:
    return resolve_data_root(root) / "celeba"


def _image_dir(root: PathLike | None, folder: PathLike | None) -> Path:
    if folder is None:
        return _celeba_dir(root) / DEFAULT_FOLDER
    path = Path(folder).expanduser()
    return path if path.is_absolute() else _celeba_dir(root) / path


def read_partition(path: PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` (LF or CRLF) into ``{file name: 0|1|2}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise DataError(
            f"CelebA partition file missing: {path}. Put the official {PARTITION_FILE} "
            f"(md5 {PARTITION_MD5}) in {path.parent}, or point {DATA_ENV} (or root=) at a folder "
            f"holding celeba/."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}; replace it with the official file.") from exc
    official = "\r\n".join(text.splitlines()) + "\r\n"  # the official file has CRLF ends
    digest = hashlib.md5(official.encode("ascii")).hexdigest()
    if digest != PARTITION_MD5 and os.environ.get(CUSTOM_PARTITION_ENV, "") != "1":
        raise DataError(
            f"{path} is not the official {PARTITION_FILE} (md5 {digest}, official "
            f"{PARTITION_MD5}): replace it with the official file, or set "
            f"{CUSTOM_PARTITION_ENV}=1 to use your own split on purpose.")
    partition: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"{path}, line {number}: expected '<id>.jpg <0|1|2>', got {line!r}; "
                f"replace the file with the official {PARTITION_FILE}."
            )
        partition[fields[0]] = int(fields[1])
    if not partition:
        raise DataError(f"{path} is empty; replace it with the official {PARTITION_FILE}.")
    return partition


def _id_key(name: str) -> tuple[int, str]:
    stem = name.rsplit(".", 1)[0]
    return (int(stem), name) if stem.isdigit() else (-1, name)


def celeba_ids(
    split: str = "train",
    root: PathLike | None = None,
    folder: PathLike | None = None,
    limit: int | None = None,
) -> list[str]:
    """File names (e.g. ``"000002.jpg"``) that :func:`load_celeba` loads, in id order.

    The ids of ``split`` (``"train"``, ``"valid"``, ``"test"`` or ``"all"``) present in the image
    folder, the first ``limit`` of them when given. Raises :class:`DataError` when the folder or
    partition file is missing or no image of the split is present.
    """
    if split != "all" and split not in CELEBA_SPLITS:
        raise ValueError(f"split must be one of {[*CELEBA_SPLITS, 'all']}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    image_dir = _image_dir(root, folder)
    if not image_dir.is_dir():
        raise DataError(
            f"CelebA image folder missing: {image_dir}. Put the aligned CelebA JPEGs "
            f"(img_align_celeba/000001.jpg ...) there, or point {DATA_ENV} (or root=) at a folder "
            f"holding celeba/{image_dir.name}/ and celeba/{PARTITION_FILE}."
        )
    partition = read_partition(_celeba_dir(root) / PARTITION_FILE)
    wanted = None if split == "all" else CELEBA_SPLITS[split]
    present = [
        name
        for name in os.listdir(image_dir)
        if name in partition and (wanted is None or partition[name] == wanted)
    ]
    if not present:
        n_jpg = sum(1 for name in os.listdir(image_dir) if name.lower().endswith(".jpg"))
        raise DataError(
            f"no CelebA image of the {split!r} split in {image_dir} (it holds {n_jpg} .jpg files "
            f"listed or not in {PARTITION_FILE}). Put the {split} images of img_align_celeba "
            f"there, or choose another split or folder."
        )
    present.sort(key=_id_key)
    return present if limit is None else present[:limit]


def preprocess_image(path: PathLike, resolution: int) -> np.ndarray:
    """Decode one JPEG, crop and resize it: uint8 ``[3, R, R]`` (module docstring).

    The crop side is ``CROP_AT_REFERENCE_WIDTH[R] * width / 178``, centred. An integral side is
    cropped with torchvision's ``CenterCrop`` rounding, then resized bilinearly (PIL,
    antialiased) unless it already equals R: for the originals this is exactly torchvision's
    ``Resize(R)(CenterCrop(side)(image))``. A fractional side (e.g. 70.0 is integral, but a
    width of 100 gives 78.65) is resampled directly from the exact centred box.
    """
    from PIL import Image

    if resolution not in CROP_AT_REFERENCE_WIDTH:
        raise ValueError(f"resolution must be one of {sorted(CROP_AT_REFERENCE_WIDTH)}")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # forces the decode; grayscale files become 3 channels
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot decode {path}: {exc}. The file is truncated or not an image: replace it "
            f"with the original from img_align_celeba.zip (or delete it to skip that id)."
        ) from exc
    width, height = rgb.size
    side = CROP_AT_REFERENCE_WIDTH[resolution] * width / REFERENCE_WIDTH
    if side > min(width, height):
        raise DataError(f"{path} is {width}x{height}: too small for a {side:g}-pixel square crop")
    if float(side).is_integer():
        # torchvision's CenterCrop rounding, so the originals give its exact box.
        side_px = int(side)
        left, top = round((width - side_px) / 2), round((height - side_px) / 2)
        out = rgb.crop((left, top, left + side_px, top + side_px))
        if side_px != resolution:
            out = out.resize((resolution, resolution), Image.Resampling.BILINEAR)
    else:
        fbox = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        out = rgb.resize((resolution, resolution), Image.Resampling.BILINEAR, box=fbox)
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def _fingerprint(image_dir: Path, names: list[str], split: str, resolution: int, limit) -> str:
    digest = hashlib.sha256()
    header = f"{_CACHE_VERSION}\n{image_dir.resolve()}\n{split}\n{resolution}\n{limit}\n"
    digest.update(header.encode())
    for name in names:
        try:
            stat = (image_dir / name).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        _LOG.warning("rebuilding the unreadable CelebA cache %s (%s)", path, exc)
        return None
    if array.shape != shape or array.dtype != np.uint8:
        _LOG.warning("rebuilding the CelebA cache %s (shape %s != %s)", path, array.shape, shape)
        return None
    return array


def _write_cache(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    except OSError as exc:
        _LOG.warning("cannot cache decoded CelebA in %s (%s); set %s", path.parent, exc, CACHE_ENV)
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp_name, path)
    except OSError as exc:
        _LOG.warning("cannot write the CelebA cache %s (%s)", path, exc)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def load_celeba(
    split: str = "train",
    resolution: int = 64,
    root: PathLike | None = None,
    limit: int | None = None,
    folder: PathLike | None = None,
    *,
    cache: bool = True,
    cache_dir: PathLike | None = None,
    progress: bool = True,
    return_ids: bool = False,
    as_bytes: bool = False,
):
    """Load aligned CelebA images of an official split, cropped and resized.

    Args:
        split: ``"train"``, ``"valid"``, ``"test"`` (official partition) or ``"all"``.
        resolution: 64 (crop 140 at width 178, resize) or 128 (crop 128 at width 178).
        root: data root (default ``$BALANCE_DATA``, else the user cache folder).
        limit: take the first ``limit`` ids of the split present in the folder (id order); when
            fewer are present, all of them are returned (check ``len``).
        folder: image folder, a name under ``<root>/celeba/`` (default ``img_align_celeba``;
            e.g. ``img_align_celeba_89x109``) or an absolute path.
        cache: read / write the decoded uint8 array under ``cache_dir``.
        cache_dir: cache folder (default ``$BALANCE_CACHE``, else ``~/.cache/balance/decoded``).
        progress: show a tqdm bar while decoding.
        return_ids: also return the list of file names loaded (row order).
        as_bytes: return the uint8 bytes (a quarter of the memory; :func:`balance.train.train`
            converts each batch to ``byte / 255`` on the device, bit-identical to the floats).

    Returns:
        images float32 ``[N, 3, R, R]`` with values ``byte / 255`` in ``[0, 1]`` (uint8 bytes
        with ``as_bytes``); with ``return_ids``, ``(images, ids)``.

    Raises:
        DataError: missing folder or partition file, no image of the split present, or an
            undecodable JPEG (the message names the file or folder).
    """
    if resolution not in CROP_AT_REFERENCE_WIDTH:
        raise ValueError(
            f"resolution must be one of {sorted(CROP_AT_REFERENCE_WIDTH)}, got {resolution!r}"
        )
    ids = celeba_ids(split, root=root, folder=folder, limit=limit)
    image_dir = _image_dir(root, folder)
    if limit is not None and len(ids) < limit:
        _LOG.info("CelebA %s: %d of the %d requested images are present", split, len(ids), limit)
    shape = (len(ids), 3, resolution, resolution)

    array = None
    cache_path = None
    if cache:
        key = _fingerprint(image_dir, ids, split, resolution, limit)
        name = f"celeba-{image_dir.name}-{split}-{resolution}-{limit or 'all'}-{key[:16]}.npy"
        cache_path = resolve_cache_dir(cache_dir) / name
        array = _read_cache(cache_path, shape)
    if array is None:
        from tqdm import tqdm

        array = np.empty(shape, dtype=np.uint8)
        for i, name in enumerate(
            tqdm(ids, desc=f"decoding CelebA {split} {resolution}px", disable=not progress)
        ):
            array[i] = preprocess_image(image_dir / name, resolution)
        if cache_path is not None:
            _write_cache(cache_path, array)

    images = torch.from_numpy(array)
    if not as_bytes:
        images = images.to(torch.float32).div_(255.0)
    return (images, ids) if return_ids else images
