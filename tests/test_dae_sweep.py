"""The DAE sweep (E5, Daly et al. 2022): the paper presets' grid against the paper's cells,
Daly's architecture and schedule, the latent-pair normality score, the feature-AE distance,
the claim checks, and a smoke run through the figures."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from balance.evaluation.images import ImageScorer
from balance.metrics.latent_pairs import dimension_pairs, pair_normality, whiten
from balance.models.conv import conv_pair
from balance.train import TrainConfig, lr_factor
from experiments import dae_sweep as ds


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------- the paper's grid


def _paper_cells(table2_latent: int) -> set[str]:
    """The cells the paper's figures and tables need, written out from its text (EXPERIMENTS.md
    E5 and the issue): Fig. 1 at every filter base, Figs. 2 and 5 (depths), Figs. 3-4 (frozen,
    noise, BN / SN / LN at 128 filters), plus two more seeds at Table 2's latent size."""
    latents = (16, 32, 48, 64, 80, 96, 112, 128, 144, 152, 160, 176, 192, 256, 384, 512, 768)
    cells = set()
    for k in latents:
        for f in (32, 64, 128, 256):
            cells |= {f"dae_f{f}_d1_k{k}", f"vae_f{f}_d1_k{k}"}
        cells |= {f"dae_f64_d2_k{k}", f"dae_f64_d3_k{k}", f"dae_f128_d2_k{k}",
                  f"dae_f128_d3-3-2-1_k{k}"}
        cells |= {f"dae_f128_d1_k{k}_{norm}" for norm in ("bn", "sn", "ln")}
        for d in (1, 2):
            cells |= {f"dae_f128_d{d}_k{k}_noise{s}" for s in ("0.1", "0.5", "1")}
            cells |= {f"dae_f128_d{d}_k{k}_frozen", f"dae_f128_d{d}_k{k}"}
    for f in (32, 64, 128, 256):
        for seed in (1, 2):
            cells |= {f"dae_f{f}_d1_k{table2_latent}_s{seed}",
                      f"vae_f{f}_d1_k{table2_latent}_s{seed}"}
    return cells


@pytest.mark.parametrize("name, dataset, latent", [("paper", "cifar10", 128),
                                                   ("paper_celeba", "celeba", 64)])
def test_paper_presets_build_the_papers_grid(name, dataset, latent):
    config = ds.preset(name)
    assert config.dataset == dataset
    names = [r.name for r in config.rows]
    assert len(names) == len(set(names))
    assert set(names) == _paper_cells(latent)
    # Every cell of the paper's Tables 2 and 3 is a cell of the grid.
    table2 = {(f, m) for (f, m), _ in ds.PAPER_TABLE2.items() if m not in ds.CITED}
    for f, model in table2:
        variant = "_bn" if model == "DAE (BN)" else ""
        kind = "vae" if model == "VAE" else "dae"
        assert f"{kind}_f{f}_d1_k{latent}{variant}" in names
    for k, f, model, *_ in ds.PAPER_TABLE3[dataset]:
        assert f"{model.lower()}_f{f}_d1_k{k}" in names
    assert "dae_f128_d3-3-2-1_k96" in names  # the paper's best DAE
    # Daly et al.'s set-up: their layout, BCE, VAE "BCE + 0.01 KL", the schedule.
    assert config.net.layout == "daly"
    assert config.net.kernel_size == (4 if dataset == "cifar10" else 5)
    rows = {r.name: r for r in config.rows}
    assert all(r.reconstruction == "bce" for r in config.rows)
    pixels = {"cifar10": 3 * 32 * 32, "celeba": 3 * 64 * 64}[dataset]
    assert rows[f"vae_f32_d1_k{latent}"].beta == pytest.approx(0.01 * pixels)
    t = config.train
    assert (t.epochs, t.batch_size, t.lr, t.warmup_epochs, t.warmup_lr, t.lr_milestones) == (
        101, 128, 1e-3, 1, 1e-4, (33, 66))
    assert config.eval.n_samples == 10_000 and config.eval.gmm_components == 10


def test_quick_presets_are_reduced_grids():
    quick, celeba = ds.preset("quick"), ds.preset("quick_celeba")
    assert quick.dataset == "mnist" and celeba.dataset == "celeba"
    assert len(quick.rows) < 120 and len(celeba.rows) < 60
    # one beta convention for every preset: 0.01 per pixel of the image
    assert all(r.beta == pytest.approx(0.01 * 784) for r in quick.rows if r.kind == "vae")
    with pytest.raises(ValueError, match="comparison_latent"):
        ds.GridConfig(latents=(8,), comparison_latent=16)
    with pytest.raises(ValueError, match="unknown preset"):
        ds.preset("nope")


def test_depth_curves_take_their_own_latents_and_overrides_read_back_as_tuples():
    from balance.experiment import apply_overrides

    config = apply_overrides(ds.preset("smoke"), [
        "grid.depths=[[2, [3, 3, 2, 1]]]", "grid.depth_latents=[4]", "grid.frozen_depths=[2]"])
    assert config.grid.depths == ((2, (3, 3, 2, 1)),) and config.grid.frozen_depths == (2,)
    names = {r.name for r in config.rows}  # hashable: the rows were built
    assert "dae_f2_d3-3-2-1_k4" in names and "dae_f2_d3-3-2-1_k2" not in names
    assert "dae_f2_d2_k4_frozen" in names and "dae_f2_d2_k4" in names  # its plain partner
    quick = ds.preset("quick").grid
    assert set(quick.depth_latents) <= set(quick.latents)


def test_depth_checks_compare_the_latent_sizes_both_curves_have():
    grid = ds.GridConfig(filters=(8,), latents=(4, 8, 16), depths=((8, 2),),
                         depth_latents=(4, 8), variant_filters=8, latent_norms=(),
                         decoder_noise=(), noise_depths=(), frozen_depths=(),
                         comparison_latent=8, large_latent=16)
    results = _results({("dae", "", 8, "1"): [9, 6, 1], ("vae", "", 8, "1"): [9, 9, 9]}, 0.5)
    deep = _results({("dae", "", 8, "2"): [8, 6.5]}, 0.5, latents=(4, 8))
    results["curves"] += deep["curves"]
    out = ds.checks(results, grid)
    # on 4 and 8 only: depth 1 spans 9 -> 6 (3), depth 2 spans 8 -> 6.5 (1.5); both best at 8,
    # so the depth-1 optimum at 16, which the deeper curve has no cell for, does not count
    moved = out["depth_moves_optimum_lower[gmm,f8,d2]"]
    assert moved["latents"] == [4, 8] and moved["verdict"] == "not shown"
    flat = out["depth_flattens_curve[gmm,f8,d2]"]
    assert flat["difference"] == pytest.approx(1.5) and flat["verdict"] == "shown"


# ------------------------------------------------------------------ architecture, schedule


def test_daly_layout_puts_the_strided_convolution_last_and_has_two_decoder_layers():
    enc, dec = conv_pair(in_channels=3, resolution=32, latent_dim=8, base_filters=4,
                         depth=(3, 3, 2, 1), layout="daly")
    convs = [m for m in enc.body if isinstance(m, nn.Conv2d)]
    strides = [m.stride[0] for m in convs]
    assert strides == [1, 1, 2, 1, 1, 2, 1, 2, 2]  # each stage: repeats, then the strided one
    deconvs = [m for m in dec.body if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == [16, 8]  # 4x and 2x the base filters
    assert dec(enc(torch.rand(2, 3, 32, 32))).shape == (2, 3, 32, 32)
    mirror_enc, _ = conv_pair(in_channels=3, resolution=32, latent_dim=8, base_filters=4,
                              depth=2)
    assert [m.stride[0] for m in mirror_enc.body if isinstance(m, nn.Conv2d)][:2] == [2, 1]
    with pytest.raises(ValueError, match="layout"):
        conv_pair(layout="nope")


def test_warm_up_then_step_schedule():
    cfg = TrainConfig(epochs=101, lr=1e-3, warmup_epochs=1, warmup_lr=1e-4,
                      lr_milestones=(33, 66))
    lrs = {e: cfg.lr * lr_factor(cfg, e) for e in (0, 1, 33, 34, 66, 67, 100)}
    assert lrs == pytest.approx({0: 1e-4, 1: 1e-3, 33: 1e-3, 34: 1e-4, 66: 1e-4, 67: 1e-5,
                                 100: 1e-5})
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup_epochs=-1)


# ------------------------------------------------------------------------- the scores


def test_pair_normality_separates_gaussian_from_non_gaussian_codes():
    gen = torch.Generator().manual_seed(0)
    n = 1000
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.0, 0.0, 3.0]])
    gaussian = torch.randn(n, 3, generator=gen, dtype=torch.float64) @ mixing.double()
    angle = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
    ring = torch.stack([angle.cos(), angle.sin(), torch.randn(n, generator=gen,
                                                              dtype=torch.float64)], 1)
    pairs = dimension_pairs(3, 3, seed=0)
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 2)]
    assert dimension_pairs(64, 6, seed=3) == dimension_pairs(64, 6, seed=3)
    white = whiten(gaussian)
    assert torch.allclose(white.T @ white / (n - 1), torch.eye(3, dtype=torch.float64),
                          atol=1e-10)  # float64 identity
    g = pair_normality(gaussian, pairs)
    r = pair_normality(ring, [(0, 1)])
    # Gaussian codes, whatever their covariance: within Monte Carlo noise of 0 (the unbiased
    # MMD^2 at n = 1000 has a spread of about 1e-3); a ring is far from it.
    assert max(abs(v) for v in g) < 5e-3
    assert r[0] > 10 * max(abs(v) for v in g) and r[0] > 0.02


def test_feature_space_distance_is_zero_on_the_reference_and_grows_with_a_shift():
    reference = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    class Space:
        name = "ae"

        def __call__(self, images):
            return images.flatten(1).double().numpy()

    scorer = ImageScorer(reference, reference, ndb_bins=4, pixel_generation=False,
                         features=Space())
    same = scorer.score(reference)
    shifted = scorer.score((reference + 0.3).clamp(0, 1))
    assert same["fd_ae"] == pytest.approx(0.0, abs=1e-6)  # float64 matrix square root
    assert shifted["fd_ae"] > 1.0
    assert "kid_x" not in same  # pixel-space generation metrics are off


# ------------------------------------------------------------------------- the checks


def _results(gmm: dict[tuple, list[float]], spread: float, latents=(4, 8, 16)) -> dict:
    """Curves over ``latents`` with every column equal to the given GMM scores."""
    cs = []
    for (model, variant, f, depth), ys in gmm.items():
        cs.append({"model": model, "variant": variant, "filters": f, "depth": depth,
                   "latents": list(latents), "scores": {c: list(ys) for c in ds.COLUMNS},
                   "pair_mmd_mean": [0.1] * len(latents)})
    return {"curves": cs, "score": "fd_ae",
            "seed_spread": {"pooled": dict.fromkeys((*ds.COLUMNS, "pair_mmd_mean"), spread)}}


def test_checks_report_shown_within_spread_and_contradicted():
    grid = ds.GridConfig(filters=(4, 8), latents=(4, 8, 16), depths=((8, 2),),
                         variant_filters=8, variant_latents=(4, 8, 16), latent_norms=(),
                         decoder_noise=(1.0,), noise_depths=(1,), frozen_depths=(1,),
                         comparison_latent=8, large_latent=8)
    results = _results({
        ("dae", "", 4, "1"): [10, 9, 10], ("vae", "", 4, "1"): [10, 9.5, 10],
        ("dae", "", 8, "1"): [7, 5, 5.8], ("vae", "", 8, "1"): [9, 8, 30],
        ("dae", "", 8, "2"): [5.5, 5.4, 5.5], ("dae", "frozen", 8, "1"): [7.2, 5.1, 5.9],
        ("dae", "noise1", 8, "1"): [8.5, 7.5, 9]}, spread=0.5)
    out = ds.checks(results, grid)
    assert out["dae_beats_vae[gmm,f8]"]["verdict"] == "shown"  # 8 - 5 = 3 > 2 x 0.5
    assert out["dae_beats_vae[gmm,f4]"]["verdict"] == "within seed spread"  # 0.5 < 1
    assert out["dae_improves_with_filters[gmm,f4->f8]"]["verdict"] == "shown"
    assert out["depth_flattens_curve[gmm,f8,d2]"]["verdict"] == "shown"  # range 2 -> 0.1
    assert out["depth_moves_optimum_lower[gmm,f8,d2]"]["verdict"] == "not shown"  # 8 -> 8
    assert out["frozen_changes_little[gmm,d1]"]["verdict"] == "shown"
    assert out["noise_degrades_dae[gmm,d1]"]["verdict"] == "shown"
    assert out["noise_moves_dae_towards_vae[gmm,d1]"]["verdict"] == "shown"
    assert out["vae_degrades_above_8[gmm,f8]"]["verdict"] == "shown"  # 30 vs best 8
    assert out["dae_degrades_above_8[gmm,f8]"]["verdict"] == "within seed spread"  # 0.8
    assert out["summary"]["dae_beats_vae"].startswith("2/4 shown")
    worse = _results({("dae", "", 4, "1"): [5, 5, 5], ("vae", "", 4, "1"): [1, 1, 1]}, 0.5)
    grid4 = replace(grid, filters=(4,), variant_filters=4, depths=())
    assert ds.checks(worse, grid4)["dae_beats_vae[gmm,f4]"]["verdict"] == "contradicted"
    no_spread = dict(worse, seed_spread={"pooled": dict.fromkeys(worse["seed_spread"]["pooled"])})
    assert ds.checks(no_spread, grid4)["dae_beats_vae[gmm,f4]"]["verdict"] == "not tested"


# --------------------------------------------------------------------- a smoke run


def test_dae_sweep_smoke_resume_and_figures(shared_data_root, tmp_path):
    from paper_figures import dae_sweep as fig

    config = replace(ds.preset("smoke"), data_root=str(shared_data_root))
    results = ds.main(config, tmp_path / "dae", progress=False)
    assert set(results["models"]) == {r.name for r in config.rows}
    for m in results["models"].values():
        for col in ds.COLUMNS:
            assert math.isfinite(m["columns"][col]["fd_ae"])
            assert 0.0 <= m["columns"][col]["ndb_over_k"] <= 1.0
        k = m["spec"]["latent_dim"]
        assert len(m["pair_mmd"]) == min(6, k * (k - 1) // 2)
        assert math.isfinite(m["pair_mmd_mean"])
    assert results["score"] == "fd_ae"
    spread = results["seed_spread"]
    assert spread["pooled"]["gmm"] is not None  # seed 1 repeats the comparison cells
    assert spread["dae_f2"]["gmm"] is not None and spread["vae_f4"]["rec"] is not None
    assert results["checks"]["summary"]
    assert (tmp_path / "dae" / "feature_ae" / "checkpoint.pt").is_file()
    with np.load(tmp_path / "dae" / "pairs.npz") as f:
        assert f"{results['scatter_cells'][0]}/points" in f.files
    again = ds.main(config, tmp_path / "dae", progress=False)  # resumes: nothing retrains
    assert {k: m["wall_time_s"] for k, m in again["models"].items()} == {
        k: m["wall_time_s"] for k, m in results["models"].items()}
    paths = fig.make(tmp_path / "dae", tmp_path / "fig")
    names = {p.name for p in paths}
    assert {"dae_sweep_fig1.png", "dae_sweep_fig3.png", "dae_sweep_fig4.png",
            "dae_sweep_scatter.png", "dae_sweep_table2.md", "dae_sweep_checks.md"} <= names
    assert "GMM-DAE (cited)" in (tmp_path / "fig" / "dae_sweep_paper_table2.md").read_text()


def test_checks_use_the_spread_of_the_cells_they_compare():
    grid = ds.GridConfig(filters=(4,), latents=(4, 8, 16), variant_filters=4, latent_norms=(),
                         decoder_noise=(), noise_depths=(), frozen_depths=(),
                         comparison_latent=8, large_latent=16)
    results = _results({("dae", "", 4, "1"): [5, 5, 5], ("vae", "", 4, "1"): [6, 6, 6]}, 1.0)
    # pooled spread 1 (margin 2): a gap of 1 is within it
    assert ds.checks(results, grid)["dae_beats_vae[gmm,f4]"]["verdict"] == "within seed spread"
    narrow = dict.fromkeys((*ds.COLUMNS, "pair_mmd_mean"), 0.1)
    results["seed_spread"].update(dae_f4=narrow, vae_f4=narrow)  # the cells' own spread
    out = ds.checks(results, grid)["dae_beats_vae[gmm,f4]"]
    assert out["verdict"] == "shown" and out["margin"] == pytest.approx(0.2)
