"""Evaluation metrics: FID (and its Frechet distance), NDB, MMD to the prior, and model diagnostics.

Import submodules for everything but :func:`frechet_distance`, which is re-exported here; the
re-export is lazy so that ``import balance.metrics`` stays free of numpy/scipy/torch imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balance.metrics.frechet import frechet_distance

__all__ = ["frechet_distance"]


def __getattr__(name: str) -> Any:
    if name == "frechet_distance":
        from balance.metrics.frechet import frechet_distance

        return frechet_distance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
