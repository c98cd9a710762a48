"""Data: MNIST, CelebA, CIFAR-10 loaders and synthetic data with known structure.

Import the loaders from their submodules (``balance.data.mnist``, ``.celeba``, ``.cifar``,
``.synthetic``); this package itself imports only the cheap pieces below, so importing it loads
neither torch nor numpy.
"""

from .errors import DataError
from .root import resolve_cache_dir, resolve_data_root

__all__ = ["DataError", "resolve_cache_dir", "resolve_data_root"]
