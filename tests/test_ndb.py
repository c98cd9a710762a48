"""NDB on real MNIST: calibrated under the null, sensitive to a missing mode; the z-test and JS
against independent formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, chi2_contingency

from balance.metrics.ndb import NDBBins, js_divergence, ndb, two_proportion_z_test

ALPHA = 0.05
N_FIT = 10_000  # training samples for the bins; full 784-d, K = 100: ~2-3 s of k-means


@pytest.fixture(scope="module")
def mnist(shared_data_root):
    from balance.data.mnist import load_mnist

    images, labels = load_mnist("train", root=shared_data_root, download=False)
    # MNIST's training file is not in random order (writer groups come in blocks), so chunks
    # of it are not samples of one distribution: shuffle once, seeded, before splitting.
    perm = np.random.default_rng(0).permutation(len(images))
    x = images.reshape(len(images), -1).numpy()[perm]
    return x, labels.numpy()[perm]


@pytest.fixture(scope="module")
def mnist_bins(mnist):
    x, _ = mnist
    return NDBBins.fit(x[:N_FIT], k=100, seed=0)


def held_out_chunks(x, y, size=10_000):
    return [(x[s:s + size], y[s:s + size]) for s in range(N_FIT, len(x), size)]


def test_held_out_training_samples_give_the_false_alarm_rate(mnist, mnist_bins):
    """Five disjoint held-out chunks of 10k: each NDB within the binomial(100, 0.05) 0.999
    quantile (13 bins), and the total over 500 tests within the two-sided 0.999 binomial interval
    [11, 42]; a test that never (or too often) rejects fails the lower (upper) bound."""
    x, y = mnist
    results = [mnist_bins.evaluate(xq) for xq, _ in held_out_chunks(x, y)]
    assert len(results) == 5
    per_chunk_max = binom.ppf(0.999, 100, ALPHA)
    for r in results:
        assert r.ndb <= per_chunk_max, [q.ndb for q in results]
        assert r.ndb_over_k == r.ndb / 100
        assert r.js < 0.01  # nats; the missing-digit case below is > 0.015
    total = sum(r.ndb for r in results)
    lo, hi = binom.ppf(0.0005, 500, ALPHA), binom.ppf(0.9995, 500, ALPHA)
    assert lo <= total <= hi, (total, [r.ndb for r in results])


@pytest.mark.parametrize("digit", [0, 4])
def test_a_missing_digit_gives_many_different_bins(mnist, mnist_bins, digit):
    x, y = mnist
    xq, yq = held_out_chunks(x, y)[0]
    null = mnist_bins.evaluate(xq)
    result = mnist_bins.evaluate(xq[yq != digit])
    # Bins whose training members are >= 90% this digit must all be flagged, as deficits.
    train_labels = mnist_bins.assign(x[:N_FIT])
    pure = [j for j in range(100) if (train_labels == j).any()
            and (y[:N_FIT][train_labels == j] == digit).mean() >= 0.9]
    assert len(pure) >= 3
    assert result.different[pure].all()
    assert (result.z[pure] > 0).all() and (result.sample_proportions[pure] < 0.01).all()
    assert result.ndb > binom.ppf(0.999, 100, ALPHA)  # beyond any plausible false-alarm count
    assert result.ndb >= null.ndb + len(pure)
    assert result.js > 3 * null.js


def test_an_over_represented_digit_is_flagged_too(mnist, mnist_bins):
    """Two-tailed: surpluses count as well as deficits (a one-tailed port would miss these)."""
    x, y = mnist
    (xq, _), (x_extra, y_extra) = held_out_chunks(x, y)[:2]
    query = np.concatenate([xq, x_extra[y_extra == 0]])  # digit 0 at about twice its share
    result = mnist_bins.evaluate(query)
    train_labels = mnist_bins.assign(x[:N_FIT])
    pure = [j for j in range(100) if (train_labels == j).any()
            and (y[:N_FIT][train_labels == j] == 0).mean() >= 0.9]
    assert result.different[pure].all() and (result.z[pure] < 0).all()


def test_z_test_matches_the_chi_square_test_of_the_2x2_table():
    """The pooled two-proportion z-test is the 2x2 chi-square test without continuity
    correction (z^2 = chi^2, same two-tailed p-value): an independent formula."""
    rng = np.random.default_rng(0)
    n1, n2 = 5000, 3000
    c1 = rng.integers(1, 200, size=20)
    c2 = rng.integers(1, 200, size=20)
    z, p = two_proportion_z_test(c1, n1, c2, n2)
    for j in range(20):
        table = np.array([[c1[j], n1 - c1[j]], [c2[j], n2 - c2[j]]])
        chi2, p_chi, _, _ = chi2_contingency(table, correction=False)
        assert z[j] ** 2 == pytest.approx(chi2, rel=1e-10)  # float64 identity
        assert p[j] == pytest.approx(p_chi, rel=1e-8)
    # hand-computed case: p1 = 0.1, p2 = 0.05, pooled 0.075
    z1, p1 = two_proportion_z_test(np.array([100]), 1000, np.array([50]), 1000)
    want = 0.05 / math.sqrt(0.075 * 0.925 * 0.002)
    assert z1[0] == pytest.approx(want, rel=1e-12)
    assert p1[0] == pytest.approx(math.erfc(want / math.sqrt(2)), rel=1e-9)
    z0, p0 = two_proportion_z_test(np.array([0]), 10, np.array([0]), 20)  # empty on both sides
    assert z0[0] == 0 and p0[0] == 1


def test_js_divergence_bounds():
    p = np.array([0.2, 0.3, 0.5])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2), rel=1e-14)
    q = np.array([0.5, 0.3, 0.2])
    m = (p + q) / 2
    want = 0.5 * sum(a * math.log(a / b) for a, b in zip(p, m, strict=True)) + 0.5 * sum(
        a * math.log(a / b) for a, b in zip(q, m, strict=True))
    assert js_divergence(p, q) == pytest.approx(want, rel=1e-12)
    assert js_divergence(10 * p, 3 * q) == pytest.approx(want, rel=1e-12)  # counts are fine


@pytest.mark.parametrize("k", [100, 200, 300])
def test_supported_k_on_a_gaussian_mixture(k):
    """K = 100, 200, 300 on 6000 samples of a 20-component mixture in 10-d: null samples stay
    under the binomial(K, 0.05) 0.999 quantile; dropping a quarter of the components does not."""
    rng = np.random.default_rng(k)
    means = 4 * rng.standard_normal((20, 10))

    def sample(n, comps):
        idx = rng.choice(comps, size=n)
        return means[idx] + rng.standard_normal((n, 10)), idx

    train, _ = sample(6000, np.arange(20))
    bins = NDBBins.fit(train, k=k, seed=1)
    assert bins.k == k and bins.n_train == 6000 and bins.train_proportions.sum() == pytest.approx(1)
    null = bins.evaluate(sample(6000, np.arange(20))[0])
    assert null.ndb <= binom.ppf(0.999, k, ALPHA)
    missing = bins.evaluate(sample(6000, np.arange(15))[0])
    assert missing.ndb > binom.ppf(0.999, k, ALPHA)
    assert missing.js > null.js


def test_one_shot_function_equals_reusable_bins_and_is_seeded():
    rng = np.random.default_rng(5)
    train = rng.standard_normal((1500, 6)).astype(np.float32)
    q1 = rng.standard_normal((800, 6))
    q2 = rng.standard_normal((700, 6)) + 0.3
    bins = NDBBins.fit(train, k=100, seed=3)
    for q in (q1, q2):  # the same bins score several query sets
        a, b = ndb(train, q, 100, seed=3), bins.evaluate(q)
        assert a.ndb == b.ndb and np.array_equal(a.different, b.different) and a.js == b.js
    other = NDBBins.fit(train, k=100, seed=4)
    assert not np.allclose(np.sort(other.centers, axis=0), np.sort(bins.centers, axis=0))


def test_input_checks():
    bins = NDBBins.fit(np.random.default_rng(0).standard_normal((300, 4)), k=100, seed=0)
    with pytest.raises(ValueError, match="dimensions"):
        bins.evaluate(np.zeros((10, 5)))
    with pytest.raises(ValueError, match="k <="):
        NDBBins.fit(np.zeros((50, 4)), k=100, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        bins.evaluate(np.full((3, 4), np.nan))
