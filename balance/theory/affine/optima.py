"""Closed-form optima of the affine VAE (eq. 4): optimal encoder for a decoder, the minimal
energy, every global minimum enumerated, matching a trained solution to one of them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from balance.theory.affine.energy import (
    DTYPE,
    AffineParams,
    _check_data,
    _check_gamma,
    _check_kappa,
    _check_tensor,
    data_moments,
    spectrum,
)


def optimal_params(W_x: Tensor, mean: Tensor, gamma: float | Tensor) -> AffineParams:
    """The other parameters optimal for a fixed decoder weight W_x [d, kappa] (THEORY sec. 1):
    b_x = m, W_z = (W^T W + gamma I)^-1 W^T (ridge map), b_z = -W_z m,
    s2_k = gamma / (gamma + ||w_k||^2)."""
    W_x = _check_tensor("W_x", W_x, 2)
    mean = _check_tensor("mean", mean, 1)
    g = _check_gamma(gamma, W_x)
    k = W_x.shape[1]
    M = W_x.T @ W_x + g * torch.eye(k, dtype=W_x.dtype, device=W_x.device)
    W_z = torch.linalg.solve(M, W_x.T)
    s2 = g / (g + (W_x**2).sum(dim=0))
    return AffineParams(W_x=W_x, b_x=mean.clone(), W_z=W_z, b_z=-(W_z @ mean), s2=s2)


def _n_active(eigenvalues: Tensor, kappa: int, gamma: float) -> int:
    return min(kappa, int((eigenvalues > gamma).sum()))


def closed_form_energy(eigenvalues: Tensor, kappa: int, gamma: float) -> float:
    """Minimal energy (4): L* = a + sum_{i>a} l_i/gamma + sum_{i<=a} log l_i + (d-a) log gamma
    + kappa, a = min(kappa, #{l_i > gamma}); eigenvalues [d] of S (any order)."""
    lam = _check_tensor("eigenvalues", eigenvalues, 1).sort(descending=True).values
    kappa = _check_kappa(kappa)
    gamma = float(_check_gamma(gamma, lam))
    d = lam.numel()
    a = _n_active(lam, kappa, gamma)
    value = (
        a
        + float(lam[a:].sum()) / gamma
        + float(torch.log(lam[:a]).sum())
        + (d - a) * math.log(gamma)
        + kappa
    )
    return value


@dataclass(frozen=True)
class AffineOptimum:
    """A global minimum of energy (1).

    params: the parameters; energy: L* (eq. 4, nats x 2 per sample); active: the latent slots
    that carry information, slot active[j] holding eigen-direction j (eigenvalues sorted in
    decreasing order) with sign signs[j]; eigenvalues [d] and eigenvectors [d, d] of S.
    """

    params: AffineParams
    energy: float
    active: tuple[int, ...]
    signs: tuple[int, ...]
    eigenvalues: Tensor
    eigenvectors: Tensor

    @property
    def n_active(self) -> int:
        return len(self.active)

    @property
    def inactive(self) -> tuple[int, ...]:
        return tuple(k for k in range(self.params.kappa) if k not in self.active)


def _minimum_from_assignment(
    lam: Tensor,
    U: Tensor,
    mean: Tensor,
    kappa: int,
    gamma: float,
    slots: Sequence[int],
    signs: Sequence[int],
    value: float,
) -> AffineOptimum:
    d = U.shape[0]
    W = torch.zeros((d, kappa), dtype=DTYPE, device=U.device)
    for j, (slot, sign) in enumerate(zip(slots, signs, strict=True)):
        W[:, slot] = sign * U[:, j] * torch.sqrt(lam[j] - gamma)
    return AffineOptimum(
        params=optimal_params(W, mean, gamma),
        energy=value,
        active=tuple(int(s) for s in slots),
        signs=tuple(int(s) for s in signs),
        eigenvalues=lam,
        eigenvectors=U,
    )


def _moments_or_spectrum(X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, eigenvalues desc, eigenvectors) from data [n, d] or from a spectrum [d]
    (read as data with mean 0 and covariance diag(spectrum))."""
    if isinstance(X, Tensor) and X.ndim == 1:
        lam = _check_tensor("spectrum", X, 1)
        if (lam < 0).any():
            raise ValueError("a spectrum (eigenvalues of S) must be >= 0")
        order = torch.argsort(lam, descending=True)
        d = lam.numel()
        return torch.zeros(d, dtype=DTYPE), lam[order], torch.eye(d, dtype=DTYPE)[:, order]
    m, S = data_moments(X)
    lam, U = spectrum(S)
    return m, lam, U


def closed_form_optimum(X: Tensor, kappa: int, gamma: float) -> AffineOptimum:
    """The canonical global minimum of energy (1) for data X [n, d] (THEORY section 1).

    Eigen-direction j (j-th largest eigenvalue of the 1/n covariance S) goes to slot j with a + sign
    for j < a = min(kappa, #{l_j > gamma}); w_j = u_j sqrt(l_j - gamma), other columns zero;
    b_x = m, W_z the ridge map, b_z = -W_z m, s2_k = gamma / (gamma + ||w_k||^2) (1 on inactive
    slots). Works for kappa below and above rank S. X may also be a spectrum [d] (see
    ``enumerate_minima``).
    """
    kappa = _check_kappa(kappa)
    m, lam, U = _moments_or_spectrum(X)
    gamma = float(_check_gamma(gamma, lam))
    a = _n_active(lam, kappa, gamma)
    value = closed_form_energy(lam, kappa, gamma)
    return _minimum_from_assignment(lam, U, m, kappa, gamma, range(a), [1] * a, value)


def count_minima(kappa: int, n_active: int, signs: bool = True) -> int:
    """Number of distinct global minima: kappa! / (kappa - a)! (times 2^a with signs)."""
    kappa = _check_kappa(kappa)
    if not 0 <= n_active <= kappa:
        raise ValueError(f"n_active must be in [0, kappa={kappa}], got {n_active}")
    count = math.perm(kappa, n_active)
    return count * 2**n_active if signs else count


def enumerate_minima(
    X: Tensor, kappa: int, gamma: float, signs: bool = True, max_count: int = 100_000
) -> list[AffineOptimum]:
    """All distinct global minima of energy (1): every injective assignment of the a active
    eigen-directions to latent slots (kappa!/(kappa-a)! of them), times every sign pattern (2^a)
    when ``signs``.

    X: data [n, d], or a spectrum [d] (the eigenvalues of S; then m = 0 and U = I). The active
    eigenvalues must be distinct, and distinct from the next one when kappa caps the count,
    otherwise the minima form a continuum and cannot be enumerated (ValueError).
    """
    kappa = _check_kappa(kappa)
    m, lam, U = _moments_or_spectrum(X)
    gamma = float(_check_gamma(gamma, lam))
    a = _n_active(lam, kappa, gamma)
    upto = min(a + 1, lam.numel()) if a == kappa else a
    top = lam[:upto]
    if upto > 1:
        gaps = (top[:-1] - top[1:]) / top[:-1]
        if (gaps < 1e-9).any():
            raise ValueError(
                "the active eigenvalues of S must be distinct to enumerate isolated minima "
                f"(got {top.tolist()}); tied eigenvalues give a continuum of minima"
            )
    total = count_minima(kappa, a, signs)
    if total > max_count:
        raise ValueError(f"{total} minima exceeds max_count={max_count}; use smaller kappa")
    value = closed_form_energy(lam, kappa, gamma)
    sign_patterns = itertools.product((1, -1), repeat=a) if signs else [(1,) * a]
    sign_patterns = list(sign_patterns)
    return [
        _minimum_from_assignment(lam, U, m, kappa, gamma, slots, sgn, value)
        for slots in itertools.permutations(range(kappa), a)
        for sgn in sign_patterns
    ]


def params_distance(p: AffineParams, q: AffineParams, X: Tensor) -> float:
    """Distance between two parameter sets as the model sees them on the data X [n, d]:
    max of ||W_x - W_x'||_F, ||b_x - b_x'||, max|s2 - s2'| and the root-mean-square over rows of
    ||mu(x) - mu'(x)|| (the encoder only matters on the data's affine span)."""
    X = _check_data(X)
    enc = ((p.encode(X) - q.encode(X)) ** 2).sum(dim=1).mean().sqrt()
    parts = (
        torch.linalg.norm(p.W_x - q.W_x),
        torch.linalg.norm(p.b_x - q.b_x),
        (p.s2 - q.s2).abs().max(),
        enc,
    )
    return float(torch.stack(parts).max())


def match_minimum(
    params: AffineParams, minima: Sequence[AffineOptimum], X: Tensor
) -> tuple[int, float]:
    """Index of the enumerated minimum nearest to ``params`` and its ``params_distance``."""
    if not minima:
        raise ValueError("minima is empty")
    dists = [params_distance(params, mn.params, X) for mn in minima]
    best = min(range(len(dists)), key=dists.__getitem__)
    return best, dists[best]


