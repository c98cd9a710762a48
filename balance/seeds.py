"""Results over several seeds: mean and standard error per number, and whether an effect
exceeds the seed-to-seed spread.

:func:`aggregate` merges the results dicts of one experiment run once per seed: every number
that varies becomes a :class:`MeanSE` (a ``float`` equal to the mean, carrying the standard
error and the number of seeds), lists of numbers element by element, booleans the count of
seeds where they hold (``"2/3"``), other values the first seed's when all agree (else the
list of them).
Tables format a ``MeanSE`` as ``mean ± s.e.`` (``balance.reporting.format_number``).
Saved as JSON, a ``MeanSE`` is ``{"mean", "se", "n"}``; :func:`revive` turns those back.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["MeanSE", "aggregate", "exceeds_spread", "revive"]


class MeanSE(float):
    """A mean over ``n`` seeds (the float value) with its standard error ``se``."""

    se: float
    n: int

    def __new__(cls, mean: float, se: float, n: int) -> MeanSE:
        obj = super().__new__(cls, mean)
        obj.se = float(se)
        obj.n = int(n)
        return obj

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanSE:
        """Mean and standard error (``std(ddof=1) / sqrt(n)``; 0 for one value)."""
        vals = [float(v) for v in values]
        n = len(vals)
        mean = sum(vals) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1) / n) if n > 1 else 0.0
        return cls(mean, se, n)

    def to_json(self) -> dict[str, float]:
        return {"mean": float(self), "se": self.se, "n": self.n}

    def __reduce__(self):
        return (MeanSE, (float(self), self.se, self.n))

    def __repr__(self) -> str:
        return f"MeanSE({float(self)!r}, se={self.se!r}, n={self.n})"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def aggregate(results: Sequence[Any]) -> Any:
    """Merge ``results`` (one per seed, same structure) as described in the module docstring."""
    if not results:
        raise ValueError("aggregate needs the results of at least one seed")
    first = results[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(r, dict) and k in r for r in results)]
        return {k: aggregate([r[k] for r in results]) for k in keys}
    if all(_is_number(r) for r in results):
        if all(r == first for r in results):  # no spread (e.g. the paper's numbers)
            return first
        return MeanSE.of(results)
    if all(isinstance(r, bool) for r in results):
        return f"{sum(results)}/{len(results)}"
    if all(isinstance(r, list) for r in results) and len({len(r) for r in results}) == 1:
        return [aggregate(list(items)) for items in zip(*results, strict=True)]
    if all(r == first for r in results):
        return first
    return list(results)


def revive(data: Any) -> Any:
    """JSON data with ``{"mean", "se", "n"}`` dicts turned back into :class:`MeanSE`."""
    if isinstance(data, dict):
        if set(data) == {"mean", "se", "n"}:
            return MeanSE(data["mean"], data["se"], data["n"])
        return {k: revive(v) for k, v in data.items()}
    if isinstance(data, list):
        return [revive(v) for v in data]
    return data


def exceeds_spread(a: Any, b: Any, *, z: float = 2.0) -> bool | None:
    """Whether ``b - a`` exceeds ``z`` combined standard errors (``sqrt(se_a^2 + se_b^2)``) in
    absolute value; None when neither has a spread (a single seed: nothing to compare with)."""
    se_a = getattr(a, "se", 0.0)
    se_b = getattr(b, "se", 0.0)
    n = max(getattr(a, "n", 1), getattr(b, "n", 1))
    if n < 2:
        return None
    spread = math.hypot(se_a, se_b)
    return abs(float(b) - float(a)) > z * spread
