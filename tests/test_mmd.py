"""MMD between samples of q(z) and N(0, I)."""

from __future__ import annotations

import math

import pytest
import torch

from balance.kernels import gaussian_kernel
from balance.metrics.mmd import mmd_to_standard_normal


def test_standard_normal_samples_give_zero_within_monte_carlo_error():
    gen = torch.Generator().manual_seed(0)
    values = torch.tensor([
        mmd_to_standard_normal(torch.randn(100, 8, generator=gen), generator=gen)
        for _ in range(60)
    ])
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item()) < 4 * se  # Monte Carlo: 4 standard errors around 0


def test_shifted_and_collapsed_posteriors_are_far_from_the_prior():
    gen = torch.Generator().manual_seed(1)
    z_good = torch.randn(500, 8, generator=gen)
    z_shift = torch.randn(500, 8, generator=gen) + 1.0
    z_narrow = 0.1 * torch.randn(500, 8, generator=gen)  # e.g. an unregularised encoder
    good = mmd_to_standard_normal(z_good, generator=torch.Generator().manual_seed(9))
    shift = mmd_to_standard_normal(z_shift, generator=torch.Generator().manual_seed(9))
    narrow = mmd_to_standard_normal(z_narrow, generator=torch.Generator().manual_seed(9))
    # The null's spread at n = 500 is ~1e-3 (previous test); the alternatives are > 30x that.
    assert abs(good) < 0.01
    assert shift > 0.05 and narrow > 0.05


def test_matches_gaussian_closed_form_for_a_scaled_gaussian_posterior():
    """q = N(0, s^2 I): the mean estimate over repeats matches the closed form (4 s.e.)."""
    d, s, h, n, repeats = 3, 0.6, 1.0, 50, 200
    gen = torch.Generator().manual_seed(2)
    kernel = lambda a, b: gaussian_kernel(a, b, h)  # noqa: E731
    values = torch.tensor([
        mmd_to_standard_normal(s * torch.randn(n, d, generator=gen, dtype=torch.float64),
                               generator=gen, kernel=kernel)
        for _ in range(repeats)
    ], dtype=torch.float64)

    def ek(v):  # E exp(-||W||^2 / (2 h^2)), W ~ N(0, v I_d)
        return (h * h / (h * h + v)) ** (d / 2)

    truth = ek(2 * s * s) + ek(2.0) - 2 * ek(s * s + 1.0)
    se = values.std().item() / math.sqrt(repeats)
    assert abs(values.mean().item() - truth) < 4 * se  # Monte Carlo: 4 standard errors


def test_seeded_and_follows_dtype():
    z = torch.randn(64, 4, dtype=torch.float64)
    a = mmd_to_standard_normal(z, generator=torch.Generator().manual_seed(5), n_prior=128)
    b = mmd_to_standard_normal(z, generator=torch.Generator().manual_seed(5), n_prior=128)
    c = mmd_to_standard_normal(z, generator=torch.Generator().manual_seed(6), n_prior=128)
    assert a == b and a != c
    assert isinstance(a, float)


def test_rejects_bad_input():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"\[n, k\]"):
        mmd_to_standard_normal(torch.randn(10), generator=gen)
    with pytest.raises(ValueError, match="non-finite"):
        mmd_to_standard_normal(torch.tensor([[float("nan")], [0.0]]), generator=gen)
