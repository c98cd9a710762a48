"""Theorem 2 (THEORY.md section 2): the over-regularised stationary point of a deep Gaussian VAE.

Latent dimension j is "switched off" when column j of the decoder's first layer (and of the
affine skip W_x, when there is one), row j of both encoder output layers and the matching
biases are zero: mu_j = 0, sigma_j^2 = 1, and the decoder ignores z_j ~ N(0, 1).

Checks (deep decoders of 5 and 6 linear layers, float64, seeded, CPU seconds):

1. The KL gradient for those blocks is exactly 0, and so is the reconstruction gradient for the
   encoder rows (dL/dz_j = 0 because the column is 0). The reconstruction gradient for the
   decoder column (and the skip column) is zero in expectation only: many independent
   Monte-Carlo estimates have mean within a few standard errors of 0 and a spread shrinking
   like samples^(-1/2).
2. The escape: from a small perturbation (1e-3) of the all-dimensions-off point, the rest of the
   network at its random initialisation, on data from a 2-dimensional affine subspace of R^12,
   the model with the affine skip leaves the point and ends with exactly r = 2 active
   dimensions; the plain deep decoder leaves it later than the skip model, if at all.
3. At the exact all-off point (decoder constant at the data mean, gamma at its optimum) the
   whole gradient vanishes, but the energy has a direction of negative curvature coupling the
   skip column j (along the top data eigenvector) with the encoder row j: a strict saddle,
   shown with the Hessian of the expected energy and a second difference. The same coupling
   through the deep decoder's first layer has a much weaker negative curvature (~15x here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.data.synthetic import affine_subspace
from balance.density import kl_standard_normal
from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
from balance.models.vae import GammaConfig, GaussianVAE
from balance.objectives.elbo import elbo_terms
from balance.theory.over_regularized import (
    escape,
    expected_energy,
    move_to_all_off_point,
    off_blocks,
    switch_off,
)

F64 = torch.float64
D, R, KAPPA, WIDTH = 12, 2, 4, 32


def _data(n: int, seed: int = 0) -> torch.Tensor:
    """n points of a random 2-dimensional affine subspace of R^12 (unit variance along it)."""
    return affine_subspace(n, D, R, generator=torch.Generator().manual_seed(seed)).x


def _model(skip: bool, residual: bool = False, seed: int = 0) -> GaussianVAE:
    """Encoder with 2 hidden layers; decoder with 4 hidden layers (plain: 5 linear layers) or 2
    residual blocks (6 linear layers); PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    enc = MLPEncoder(MLPEncoderConfig((D,), KAPPA, width=WIDTH, depth=2))
    depth = 2 if residual else 4
    dec = MLPDecoder(
        MLPDecoderConfig((D,), KAPPA, width=WIDTH, depth=depth, residual=residual,
                         affine_skip=skip)
    )
    assert dec.config.n_linear_layers >= 4
    model = GaussianVAE(enc, dec, GammaConfig(init=1.0)).double()
    model.set_gamma(1.0)
    return model


def _grads(model, loss, j):
    blocks = off_blocks(model, j)
    params = [p for p, _ in blocks.values()]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {
        name: (torch.zeros_like(p) if g is None else g)[index]
        for (name, (p, index)), g in zip(blocks.items(), grads, strict=True)
    }


ARCHS = [(False, False), (True, False), (False, True), (True, True)]
ARCH_IDS = ["plain", "plain+skip", "residual", "residual+skip"]


# ------------------------------------------------------------------ 1. stationarity of the blocks


@pytest.mark.parametrize("skip, residual", ARCHS, ids=ARCH_IDS)
def test_kl_and_encoder_gradients_vanish_exactly_for_a_switched_off_dimension(skip, residual):
    model = _model(skip, residual)
    j = 1
    switch_off(model, [j])  # the other dimensions stay at their random initialisation
    x = _data(64)
    out = model(x, generator=torch.Generator().manual_seed(1))
    terms = elbo_terms(x, out)
    assert torch.equal(out.mu_z[:, j], torch.zeros(64, dtype=F64))
    assert torch.equal(out.logvar_z[:, j], torch.zeros(64, dtype=F64))
    # KL part: exactly zero for all blocks (d KL / d mu_j = mu_j = 0, d KL / d logvar_j =
    # (exp(logvar_j) - 1) / 2 = 0), float64 exact.
    for name, g in _grads(model, terms.kl.mean(), j).items():
        assert torch.equal(g, torch.zeros_like(g)), name
    # Reconstruction part, any single noise draw: the encoder blocks get exactly zero because
    # dL/dz_j = W1[:, j]^T (...) + W_x[:, j]^T (...) = 0.
    rec = _grads(model, terms.reconstruction.mean(), j)
    for name in ("mu_z row", "mu_z bias", "logvar_z row", "logvar_z bias"):
        assert torch.equal(rec[name], torch.zeros_like(rec[name])), name
    # ... but not the decoder column (zero only in expectation, see the next test), and an
    # active dimension's blocks get non-zero gradients: the checks above are not vacuous.
    assert rec["decoder first-layer column"].abs().max() > 1e-6
    out = model(x, generator=torch.Generator().manual_seed(1))
    active = _grads(model, elbo_terms(x, out).loss(), 0)
    assert all(g.abs().max() > 1e-8 for g in active.values())


def _column_gradient_estimates(model, x, j, samples: int, n_estimates: int, generator):
    """n_estimates independent Monte-Carlo estimates of d E[rec] / d (decoder column j, skip
    column j), each from `samples` noise draws per data point: [n_estimates, P]."""
    blocks = off_blocks(model, j)
    names = [k for k in ("decoder first-layer column", "skip column") if k in blocks]
    params = [blocks[k][0] for k in names]
    xr = x.repeat(samples, 1)
    estimates = []
    for _ in range(n_estimates):
        out = model(xr, generator=generator)
        loss = elbo_terms(xr, out).reconstruction.mean()
        grads = torch.autograd.grad(loss, params)
        estimates.append(torch.cat([g[:, j] for g in grads]))
    return torch.stack(estimates)


@pytest.mark.parametrize("skip, residual", [(True, False), (False, True)],
                         ids=["plain+skip", "residual"])
def test_reconstruction_gradient_of_the_decoder_column_is_zero_mean_with_root_n_spread(
    skip, residual
):
    model = _model(skip, residual)
    j = 2
    switch_off(model, [j])
    x = _data(8)
    gen = torch.Generator().manual_seed(3)
    sizes = np.array([2, 8, 32, 128])
    m = 100
    spreads = []
    for s in sizes:
        est = _column_gradient_estimates(model, x, j, int(s), m, gen)
        mean, std = est.mean(0), est.std(0)
        # Zero mean: every component within 5 standard errors (per-component false-alarm
        # rate 6e-7, times <= 44 components and 4 sizes: ~1e-4).
        z = mean / (std / math.sqrt(m))
        assert z.abs().max() < 5.0, (int(s), float(z.abs().max()))
        spreads.append(float(std.mean()))
    # Spread ~ samples^(-1/2): the relative error of a standard deviation from m = 100
    # estimates is ~1/sqrt(2 (m - 1)) = 7% per component, averaged over the components; the
    # fitted slope over a factor 64 in samples is within 0.1 of -1/2 (>= 4 standard errors).
    slope = float(np.polyfit(np.log(sizes), np.log(spreads), 1)[0])
    assert slope == pytest.approx(-0.5, abs=0.1), (slope, spreads)


# ------------------------------------------------------------------ 2. the escape


@pytest.mark.slow
def test_escape_from_the_all_off_point_with_and_without_the_affine_skip():
    """Set-up fixed before looking at any outcome: n = 256 points on a 2-plane in R^12, kappa = 4,
    encoder 2 x 32, decoder 4 x 32 ReLU (5 linear layers), all four dimensions switched off and
    perturbed by N(0, 1e-3^2), learned gamma from 1, full-batch Adam (lr 2e-3).

    Theory (Theorem 1 applied to the affine part, check 3 below): with the skip the point is a
    strict saddle with O(1) negative curvature and every minimum of the affine part has
    exactly r = 2 active dimensions, so the skip model leaves it and ends at r. For the plain
    deep decoder the point is stationary and its negative curvature much weaker (check 3), so
    it leaves later, if at all. Measured: the skip model has an active unit at step 100 and
    exactly 2 from then on; the plain one has none after 1500 steps. Over seeds 0-4 the plain
    model stayed off for 1500 steps in 2 of 5 and escaped after ~750 steps in the others (the
    skip model: 5 of 5 by step 300): the paper's "falls back" is not uniform, so it is not
    asserted.
    """
    results = {}
    for skip, steps in ((True, 600), (False, 1500)):
        # One generator for the data, then the perturbation, then the training noise.
        gen = torch.Generator().manual_seed(0)
        x = affine_subspace(256, D, R, generator=gen).x
        model = _model(skip, seed=0)
        switch_off(model, range(KAPPA), perturbation=1e-3, generator=gen)
        results[skip] = escape(model, x, steps, check_every=50, lr=2e-3, generator=gen)
    first_skip, final_skip = results[True]
    first_plain, _ = results[False]
    assert final_skip == R, results
    assert first_skip is not None and first_skip <= 300, results
    assert first_plain is None or first_plain > first_skip, results


# ------------------------------------------------------------------ 3. the strict saddle


def _exact_off_point(skip: bool):
    """All dimensions off, decoder constant equal to the data mean, gamma = tr(S) / d: the
    gradient of the expected energy vanishes in every parameter."""
    x = _data(256)
    model = _model(skip)
    move_to_all_off_point(model, x)
    return x, model


def _block_function(model, x, column_param: str, j: int):
    """theta = (column j of `column_param`, row j of mu_z, bias j of mu_z) -> expected energy."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    W0 = params[column_param]
    M0 = params["encoder.mu_head.weight"]
    b0 = params["encoder.mu_head.bias"]
    n_col, n_row = W0.shape[0], M0.shape[1]

    def energy(theta):
        col, row, bias = theta[:n_col], theta[n_col:n_col + n_row], theta[n_col + n_row:]
        p = dict(params)
        p[column_param] = torch.cat([W0[:, :j], col[:, None], W0[:, j + 1:]], dim=1)
        p["encoder.mu_head.weight"] = torch.cat([M0[:j], row[None], M0[j + 1:]], dim=0)
        p["encoder.mu_head.bias"] = torch.cat([b0[:j], bias, b0[j + 1:]])
        return expected_energy(model, x, p)

    return energy, n_col, n_row


def test_all_off_point_is_a_strict_saddle_along_the_skip_column():
    j = 0
    x, model = _exact_off_point(skip=True)
    # Stationary: the expected energy's gradient vanishes in every parameter (float64 rounding
    # of O(1) sums: < 1e-12).
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(expected_energy(model, x, params), list(params.values()))
    assert max(float(g.abs().max()) for g in grads) < 1e-12
    energy, n_col, n_row = _block_function(model, x, "decoder.skip.weight", j)
    theta0 = torch.zeros(n_col + n_row + 1, dtype=F64)
    H = torch.autograd.functional.hessian(energy, theta0)
    # The skip column alone: curvature I / gamma * E[eps^2] > 0 (it only adds noise). The
    # encoder row alone: the KL's E[h h^T] >= 0. Together: a negative eigenvalue.
    gamma = model.gamma
    torch.testing.assert_close(H[:n_col, :n_col], torch.eye(n_col, dtype=F64) / gamma,
                               rtol=1e-12, atol=1e-12)
    assert float(torch.linalg.eigvalsh(H[n_col:, n_col:])[0]) > -1e-12
    lam_min = float(torch.linalg.eigvalsh(H)[0])
    assert lam_min < -1e-2, lam_min  # rounding errors are ~1e-12
    # The direction of the top data eigenvector: skip column alpha u_1, encoder row/bias fitted
    # so that mu_j(x) ~ beta u_1^T (x - m) (least squares on the encoder's last hidden layer).
    s = torch.cov(x.T, correction=0)
    evals, evecs = torch.linalg.eigh(s)
    l1, u1 = float(evals[-1]), evecs[:, -1]
    assert l1 > gamma  # the condition for a negative direction (Theorem 1: l_i > gamma)
    with torch.no_grad():
        h = model.encoder.body(x)
        features = torch.cat([h, torch.ones(x.shape[0], 1, dtype=F64)], dim=1)
        target = (x - x.mean(0)) @ u1
        coef = torch.linalg.lstsq(features, target[:, None]).solution[:, 0]
    fit = float((features @ coef - target).square().mean() / target.square().mean())
    assert fit < 0.5  # the random-feature encoder can express the top direction reasonably
    # For mu_j = beta u1^T(x - m) exactly, the curvature along (alpha u1, beta a) is
    # (alpha^2 - 2 alpha beta l1) / gamma + beta^2 l1, minimal at alpha = beta l1.
    v = torch.cat([l1 * u1, coef])
    hvp = float(v @ H @ v)
    t = 1e-3
    second_difference = float(energy(t * v) - 2 * energy(theta0) + energy(-t * v)) / t**2
    # The energy is a polynomial in t (degree 4): the central difference has an O(t^2)
    # truncation error, relative ~1e-6 here, and cancellation error ~1e-16 / t^2 = 1e-10.
    assert second_difference == pytest.approx(hvp, rel=1e-5)
    assert hvp < 0, hvp
    # Each part alone curves upwards along the same direction.
    v_col = torch.cat([l1 * u1, torch.zeros_like(coef)])
    v_row = torch.cat([torch.zeros_like(u1), coef])
    assert float(v_col @ H @ v_col) > 0 and float(v_row @ H @ v_row) > 0


def test_negative_curvature_through_the_deep_decoder_is_much_weaker():
    """Same block with the deep decoder's first-layer column instead of the skip column: the
    coupling passes through the decoder's Jacobian at random initialisation, which scales the
    negative eigenvalue down. Measured at this seeded point: -0.0144 against -0.220 (ratio
    0.065); a deterministic check that the ratio stays below 0.1."""
    j = 0
    x, skip_model = _exact_off_point(skip=True)
    energy, *_ = _block_function(skip_model, x, "decoder.skip.weight", j)
    lam_skip = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(
        energy, torch.zeros(D + WIDTH + 1, dtype=F64)))[0])
    x, plain_model = _exact_off_point(skip=False)
    energy, *_ = _block_function(plain_model, x, "decoder.hidden.0.weight", j)
    lam_plain = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(
        energy, torch.zeros(WIDTH + WIDTH + 1, dtype=F64)))[0])
    assert lam_skip < 0
    assert abs(lam_plain) < 0.1 * abs(lam_skip), (lam_plain, lam_skip)


def test_kl_at_the_off_point_is_zero():
    # Sanity: the switched-off encoder gives q = N(0, I) exactly on every dimension.
    x, model = _exact_off_point(skip=True)
    mu, logvar = model.encode(x)
    assert torch.equal(kl_standard_normal(mu, logvar), torch.zeros(x.shape[0], dtype=F64))


# ------------------------------------------------------------------ 4. over seeds


@pytest.mark.slow
def test_escape_over_seeds_the_skip_model_leaves_first():
    """What held over 20 seeds in ``experiments/theorem2_escape.py`` (quick preset, shallow
    decoders; results/theorem2_escape): with the affine skip every seed left the all-off point
    by step 400 (median 138) and ended with exactly r = 2 active dimensions; the plain deep
    decoder left it in 8 of 20 seeds, never before step 450, and stayed off in 12. Checked
    here on seeds 0-3 with runs cut where the claim is decided: the skip model has an active
    dimension by step 150 and the plain one none by step 400 (the measured values for these
    seeds: skip 100, 125, 50, 75; plain never, 675, 700, 750)."""
    from experiments.theorem2_escape import Config, one_seed

    for seed in range(4):
        first, _ = one_seed("plain+skip", "shallow", seed, Config(steps=150))
        assert first is not None and first <= 150, (seed, first)
        first, final = one_seed("plain", "shallow", seed, Config(steps=400))
        assert first is None and final == 0, (seed, first, final)
