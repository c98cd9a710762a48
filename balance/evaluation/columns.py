"""The columns of the RAE and DAE tables (Ghosh et al. 2020, Table 1; Daly et al. 2022):

- ``rec``: reconstructions of the test images;
- one column per ex-post density of ``samplers`` (``"normal"`` N(0, I), ``"mvg"``, ``"gmm"``,
  ``"vae2"``; :mod:`balance.density_estimation`) fitted to the training codes: decoded draws;
- ``interp``: decoded midpoints of random pairs of test codes;
- ``rec_train`` (with ``train_reconstructions``): reconstructions of as many training images
  (Daly et al.'s "Train R" column).

With ``latent_pairs`` the test codes are also scored two dimensions at a time
(:mod:`balance.metrics.latent_pairs`): the same seeded pairs for every model of one latent size.

Each column's images are scored by an :class:`balance.evaluation.images.ImageScorer`.
``second_stage_for_normal`` (Dai & Wipf's two-stage VAE) fits the densities on codes drawn
from q(z | x) instead of the means and samples the N(0, I) column through a second-stage VAE
(u ~ N(0, I) -> stage-2 decoder -> model decoder).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from balance.density_estimation import FlowConfig, SecondStageConfig
from balance.evaluation.codec import Codec
from balance.evaluation.feature_ae import FeatureAEConfig
from balance.evaluation.images import ImageScorer, to_uint8

__all__ = ["ColumnsConfig", "fit_estimator", "sample_columns"]

#: Images per column kept for the sample grids, and steps of the kept interpolation paths.
GRID_IMAGES = 8
INTERP_STEPS = 8


@dataclass(frozen=True)
class ColumnsConfig:
    """Images per column (``n_samples``; also the test images compared against), NDB bins,
    KID subsets (``kid_subsets`` of ``kid_subset_size``) and PRD clusterings (``prd_runs``; 0:
    no PRD), ex-post densities (``samplers``: ``normal``, ``mvg``, ``gmm``, ``dpgmm``, ``kde``,
    ``flow`` / ``realnvp`` / ``maf`` / ``nsf``), the GMM's settings, the flow (``flow``), the
    second stage, batch size, seed. ``pixel_generation``: KID / precision / recall / PRD in
    pixel space (off for large grids: the k-NN and k-means cost more than training small
    models); ``feature_ae``: score ``fd_ae`` in a feature autoencoder's code space
    (:mod:`balance.evaluation.feature_ae`); ``train_reconstructions``: the ``rec_train``
    column; ``latent_pairs`` random pairs of latent dimensions scored for normality and
    ``pair_points`` of their test codes kept for scatter plots."""

    n_samples: int = 1000
    ndb_bins: int = 20
    kid_subsets: int = 20
    kid_subset_size: int = 500
    prd_runs: int = 10
    samplers: tuple[str, ...] = ("normal", "gmm")
    gmm_components: int = 10
    gmm_max_iter: int = 2000
    gmm_tol: float = 1e-3
    second_stage: SecondStageConfig = SecondStageConfig()
    flow: FlowConfig = FlowConfig()
    batch_size: int = 500
    seed: int = 1234
    pixel_generation: bool = True
    feature_ae: FeatureAEConfig | None = None
    train_reconstructions: bool = False
    latent_pairs: int = 0
    pair_points: int = 500


def fit_estimator(name: str, codes: Tensor, cfg: ColumnsConfig, *, run_dir: Path | None = None,
                  device: str = "cpu", logvar: Tensor | None = None):
    """Ex-post density ``name`` fitted on ``codes [N, k]`` with the settings of ``cfg`` (the
    second-stage VAE and the flows train in ``run_dir``, resumable, on ``device``; the second
    stage resamples from (``codes``, ``logvar``) when ``logvar`` is given)."""
    from balance.density_estimation import FLOWS, make_estimator

    if name == "gmm":
        return make_estimator("gmm", n_components=cfg.gmm_components, max_iter=cfg.gmm_max_iter,
                              tol=cfg.gmm_tol, seed=cfg.seed).fit(codes)
    if name == "dpgmm":
        return make_estimator("dpgmm", max_iter=cfg.gmm_max_iter, tol=cfg.gmm_tol,
                              seed=cfg.seed).fit(codes)
    if name == "vae2":
        est = make_estimator("vae2", config=replace(cfg.second_stage, device=device,
                                                    seed=cfg.seed))
        return est.fit(codes, logvar=logvar, run_dir=run_dir)
    if name in FLOWS or name == "flow":
        est = make_estimator("flow", config=replace(cfg.flow, device=device, seed=cfg.seed))
        return est.fit(codes, run_dir=run_dir)
    return make_estimator(name).fit(codes)


def sample_columns(model: nn.Module, train_x: Tensor, test_x: Tensor, scorer: ImageScorer,
                   cfg: ColumnsConfig, *, second_stage_for_normal: bool = False,
                   run_dir: Path | None = None,
                   device: str = "cpu") -> tuple[dict, dict[str, np.ndarray]]:
    """Every column's images and scores for a trained ``model``; returns (metrics, a few
    uint8 images per column for the grids). ``metrics``: ``rec_error`` (test squared error
    per image), ``mmd_q_prior`` (MMD^2 of the training codes to N(0, I)), ``code_std`` and
    ``columns`` (name -> scores); plus ``stage2_gamma`` with a second stage (trained in
    ``run_dir / "vae2"``); with ``latent_pairs``, ``pairs`` (the dimension pairs),
    ``pair_mmd`` (one score per pair) and ``pair_mmd_mean``, and the grids get ``pair_points``
    (float32 [pairs, points, 2])."""
    from balance.density_estimation import interpolate, random_pairs
    from balance.metrics.mmd import mmd_to_standard_normal

    codec = Codec(model, cfg.batch_size)
    n = cfg.n_samples
    test = test_x[:n]
    gen = torch.Generator().manual_seed(cfg.seed)
    images: dict[str, Tensor] = {}
    recon = codec.decode(codec.encode(test))
    images["rec"] = recon
    rec_error = float((recon - test).pow(2).flatten(1).sum(1).mean())
    if cfg.train_reconstructions:
        images["rec_train"] = codec.decode(codec.encode(train_x[:n]))
    if second_stage_for_normal:  # Dai & Wipf fit the second stage on z ~ q(z|x)
        train_codes = codec.encode_sample(train_x, gen)
    else:
        train_codes = codec.encode(train_x)
    folder = None if run_dir is None else Path(run_dir)
    fitted = {name: fit_estimator(name, train_codes, cfg, device=device,
                                  run_dir=None if folder is None else folder / name)
              for name in cfg.samplers}
    if second_stage_for_normal:  # resampled every step from the stored posteriors
        mu, logvar = codec.posterior(train_x)
        fitted["normal"] = fit_estimator("vae2", mu, cfg, device=device, logvar=logvar,
                                         run_dir=None if folder is None else folder / "vae2")
    for name, est in fitted.items():
        z = est.sample(n, generator=torch.Generator().manual_seed(cfg.seed + 1),
                       dtype=torch.float32)
        images[name] = codec.decode(z)
    test_codes = codec.encode(test)
    z_a, z_b = random_pairs(test_codes, n, generator=torch.Generator().manual_seed(cfg.seed + 2))
    path = interpolate(z_a, z_b, INTERP_STEPS)
    images["interp"] = codec.decode(0.5 * (z_a + z_b))
    grid_path = codec.decode(path[:2].reshape(-1, path.shape[-1]))  # 2 full interpolations
    metrics = {
        "rec_error": rec_error,
        "mmd_q_prior": mmd_to_standard_normal(
            train_codes[: max(n, 2)].double(), generator=torch.Generator().manual_seed(cfg.seed)
        ),
        "code_std": float(train_codes.std(0).mean()),
        "columns": {name: scorer.score(images[name]) for name in images},
    }
    if second_stage_for_normal:
        metrics["stage2_gamma"] = fitted["normal"].gamma
    grids = {name: to_uint8(images[name][:GRID_IMAGES]) for name in images}
    grids["test"] = to_uint8(test[:GRID_IMAGES])
    grids["interp_path"] = to_uint8(grid_path)
    if cfg.latent_pairs and test_codes.shape[1] >= 2:
        from balance.metrics.latent_pairs import dimension_pairs, pair_normality

        pairs = dimension_pairs(test_codes.shape[1], cfg.latent_pairs, cfg.seed)
        scores = pair_normality(test_codes, pairs, seed=cfg.seed)
        metrics.update(pairs=pairs, pair_mmd=scores, pair_mmd_mean=float(np.mean(scores)))
        points = test_codes[: cfg.pair_points].float().cpu()
        grids["pair_points"] = np.stack([points[:, [i, j]].numpy() for i, j in pairs])
    return metrics, grids
