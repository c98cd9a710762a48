"""Theorem 1 (THEORY.md section 1): the affine Gaussian VAE has no spurious local minima, its
global minima are the enumerated closed forms, it balances regularization as gamma -> 0, its
kappa!/(kappa-r)! (x 2^r) minima are isolated and separated by positive barriers, and its ELBO
is tight at the optimum.

Every check trains or evaluates in float64 on tiny seeded instances whose covariance spectrum is
prescribed exactly (``data_with_spectrum``), with eigenvalues distinct and away from gamma so
that the minima are isolated and the optimiser's conditioning is bounded.

Tolerance sources:
- OPT_ENERGY: optimisation. L-BFGS runs until float64 line search stalls; the energy gap of a
  point with gradient g near a minimum with smallest curvature c is ~ |g|^2 / (2c), below
  1e-10 for the gradients reached (|g| <= 1e-5 (1 + l_max/gamma), c >= ~0.05 here).
- OPT_PARAMS: optimisation. Parameter error ~ |g| / c <= ~1e-5 for the same reasons.
- ID: float64 identity (exact in exact arithmetic; a few solves lose < 1e-12).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from balance.theory import affine as A

F64 = torch.float64
OPT_ENERGY = 1e-8  # optimisation (relative to max(1, |L*|))
OPT_PARAMS = 1e-4  # optimisation (absolute, parameters of order 1)
ID = 1e-10  # float64 identity


def _instance(seed: int, n: int, d: int, eigenvalues: list[float]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    return A.data_with_spectrum(n, eigenvalues, d=d, generator=g, mean=mean)


def _grad_tolerance(eigenvalues: list[float], gamma: float) -> float:
    # The energy's gradient scales like l_max / gamma (reconstruction term / gamma); L-BFGS in
    # float64 stalls at a relative gradient of ~1e-7 to 1e-6 of that scale.
    return 1e-5 * (1.0 + max(eigenvalues) / gamma)


@st.composite
def instances(draw):
    """(seed, n, d, eigenvalues of S, kappa, gamma): rank r <= d, of which 1 <= a <= r
    eigenvalues are above gamma. Eigenvalues are gamma * 2^j for distinct non-zero integers j
    (distinct, none within a factor 2 of gamma or of each other), so the active count
    min(kappa, a) is known and the minima are isolated."""
    d = draw(st.integers(2, 6))
    r = draw(st.integers(1, d))
    a = draw(st.integers(1, r))
    kappa = draw(st.integers(1, 5))
    gamma = draw(st.sampled_from([0.1, 0.5, 2.0]))
    above = draw(st.lists(st.integers(1, 4), min_size=a, max_size=a, unique=True))
    below = draw(st.lists(st.integers(-3, -1), min_size=r - a, max_size=r - a, unique=True))
    n = draw(st.integers(r + 1, r + 12))
    seed = draw(st.integers(0, 2**31 - 1))
    eigenvalues = sorted((gamma * 2.0**j for j in above + below), reverse=True)
    return seed, n, d, eigenvalues, kappa, gamma


# kappa below the rank, kappa above the rank, and kappa between #active and rank.
@example((11, 8, 4, [4.0, 2.0, 1.0, 0.25], 2, 0.5))
@example((12, 6, 5, [3.2, 0.8], 4, 0.2))
@example((13, 9, 4, [8.0, 2.0, 0.25, 0.0625], 3, 0.5))
@settings(max_examples=20)
@given(instances())
def test_random_starts_reach_the_closed_form_and_an_enumerated_minimum(case):
    """Checks 1 and 2. From 3 random starts per instance (69 starts in total over the 20
    generated and 3 explicit instances), L-BFGS on the full energy (1) ends at a stationary point
    whose energy is L* (eq. 4): never above (no spurious local minimum or higher stationary
    point), never below (the closed form is the global minimum). Each end point is one of the
    enumerated minima (an assignment of eigen-directions to slots, with signs), and the number of
    active latent dimensions is #{l > gamma} capped at kappa."""
    seed, n, d, eigenvalues, kappa, gamma = case
    X = _instance(seed, n, d, eigenvalues)
    opt = A.closed_form_optimum(X, kappa, gamma)
    expected_active = min(kappa, sum(lam > gamma for lam in eigenvalues))
    assert opt.n_active == expected_active
    minima = A.enumerate_minima(X, kappa, gamma)
    assert len(minima) == A.count_minima(kappa, expected_active)
    scale = max(1.0, abs(opt.energy))
    g = torch.Generator().manual_seed(seed + 1)
    for run in A.train_restarts(X, kappa, gamma, generator=g, n_restarts=3):
        # check 1: at a stationary point, at the closed-form energy
        assert run.grad_norm < _grad_tolerance(eigenvalues, gamma), run.message
        assert run.energy <= opt.energy + OPT_ENERGY * scale, "stopped above the global minimum"
        assert run.energy >= opt.energy - OPT_ENERGY * scale, "went below the closed form"
        # check 2: it is one of the enumerated minima, and only one of them is that close
        dists = sorted(A.params_distance(run.params, m.params, X) for m in minima)
        assert dists[0] < OPT_PARAMS, f"nearest enumerated minimum at distance {dists[0]:.2e}"
        if len(dists) > 1:
            assert dists[1] > 0.1
        col_norms2 = (run.params.W_x**2).sum(dim=0)
        # active column: ||w||^2 = l - gamma >= gamma (l >= 2 gamma); inactive ones ~ 0
        assert int((col_norms2 > gamma / 2).sum()) == expected_active


@pytest.mark.parametrize("kappa", [2, 4])
def test_gamma_to_zero_balances_regularization(kappa):
    """Check 3. Rank-2 data in R^5 (kappa = 2 = r and kappa = 4 > r): as gamma -> 0 the trained
    model has exactly r active dimensions, its mean reconstruction error tends to 0 (as
    sum_i gamma^2 / l_i), s2 -> 0 on active dimensions (as gamma / l_i) and = 1 on inactive
    ones, and the encoder mean is 0 on inactive dimensions."""
    eigenvalues = [3.0, 1.2]
    r = len(eigenvalues)
    X = _instance(21, 10, 5, eigenvalues)
    g = torch.Generator().manual_seed(22)
    errors = []
    for gamma in (0.1, 0.01, 0.001):
        run = A.train(X, kappa, gamma, generator=g)
        opt = A.closed_form_optimum(X, kappa, gamma)
        assert run.energy == pytest.approx(opt.energy, rel=OPT_ENERGY, abs=OPT_ENERGY)
        p = run.params
        mu = p.encode(X)
        # active = encoder mean varies over the data (the package's active-units threshold)
        active = mu.var(dim=0, unbiased=False) > 0.01
        assert int(active.sum()) == r
        err = float(((X - p.decode(mu)) ** 2).sum(dim=1).mean())
        expected = sum(gamma**2 / lam for lam in eigenvalues)
        # optimisation: the error is a smooth function of the parameters (OPT_PARAMS-accurate)
        assert err == pytest.approx(expected, rel=1e-3, abs=1e-8)
        errors.append(err)
        s2_active = p.s2[active].sort().values
        expected_s2 = torch.tensor(sorted(gamma / lam for lam in eigenvalues), dtype=F64)
        torch.testing.assert_close(s2_active, expected_s2, rtol=1e-3, atol=1e-8)
        # the closed form has these values exactly (float64 identity)
        q = opt.params
        q_err = float(((X - q.decode(q.encode(X))) ** 2).sum(dim=1).mean())
        assert q_err == pytest.approx(expected, rel=1e-8, abs=1e-14)
        torch.testing.assert_close(q.s2[list(opt.active)].sort().values, expected_s2,
                                   rtol=ID, atol=0.0)
        if kappa > r:
            assert float((p.s2[~active] - 1.0).abs().max()) < OPT_PARAMS
            assert float(mu[:, ~active].abs().max()) < OPT_PARAMS
            # the closed form gives these limits exactly (float64 identity)
            assert float((opt.params.s2[list(opt.inactive)] - 1.0).abs().max()) < ID
            assert float(opt.params.encode(X)[:, list(opt.inactive)].abs().max()) < ID
        # s2 -> 0 on active dimensions
        assert float(s2_active.max()) <= 1.001 * gamma / min(eigenvalues)
    assert errors[0] > errors[1] > errors[2]
    assert errors[-1] < 1e-5


def _full_energy_gradient(p: A.AffineParams, X: torch.Tensor, gamma: float) -> torch.Tensor:
    leaves = [t.clone().requires_grad_(True) for t in p.as_tuple()]
    grads = torch.autograd.grad(A.energy(A.AffineParams(*leaves), X, gamma), leaves)
    return torch.cat([gr.flatten() for gr in grads])


def test_minima_count_isolation_and_barriers():
    """Check 4. kappa = 3, rank r = 2, gamma below both eigenvalues: there are
    kappa!/(kappa-r)! = 6 slot assignments x 2^r = 4 signs = 24 distinct minima. Each has energy
    L*, zero gradient, a positive-definite Hessian of the reduced energy (3), higher energy at
    every random perturbation of all parameters, and training started near it returns to it.
    Two distinct minima are separated by a strictly positive barrier along every path tried."""
    l1, l2, gamma, kappa = 4.0, 2.0, 1.0, 3
    X = _instance(31, 9, 3, [l1, l2])
    _, S = A.data_moments(X)
    minima = A.enumerate_minima(X, kappa, gamma)
    assert len(minima) == math.factorial(kappa) // math.factorial(kappa - 2) * 2**2 == 24
    assert len(A.enumerate_minima(X, kappa, gamma, signs=False)) == 6
    for i, a in enumerate(minima):
        for b in minima[i + 1 :]:
            assert A.params_distance(a.params, b.params, X) > 0.5  # distinct
    g = torch.Generator().manual_seed(32)
    for idx, m in enumerate(minima):
        p = m.params
        assert float(A.energy(p, X, gamma)) == pytest.approx(m.energy, rel=ID)
        assert float(_full_energy_gradient(p, X, gamma).abs().max()) < ID
        hess = torch.autograd.functional.hessian(
            lambda w: A.reduced_energy(w.reshape(3, kappa), S, gamma), p.W_x.flatten()
        )
        # strict local minimum of (3) in W_x: smallest curvature is O(1) here (> 0.05)
        assert float(torch.linalg.eigvalsh(hess).min()) > 0.05
        base = float(A.energy(p, X, gamma))
        for _ in range(20):
            delta = [1e-3 * torch.randn(t.shape, generator=g, dtype=F64) for t in p.as_tuple()]
            bumped = A.AffineParams(*(t + dt for t, dt in zip(p.as_tuple(), delta, strict=True)))
            # second-order rise ~ 1e-6 x curvature >> float64 rounding of the energy (~1e-15)
            assert float(A.energy(bumped, X, gamma)) > base + 1e-10
        if idx % 4 == 0:  # one sign pattern per slot assignment keeps this fast
            noise = [0.05 * torch.randn(t.shape, generator=g, dtype=F64) for t in p.as_tuple()]
            start = A.AffineParams(
                p.W_x + noise[0], p.b_x + noise[1], p.W_z + noise[2], p.b_z + noise[3],
                p.s2 * torch.exp(noise[4]),
            )
            run = A.train(X, kappa, gamma, generator=None, init=start)
            assert A.match_minimum(run.params, minima, X)[0] == idx

    # Barriers from the canonical minimum (u1 -> slot 0, u2 -> slot 1) to every other one,
    # along the straight line in W_x (other parameters optimal at each point).
    a = minima[0]
    for b in minima[1:]:
        prof = A.barrier(X, gamma, a, b, path="linear", n_points=21)
        assert prof.height > 1e-3, (b.active, b.signs)
    # Moving u1 from slot 0 into the empty slot 2 (u2 stays in slot 1).
    b = next(m for m in minima if m.active == (2, 1) and m.signs == (1, 1))
    rho = l1 / gamma
    rot = A.barrier(X, gamma, a, b, path="rotation", n_points=41)
    # rotation by angle t splits ||w||^2 = l - gamma as cos^2 / sin^2: the highest point is
    # t = pi/4 (the midpoint), with barrier log((l + gamma)^2 / (4 gamma l)) (float64 identity)
    assert rot.height == pytest.approx(math.log((l1 + gamma) ** 2 / (4 * gamma * l1)), rel=ID)
    lin = A.barrier(X, gamma, a, b, path="linear", n_points=41)
    s = 0.25  # linear path midpoint: each slot holds (l - gamma) / 4
    lin_mid = rho / (1 + 2 * s * (rho - 1)) + 2 * math.log1p(s * (rho - 1)) - 1 - math.log(rho)
    assert lin.height == pytest.approx(lin_mid, rel=ID)
    string = A.barrier(X, gamma, a, b, path="string", n_points=21)
    # The string stays symmetric under the slot exchange, so its top is the lowest point with
    # w0 = w2 = t u1: min over x = t^2/gamma of rho/(1 + 2x) + 2 log(1 + x) - 1 - log rho,
    # attained at x* = (rho - 4 + sqrt(rho^2 + 8 rho)) / 8.
    x = (rho - 4 + math.sqrt(rho**2 + 8 * rho)) / 8
    saddle = rho / (1 + 2 * x) + 2 * math.log1p(x) - 1 - math.log(rho)
    # string method: converged to 1e-9 per step; midpoint image sits on the saddle by symmetry
    assert string.height == pytest.approx(saddle, rel=1e-6)
    assert 0 < string.height <= min(rot.height, lin.height)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 5),
    kappa=st.integers(1, 4),
    log_gamma=st.floats(-3, 1),
)
def test_elbo_never_exceeds_log_likelihood(seed, d, kappa, log_gamma):
    """Check 5 (first half): for arbitrary parameters, ELBO(x) <= log p(x) on every row, with a
    strictly positive gap when q differs from the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    gamma = math.exp(log_gamma)
    X = torch.randn(6, d, generator=g, dtype=F64) * 2
    p = A.AffineParams(
        W_x=torch.randn(d, kappa, generator=g, dtype=F64),
        b_x=torch.randn(d, generator=g, dtype=F64),
        W_z=torch.randn(kappa, d, generator=g, dtype=F64),
        b_z=torch.randn(kappa, generator=g, dtype=F64),
        s2=torch.exp(torch.randn(kappa, generator=g, dtype=F64)),
    )
    gap = A.log_marginal_likelihood(X, p.W_x, p.b_x, gamma) - A.elbo(p, X, gamma)
    scale = 1 + A.log_marginal_likelihood(X, p.W_x, p.b_x, gamma).abs()
    assert (gap >= -ID * scale).all()  # float64 identity: the gap is a KL divergence
    assert (gap > 1e-8).any()  # random q is not the exact posterior


@pytest.mark.parametrize(("kappa", "gamma"), [(1, 0.3), (2, 0.3), (4, 0.3), (4, 2.5)])
def test_elbo_equals_log_likelihood_at_the_optimum(kappa, gamma):
    """Check 5 (second half): at the optimum the columns of W_x are orthogonal, so the exact
    posterior covariance gamma (W^T W + gamma I)^-1 is diagonal and equals diag(s2), and the ELBO
    equals log N(x; b_x, gamma I + W_x W_x^T) on every row: at the closed form (float64 identity)
    and at a trained optimum (optimisation tolerance). Rank-3 data, kappa below and above it."""
    X = _instance(41, 10, 4, [3.0, 1.0, 0.2])
    opt = A.closed_form_optimum(X, kappa, gamma)
    for p, tol in (
        (opt.params, ID),
        (A.train(X, kappa, gamma, generator=torch.Generator().manual_seed(42)).params, 1e-7),
    ):
        lp = A.log_marginal_likelihood(X, p.W_x, p.b_x, gamma)
        el = A.elbo(p, X, gamma)
        torch.testing.assert_close(el, lp, rtol=tol, atol=tol)
        # averaged over rows: -2 ELBO = L + d log 2 pi - kappa, and the likelihood attains the
        # probabilistic-PCA bound (Hadamard equality)
        _, S = A.data_moments(X)
        bound = float(A.ppca_bound(p.W_x, S, gamma))
        assert float(-2 * lp.mean()) == pytest.approx(
            bound - kappa + 4 * math.log(2 * math.pi), rel=tol
        )
