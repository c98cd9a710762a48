"""Gradient training of the full energy (1) from random initialisations (L-BFGS in float64)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from balance.theory.affine.energy import (
    DTYPE,
    AffineParams,
    _check_data,
    _check_gamma,
    _check_kappa,
    _terms,
    data_moments,
)
from balance.threads import limit_threads

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


