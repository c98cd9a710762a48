"""Kernels and the unbiased MMD^2 estimator against closed forms and brute-force sums."""

from __future__ import annotations

import math

import pytest
import torch

from balance.kernels import (
    WAE_IMQ_SCALES,
    gaussian_kernel,
    imq_kernel,
    mmd_unbiased,
    squared_distances,
)


def gaussian_mmd2_closed_form(mu1, s1, mu2, s2, d, h):
    """MMD^2 between N(mu1, s1^2 I_d) and N(mu2, s2^2 I_d) under k = exp(-||x-y||^2 / (2 h^2)).

    E k(X, Y) for X - Y ~ N(delta, v I_d) is (h^2 / (h^2 + v))^(d/2) exp(-||delta||^2 / (2 (h^2 +
    v))); MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y) with v = 2 s1^2, 2 s2^2, s1^2 + s2^2.
    """

    def expected(delta2, v):
        return (h * h / (h * h + v)) ** (d / 2) * math.exp(-delta2 / (2 * (h * h + v)))

    delta2 = float(((mu1 - mu2) ** 2).sum())
    return expected(0.0, 2 * s1**2) + expected(0.0, 2 * s2**2) - 2 * expected(delta2, s1**2 + s2**2)


def brute_force_mmd2(x, y, k):
    """The U-statistic written as explicit double loops."""
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_squared_distances_match_direct_differences():
    x = torch.randn(7, 5, dtype=torch.float64)
    y = torch.randn(4, 5, dtype=torch.float64)
    direct = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    # float64 identity; the expansion loses ~1e-15 relative to ||x||^2 + ||y||^2.
    torch.testing.assert_close(squared_distances(x, y), direct, rtol=0, atol=1e-12)
    assert (squared_distances(x, x).diagonal() >= 0).all()


def test_imq_kernel_is_the_wae_formula():
    d = 3
    x = torch.randn(5, d, dtype=torch.float64)
    y = torch.randn(6, d, dtype=torch.float64)
    bw = 0.7
    got = imq_kernel(x, y, bandwidth=bw)
    for i in range(5):
        for j in range(6):
            dist = float(((x[i] - y[j]) ** 2).sum())
            want = sum(2 * d * bw**2 * s / (2 * d * bw**2 * s + dist) for s in WAE_IMQ_SCALES)
            assert got[i, j].item() == pytest.approx(want, rel=1e-12)  # float64 identity
    # k(x, x) = number of scales
    torch.testing.assert_close(imq_kernel(x, x).diagonal(),
                               torch.full((5,), float(len(WAE_IMQ_SCALES)), dtype=torch.float64))


def test_gaussian_kernel_sums_bandwidths():
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.randn(3, 2, dtype=torch.float64)
    dist = ((x[:, None] - y[None]) ** 2).sum(-1)
    want = torch.exp(-dist / 2) + torch.exp(-dist / (2 * 0.25))
    torch.testing.assert_close(gaussian_kernel(x, y, (1.0, 0.5)), want, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="positive"):
        gaussian_kernel(x, y, 0.0)


@pytest.mark.parametrize("block_size", [2048, 3])
def test_mmd_unbiased_equals_the_u_statistic(block_size):
    x = torch.randn(9, 3, dtype=torch.float64)
    y = torch.randn(7, 3, dtype=torch.float64) + 0.3

    def k_pair(a, b):
        return imq_kernel(a[None], b[None])[0, 0].item()

    want = brute_force_mmd2(x, y, k_pair)
    got = mmd_unbiased(x, y, imq_kernel, block_size=block_size).item()
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)  # float64 identity (row blocks too)


def test_gaussian_mmd_matches_closed_form_in_expectation():
    """Mean of the estimator over repeats is MMD^2 within 4 Monte Carlo standard errors; the
    biased V-statistic (diagonal kept) is visibly off, so the test has power."""
    gen = torch.Generator().manual_seed(1)
    d, n, h, repeats = 2, 20, 1.0, 400
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    s1, s2 = 1.0, 1.3
    kernel = lambda a, b: gaussian_kernel(a, b, h)  # noqa: E731
    unbiased, biased = [], []
    for _ in range(repeats):
        x = mu1 + s1 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        y = mu2 + s2 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        unbiased.append(mmd_unbiased(x, y, kernel).item())
        biased.append((kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()).item())
    truth = gaussian_mmd2_closed_form(mu1, s1, mu2, s2, d, h)
    u = torch.tensor(unbiased, dtype=torch.float64)
    se = u.std().item() / math.sqrt(repeats)
    assert abs(u.mean().item() - truth) < 4 * se  # Monte Carlo: 4 standard errors
    b = torch.tensor(biased, dtype=torch.float64)
    assert abs(b.mean().item() - truth) > 8 * se  # the V-statistic's O(1/n) bias is detectable


def test_mmd_of_identical_distributions_is_zero_on_average_and_can_be_negative():
    gen = torch.Generator().manual_seed(2)
    values = torch.tensor([
        mmd_unbiased(torch.randn(30, 4, generator=gen, dtype=torch.float64),
                     torch.randn(40, 4, generator=gen, dtype=torch.float64)).item()
        for _ in range(200)
    ])
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item()) < 4 * se  # Monte Carlo: 4 standard errors around 0
    assert (values < 0).any()  # unbiased: no clamping at 0


def test_mmd_unbiased_is_differentiable():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mmd_unbiased(a, b, imq_kernel), (x, y))
    assert torch.autograd.gradcheck(
        lambda a, b: mmd_unbiased(a, b, lambda p, q: gaussian_kernel(p, q, (0.5, 2.0))), (x, y))


def test_mmd_gradient_pulls_samples_towards_the_other_set():
    """One gradient step on x lowers the MMD to a fixed y (the WAE penalty's use)."""
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(64, 2, generator=gen)
    x = (torch.randn(64, 2, generator=gen) + 2.0).requires_grad_()
    before = mmd_unbiased(x, y)
    (grad,) = torch.autograd.grad(before, x)
    after = mmd_unbiased(x.detach() - 5.0 * grad, y)
    assert after.item() < before.item()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same dimension"):
        mmd_unbiased(torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="at least 2"):
        mmd_unbiased(torch.randn(1, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="2-d"):
        imq_kernel(torch.randn(4), torch.randn(4))


@pytest.mark.parametrize("n, m, block", [(37, 29, 8), (64, 64, 64), (50, 3, 7)])
def test_in_place_imq_path_equals_the_plain_path(n, m, block):
    from balance.kernels import _imq_sums_inplace, _kernel_sums, imq_kernel

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randn(m, 5, generator=g, dtype=torch.float64) + 0.3
    for a, b, same in ((x, x, True), (x, y, False), (y, y, True)):
        plain = _kernel_sums(a, b, imq_kernel, block, same)
        fast = _imq_sums_inplace(a, b, WAE_IMQ_SCALES, 1.0, block, same)
        # float64 sums of O(n m) positive terms in another order: round-off ~1e-15 relative
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=0)
    plain_mmd = mmd_unbiased(x.requires_grad_(), y)  # a gradient wanted: the plain path
    assert plain_mmd.requires_grad
    with torch.no_grad():
        fast_mmd = mmd_unbiased(x, y, block_size=block)
    torch.testing.assert_close(fast_mmd, plain_mmd.detach(), rtol=1e-10, atol=1e-14)
