"""Ex-post density estimators on codes (balance.density_estimation): each sampler must reproduce
what it fitted, reject bad input, and be reproducible from its generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.density_estimation import (
    ESTIMATORS,
    FullGaussian,
    GaussianMixture,
    SecondStageVAE,
    SkipMLP,
    StandardNormal,
    interpolate,
    make_estimator,
    random_pairs,
)


def correlated_codes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n draws of a 3-d Gaussian with mean m and covariance A A^T (float64)."""
    m = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 2.0]], dtype=torch.float64)
    z = m + torch.randn(n, 3, generator=gen, dtype=torch.float64) @ a.T
    return z, m, a @ a.T


def assert_moments_match(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                         n_se: float = 5.0) -> None:
    """Sample mean and covariance within n_se Monte-Carlo standard errors of (mean, cov).

    s.e.(mean_i) = sqrt(S_ii / n); s.e.(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n) (Gaussian
    fourth moments; a mixture's are larger, so the GMM test passes n_se with that in mind).
    """
    n = samples.shape[0]
    s = samples.to(torch.float64)
    var = cov.diagonal()
    assert ((s.mean(0) - mean).abs() <= n_se * (var / n).sqrt()).all()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(s.T) - cov).abs() <= n_se * se_cov).all()


def test_standard_normal():
    est = StandardNormal().fit(torch.randn(10, 4) * 7)
    z = est.sample(20000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, 4) and z.dtype == torch.float32
    assert_moments_match(z, torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    q = torch.randn(5, 4)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(q).sum(1)
    torch.testing.assert_close(est.log_prob(q), ref)


def test_mvg_reproduces_the_data_covariance():
    codes, m, cov = correlated_codes(2000, torch.Generator().manual_seed(0))
    est = FullGaussian().fit(codes.float())
    # float64 fit of the float32 codes: equal to numpy's unbiased estimates to float32 rounding.
    np.testing.assert_allclose(est.mean.numpy(), codes.float().double().mean(0).numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.cov.numpy(), np.cov(codes.float().double().numpy().T),
                               rtol=1e-12, atol=1e-12)
    samples = est.sample(20000, generator=torch.Generator().manual_seed(1))
    assert samples.dtype == torch.float32
    assert_moments_match(samples, est.mean, est.cov)
    # ... and the data's true law, within the estimation error of 2000 codes (looser).
    assert_moments_match(samples, m, cov, n_se=5 * math.sqrt(1 + 20000 / 2000))
    ref = torch.distributions.MultivariateNormal(est.mean, est.cov).log_prob(codes[:5])
    torch.testing.assert_close(est.log_prob(codes[:5]), ref)


def test_mvg_handles_a_singular_covariance_with_jitter():
    z = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    codes = torch.cat([z, z[:, :1] + z[:, 1:]], dim=1)  # rank 2 in 3 dimensions
    est = FullGaussian().fit(codes)
    samples = est.sample(20000, generator=torch.Generator().manual_seed(0))
    # The samples stay on the codes' plane x3 = x1 + x2, off it only by the jitter's scale
    # (sqrt of at most 1e-9 * 10^11 relative variance would be visible; observed ~1e-4).
    off_plane = samples[:, 2] - samples[:, 0] - samples[:, 1]
    assert float(off_plane.abs().max()) < 1e-2
    # ... with the codes' covariance in the plane (Gaussian moment tolerance, 5 s.e.).
    assert_moments_match(samples[:, :2], est.mean[:2], est.cov[:2, :2])


def gmm_moments(est: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    w, mu, cov = est.weights, est.means, est.covariances
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def test_gmm_samples_match_the_fitted_mixture():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]], dtype=torch.float64)
    labels = torch.randint(3, (1500,), generator=gen)
    codes = centres[labels] + 0.5 * torch.randn(1500, 2, generator=gen, dtype=torch.float64)
    est = GaussianMixture(3, seed=0).fit(codes)
    # EM recovers the well-separated centres (to a few s.e. of 500-point means, ~0.02).
    found = est.means[est.means[:, 0].argsort()]
    expected = centres[centres[:, 0].argsort()]
    torch.testing.assert_close(found, expected, atol=0.1, rtol=0)
    samples = est.sample(30000, generator=torch.Generator().manual_seed(1))
    mean, cov = gmm_moments(est)
    # Mixture fourth moments exceed the Gaussian formula's: allow 8 of its s.e.
    assert_moments_match(samples, mean, cov, n_se=8.0)
    # Component proportions: nearest-centre counts within 5 binomial s.e. of the weights.
    nearest = torch.cdist(samples.double(), est.means).argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / len(samples)
    se = (est.weights * (1 - est.weights) / len(samples)).sqrt()
    assert ((freq - est.weights).abs() < 5 * se + 1e-3).all()
    # A single Gaussian would put mass between the clusters; the mixture does not.
    gap = (samples.double()[:, None, :] - est.means[None]).norm(dim=2).min(1).values > 3.0
    assert gap.double().mean() < 0.01
    # log q(z): the mixture density written out, log sum_c w_c N(z; mu_c, S_c) (float64).
    ll = est.log_prob(codes[:4])
    parts = torch.stack([torch.distributions.MultivariateNormal(m, c).log_prob(codes[:4])
                         for m, c in zip(est.means, est.covariances, strict=True)])
    torch.testing.assert_close(ll, torch.logsumexp(parts + est.weights.log()[:, None], 0),
                               rtol=1e-10, atol=1e-10)


def test_gmm_defaults_are_the_references():
    est = GaussianMixture()
    assert (est.n_components, est.max_iter, est.tol) == (10, 2000, 1e-3)


def test_samplers_are_reproducible_and_follow_the_codes():
    codes, _, _ = correlated_codes(200, torch.Generator().manual_seed(0))
    for name in ("normal", "mvg", "gmm"):
        est = make_estimator(name).fit(codes)
        a = est.sample(7, generator=torch.Generator().manual_seed(3))
        b = est.sample(7, generator=torch.Generator().manual_seed(3))
        c = est.sample(7, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.dtype == torch.float64 and a.shape == (7, 3)
        assert est.sample(2, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("name", ["normal", "mvg", "gmm", "vae2"])
def test_bad_codes_are_rejected(name):
    est = make_estimator(name)
    bad = torch.randn(50, 3)
    bad[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        est.fit(torch.randn(50))
    with pytest.raises(RuntimeError, match="not fitted"):
        est.sample(3)


def test_too_few_codes_and_wrong_dimensions():
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(10).fit(torch.randn(9, 2))
    with pytest.raises(ValueError, match="at least 2"):
        FullGaussian().fit(torch.randn(1, 2))
    est = FullGaussian().fit(torch.randn(20, 2))
    with pytest.raises(ValueError, match="dimensions"):
        est.log_prob(torch.randn(3, 5))
    with pytest.raises(ValueError, match="unknown estimator"):
        make_estimator("glow")
    with pytest.raises(ValueError, match="unknown flow"):
        make_estimator("flow", kind="glow")
    assert set(ESTIMATORS) == {"normal", "mvg", "gmm", "dpgmm", "kde", "flow", "vae2"}


def test_interpolation_and_pairs():
    za, zb = torch.zeros(2, 3), torch.ones(2, 3)
    path = interpolate(za, zb, 5)
    assert path.shape == (2, 5, 3)
    torch.testing.assert_close(path[:, 0], za)
    torch.testing.assert_close(path[:, -1], zb)
    torch.testing.assert_close(path[:, 2], torch.full((2, 3), 0.5))
    codes = torch.arange(10.0).repeat(2, 1).T  # row i = (i, i)
    a, b = random_pairs(codes, 500, generator=torch.Generator().manual_seed(0))
    assert (a[:, 0] != b[:, 0]).all()
    assert len(set(a[:, 0].tolist())) == 10  # every code can be drawn
    with pytest.raises(ValueError):
        interpolate(za, zb, 1)


def test_skip_mlp_concatenates_input():
    net = SkipMLP(3, 2, width=8, depth=3, heads=2)
    mu, logvar = net(torch.randn(4, 3))
    assert mu.shape == logvar.shape == (4, 2)
    assert net.heads[0].in_features == 3 + 8


def test_second_stage_vae_learns_the_codes():
    gen = torch.Generator().manual_seed(0)
    codes, m, cov = correlated_codes(512, gen)
    codes = codes.float()
    # Small, fast settings (the paper's 3 x 1024 units and 800 epochs are the defaults); no
    # standardisation, so that matching the codes' moments is the network's work alone.
    est = SecondStageVAE(width=64, depth=3, epochs=60, batch_size=64, lr=3e-3, normalise=False,
                         lr_milestones=())
    # Before training (same seed, no epochs) the decoder's outputs sit near 0 with small spread.
    untrained = SecondStageVAE(est.config, epochs=0).fit(codes)
    est.fit(codes)
    losses = [h["loss"] for h in est.history]
    # Nats per code. The codes' entropy, 1/2 log det(2 pi e Sigma) = 4.26, bounds the mean
    # negative ELBO from below up to sampling error; observed: 7.3 after epoch 1, 4.7 at the end.
    entropy = 0.5 * math.log(float(torch.linalg.det(2 * math.pi * math.e * cov)))
    assert losses[-1] < losses[0] - 1.5
    assert losses[-1] < entropy + 1.0
    ref_mean, ref_cov = codes.double().mean(0), torch.cov(codes.double().T)

    def error(sampler):
        z = sampler.sample(4000, generator=torch.Generator().manual_seed(1)).double()
        return float((z.mean(0) - ref_mean).norm()), float((torch.cov(z.T) - ref_cov).norm())

    mean_before, cov_before = error(untrained)
    mean_after, cov_after = error(est)
    # Observed ratios 0.06 and 0.3.
    assert mean_after < 0.25 * mean_before
    assert cov_after < 0.6 * cov_before


def _mixture_codes(n: int, seed: int) -> torch.Tensor:
    """Three well-separated Gaussian clusters in 8 dimensions (a non-Gaussian q(z))."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(3, (n,), generator=g)
    return centres[labels] + 0.4 * torch.randn(n, 8, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["kde", "dpgmm", "gmm20"])
def test_flexible_estimators_beat_the_gaussians_on_held_out_codes(name):
    margins = []
    for seed in range(3):
        codes = _mixture_codes(1500, seed)
        train, held_out = codes[:1000], codes[1000:]
        lls = {n: make_estimator(n).fit(train).log_prob(held_out) for n in ("normal", "mvg")}
        lls[name] = make_estimator(name).fit(train).log_prob(held_out)
        diff = lls[name] - lls["mvg"]  # per held-out code, nats
        margin, se = float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))
        assert margin > 5 * se, (name, seed, margin, se)  # far beyond the held-out noise
        assert float((lls[name] - lls["normal"]).mean()) > margin
        margins.append(margin)
    spread = float(torch.tensor(margins).std())
    assert min(margins) > 3 * spread, margins  # and beyond the seed-to-seed spread


def test_kde_samples_have_the_codes_mean_and_the_bandwidth_added_variance():
    codes = _mixture_codes(1000, 0)
    est = make_estimator("kde").fit(codes)
    assert est.bandwidth in [b * float(codes.std(0).mean()) for b in est.bandwidths]
    samples = est.sample(40000, generator=torch.Generator().manual_seed(1))
    # a Gaussian KDE's law: a uniformly drawn code plus N(0, h^2 I): mean = the codes' mean,
    # covariance = their (biased) covariance + h^2 I (Gaussian moment tolerance, 5 s.e.)
    cov = torch.cov(codes.T, correction=0) + est.bandwidth**2 * torch.eye(8, dtype=torch.float64)
    assert_moments_match(samples, codes.mean(0), cov)
    a = est.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, est.sample(5, generator=torch.Generator().manual_seed(3)))


def test_dirichlet_process_gmm_switches_off_unneeded_components():
    codes = _mixture_codes(1000, 0)
    est = make_estimator("dpgmm").fit(codes)
    assert est.n_components == 20 and est.dirichlet_process
    used = int((est.weights > 0.02).sum())
    assert 3 <= used <= 6, est.weights  # three clusters; a few weights may split a cluster
    assert float(est.weights.sum()) == pytest.approx(1.0, abs=1e-9)


def _curved_codes(n: int, seed: int) -> torch.Tensor:
    """A curved 2-d manifold in 8 dimensions (a non-Gaussian q(z)): (t, sin t, t^2 / 3)
    embedded by a fixed random map, plus noise 0.05."""
    g = torch.Generator().manual_seed(seed)
    t = 4 * torch.rand(n, generator=g) - 2
    s = torch.randn(n, generator=g)
    base = torch.stack([t, torch.sin(2 * t) + 0.3 * s, t ** 2 / 3, s], 1)
    embed = torch.randn(4, 8, generator=torch.Generator().manual_seed(99))
    return base @ embed + 0.05 * torch.randn(n, 8, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["realnvp", "maf"])
def test_flows_beat_the_gaussians_on_held_out_codes(kind):
    margins = []
    for seed in range(3):
        codes = _curved_codes(3000, seed)
        train, held_out = codes[:2000], codes[2000:]
        lls = {n: make_estimator(n).fit(train).log_prob(held_out) for n in ("normal", "mvg")}
        flow = make_estimator(kind, epochs=100, transforms=4, hidden=(64, 64), seed=seed)
        lls[kind] = flow.fit(train).log_prob(held_out)
        diff = lls[kind].double() - lls["mvg"].double()  # per held-out code, nats
        margin, se = float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))
        assert margin > 5 * se, (kind, seed, margin, se)
        assert float((lls[kind] - lls["normal"]).mean()) > margin
        margins.append(margin)
    spread = float(torch.tensor(margins).std())
    assert min(margins) > 3 * spread, margins


def test_a_flow_round_trips_integrates_to_one_and_samples_its_law():
    g = torch.Generator().manual_seed(0)
    t = 6 * torch.rand(3000, generator=g) - 3
    codes = torch.stack([t, torch.sin(t) + 0.1 * torch.randn(3000, generator=g)], 1)
    flow = make_estimator("realnvp", epochs=20, transforms=4, hidden=(32, 32)).fit(codes)
    assert flow.round_trip_error(codes) < 1e-4  # float32 round-off through 4 couplings
    # its density integrates to 1 over a grid covering the data (Riemann sum, step 0.04/0.04)
    xs, ys = torch.linspace(-7, 7, 351), torch.linspace(-4, 4, 201)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    mass = float(flow.log_prob(grid).double().exp().sum() * (xs[1] - xs[0]) * (ys[1] - ys[0]))
    assert mass == pytest.approx(1.0, abs=0.02)
    # samples follow the fitted law: their mean and covariance are those of the density's own
    # Monte-Carlo moments under importance reweighting... simpler and as strict: the data's
    # moments, which a fitted flow reproduces (5 s.e., Gaussian fourth moments)
    samples = flow.sample(20000, generator=torch.Generator().manual_seed(1))
    s, c = samples.double(), codes.double()
    assert ((s.mean(0) - c.mean(0)).abs() < 5 * (c.var(0) / 3000).sqrt() + 0.05).all()
    assert torch.allclose(torch.cov(s.T), torch.cov(c.T), rtol=0.1, atol=0.05)
    again = flow.sample(7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, flow.sample(7, generator=torch.Generator().manual_seed(3)))


def test_a_flow_trains_through_the_package_loop_and_resumes(tmp_path):
    codes = _curved_codes(500, 0)
    first = make_estimator("maf", epochs=3, transforms=2, hidden=(16,)).fit(
        codes, run_dir=tmp_path / "flow")
    assert (tmp_path / "flow" / "checkpoint.pt").is_file()
    assert len(first.history) == 3 and all("nll" in h for h in first.history)
    again = make_estimator("maf", epochs=3, transforms=2, hidden=(16,)).fit(
        codes, run_dir=tmp_path / "flow")  # finished: nothing trains, same weights
    z = codes[:10]
    assert torch.equal(first.log_prob(z), again.log_prob(z))


def test_the_second_stage_resamples_codes_every_epoch_and_samples_with_gamma_z():
    gen = torch.Generator().manual_seed(0)
    mu, _, _ = correlated_codes(256, gen)
    mu = mu.float()
    logvar = torch.full_like(mu, math.log(0.25))
    seen: list[torch.Tensor] = []
    est = SecondStageVAE(width=32, depth=1, epochs=2, batch_size=256, lr=1e-3, lr_milestones=())

    from balance.models.vae import GaussianVAE

    original = GaussianVAE.forward

    def spy(self, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(self, x, *args, **kwargs)

    GaussianVAE.forward = spy
    try:
        est.fit(mu, logvar=logvar)
        fixed = SecondStageVAE(est.config, resample=False)
        fixed.fit(mu, logvar=logvar)
    finally:
        GaussianVAE.forward = original
    epoch1, epoch2, fixed1, fixed2 = (x.flatten().sort().values for x in seen)  # any order
    assert not torch.equal(epoch1, epoch2)  # fresh z ~ q(z|x) each epoch
    assert torch.equal(fixed1, fixed2)  # the earlier behaviour: the same codes every epoch
    # standardised by the law of z (variance of mu + E[sigma^2]): unit variance per dimension
    assert torch.allclose(seen[0].var(0), torch.ones(3), atol=0.2)
    # gamma_z is learned (moved from its initial 1) and used when sampling
    assert est.gamma != pytest.approx(1.0, abs=1e-4)
    noisy = est.sample(4000, generator=torch.Generator().manual_seed(5))
    quiet = SecondStageVAE(est.config, sample_noise=False)
    quiet.model, quiet.shift, quiet.scale, quiet.dim = est.model, est.shift, est.scale, est.dim
    means = quiet.sample(4000, generator=torch.Generator().manual_seed(5))
    added = ((noisy - means) / est.scale).std(0)  # in standardised units: sqrt(gamma_z)
    assert torch.allclose(added, torch.full_like(added, math.sqrt(est.gamma)), rtol=0.1)
