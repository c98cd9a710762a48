"""Theorem 3 (THEORY.md section 3): why the penalty on latent energy needs an unbounded gradient.

Regularised autoencoder energy with a penalty ``h`` on the reconstruction and on each latent
row's energy (linear decoder ``D [d, kappa]`` with unit-norm columns, codes ``Z [kappa, n]``):

    L_h(D, Z) = h( ||X - D Z||_F^2 / (d n) ) + (1/d) sum_k h( u_k ),   u_k = ||Z_k||^2 / n.

Duplicate-column perturbation of a balanced solution (exact reconstruction, r non-zero rows):
copy active column ``a`` of D into an idle slot ``i`` and move a fraction ``delta`` of row a's
code onto the copy, ``Z_a <- (1 - delta) Z_a``, ``Z_i <- delta Z_a``. ``D Z`` is unchanged and
the row energies become ``(1 - delta)^2 u`` and ``delta^2 u``, so the energy changes by

    Delta(delta) = (1/d) [ h((1 - delta)^2 u) + h(delta^2 u) - h(u) - h(0) ]
                 = (1/d) [ -2 delta u h'(u) + h(delta^2 u) - h(0) ] + O(delta^2).

With ``h'(0)`` finite the second part is ``O(delta^2)``: the balanced point is not a local
minimum. ``h(u) = u^p``: ``Delta >= 0`` for every delta when ``p <= 1/2`` (``p = 1/2``: exactly
0), improving moves for ``1/2 < p < 1``. ``h(u) = log(u + eps)``: improving moves only for
``delta < ~ 2 eps / u``, while ``h'(0) = 1/eps`` (the gradient at the idle row) blows up.

Everything here is float64-friendly pure math; :class:`Penalty` is a small frozen config whose
``__call__`` evaluates h on a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PENALTY_KINDS",
    "Penalty",
    "duplicate_column_perturbation",
    "largest_improving_fraction",
    "penalty_change",
    "regularized_ae_energy",
    "row_energies",
]

PENALTY_KINDS = ("linear", "linear_quadratic", "saturating_exp", "log1p", "power", "log_eps",
                 "smooth_indicator")


@dataclass(frozen=True)
class Penalty:
    """A penalty ``h: [0, inf) -> R``, increasing.

    kinds: ``linear`` u; ``linear_quadratic`` u + u^2; ``saturating_exp`` 1 - exp(-u/tau);
    ``log1p`` log(1 + u/tau); ``power`` u^p; ``log_eps`` log(u + eps); ``smooth_indicator``
    u / (u + eps), whose limit as eps -> 0 is the indicator I[u > 0] (a continuation path to
    it: h'(0) = 1/eps grows without bound).
    """

    kind: str
    tau: float = 1.0
    p: float = 1.0
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in PENALTY_KINDS:
            raise ValueError(f"kind must be one of {PENALTY_KINDS}, got {self.kind!r}")
        if not self.tau > 0 or not self.eps > 0 or not self.p > 0:
            raise ValueError(f"tau, p and eps must be positive, got {self}")

    def __call__(self, u: Tensor) -> Tensor:
        if self.kind == "linear":
            return u
        if self.kind == "linear_quadratic":
            return u + u * u
        if self.kind == "saturating_exp":
            return -torch.expm1(-u / self.tau)
        if self.kind == "log1p":
            return torch.log1p(u / self.tau)
        if self.kind == "power":
            return u.pow(self.p)
        if self.kind == "smooth_indicator":
            return u / (u + self.eps)
        return torch.log(u + self.eps)

    def derivative_at_zero(self) -> float:
        """``h'(0+)`` (``inf`` for ``u^p`` with ``p < 1``)."""
        if self.kind in ("linear", "linear_quadratic"):
            return 1.0
        if self.kind in ("saturating_exp", "log1p"):
            return 1.0 / self.tau
        if self.kind == "power":
            return math.inf if self.p < 1 else (1.0 if self.p == 1 else 0.0)
        return 1.0 / self.eps

    @property
    def bounded_gradient(self) -> bool:
        """Whether ``h'`` is bounded near 0 (finite ``h'(0)``)."""
        return math.isfinite(self.derivative_at_zero())


def row_energies(z: Tensor) -> Tensor:
    """``u_k = ||Z_k||^2 / n`` for codes ``Z [kappa, n]`` -> ``[kappa]``."""
    if z.dim() != 2:
        raise ValueError(f"Z must be [kappa, n], got shape {tuple(z.shape)}")
    return z.square().sum(dim=1) / z.shape[1]


def regularized_ae_energy(x: Tensor, decoder: Tensor, z: Tensor, h: Penalty) -> Tensor:
    """``L_h = h(||X - D Z||^2 / (d n)) + (1/d) sum_k h(||Z_k||^2 / n)`` (scalar).

    Shapes: data ``X [d, n]`` (columns are samples), decoder ``D [d, kappa]``, codes
    ``Z [kappa, n]``.
    """
    if x.dim() != 2 or decoder.dim() != 2 or z.dim() != 2:
        raise ValueError("X, D and Z must be matrices [d, n], [d, kappa], [kappa, n]")
    d, n = x.shape
    if decoder.shape[0] != d or decoder.shape[1] != z.shape[0] or z.shape[1] != n:
        raise ValueError(
            f"shapes do not chain: X {tuple(x.shape)}, D {tuple(decoder.shape)}, "
            f"Z {tuple(z.shape)}"
        )
    rec = (x - decoder @ z).square().sum() / (d * n)
    return h(rec) + h(row_energies(z)).sum() / d


def duplicate_column_perturbation(
    decoder: Tensor, z: Tensor, active: int, idle: int, delta: float
) -> tuple[Tensor, Tensor]:
    """Copy column ``active`` of ``D`` into slot ``idle`` and move ``delta`` of row ``active``.

    Returns new ``(D', Z')`` with ``D'[:, idle] = D[:, active]``,
    ``Z'[active] = (1 - delta) Z[active]``, ``Z'[idle] = delta Z[active]``, so ``D' Z' = D Z``
    when row ``idle`` of Z was zero. The inputs are not modified.
    """
    kappa = z.shape[0]
    if not (0 <= active < kappa and 0 <= idle < kappa) or active == idle:
        raise ValueError(f"need two distinct slots in [0, {kappa}), got {active} and {idle}")
    d2 = decoder.clone()
    z2 = z.clone()
    d2[:, idle] = decoder[:, active]
    z2[idle] = delta * z[active]
    z2[active] = (1.0 - delta) * z[active]
    return d2, z2


def penalty_change(h: Penalty, u: float, delta: float | np.ndarray, d: int = 1) -> np.ndarray:
    """Exact energy change of the perturbation, in float64 (reconstruction unchanged):

        Delta(delta) = (1/d) [ h((1 - delta)^2 u) + h(delta^2 u) - h(u) - h(0) ].
    """
    delta_t = torch.as_tensor(np.asarray(delta, dtype=np.float64))
    u_t = torch.tensor(float(u), dtype=torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    change = h((1 - delta_t) ** 2 * u_t) + h(delta_t**2 * u_t) - h(u_t) - h(zero)
    return (change / d).numpy()


def largest_improving_fraction(
    h: Penalty, u: float, *, delta_min: float = 1e-12, grid: int = 2001
) -> float:
    """End of the first interval ``(0, delta*)`` of fractions that lower the energy.

    Scans a log-spaced grid of ``delta`` in ``[delta_min, 1/2]`` for the first point where
    ``Delta >= 0`` after a negative stretch and refines it with Brent's method; returns 0
    when no fraction on the grid improves and 1/2 when all of them do (by symmetry fractions
    above 1/2 only relabel the two rows).
    """
    deltas = np.geomspace(delta_min, 0.5, grid)
    change = penalty_change(h, u, deltas)
    negative = change < 0
    if not negative.any():
        return 0.0
    first_neg = int(np.argmax(negative))
    rest = ~negative[first_neg:]
    if not rest.any():
        return 0.5
    stop = first_neg + int(np.argmax(rest))

    from scipy.optimize import brentq  # lazy: keeps importing this module cheap

    def f(delta: float) -> float:
        return float(penalty_change(h, u, delta))

    return float(brentq(f, deltas[stop - 1], deltas[stop], xtol=1e-300, rtol=1e-13))
