"""The affine Gaussian VAE in closed form (THEORY.md section 1, Theorem 1), float64 throughout.

Model. Data x in R^d (rows of X, n x d), latent z in R^kappa, prior N(0, I), decoder
p(x | z) = N(W_x z + b_x, gamma I) (gamma is a VARIANCE), encoder
q(z | x) = N(W_z x + b_z, diag(s2)) with s2 independent of x.

Energy (THEORY section 1; twice the negative ELBO up to constants), per row, averaged over rows::

    L = E_q ||x - W_x z - b_x||^2 / gamma + d log gamma + sum_k (s2_k - log s2_k)
        + ||W_z x + b_z||^2                                                          (1)

Exact relation with the ELBO, per row, in nats::

    ELBO(x) = -(L(x) + d log(2 pi) - kappa) / 2                                      (2)

because -log p(x|z) = ||x - W_x z - b_x||^2 / (2 gamma) + d log(2 pi gamma) / 2 and
KL(q || N(0, I)) = (sum_k (s2_k - log s2_k) + ||mu||^2 - kappa) / 2.

Identities used below (derived in THEORY section 1 and tested in tests/test_affine.py):

- E_q ||x - W z - b||^2 = ||x - W mu - b||^2 + sum_k s2_k ||w_k||^2.
- For fixed W = W_x: s2_k = gamma / (gamma + ||w_k||^2), mu = (W^T W + gamma I)^-1 W^T (x - m),
  b_x = m (the data mean). Substituting gives the reduced energy::

      L(W) = tr((gamma I + W W^T)^-1 S) + sum_k log(1 + ||w_k||^2 / gamma)
             + d log gamma + kappa                                                    (3)

  with S the 1/n covariance. By Hadamard's inequality L(W) >= log|gamma I + W W^T|
  + tr((gamma I + W W^T)^-1 S) + kappa (the probabilistic-PCA bound), equal iff the columns of W
  are orthogonal.
- Global minima: columns u_i sqrt(l_i - gamma) for the a = min(kappa, #{l_i > gamma}) top
  eigen-directions of S, in any a of the kappa slots with any signs, the other columns zero::

      L* = a + sum_{i > a} l_i / gamma + sum_{i <= a} log l_i + (d - a) log gamma + kappa.     (4)

  Their number is kappa! / (kappa - a)! * 2^a.

Energies are in "nats x 2" per sample (twice nats, as in (1)); log-likelihoods and ELBOs are
in nats per sample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from balance.threads import limit_threads

__all__ = [
    "AffineParams",
    "AffineOptimum",
    "AffineEnergyTerms",
    "TrainResult",
    "BarrierProfile",
    "data_moments",
    "spectrum",
    "data_with_spectrum",
    "energy_terms",
    "energy",
    "energy_mc",
    "elbo",
    "log_marginal_likelihood",
    "exact_posterior",
    "reduced_energy",
    "ppca_bound",
    "optimal_params",
    "closed_form_energy",
    "closed_form_optimum",
    "count_minima",
    "enumerate_minima",
    "params_distance",
    "match_minimum",
    "train",
    "train_restarts",
    "barrier",
]

DTYPE = torch.float64
LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# Input checks (clear ValueErrors at the edge instead of shape errors deep inside torch).


def _check_tensor(name: str, t: object, ndim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != DTYPE:
        raise ValueError(
            f"{name} must be float64 (theory checks run in float64), got {t.dtype}; "
            "convert with .double()"
        )
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _check_data(X: object) -> Tensor:
    X = _check_tensor("X", X, ndim=2)
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be n x d with n >= 1 and d >= 1, got shape {tuple(X.shape)}")
    return X


def _check_kappa(kappa: object) -> int:
    if isinstance(kappa, bool) or not isinstance(kappa, int):
        raise ValueError(f"kappa (latent dimension) must be an int, got {kappa!r}")
    if kappa < 1:
        raise ValueError(f"kappa (latent dimension) must be >= 1, got {kappa}")
    return kappa


def _check_gamma(gamma: float | Tensor, like: Tensor) -> Tensor:
    """gamma as a 0-d float64 tensor on X's device (kept differentiable if it is a tensor)."""
    if isinstance(gamma, Tensor):
        if gamma.numel() != 1:
            raise ValueError(f"gamma must be a scalar, got shape {tuple(gamma.shape)}")
        g = gamma.reshape(()).to(dtype=like.dtype, device=like.device)
    elif isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        g = torch.tensor(float(gamma), dtype=like.dtype, device=like.device)
    else:
        raise ValueError(f"gamma must be a positive float or 0-d tensor, got {gamma!r}")
    value = float(g.detach())
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"gamma (decoder variance) must be finite and > 0, got {value}")
    return g


def _check_matching_d(params: AffineParams, X: Tensor) -> None:
    if params.W_x.shape[0] != X.shape[1]:
        raise ValueError(
            f"X has d={X.shape[1]} columns but the parameters have d={params.W_x.shape[0]}"
        )


# --------------------------------------------------------------------------------------------
# Parameters and per-sample energy terms.


@dataclass(frozen=True)
class AffineParams:
    """Parameters of the affine Gaussian VAE (all float64).

    W_x [d, kappa] decoder weight (column k = w_k), b_x [d] decoder bias,
    W_z [kappa, d] encoder weight, b_z [kappa] encoder bias, s2 [kappa] encoder variances (> 0).
    """

    W_x: Tensor
    b_x: Tensor
    W_z: Tensor
    b_z: Tensor
    s2: Tensor

    def __post_init__(self) -> None:
        _check_tensor("W_x", self.W_x, 2)
        d, k = self.W_x.shape
        for name, shape in (("b_x", (d,)), ("W_z", (k, d)), ("b_z", (k,)), ("s2", (k,))):
            t = _check_tensor(name, getattr(self, name))
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"{name} must have shape {shape} to match W_x {tuple(self.W_x.shape)}, "
                    f"got {tuple(t.shape)}"
                )
        if (self.s2 <= 0).any():
            raise ValueError("s2 (encoder variances) must be > 0")

    @property
    def d(self) -> int:
        return self.W_x.shape[0]

    @property
    def kappa(self) -> int:
        return self.W_x.shape[1]

    def encode(self, X: Tensor) -> Tensor:
        """Encoder mean mu = W_z x + b_z for each row: [n, d] -> [n, kappa]."""
        return X @ self.W_z.T + self.b_z

    def decode(self, Z: Tensor) -> Tensor:
        """Decoder mean W_x z + b_x for each row: [n, kappa] -> [n, d]."""
        return Z @ self.W_x.T + self.b_x

    def detach(self) -> AffineParams:
        return AffineParams(*(t.detach().clone() for t in self.as_tuple()))

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.W_x, self.b_x, self.W_z, self.b_z, self.s2)


@dataclass(frozen=True)
class AffineEnergyTerms:
    """Per-row terms of energy (1), each [n]; ``total()`` is their sum (nats x 2 per row)."""

    reconstruction: Tensor  # E_q ||x - W_x z - b_x||^2 / gamma
    log_gamma: Tensor  # d log gamma (same for every row)
    variance: Tensor  # sum_k (s2_k - log s2_k) (same for every row)
    mean: Tensor  # ||W_z x + b_z||^2

    def total(self) -> Tensor:
        return self.reconstruction + self.log_gamma + self.variance + self.mean


def _terms(
    W_x: Tensor, b_x: Tensor, W_z: Tensor, b_z: Tensor, s2: Tensor, X: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row terms of (1) without input checks (also used inside the optimiser)."""
    n, d = X.shape
    mu = X @ W_z.T + b_z  # [n, kappa]
    residual = X - mu @ W_x.T - b_x  # [n, d]
    col_norms2 = (W_x**2).sum(dim=0)  # ||w_k||^2, [kappa]
    rec = ((residual**2).sum(dim=1) + (s2 * col_norms2).sum()) / g
    ones = torch.ones(n, dtype=X.dtype, device=X.device)
    return (
        rec,
        d * torch.log(g) * ones,
        (s2 - torch.log(s2)).sum() * ones,
        (mu**2).sum(dim=1),
    )


def energy_terms(params: AffineParams, X: Tensor, gamma: float | Tensor) -> AffineEnergyTerms:
    """Exact per-row terms of energy (1), using E_q||x - W z - b||^2 = ||x - W mu - b||^2
    + sum_k s2_k ||w_k||^2 (no sampling). X [n, d] -> four [n] tensors."""
    X = _check_data(X)
    _check_matching_d(params, X)
    g = _check_gamma(gamma, X)
    rec, log_gamma, variance, mean = _terms(*params.as_tuple(), X, g)
    return AffineEnergyTerms(reconstruction=rec, log_gamma=log_gamma, variance=variance, mean=mean)


def energy(params: AffineParams, X: Tensor, gamma: float | Tensor) -> Tensor:
    """Energy (1) of THEORY section 1, exact, averaged over the rows of X: a 0-d tensor
    (nats x 2 per sample), differentiable in the parameters."""
    return energy_terms(params, X, gamma).total().mean()


def energy_mc(
    params: AffineParams,
    X: Tensor,
    gamma: float | Tensor,
    *,
    generator: torch.Generator | None,
    n_samples: int = 1,
    reduce: bool = True,
) -> Tensor:
    """Reparameterized Monte-Carlo estimate of energy (1).

    z = mu + sqrt(s2) * eps with eps ~ N(0, I) drawn from ``generator``; the reconstruction
    expectation is estimated by the average over ``n_samples`` draws, the other terms are exact.
    Unbiased: E_eps[energy_mc] = energy. Returns a 0-d tensor (mean over rows and draws), or with
    ``reduce=False`` the [n_samples, n] per-draw, per-row values.
    """
    X = _check_data(X)
    _check_matching_d(params, X)
    g = _check_gamma(gamma, X)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    n, d = X.shape
    mu = params.encode(X)  # [n, kappa]
    eps = torch.randn(
        (n_samples, n, params.kappa), generator=generator, dtype=X.dtype, device=X.device
    )
    z = mu + torch.sqrt(params.s2) * eps  # [S, n, kappa]
    rec = ((X - params.decode(z)) ** 2).sum(dim=-1) / g  # [S, n]
    rest = d * torch.log(g) + (params.s2 - torch.log(params.s2)).sum() + (mu**2).sum(dim=1)
    per_draw = rec + rest  # [S, n]
    return per_draw.mean() if reduce else per_draw


def elbo(params: AffineParams, X: Tensor, gamma: float | Tensor) -> Tensor:
    """Exact ELBO per row in nats, eq. (2): ELBO = -(L + d log 2 pi - kappa) / 2. [n]."""
    terms = energy_terms(params, X, gamma)
    return -(terms.total() + X.shape[1] * LOG_2PI - params.kappa) / 2.0


def log_marginal_likelihood(
    X: Tensor, W_x: Tensor, b_x: Tensor, gamma: float | Tensor
) -> Tensor:
    """Exact log p(x) = log N(x; b_x, gamma I + W_x W_x^T) per row, in nats. [n, d] -> [n].

    The reference against which ELBO and IWAE code is checked: ELBO(x) <= log p(x), with
    equality iff q(z|x) is the exact posterior (see ``exact_posterior``).
    """
    X = _check_data(X)
    W_x = _check_tensor("W_x", W_x, 2)
    b_x = _check_tensor("b_x", b_x, 1)
    d = X.shape[1]
    if W_x.shape[0] != d or b_x.shape[0] != d:
        raise ValueError(
            f"X has d={d} columns; W_x must be [d, kappa] and b_x [d], got "
            f"{tuple(W_x.shape)} and {tuple(b_x.shape)}"
        )
    g = _check_gamma(gamma, X)
    # The low-rank-plus-diagonal Gaussian is exactly this covariance structure.
    dist = torch.distributions.LowRankMultivariateNormal(
        loc=b_x, cov_factor=W_x, cov_diag=g * torch.ones(d, dtype=X.dtype, device=X.device)
    )
    return dist.log_prob(X)


def exact_posterior(
    X: Tensor, W_x: Tensor, b_x: Tensor, gamma: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Exact posterior p(z | x) = N(M^-1 W^T (x - b), gamma M^-1), M = W^T W + gamma I.

    Returns (mean [n, kappa], covariance [kappa, kappa]); the covariance does not depend on x.
    """
    X = _check_data(X)
    W_x = _check_tensor("W_x", W_x, 2)
    b_x = _check_tensor("b_x", b_x, 1)
    g = _check_gamma(gamma, X)
    k = W_x.shape[1]
    M = W_x.T @ W_x + g * torch.eye(k, dtype=X.dtype, device=X.device)
    mean = torch.linalg.solve(M, W_x.T @ (X - b_x).T).T
    cov = g * torch.linalg.inv(M)
    return mean, cov


# --------------------------------------------------------------------------------------------
# Data statistics and closed forms.


def data_moments(X: Tensor) -> tuple[Tensor, Tensor]:
    """Mean m [d] and the 1/n covariance S [d, d] of the rows of X (the energy averages rows)."""
    X = _check_data(X)
    m = X.mean(dim=0)
    Xc = X - m
    S = Xc.T @ Xc / X.shape[0]
    return m, (S + S.T) / 2


def spectrum(S: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues l_1 >= ... >= l_d of symmetric S and eigenvectors U (columns), with the sign
    convention that each eigenvector's largest-magnitude entry is positive. ([d], [d, d])."""
    S = _check_tensor("S", S, 2)
    if S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be square, got shape {tuple(S.shape)}")
    evals, U = torch.linalg.eigh((S + S.T) / 2)
    evals, U = evals.flip(0), U.flip(1)
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return evals.clamp_min(0.0), U * signs


def data_with_spectrum(
    n: int,
    eigenvalues: Sequence[float] | Tensor,
    *,
    generator: torch.Generator | None,
    d: int | None = None,
    mean: Tensor | None = None,
    basis: Literal["random", "canonical"] = "random",
) -> Tensor:
    """n x d data whose 1/n covariance has EXACTLY the given eigenvalues (zeros appended to d).

    X = 1 m^T + sqrt(n) Q diag(sqrt(l)) U^T with Q [n, r] orthonormal columns orthogonal to the
    all-ones vector (so the mean is exactly m) and U [d, r] orthonormal (random, or the first r
    canonical axes). Needs n >= r + 1 where r is the number of eigenvalues given.
    """
    lam = torch.as_tensor(eigenvalues, dtype=DTYPE).flatten()
    r = lam.numel()
    d = r if d is None else d
    if r < 1 or d < r:
        raise ValueError(f"need 1 <= len(eigenvalues) <= d, got {r} eigenvalues and d={d}")
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("eigenvalues must be finite and >= 0")
    if n < r + 1:
        raise ValueError(f"n must be >= len(eigenvalues) + 1 = {r + 1} to fix the mean, got {n}")
    G = torch.randn((n, r), generator=generator, dtype=DTYPE)
    G = G - G.mean(dim=0)
    Q, _ = torch.linalg.qr(G)  # orthonormal columns, all orthogonal to the ones vector
    if basis == "canonical":
        U = torch.eye(d, r, dtype=DTYPE)
    elif basis == "random":
        U, _ = torch.linalg.qr(torch.randn((d, r), generator=generator, dtype=DTYPE))
    else:
        raise ValueError(f"basis must be 'random' or 'canonical', got {basis!r}")
    X = math.sqrt(n) * (Q * lam.sqrt()) @ U.T
    if mean is not None:
        X = X + _check_tensor("mean", mean, 1)
    return X


def reduced_energy(W: Tensor, S: Tensor, gamma: float | Tensor) -> Tensor:
    """Energy (3): the energy with encoder, s2 and b_x optimised out, for decoder weights W.

    L(W) = tr((gamma I + W W^T)^-1 S) + sum_k log(1 + ||w_k||^2 / gamma) + d log gamma + kappa.
    W [..., d, kappa] (batched), S [d, d] -> [...].
    """
    W = _check_tensor("W", W)
    S = _check_tensor("S", S, 2)
    if W.ndim < 2 or W.shape[-2] != S.shape[0] or S.shape[0] != S.shape[1]:
        raise ValueError(f"W must be [..., d, kappa] and S [d, d], got {tuple(W.shape)}, "
                         f"{tuple(S.shape)}")
    g = _check_gamma(gamma, S)
    d, k = W.shape[-2], W.shape[-1]
    C = g * torch.eye(d, dtype=W.dtype, device=W.device) + W @ W.transpose(-1, -2)
    trace = torch.linalg.solve(C, S.expand_as(C)).diagonal(dim1=-2, dim2=-1).sum(-1)
    logs = torch.log1p((W**2).sum(dim=-2) / g).sum(-1)
    return trace + logs + d * torch.log(g) + k


def ppca_bound(W: Tensor, S: Tensor, gamma: float | Tensor) -> Tensor:
    """Probabilistic-PCA lower bound on (3): log|gamma I + W W^T| + tr((gamma I + W W^T)^-1 S)
    + kappa (Hadamard's inequality; equality iff the columns of W are orthogonal). [...]."""
    W = _check_tensor("W", W)
    S = _check_tensor("S", S, 2)
    g = _check_gamma(gamma, S)
    d, k = W.shape[-2], W.shape[-1]
    C = g * torch.eye(d, dtype=W.dtype, device=W.device) + W @ W.transpose(-1, -2)
    trace = torch.linalg.solve(C, S.expand_as(C)).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.linalg.slogdet(C)[1] + trace + k


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


# --------------------------------------------------------------------------------------------
# Gradient training of the full energy (1) from random initialisations.


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training run: final params, energy (1), Euclidean norm of the gradient of
    (1) with respect to (W_x, b_x, W_z, b_z, log s2) at the end, iterations, and whether the
    optimiser reported convergence."""

    params: AffineParams
    energy: float
    grad_norm: float
    n_iter: int
    converged: bool
    message: str


def _unpack(theta: Tensor, d: int, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Split the flat optimisation vector into (W_x, b_x, W_z, b_z, log s2)."""
    W_x, b_x, W_z, b_z, log_s2 = torch.split(theta, [d * k, d, k * d, k, k])
    return W_x.reshape(d, k), b_x, W_z.reshape(k, d), b_z, log_s2


def _flat_energy(theta: Tensor, X: Tensor, g: Tensor, d: int, k: int) -> Tensor:
    W_x, b_x, W_z, b_z, log_s2 = _unpack(theta, d, k)
    return sum(_terms(W_x, b_x, W_z, b_z, torch.exp(log_s2), X, g)).mean()


def _energy_and_grad_np(theta, X, gamma: float, d: int, k: int):
    """Energy (1) and its gradient in (W_x, b_x, W_z, b_z, log s2), in numpy float64.

    Hand-written because the optimiser calls it thousands of times on tiny problems, where
    autograd's per-call overhead dominates (about 10x slower); tests/test_affine.py checks it
    against autograd. With r = x - W_x mu - b_x, mu = W_z x + b_z, c_k = ||w_k||^2:
    dL/dW_x = -2/(n gamma) R^T Mu + 2 W_x diag(s2)/gamma, dL/db_x = -2/(n gamma) sum_i r_i,
    dL/dMu = -2/(n gamma) R W_x + 2/n Mu, dL/dW_z = (dL/dMu)^T X, dL/db_z = sum_i dL/dmu_i,
    dL/dlog s2 = s2 c / gamma + s2 - 1.
    """
    import numpy as np

    n = X.shape[0]
    i1, i2, i3, i4 = d * k, d * k + d, 2 * d * k + d, 2 * d * k + d + k
    W_x = theta[:i1].reshape(d, k)
    b_x = theta[i1:i2]
    W_z = theta[i2:i3].reshape(k, d)
    b_z = theta[i3:i4]
    log_s2 = theta[i4:]
    s2 = np.exp(log_s2)
    mu = X @ W_z.T + b_z
    R = X - mu @ W_x.T - b_x
    c = (W_x**2).sum(axis=0)
    value = (
        ((R**2).sum() / n + (s2 * c).sum()) / gamma
        + d * math.log(gamma)
        + (s2 - log_s2).sum()
        + (mu**2).sum() / n
    )
    dmu = -2.0 / (n * gamma) * (R @ W_x) + 2.0 / n * mu
    grad = np.concatenate(
        [
            (-2.0 / (n * gamma) * (R.T @ mu) + 2.0 * W_x * s2 / gamma).ravel(),
            -2.0 / (n * gamma) * R.sum(axis=0),
            (dmu.T @ X).ravel(),
            dmu.sum(axis=0),
            s2 * c / gamma + s2 - 1.0,
        ]
    )
    return float(value), grad


def train(
    X: Tensor,
    kappa: int,
    gamma: float,
    *,
    generator: torch.Generator | None,
    init_scale: float = 1.0,
    gtol: float = 1e-10,
    max_iter: int = 20_000,
    init: AffineParams | None = None,
) -> TrainResult:
    """Minimise the exact energy (1) over all parameters by L-BFGS (scipy.optimize, float64),
    from a random initialisation drawn with ``generator`` (or from ``init``).

    Initialisation: W_x, b_x - m ~ N(0, init_scale^2 sigma^2), W_z ~ N(0, init_scale^2 / (d
    sigma^2)), b_z, log s2 ~ N(0, init_scale^2), with sigma^2 = tr(S)/d the mean data variance.
    s2 is optimised as log s2 (positivity). Stops when the largest gradient entry is <= gtol or
    the line search can no longer decrease the energy in float64.
    """
    from scipy.optimize import minimize  # lazy: scipy is heavy to import

    X = _check_data(X)
    kappa = _check_kappa(kappa)
    g = float(_check_gamma(gamma, X))
    n, d = X.shape
    m, S = data_moments(X)
    if init is None:
        sigma = math.sqrt(max(float(torch.trace(S)) / d, 1e-12))
        c = init_scale

        def draw(*shape: int) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=DTYPE)

        theta0 = torch.cat(
            [
                (c * sigma * draw(d, kappa)).flatten(),
                m + c * sigma * draw(d),
                (c / (sigma * math.sqrt(d)) * draw(kappa, d)).flatten(),
                c * draw(kappa),
                c * draw(kappa),
            ]
        )
    else:
        if init.d != d or init.kappa != kappa:
            raise ValueError(f"init has d={init.d}, kappa={init.kappa}; expected {d}, {kappa}")
        theta0 = torch.cat(
            [init.W_x.flatten(), init.b_x, init.W_z.flatten(), init.b_z, torch.log(init.s2)]
        )

    g_t = torch.tensor(g, dtype=DTYPE)
    X_np = X.detach().cpu().numpy()

    def fun(theta_np):
        return _energy_and_grad_np(theta_np, X_np, g, d, kappa)

    with limit_threads(1):  # tiny matrices: thread pools only add synchronisation
        res = minimize(
            fun,
            theta0.cpu().numpy(),
            jac=True,
            method="L-BFGS-B",
            # ftol=0: stop on the gradient (or when float64 line search stalls), not on a
            # relative energy decrease, so that "converged" means "at a stationary point".
            options={"maxiter": max_iter, "maxfun": 4 * max_iter, "gtol": gtol, "ftol": 0.0,
                     "maxcor": 30},
        )
    theta = torch.from_numpy(res.x).requires_grad_(True)
    value = _flat_energy(theta, X, g_t, d, kappa)
    (grad,) = torch.autograd.grad(value, theta)
    W_x, b_x, W_z, b_z, log_s2 = (t.detach().clone() for t in _unpack(theta, d, kappa))
    return TrainResult(
        params=AffineParams(W_x=W_x, b_x=b_x, W_z=W_z, b_z=b_z, s2=torch.exp(log_s2)),
        energy=float(value.detach()),
        grad_norm=float(torch.linalg.norm(grad)),
        n_iter=int(res.nit),
        converged=bool(res.success),
        message=str(res.message),
    )


def train_restarts(
    X: Tensor,
    kappa: int,
    gamma: float,
    *,
    generator: torch.Generator | None,
    n_restarts: int = 10,
    **kwargs,
) -> list[TrainResult]:
    """``train`` from ``n_restarts`` independent random initialisations (same generator)."""
    if isinstance(n_restarts, bool) or not isinstance(n_restarts, int) or n_restarts < 1:
        raise ValueError(f"n_restarts must be an int >= 1, got {n_restarts!r}")
    return [train(X, kappa, gamma, generator=generator, **kwargs) for _ in range(n_restarts)]


# --------------------------------------------------------------------------------------------
# Energy barriers between minima.


@dataclass(frozen=True)
class BarrierProfile:
    """Reduced energy (3) along a path of decoder weights between two minima.

    t [M] path parameter in [0, 1] (normalised arc length for the string method), energy [M]
    (nats x 2 per sample; the energy (1) with encoder, s2, b_x optimal at each point, hence a
    lower bound on (1) along any path with these decoder weights), W [M, d, kappa] the path,
    height = max(energy) - max(energy[0], energy[-1]).
    """

    path: str
    t: Tensor
    energy: Tensor
    W: Tensor
    height: float


def _decoder_weight(p: AffineParams | AffineOptimum | Tensor) -> Tensor:
    if isinstance(p, AffineOptimum):
        return p.params.W_x
    if isinstance(p, AffineParams):
        return p.W_x
    return _check_tensor("W", p, 2)


def _skew_log(Q: Tensor) -> Tensor:
    """A real skew-symmetric A with expm(A) = Q for orthogonal Q with det Q = +1.

    Uses the real Schur form Q = Z T Z^T (block diagonal for normal matrices): each 2x2 block is a
    plane rotation by angle t, giving t [[0, -1], [1, 0]]; the eigenvalue -1 appears in pairs of
    1x1 blocks, each pair a rotation by pi. (scipy's logm returns a complex principal log when
    Q has eigenvalue -1, hence this real construction.)
    """
    from scipy.linalg import schur

    T, Z = schur(Q.numpy(), output="real")
    k = T.shape[0]
    L = torch.zeros((k, k), dtype=DTYPE)
    minus_ones: list[int] = []
    i = 0
    while i < k:
        if i + 1 < k and abs(T[i + 1, i]) > 1e-12:
            angle = math.atan2(T[i + 1, i], T[i, i])
            L[i + 1, i], L[i, i + 1] = angle, -angle
            i += 2
        else:
            if T[i, i] < 0:
                minus_ones.append(i)
            i += 1
    if len(minus_ones) % 2:
        raise ValueError("Q has det -1: no rotation path joins these minima")
    for p, q in zip(minus_ones[::2], minus_ones[1::2], strict=True):
        L[q, p], L[p, q] = math.pi, -math.pi
    Zt = torch.from_numpy(Z)
    return Zt @ L @ Zt.T


def _rotation_between(WA: Tensor, WB: Tensor) -> Tensor:
    """Orthogonal Q with WA Q = WB and det Q = +1 (ValueError if none exists)."""
    from scipy.linalg import orthogonal_procrustes

    Q_np, _ = orthogonal_procrustes(WA.numpy(), WB.numpy())
    Q = torch.from_numpy(Q_np)
    scale = max(float(torch.linalg.norm(WB)), 1.0)
    if float(torch.linalg.norm(WA @ Q - WB)) > 1e-8 * scale:
        raise ValueError("end is not a latent rotation of start (W_B != W_A Q for orthogonal Q)")
    if float(torch.linalg.det(Q)) < 0:
        # Flip the row of Q that multiplies a zero column of W_A: W_A Q is unchanged.
        norms = (WA**2).sum(dim=0)
        j = int(torch.argmin(norms))
        if float(norms[j]) > 1e-20 * scale:
            raise ValueError(
                "the minima differ by a reflection and every latent slot is active: no rotation "
                "path joins them; use path='linear' or path='string'"
            )
        Q = Q.clone()
        Q[j] = -Q[j]
    return Q


def _reparametrize(W: Tensor) -> tuple[Tensor, Tensor]:
    """Redistribute path images [M, ...] at equal arc length (linear interpolation)."""
    M = W.shape[0]
    flat = W.reshape(M, -1)
    seg = torch.linalg.norm(flat[1:] - flat[:-1], dim=1)
    s = torch.cat([torch.zeros(1, dtype=W.dtype), torch.cumsum(seg, 0)])
    total = float(s[-1])
    if total == 0.0:
        return W, torch.linspace(0, 1, M, dtype=W.dtype)
    s = s / total
    targets = torch.linspace(0, 1, M, dtype=W.dtype)
    idx = torch.searchsorted(s, targets, right=True).clamp(1, M - 1)
    s0, s1 = s[idx - 1], s[idx]
    w = ((targets - s0) / (s1 - s0).clamp_min(1e-300)).clamp(0, 1)
    out = flat[idx - 1] + w[:, None] * (flat[idx] - flat[idx - 1])
    out[0], out[-1] = flat[0], flat[-1]
    return out.reshape(W.shape), targets


def barrier(
    X: Tensor,
    gamma: float,
    start: AffineParams | AffineOptimum | Tensor,
    end: AffineParams | AffineOptimum | Tensor,
    *,
    path: Literal["rotation", "linear", "string"] = "rotation",
    n_points: int = 41,
    string_iters: int = 3000,
    string_step: float | None = None,
    string_tol: float = 1e-9,
) -> BarrierProfile:
    """Energy along a path of decoder weights W(t) from ``start`` (t=0) to ``end`` (t=1),
    the other parameters optimal at each point, i.e. the reduced energy (3) of THEORY section 1.

    path="rotation": W(t) = W_A expm(t A) with expm(A) = Q, W_A Q = W_B (moves directions between
      latent slots; needs W_B to be a latent rotation of W_A).
    path="linear": W(t) = (1 - t) W_A + t W_B.
    path="string": the simplified string method (E, Ren & Vanden-Eijnden, J. Chem. Phys. 126,
      164103, 2007), started from the linear path: interior images take steepest-descent steps on
      (3), then are redistributed at equal arc length, until they move less than string_tol;
      converges to a minimum-energy path, whose highest point is the mountain-pass saddle.

    X [n, d] data; returns a BarrierProfile.
    """
    X = _check_data(X)
    _, S = data_moments(X)
    g = float(_check_gamma(gamma, X))
    WA, WB = _decoder_weight(start), _decoder_weight(end)
    if WA.shape != WB.shape or WA.shape[0] != X.shape[1]:
        raise ValueError(
            f"start and end must both be [d={X.shape[1]}, kappa], got {tuple(WA.shape)} and "
            f"{tuple(WB.shape)}"
        )
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3:
        raise ValueError(f"n_points must be an int >= 3, got {n_points!r}")
    t = torch.linspace(0, 1, n_points, dtype=DTYPE)
    if path == "rotation":
        A = _skew_log(_rotation_between(WA, WB))
        W = WA @ torch.linalg.matrix_exp(t[:, None, None] * A)
        W[-1] = WB
    elif path in ("linear", "string"):
        W = (1 - t)[:, None, None] * WA + t[:, None, None] * WB
        if path == "string":
            with limit_threads(1):  # tiny matrices: thread pools only add synchronisation
                W, t = _string_method(W, S, g, string_iters, string_step, string_tol)
    else:
        raise ValueError(f"path must be 'rotation', 'linear' or 'string', got {path!r}")
    with torch.no_grad():
        values = reduced_energy(W, S, g)
    height = float(values.max() - torch.maximum(values[0], values[-1]))
    return BarrierProfile(path=path, t=t, energy=values, W=W, height=height)


def _string_method(
    W: Tensor, S: Tensor, gamma: float, iters: int, step: float | None, tol: float
) -> tuple[Tensor, Tensor]:
    if step is None:
        # Curvature of (3) in W is at most about 2 (l_max / gamma^2 + 1 / gamma); a step well
        # below its inverse keeps explicit steepest descent stable.
        l_max = float(torch.linalg.eigvalsh(S).max())
        step = 0.25 / (2.0 * (l_max / gamma**2 + 1.0 / gamma))
    t = torch.linspace(0, 1, W.shape[0], dtype=W.dtype)
    for _ in range(iters):
        inner = W[1:-1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(reduced_energy(inner, S, gamma).sum(), inner)
        moved = torch.cat([W[:1], inner.detach() - step * grad, W[-1:]])
        new, t = _reparametrize(moved)
        change = float((new - W).abs().max())
        W = new
        if change < tol:
            break
    return W, t
