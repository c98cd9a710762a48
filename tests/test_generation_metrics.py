"""balance.metrics.generation: KID against torchmetrics' kernel on the same subsets and
unbiased on one distribution; improved precision and recall in the expected directions; PRD
against a re-derivation by hand; the table scorer names each metric's feature space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.metrics.generation import f_beta, kid, kid_subsets, prd, prd_curve, precision_recall


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64) + shift


def test_kid_equals_torchmetrics_on_the_same_subsets():
    from torchmetrics.image.kid import poly_mmd

    real, fake = _gauss(300, 16, 0), _gauss(250, 16, 1, shift=0.3)
    ours = kid(real, fake, subsets=7, subset_size=100, generator=torch.Generator().manual_seed(5))
    draws = kid_subsets(300, 250, 7, 100, torch.Generator().manual_seed(5))
    theirs = torch.stack([poly_mmd(real[i], fake[j], degree=3, gamma=1 / 16, coef=1.0)
                          for i, j in draws])
    # float64 both: the same sums in another order
    assert ours["kid"] == pytest.approx(float(theirs.mean()), rel=1e-12, abs=1e-15)
    assert ours["kid_std"] == pytest.approx(float(theirs.std(unbiased=False)), rel=1e-9)


def test_kid_is_unbiased_on_two_samples_of_one_distribution_and_positive_otherwise():
    same, shifted = [], []
    for seed in range(40):  # independent pairs of sets: the spread of the estimator itself
        a, b = _gauss(200, 8, 2 * seed), _gauss(200, 8, 2 * seed + 1)
        same.append(kid(a, b, subsets=1, subset_size=200)["kid"])
        shifted.append(kid(a, b + 0.5, subsets=1, subset_size=200)["kid"])
    same_t, shifted_t = torch.tensor(same), torch.tensor(shifted)
    se = float(same_t.std() / math.sqrt(len(same)))
    assert abs(float(same_t.mean())) < 3 * se  # mean within its Monte-Carlo error of 0
    assert float(shifted_t.mean()) > 20 * float(shifted_t.std() / math.sqrt(len(shifted)))


def _two_modes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    return centres[torch.randint(2, (n,), generator=g)] + 0.5 * torch.randn(
        n, 2, generator=g, dtype=torch.float64)


def test_precision_and_recall_move_the_expected_way():
    real = _two_modes(1000, 0)
    both = precision_recall(real, real)
    assert both["precision"] == 1.0 and both["recall"] == 1.0  # identical sets
    fair = precision_recall(real, _two_modes(1000, 1))
    one_mode = _two_modes(2000, 2)
    one_mode = one_mode[one_mode[:, 0] > 0][:1000]  # a mode dropped
    dropped = precision_recall(real, one_mode)
    assert dropped["recall"] < fair["recall"] - 0.3  # recall falls (to about half)
    assert dropped["precision"] > fair["precision"] - 0.05  # precision holds
    blurred = precision_recall(real, _two_modes(1000, 3) + 2.0 * _gauss(1000, 2, 4))
    assert blurred["precision"] < fair["precision"] - 0.2  # samples off the real manifold


def test_prd_curve_matches_a_rederivation_by_hand():
    ref = np.array([0.6, 0.4, 0.0])
    ev = np.array([0.2, 0.3, 0.5])
    precision, recall = prd_curve(ref, ev, angles=5)
    slopes = np.tan(np.linspace(1e-10, math.pi / 2 - 1e-10, 5))
    # by hand: alpha(l) = min(0.6 l, 0.2) + min(0.4 l, 0.3) + min(0, 0.5),
    # beta(l) = alpha(l) / l
    expected_p = np.minimum(0.6 * slopes, 0.2) + np.minimum(0.4 * slopes, 0.3)
    np.testing.assert_allclose(precision, expected_p, rtol=1e-12)
    np.testing.assert_allclose(recall, np.clip(expected_p / slopes, 0, 1), rtol=1e-12)
    # at l = 1 (the middle angle) both are 1/2; F_beta of (1/2, 1/2) is 1/2 for every beta
    assert precision[2] == pytest.approx(0.5) and recall[2] == pytest.approx(0.5)
    assert f_beta(np.array([0.5]), np.array([0.5]), 8)[0] == pytest.approx(0.5)


def test_prd_of_a_set_with_itself_is_near_one_and_drops_with_a_missing_mode():
    real = _two_modes(1000, 0)
    same = prd(real, _two_modes(1000, 1), runs=3)
    assert same["f8"] > 0.9 and same["f1_8"] > 0.9
    one_mode = _two_modes(3000, 2)
    one_mode = one_mode[one_mode[:, 0] > 0][:1000]
    dropped = prd(real, one_mode, runs=3)
    assert dropped["f8"] < same["f8"] - 0.3  # recall-weighted F falls
    assert dropped["f1_8"] > 0.85  # precision-weighted F holds


def test_bad_features_are_refused():
    with pytest.raises(ValueError, match="same d"):
        kid(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


def test_the_table_scorer_names_the_feature_space_of_each_metric():
    from balance.evaluation.images import ImageScorer

    g = torch.Generator().manual_seed(0)
    train, reference = torch.rand(200, 1, 8, 8, generator=g), torch.rand(100, 1, 8, 8, generator=g)
    scorer = ImageScorer(train, reference, ndb_bins=5, kid_subsets=3, kid_subset_size=50,
                         prd_runs=2)
    scores = scorer.score(torch.rand(100, 1, 8, 8, generator=g))
    for key in ("kid_x", "kid_std_x", "precision_x", "recall_x", "prd_f8_x", "prd_f1_8_x"):
        assert isinstance(scores[key], float), key
    if not scorer.fid_available:  # no Inception weights: no Inception-space keys
        assert "kid" not in scores and "precision" not in scores


def test_with_an_inception_network_the_scorer_adds_its_feature_space(monkeypatch, tmp_path):
    from balance.evaluation.images import ImageScorer
    from balance.metrics import fid
    from tests.test_fid import FakeInception

    network = FakeInception(2048, tag="stand-in")
    monkeypatch.setattr(fid, "load_inception", lambda *a, **k: network)
    monkeypatch.setenv("BALANCE_FID_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    train, reference = torch.rand(200, 3, 16, 16, generator=g), torch.rand(60, 3, 16, 16,
                                                                            generator=g)
    fake = torch.rand(60, 3, 16, 16, generator=g)
    scorer = ImageScorer(train, reference, ndb_bins=5, kid_subsets=3, kid_subset_size=30,
                         prd_runs=0, seed=7)
    scorer.fid_available = True
    scores = scorer.score(fake)
    for key in ("fid", "kid", "kid_std", "precision", "recall", "kid_x", "recall_x"):
        assert isinstance(scores[key], float), key
    assert scores["fid_network"] == "stand-in"
    real_f = torch.from_numpy(fid.inception_features(reference, model=network))
    fake_f = torch.from_numpy(fid.inception_features(fake, model=network))
    expected = kid(real_f, fake_f, subsets=3, subset_size=30,
                   generator=torch.Generator().manual_seed(7))
    assert scores["kid"] == pytest.approx(expected["kid"], rel=1e-12)  # on Inception features
    assert scores["recall"] == precision_recall(real_f, fake_f)["recall"]
    assert list(tmp_path.glob("features-*.npy"))  # the reference features were cached
