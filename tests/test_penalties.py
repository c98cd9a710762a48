"""Penalty functions and the duplicate-column perturbation of Theorem 3 (unit level)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.theory.penalties import (
    Penalty,
    duplicate_column_perturbation,
    largest_improving_fraction,
    penalty_change,
    regularized_ae_energy,
    row_energies,
)

F64 = torch.float64


@pytest.mark.parametrize(
    "h, formula",
    [
        (Penalty("linear"), lambda u: u),
        (Penalty("linear_quadratic"), lambda u: u + u**2),
        (Penalty("saturating_exp", tau=0.5), lambda u: 1 - math.exp(-u / 0.5)),
        (Penalty("log1p", tau=0.5), lambda u: math.log(1 + u / 0.5)),
        (Penalty("power", p=0.3), lambda u: u**0.3),
        (Penalty("log_eps", eps=1e-2), lambda u: math.log(u + 1e-2)),
    ],
)
def test_penalty_values_and_derivative_at_zero(h, formula):
    for u in (0.0, 0.3, 2.0):
        assert float(h(torch.tensor(u, dtype=F64))) == pytest.approx(formula(u), rel=1e-14,
                                                                     abs=1e-300)
    u0 = torch.zeros((), dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(h(u0), u0)
    assert float(grad) == h.derivative_at_zero()  # autograd agrees, inf included
    assert h.bounded_gradient == math.isfinite(h.derivative_at_zero())


def test_penalty_kinds_and_parameters_are_validated():
    with pytest.raises(ValueError, match="kind"):
        Penalty("l1")
    with pytest.raises(ValueError, match="positive"):
        Penalty("log_eps", eps=0.0)


def _balanced(seed: int = 0, d: int = 6, n: int = 30, r: int = 2, kappa: int = 4):
    g = torch.Generator().manual_seed(seed)
    D, _ = torch.linalg.qr(torch.randn(d, kappa, generator=g, dtype=F64))  # unit-norm columns
    Z = torch.zeros(kappa, n, dtype=F64)
    Z[:r] = torch.randn(r, n, generator=g, dtype=F64)
    return D @ Z, D, Z


def test_perturbation_keeps_reconstruction_and_moves_row_energy():
    X, D, Z = _balanced()
    D0, Z0 = D.clone(), Z.clone()
    D2, Z2 = duplicate_column_perturbation(D, Z, active=0, idle=3, delta=0.2)
    assert torch.equal(D, D0) and torch.equal(Z, Z0)  # inputs untouched
    torch.testing.assert_close(D2 @ Z2, X, rtol=0, atol=1e-14)  # float64 rounding only
    torch.testing.assert_close(D2.norm(dim=0), torch.ones(4, dtype=F64), rtol=1e-14, atol=0)
    u = row_energies(Z)
    u2 = row_energies(Z2)
    torch.testing.assert_close(u2[0], 0.64 * u[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(u2[3], 0.04 * u[0], rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="distinct"):
        duplicate_column_perturbation(D, Z, 1, 1, 0.1)


@pytest.mark.parametrize("h", [Penalty("linear_quadratic"), Penalty("log_eps", eps=1e-3),
                               Penalty("power", p=0.4)])
def test_penalty_change_is_the_energy_difference(h):
    X, D, Z = _balanced(1)
    u = float(row_energies(Z)[1])
    for delta in (1e-3, 0.1, 0.4):
        D2, Z2 = duplicate_column_perturbation(D, Z, active=1, idle=2, delta=delta)
        diff = regularized_ae_energy(X, D2, Z2, h) - regularized_ae_energy(X, D, Z, h)
        # Float64 identity; the reconstruction term h(~1e-32) differs from h(0) by ~1e-29 for
        # the log penalty, i.e. far below the tolerance.
        assert float(diff) == pytest.approx(float(penalty_change(h, u, delta, d=6)),
                                            rel=1e-9, abs=1e-12)


def test_energy_value_by_hand_and_shape_errors():
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)  # d = 2, n = 2
    D = torch.eye(2, dtype=F64)
    Z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    # rec = ||X - DZ||^2 / (d n) = 1 / 4; rows: u = (1/2, 1/2); h = linear.
    assert float(regularized_ae_energy(X, D, Z, Penalty("linear"))) == pytest.approx(0.25 + 0.5)
    with pytest.raises(ValueError, match="chain"):
        regularized_ae_energy(X, D, Z[:, :1], Penalty("linear"))


def test_largest_improving_fraction_cases():
    # h(u) = u: Delta = -2 delta (1 - delta) u < 0 on all of (0, 1/2].
    assert largest_improving_fraction(Penalty("linear"), 1.0) == 0.5
    # u^p, p < 1/2: never improves.
    assert largest_improving_fraction(Penalty("power", p=0.4), 1.0) == 0.0
    # log(u + eps): the root is where Delta returns to 0, near 2 eps / u.
    h = Penalty("log_eps", eps=1e-4)
    root = largest_improving_fraction(h, 2.0)
    assert root == pytest.approx(2e-4 / 2.0, rel=0.05)
    assert abs(float(penalty_change(h, 2.0, root))) < 1e-12
    assert penalty_change(h, 2.0, 0.5 * root) < 0 < penalty_change(h, 2.0, 2 * root)
    assert np.all(penalty_change(h, 2.0, np.array([0.1, 0.3, 0.5])) > 0)
