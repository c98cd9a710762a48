"""Frechet Inception Distance on in-memory images, offline first.

Three layers, as in pytorch-fid: the float64 math
(:func:`balance.metrics.frechet.frechet_distance`), feature extraction (this module: pytorch-fid's
``InceptionV3``, pool3 features, 2048-d), and a thin command line (:mod:`balance.metrics.fid_cli`).

The network is pytorch-fid's own ``InceptionV3`` (same blocks, same bilinear resize to 299 and
[0, 1] -> [-1, 1] scaling), so FIDs agree with pytorch-fid's. Its weights file
``pt_inception-2015-12-05-6726825d.pth`` is never downloaded implicitly: it is read from, first
match wins,

1. the ``weights`` argument,
2. ``$BALANCE_FID_WEIGHTS``,
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints/`` (where pytorch-fid keeps it),

and :class:`FIDWeightsMissing` says where to put the file when none exists
(:func:`download_inception_weights` fetches it on request). The same network with seeded random
weights (:func:`random_inception_state_dict`) checks the whole pipeline without the weights file;
FIDs computed with it are not FIDs and are cached under a different key.

Images are float tensors [N, C, H, W] in [0, 1] (uint8 [0, 255] is accepted too), C = 1
(repeated to 3 channels, as PIL's ``convert('RGB')`` does) or 3. By default they are quantised to
8 bits first, so an in-memory FID equals pytorch-fid's FID of the same images saved as PNG.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from balance.metrics.frechet import frechet_distance

if TYPE_CHECKING:
    from pytorch_fid.inception import InceptionV3

logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: Where pytorch-fid downloads the weights from (``pytorch_fid.inception.FID_WEIGHTS_URL``).
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
)
WEIGHTS_ENV = "BALANCE_FID_WEIGHTS"
STATS_CACHE_ENV = "BALANCE_FID_CACHE"
#: Pool3 feature dimension.
FEATURE_DIM = 2048
#: Network tag of the pretrained weights, part of every reference-statistics cache key.
PRETRAINED_TAG = "inception-2015-12-05"

ImageSource = Tensor | np.ndarray | Iterable[Tensor]


class FIDWeightsMissing(RuntimeError):
    """The Inception weights file is absent or unreadable; the message says where to put it."""


class FIDWeightsInvalid(FIDWeightsMissing):
    """A weights file whose SHA-256 does not start with the hash in the official file name."""


#: The first hex digits of the official file's SHA-256, as its name carries them.
WEIGHTS_HASH_PREFIX = WEIGHTS_FILENAME.rsplit("-", 1)[1].split(".")[0]
#: Set to 1 to accept weights other than the official ones (FIDs are then labelled so).
NONSTANDARD_ENV = "BALANCE_FID_NONSTANDARD"


def file_sha256(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(path: str | os.PathLike[str], *, allow_nonstandard: bool | None = None) -> str:
    """The network tag of a weights file: :data:`PRETRAINED_TAG` when its SHA-256 starts with
    :data:`WEIGHTS_HASH_PREFIX` (the official pytorch-fid file), else ``nonstandard-<hash>``
    when non-standard weights are allowed (``allow_nonstandard``, default
    ``$BALANCE_FID_NONSTANDARD=1``); otherwise :class:`FIDWeightsInvalid`."""
    digest = file_sha256(path)
    if digest.startswith(WEIGHTS_HASH_PREFIX):
        return PRETRAINED_TAG
    if allow_nonstandard is None:
        allow_nonstandard = os.environ.get(NONSTANDARD_ENV, "") == "1"
    if allow_nonstandard:
        logger.warning("using non-standard Inception weights %s (sha256 %s...): these FIDs "
                       "are not comparable with published ones", path, digest[:8])
        return f"nonstandard-{digest[:8]}"
    raise FIDWeightsInvalid(
        f"{path}: sha256 {digest[:8]}... is not the {WEIGHTS_HASH_PREFIX}... of pytorch-fid's "
        f"official weights, so FIDs from it would not be FIDs. Replace it by a fresh copy of "
        f"{WEIGHTS_URL} (balance-fid --download), or accept other weights with "
        f"balance-fid --allow-nonstandard-weights or {NONSTANDARD_ENV}=1 (their FIDs are "
        "labelled non-standard).")


# --------------------------------------------------------------------------------------------
# Weights and network
# --------------------------------------------------------------------------------------------


def default_weights_path() -> Path:
    """``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's
    download location; follows ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def _missing_message(path: Path, source: str) -> str:
    return (
        f"Inception weights for FID not found at {path} ({source}).\n"
        f"Put the file {WEIGHTS_FILENAME} at\n    {default_weights_path()}\n"
        f"(the torch hub cache that pytorch-fid uses), or pass weights=PATH / --weights PATH, or "
        f"set ${WEIGHTS_ENV}=PATH. It comes from\n    {WEIGHTS_URL}\n"
        "(e.g. `balance-fid --download`, or any machine with internet access: "
        f"`curl -L -o {WEIGHTS_FILENAME} {WEIGHTS_URL}`)."
    )


def resolve_weights_path(weights: str | os.PathLike[str] | None = None) -> Path:
    """The weights file: ``weights`` > ``$BALANCE_FID_WEIGHTS`` > the torch hub cache.

    Raises:
        FIDWeightsMissing: the chosen file does not exist (the message gives the hub-cache path
            to put it at and the URL it comes from). Nothing is downloaded.
    """
    if weights is not None:
        path, source = Path(weights).expanduser(), "the weights argument"
    elif os.environ.get(WEIGHTS_ENV):
        path, source = Path(os.environ[WEIGHTS_ENV]).expanduser(), f"${WEIGHTS_ENV}"
    else:
        path, source = default_weights_path(), "the torch hub cache"
    if not path.is_file():
        raise FIDWeightsMissing(_missing_message(path, source))
    return path


def inception_weights_available(weights: str | os.PathLike[str] | None = None) -> bool:
    """Whether :func:`resolve_weights_path` finds a weights file (tables print
    "n/a (no Inception weights)" when not)."""
    try:
        resolve_weights_path(weights)
    except FIDWeightsMissing:
        return False
    return True


def download_inception_weights(dest: str | os.PathLike[str] | None = None) -> Path:
    """Download the weights to ``dest`` (default: the torch hub cache). Only ever called on
    request (``balance-fid --download``); the rest of this module never touches the network."""
    path = Path(dest).expanduser() if dest is not None else default_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch verifies the SHA-256 prefix before moving the file into place
    torch.hub.download_url_to_file(WEIGHTS_URL, str(path), hash_prefix=WEIGHTS_HASH_PREFIX,
                                   progress=True)
    return path


def _fid_inception_skeleton() -> torch.nn.Module:
    """An uninitialised copy of the module that ``pytorch_fid.inception.fid_inception_v3`` builds
    (torchvision's Inception v3 with pytorch-fid's patched blocks). Used only for the names and
    shapes of a random state dict; loading that dict strictly into pytorch-fid's own network
    checks that the structure still matches."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def random_inception_state_dict(seed: int) -> dict[str, Tensor]:
    """Seeded non-pretrained weights for pytorch-fid's FID Inception network.

    Convolutions: He-normal, ``N(0, 2 / fan_in)``, which keeps the activation scale through the
    ReLU stack so that pool3 features stay O(0.1-1); batch norms: identity (weight 1, bias 0,
    running mean 0, variance 1); the unused 1008-way classifier: ``N(0, 1 / 2048)``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    out: dict[str, Tensor] = {}
    for name, value in _fid_inception_skeleton().state_dict().items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros_like(value)
        elif value.dim() == 4:
            fan_in = value[0].numel()
            out[name] = torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / fan_in)
        elif value.dim() == 2:
            out[name] = torch.randn(value.shape, generator=generator) / math.sqrt(value.shape[1])
        elif name.endswith(("running_var", "bn.weight")):
            out[name] = torch.ones_like(value)
        else:  # bn.bias, running_mean, fc.bias
            out[name] = torch.zeros_like(value)
    return out


_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def _state_dict_instead_of_download(state_dict: dict[str, Tensor]) -> Iterator[None]:
    """Make ``pytorch_fid.inception.fid_inception_v3`` load ``state_dict`` where it would call
    ``load_state_dict_from_url``: pytorch-fid's network, built without any download."""
    from pytorch_fid import inception as pfi

    def give(*args: Any, **kwargs: Any) -> dict[str, Tensor]:
        return state_dict

    with _BUILD_LOCK:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = give
        try:
            yield
        finally:
            pfi.load_state_dict_from_url = original


def build_inception(state_dict: dict[str, Tensor], tag: str) -> InceptionV3:
    """pytorch-fid's ``InceptionV3`` returning pool3 features, in eval mode, with ``state_dict``
    (loaded strictly) and ``model.fid_network_tag = tag`` (used in cache keys)."""
    from pytorch_fid.inception import InceptionV3

    with _state_dict_instead_of_download(state_dict):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
    model.eval()
    model.fid_network_tag = tag
    return model


@functools.lru_cache(maxsize=4)
def _cached_inception(key: tuple[Any, ...], device: str) -> InceptionV3:
    kind = key[0]
    if kind == "random":
        seed = key[1]
        return build_inception(random_inception_state_dict(seed), f"random-init-seed{seed}").to(
            device
        )
    path = Path(key[1])
    tag = check_weights(path, allow_nonstandard=key[4])
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated/corrupt file raises many kinds of errors
        raise FIDWeightsMissing(
            f"Inception weights file {path} could not be read ({err}); replace it by a fresh "
            f"copy of {WEIGHTS_URL}"
        ) from err
    try:
        model = build_inception(state_dict, tag)
    except (RuntimeError, KeyError, TypeError) as err:
        raise FIDWeightsMissing(
            f"{path} is not pytorch-fid's Inception state dict ({err}); expected {WEIGHTS_URL}"
        ) from err
    return model.to(device)


def load_inception(
    weights: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    random_init_seed: int | None = None,
    allow_nonstandard: bool | None = None,
) -> InceptionV3:
    """pytorch-fid's FID Inception network (pool3, eval mode) on ``device``, cached per file.

    Args:
        weights: the weights file; None looks at ``$BALANCE_FID_WEIGHTS``, then the hub cache.
        device: where the network runs.
        random_init_seed: build the network with :func:`random_inception_state_dict` instead of
            the pretrained weights (pipeline checks without the weights file; not an FID).
        allow_nonstandard: accept a weights file that is not the official one
            (:func:`check_weights`; its network tag then says so).

    Raises:
        FIDWeightsMissing: no weights file (message: where to put it, where it comes from), or an
            unreadable one. Never downloads.
        FIDWeightsInvalid: a file other than the official weights (checked by SHA-256).
    """
    device = str(torch.device(device))
    if random_init_seed is not None:
        return _cached_inception(("random", int(random_init_seed)), device)
    path = resolve_weights_path(weights).resolve()
    stat = path.stat()
    if allow_nonstandard is None:
        allow_nonstandard = os.environ.get(NONSTANDARD_ENV, "") == "1"
    return _cached_inception(("file", str(path), stat.st_size, stat.st_mtime_ns,
                              bool(allow_nonstandard)), device)


# --------------------------------------------------------------------------------------------
# Features and statistics
# --------------------------------------------------------------------------------------------


def _prepare(batch: Tensor, quantize: bool) -> Tensor:
    """[B, C, H, W] in [0, 1] (or uint8) -> float32 [B, 3, H, W] in [0, 1]."""
    if batch.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(batch.shape)}")
    if batch.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {batch.shape[1]}")
    if batch.dtype == torch.uint8:
        # The same conversion as torchvision's ToTensor on a PIL image (pytorch-fid's loader).
        batch = batch.to(torch.float32).div(255)
    elif batch.is_floating_point():
        if not torch.isfinite(batch).all():
            raise ValueError("images contain non-finite values")
        lo, hi = float(batch.min()), float(batch.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; clamp or rescale "
                "them first (the network maps [0, 1] to [-1, 1])"
            )
        if quantize:
            batch = torch.round(batch * 255).to(torch.uint8).to(torch.float32).div(255)
        else:
            batch = batch.to(torch.float32)
    else:
        raise ValueError(f"images must be float in [0, 1] or uint8, got {batch.dtype}")
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return batch


def _quantized(images: Tensor) -> Tensor:
    """The uint8 images the network sees (for cache keys: equal images, equal key)."""
    if images.dtype == torch.uint8:
        return images
    return torch.round(images.float().clamp(0, 1) * 255).to(torch.uint8)


def _batches(images: ImageSource, batch_size: int) -> tuple[Iterable[Tensor], int | None]:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, Tensor):
        n = images.shape[0]
        return (images[i:i + batch_size] for i in range(0, n, batch_size)), math.ceil(
            n / batch_size
        )
    total = len(images) if hasattr(images, "__len__") else None
    return images, total


def inception_features(
    images: ImageSource,
    *,
    model: torch.nn.Module | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    quantize: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Pool3 activations of pytorch-fid's Inception network, float64 [N, 2048].

    Args:
        images: a tensor/array [N, C, H, W] (float in [0, 1] or uint8; C = 1 or 3), cut into
            batches of ``batch_size``, or an iterable of such batches (e.g. from a generator).
        model: a network from :func:`load_inception` (or :func:`build_inception`); default:
            ``load_inception(weights, device=device)``.
        weights: weights file when ``model`` is None.
        device: where the network runs; default: the model's device if ``model`` is given,
            else the images' device (CPU for iterables).
        quantize: round float images to multiples of 1/255 first, as saving them to PNG would.
        progress: show a tqdm bar over batches.

    Returns:
        ``[N, 2048]`` float64 (float32 network outputs, stored as pytorch-fid's
        ``get_activations`` stores them). No sample is dropped.

    Raises:
        FIDWeightsMissing: ``model`` is None and no weights file is found.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        if model is not None:
            device = next(model.parameters()).device
        else:
            device = images.device if isinstance(images, Tensor) else torch.device("cpu")
    device = torch.device(device)
    if model is None:
        model = load_inception(weights, device=device)
    batches, total = _batches(images, batch_size)
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in tqdm(batches, total=total, disable=not progress, desc="FID features",
                          unit="batch"):
            x = _prepare(torch.as_tensor(batch).to(device), quantize)
            pred = model(x)[0]  # [B, 2048, 1, 1] after the network's adaptive average pool
            chunks.append(pred.reshape(pred.shape[0], -1).cpu().numpy().astype(np.float64))
    if not chunks:
        raise ValueError("no images given")
    return np.concatenate(chunks, axis=0)


class RankDeficientWarning(UserWarning):
    """FID statistics from fewer images than feature dimensions."""


@dataclass(frozen=True, eq=False)
class FIDStatistics:
    """Mean ``mu [d]`` and covariance ``sigma [d, d]`` (float64, ``np.cov`` with N - 1) of
    ``count`` feature vectors; saved as pytorch-fid's ``.npz`` (keys ``mu``, ``sigma``, plus
    ``count``)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> FIDStatistics:
        """Statistics of features [N, d] (N >= 2), exactly as pytorch-fid's
        ``calculate_activation_statistics`` computes them."""
        act = np.asarray(features, dtype=np.float64)
        if act.ndim != 2 or act.shape[0] < 2:
            raise ValueError(f"need features [N >= 2, d], got shape {act.shape}")
        if act.shape[0] < act.shape[1]:
            import warnings

            warnings.warn(
                f"FID statistics of {act.shape[0]} images in {act.shape[1]} dimensions: the "
                f"covariance has rank at most {act.shape[0] - 1}, and the FID is biased "
                f"(use at least {act.shape[1]} images, 10,000 for published numbers)",
                RankDeficientWarning, stacklevel=2)
        return cls(mu=np.mean(act, axis=0), sigma=np.cov(act, rowvar=False), count=act.shape[0])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a temporary file in the same folder, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                # uncompressed: float64 covariances barely compress, and zlib on 32 MB is slow
                np.savez(handle, mu=self.mu, sigma=self.sigma, count=np.int64(self.count))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FIDStatistics:
        """Read a ``.npz`` with ``mu`` and ``sigma`` (ours or pytorch-fid's ``--save-stats``).

        Raises:
            ValueError: unreadable file, missing keys, wrong shapes or non-finite values.
        """
        try:
            # our own handle, closed even when np.load fails half-way through a corrupt file
            with open(path, "rb") as handle, np.load(handle) as f:
                mu = np.asarray(f["mu"], dtype=np.float64)
                sigma = np.asarray(f["sigma"], dtype=np.float64)
                count = int(f["count"]) if "count" in f.files else -1
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable FID statistics .npz ({err})") from err
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
            raise ValueError(f"{path}: non-finite statistics")
        return cls(mu=mu, sigma=sigma, count=count)


def image_statistics(images: ImageSource, **feature_kwargs: Any) -> FIDStatistics:
    """:class:`FIDStatistics` of :func:`inception_features` of ``images`` (same keywords)."""
    return FIDStatistics.from_features(inception_features(images, **feature_kwargs))


# --------------------------------------------------------------------------------------------
# Cached reference statistics
# --------------------------------------------------------------------------------------------


def default_stats_cache_dir() -> Path:
    """``$BALANCE_FID_CACHE``, else ``$XDG_CACHE_HOME/balance/fid_stats`` (``~/.cache/...``)."""
    env = os.environ.get(STATS_CACHE_ENV, "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "balance" / "fid_stats"


def _slug(value: object) -> str:
    text = str(value).strip().lower()
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text) or "none"


def stats_cache_key(
    dataset: str, split: str, resolution: int, count: int, *, network: str = PRETRAINED_TAG,
    images_id: str = "any",
) -> str:
    """File name of cached reference statistics, e.g.
    ``celeba-test-64px-n10000-inception-2015-12-05-3f2a....npz``. The network tag keeps
    statistics of other networks apart; ``images_id`` (a hash of the images, or of their
    source) keeps another image set with the same name from getting these statistics."""
    if int(count) < 2:
        raise ValueError(f"count must be >= 2, got {count}")
    return (f"{_slug(dataset)}-{_slug(split)}-{int(resolution)}px-n{int(count)}-"
            f"{_slug(network)}-{_slug(images_id)}.npz")


def reference_statistics(
    images: Tensor | np.ndarray | Callable[[], Tensor | np.ndarray],
    *,
    dataset: str,
    split: str,
    resolution: int,
    count: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model: torch.nn.Module | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = False,
    source: str | None = None,
) -> FIDStatistics:
    """FID statistics of a reference set, cached to ``cache_dir/stats_cache_key(...)``.

    The key names the images: a hash of the (first ``count``, 8-bit quantised) images when
    they are given as a tensor, else ``source``, which a callable needs (a fingerprint of where
    the images come from, e.g. a hash of their file names and sizes).

    A cache hit costs one file read: ``images`` may be a zero-argument callable (e.g.
    ``lambda: load_celeba("test", 64)``) that is called only on a miss. The first ``count``
    images are used (default: all, which needs a tensor, not a callable). A cache file that
    cannot be read or does not match (shape, count) is recomputed and replaced.

    The model (default ``load_inception(weights, device=device)``) must carry
    ``fid_network_tag`` (set by :func:`load_inception` / :func:`build_inception`); the tag is
    part of the key.
    """
    if model is None:
        model = load_inception(weights, device=device or "cpu")
    network = getattr(model, "fid_network_tag", None)
    if network is None:
        raise ValueError("model has no fid_network_tag; build it with load_inception or "
                         "build_inception so that cached statistics name their network")
    if count is None:
        if callable(images):
            raise ValueError("count is needed when images is a callable (it is part of the key)")
        count = len(images)
    if callable(images):
        if source is None:
            raise ValueError("source is needed when images is a callable: a fingerprint of the "
                             "images (e.g. a hash of their files), part of the cache key")
        images_id = _slug(source)[:40]
    else:
        from balance.fingerprint import tensor_digest

        images_id = tensor_digest(_quantized(torch.as_tensor(images[:count])))
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_stats_cache_dir()
    path = folder / stats_cache_key(dataset, split, resolution, count, network=network,
                                    images_id=images_id)
    if path.is_file():
        try:
            stats = FIDStatistics.load(path)
        except ValueError as err:
            logger.warning("recomputing FID reference statistics: %s", err)
        else:
            if stats.count == count and stats.mu.shape == (FEATURE_DIM,):
                return stats
            logger.warning("recomputing FID reference statistics: %s holds count %d, "
                           "dimension %d", path, stats.count, stats.mu.shape[0])
    data = images() if callable(images) else images
    if len(data) < count:
        raise ValueError(f"{dataset}/{split}: asked for {count} reference images, got {len(data)}")
    data = data[:count]
    if data.shape[-1] != resolution:
        raise ValueError(f"{dataset}/{split}: images are {tuple(data.shape[-2:])}, but the key "
                         f"says resolution {resolution}")
    stats = image_statistics(data, model=model, batch_size=batch_size, device=device,
                             progress=progress)
    stats.save(path)
    return stats


def reference_features(
    images: Tensor | np.ndarray,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    model: torch.nn.Module | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Inception pool features [N, 2048] of a reference set (for KID and precision / recall,
    which need the features, not their statistics), cached like :func:`reference_statistics`:
    ``cache_dir/features-n<N>-<network tag>-<hash of the 8-bit images>.npy``."""
    from balance.fingerprint import tensor_digest

    if model is None:
        model = load_inception(weights, device=device or "cpu")
    network = getattr(model, "fid_network_tag", None)
    if network is None:
        raise ValueError("model has no fid_network_tag; build it with load_inception or "
                         "build_inception so that cached features name their network")
    images_id = tensor_digest(_quantized(torch.as_tensor(images)))
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_stats_cache_dir()
    path = folder / f"features-n{len(images)}-{_slug(network)}-{_slug(images_id)}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
        except (OSError, ValueError) as err:
            logger.warning("recomputing reference features: %s", err)
        else:
            if cached.shape == (len(images), FEATURE_DIM):
                return cached
            logger.warning("recomputing reference features: %s holds shape %s", path,
                           cached.shape)
    features = inception_features(images, model=model, batch_size=batch_size, device=device)
    from balance.runs import _atomic_write

    _atomic_write(path, lambda handle: np.save(handle, features))
    return features


# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------


def fid_from_statistics(a: FIDStatistics, b: FIDStatistics) -> float:
    """:func:`frechet_distance` of two sets of statistics."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def fid_from_images(
    real: ImageSource | FIDStatistics,
    fake: ImageSource | FIDStatistics,
    *,
    model: torch.nn.Module | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    quantize: bool = True,
    progress: bool = False,
) -> float:
    """FID between two image sets (either may be precomputed :class:`FIDStatistics`, e.g. from
    :func:`reference_statistics`).

    Images: [N, C, H, W] in [0, 1] (see :func:`inception_features`); both sides go through the
    same network. Unit: squared pool3 activations (pytorch-fid's scale).

    Raises:
        FIDWeightsMissing: no model given and no weights file found.
    """
    sides = []
    for images in (real, fake):
        if isinstance(images, FIDStatistics):
            sides.append(images)
            continue
        if model is None:
            where = device if device is not None else (
                images.device if isinstance(images, Tensor) else "cpu")
            model = load_inception(weights, device=where)
        sides.append(image_statistics(images, model=model, batch_size=batch_size, device=device,
                                      quantize=quantize, progress=progress))
    return fid_from_statistics(sides[0], sides[1])

