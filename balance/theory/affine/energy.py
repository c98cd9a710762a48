"""The affine VAE's parameters, its energy (1) term by term, ELBO, exact likelihood and
posterior, data statistics, the reduced energy (3) and the PPCA bound; input checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

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


