"""Energy barriers between global minima of the affine VAE: rotation, straight-line and
string-method paths of decoder weights, each scored by the reduced energy (3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from balance.theory.affine.energy import (
    DTYPE,
    AffineParams,
    _check_data,
    _check_gamma,
    _check_tensor,
    data_moments,
    reduced_energy,
)
from balance.theory.affine.optima import (
    AffineOptimum,
)
from balance.threads import limit_threads

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
