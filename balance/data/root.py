"""Where data and decoded caches live.

The data root is chosen, first match wins, by

1. the ``root`` argument of a loader,
2. the environment variable ``BALANCE_DATA``,
3. a user cache folder: ``$XDG_CACHE_HOME/balance`` (``~/.cache/balance`` when unset).

Layout under the root::

    mnist/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
          t10k-images-idx3-ubyte.gz,  t10k-labels-idx1-ubyte.gz
    celeba/list_eval_partition.txt
    celeba/img_align_celeba/000001.jpg ...          (178 x 218 originals)
    celeba/img_align_celeba_89x109/000001.jpg ...   (optional half-resolution copy)
    cifar10/cifar-10-batches-py/data_batch_1..5, test_batch
                                                   (cifar-10-batches-py/ directly under the root
                                                    is accepted too)

Decoded arrays (CelebA) are cached apart from the data, because the data root may be read-only:
``cache_dir`` argument, else ``BALANCE_CACHE``, else ``<user cache folder>/balance/decoded``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "BALANCE_DATA"
CACHE_ENV = "BALANCE_CACHE"


def user_cache_home() -> Path:
    """``$XDG_CACHE_HOME`` when set to an absolute path (XDG spec), else ``~/.cache``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    return Path.home() / ".cache"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$BALANCE_DATA``, else ``<user cache>/balance``.

    The folder is not created here (downloads create the subfolder they need); ``~`` is expanded.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return user_cache_home() / "balance"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for decoded-array caches: argument, else ``$BALANCE_CACHE``, else a user cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return Path(env).expanduser()
    return user_cache_home() / "balance" / "decoded"
