"""E5: deterministic autoencoders without the variation (Daly et al. 2022, Figs. 1-5, Tables
2-3, Figs. A.1-A.2; EXPERIMENTS.md E5, THEORY.md section 4).

Plain autoencoders (DAE: binary cross-entropy only) and VAEs (BCE + beta KL) of the conv family
of ``balance.models.conv`` over latent sizes, for each filter base and depth, and variants of
the DAE at one filter base: batch / spectral / layer normalisation of the latent layer, Gaussian
noise at the decoder input, the latent layer frozen at its initialisation. Every model is
sampled by decoding draws from densities fitted ex post on its training codes
(``balance.density_estimation``): N(0, I), a full-covariance Gaussian (MVG) and a 10-component
GMM; its train and test reconstructions are scored too.

Claims, each a check against the seed spread (:func:`checks`): DAEs beat VAEs under MVG and
GMM sampling at the comparison latent size; DAE generation improves with the filter base;
depth makes the score less sensitive to the latent size and moves its optimum lower; freezing
the latent layer changes little; latent BN rescues N(0, I) sampling while BN / SN / LN change
MVG / GMM little; decoder-input noise degrades the DAE towards the VAE; VAEs become unstable
with many latents while DAEs do not; larger encoders give more Gaussian pairs of latent codes.

The set-up (Daly et al., section 3): the ``daly`` layout of ``balance.models.conv`` (strided
convolution last; a decoder of two layers of 4x and 2x the base filters); BN; Adam, one warm-up
epoch at 1e-4, then 1e-3 / 1e-4 / 1e-5 at epochs 33 / 66 of 100; batch 128; the VAE's loss "BCE +
0.01 KL". The paper does not say how its BCE is reduced; we read it as a per-pixel mean (Keras'
default), i.e. beta = 0.01 D on our per-image sum (``vae_kl_scale = "pixels"``; 30.7 for
CIFAR-10): the paper's VAE scores the same under N(0, I) and MVG sampling (Table 2: 100.1 /
101.0), which needs an aggregate posterior close to N(0, I), and a KL weight of 0.01 on a summed
BCE would not give that. ``--set grid.vae_kl_scale=none`` takes beta = 0.01 as it stands; the
earlier set-up (``--set net.layout=mirror``) stays available.

Scores: FID where the Inception weights exist; else the same curves in weight-free scores,
each labelled with its space: ``fd_ae`` (Frechet distance in the codes of a feature autoencoder
trained once on the training images, :mod:`balance.evaluation.feature_ae`), pixel MMD^2 and
NDB/K.

Usage::

    python experiments/dae_sweep.py --preset quick          # MNIST, reduced grid, ~20 min CPU
    python experiments/dae_sweep.py --preset quick_celeba   # CelebA in ../shared, ~30 min CPU
    python experiments/dae_sweep.py --preset paper          # CIFAR-10, the paper's grid (GPU)
    python experiments/dae_sweep.py --preset paper_celeba   # CelebA-64, the paper's grid (GPU)
    python experiments/dae_sweep.py --preset paper --engine ray --gpus-per-run 0.25
    python -m paper_figures.dae_sweep runs/dae_sweep/quick --out out/

Run folder (default ``runs/dae_sweep/<preset>``): ``feature_ae/``, one sub-folder per cell
(training run, results.json, samples.npz, pairs.npz), and results.json, table.md, pairs.npz for
the sweep. Cells run through the engine (``--engine``); re-running the same command resumes cell
by cell.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python experiments/dae_sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from balance import reporting
from balance.data.splits import IMAGE_SHAPES
from balance.evaluation.columns import ColumnsConfig
from balance.evaluation.feature_ae import FeatureAEConfig
from balance.evaluation.table import (
    PAIRS_FILE,
    TableConfig,
    TableRow,
    combine_samples,
    run_rows,
)
from balance.experiment import run_script
from balance.models.registry import ConvSpec
from balance.reporting import is_missing, markdown_table
from balance.runs import RESULTS_FILE, write_json
from balance.train import TrainConfig

NAME = "dae_sweep"
PRESETS = ("quick", "quick_celeba", "paper", "paper_celeba", "smoke")
DATA_ROOT_FIELD = "data_root"
SAMPLERS = ("normal", "mvg", "gmm")
#: Table 2's columns: train and test reconstructions, then the samplers.
COLUMNS = ("rec_train", "rec", *SAMPLERS)
COLUMN_LABELS = {"rec_train": "Train R", "rec": "Test R", "normal": "N(0,I)", "mvg": "MVG",
                 "gmm": "GMM"}

#: The latent sizes of the paper's curves (every size of Tables 2-3, dense near the optimum).
PAPER_LATENTS = (16, 32, 48, 64, 80, 96, 112, 128, 144, 152, 160, 176, 192, 256, 384, 512, 768)
PAPER_FILTERS = (32, 64, 128, 256)

#: Daly et al. (2022), Table 2 (FID): (filters, model) -> CIFAR-10 at 128 latents and CelebA at
#: 64, each (Train R, Test R, N(0, I), MVG, GMM); None: not given. WAE, RAE, EAE and GMM-DAE
#: are the paper's citations of other work (``CITED``).
PAPER_TABLE2 = {
    (32, "DAE"): ((50.56, 60.20, 288.8, 99.60, 90.55), (49.48, 50.38, 346.4, 65.50, 59.83)),
    (32, "VAE"): ((62.46, 79.06, 100.1, 101.0, 94.40), (51.95, 53.21, 64.53, 64.71, 61.01)),
    (64, "DAE"): ((30.94, 48.05, 372.30, 85.38, 77.36), (41.78, 43.68, 370.9, 55.99, 50.15)),
    (64, "VAE"): ((56.10, 78.35, 99.49, 101.0, 93.60), (48.65, 50.86, 60.63, 60.71, 57.01)),
    (128, "DAE"): ((16.95, 45.21, 282.3, 82.49, 73.78), (29.01, 31.85, 426.9, 46.96, 39.10)),
    (128, "DAE (BN)"): ((17.69, 45.24, 94.14, 82.64, 73.05), (None,) * 5),
    (128, "VAE"): ((48.41, 76.20, 99.62, 101.9, 94.21), (43.38, 46.44, 55.70, 55.66, 52.15)),
    (128, "WAE"): ((None, 57.94, 117.4, None, 93.53), (None, 34.81, 53.67, None, 42.73)),
    (128, "RAE"): ((None, 32.24, None, 80.80, 74.16), (None, 36.01, None, 44.74, 40.95)),
    (128, "EAE"): ((None, 29.77, 85.26, None, 73.12), (None, 40.26, 44.63, None, 39.76)),
    (128, "GMM-DAE"): ((None,) * 5, (None, 39.48, None, 49.79, 44.79)),
    (256, "DAE"): ((8.07, 47.51, 402.7, 90.59, 79.97), (None,) * 5),
    (256, "VAE"): ((50.85, 93.49, 112.0, 112.5, 108.6), (None,) * 5),
}
CITED = ("WAE", "RAE", "EAE", "GMM-DAE")
PAPER_TABLE2_LATENTS = {"cifar10": 128, "celeba": 64}
#: Daly et al., Table 3 (FID at the best latent sizes; the rows our copy has cleanly):
#: (latents, filters, model, Test R, N(0, I), MVG, GMM).
PAPER_TABLE3 = {
    "cifar10": ((128, 64, "DAE", 48.05, 372.3, 85.38, 77.36),
                (152, 64, "DAE", 43.22, 370.8, 86.55, 76.59),
                (384, 64, "VAE", 51.59, 89.77, 89.92, 82.35),
                (512, 64, "VAE", 46.01, 90.95, 89.45, 83.06),
                (144, 128, "DAE", 40.31, 428.6, 81.62, 72.82),
                (384, 128, "VAE", 46.98, 87.29, 86.65, 80.01),
                (160, 256, "DAE", 37.70, 379.5, 86.90, 75.67),
                (512, 256, "VAE", 39.50, 82.34, 83.45, 78.95),
                (768, 256, "VAE", 37.27, 87.68, 85.25, 78.91),
                (192, 32, "DAE", 43.55, 419.0, 98.49, 88.31),
                (512, 32, "VAE", 52.08, 96.59, 94.79, 89.14)),
    "celeba": ((384, 32, "DAE", 32.50, 474.4, 62.77, 51.58),
               (768, 32, "VAE", 39.83, 54.53, 52.10, 48.03),
               (80, 64, "DAE", 45.83, 409.5, 53.76, 49.31),
               (384, 64, "DAE", 29.62, 502.9, 55.67, 45.80),
               (768, 64, "VAE", 38.42, 50.34, 47.73, 43.23),
               (96, 128, "DAE", 34.84, 406.47, 44.98, 39.13),
               (128, 128, "DAE", 31.85, 426.9, 46.96, 39.10),
               (384, 128, "VAE", 40.04, 49.09, 49.07, 47.30),
               (768, 128, "VAE", 36.93, 50.67, 47.70, 42.91)),
}
PAPER_SOURCE = ("Daly et al. (2022), Tables 2-3 (FID), as transcribed in EXPERIMENTS.md E5; "
                "WAE / RAE / EAE / GMM-DAE are the paper's citations of other work")


#: A depth: repeats per stage for every stage (``2``) or per stage (``(3, 3, 2, 1)``); the
#: annotation lets ``--set grid.depths=[[16, [3, 3, 2, 1]]]`` read back as tuples.
Depth = int | tuple[int, ...]


@dataclass(frozen=True)
class GridConfig:
    """The cells of the sweep, all over latent sizes:

    - ``filters`` x ``latents``: DAE and VAE at depth 1 (Fig. 1, Tables 2-3);
    - ``depths``: (filters, depth) DAE curves (Figs. 2 and 5) over ``depth_latents`` (empty:
      ``latents``), beside the depth-1 DAE and the VAE at those filters;
    - at ``variant_filters`` over ``variant_latents``: latent ``latent_norms`` at depth 1 (Fig.
      4), ``decoder_noise`` stds at ``noise_depths`` and the frozen latent layer at
      ``frozen_depths`` (Fig. 3), each beside the plain DAE of the same depth;
    - ``seeds``: more seeds of the DAE and VAE at ``comparison_latent`` (every filter base,
      depth 1), whose spread is the yardstick of every check; the scatter plots (Figs.
      A.1-A.2) use ``pairs`` pairs of dimensions of the comparison cells;
    - ``large_latent``: the size above which the instability check looks (the paper: 512).

    The VAE's KL weight is ``vae_beta``, times the pixel count when ``vae_kl_scale`` is
    ``"pixels"`` (a per-pixel mean BCE) and as it stands when ``"none"``.
    """

    filters: tuple[int, ...] = (8, 16)
    latents: tuple[int, ...] = (8, 16)
    depths: tuple[tuple[int, Depth], ...] = ()
    depth_latents: tuple[int, ...] = ()
    variant_filters: int = 16
    variant_latents: tuple[int, ...] = (8, 16)
    latent_norms: tuple[str, ...] = ("bn", "sn", "ln")
    decoder_noise: tuple[float, ...] = (0.1, 0.5, 1.0)
    noise_depths: tuple[Depth, ...] = (1,)
    frozen_depths: tuple[Depth, ...] = (1,)
    comparison_latent: int = 16
    seeds: tuple[int, ...] = ()
    large_latent: int = 512
    vae_beta: float = 0.01
    vae_kl_scale: str = "pixels"

    def __post_init__(self) -> None:
        if self.vae_kl_scale not in ("pixels", "none"):
            raise ValueError(f"vae_kl_scale must be 'pixels' or 'none', got {self.vae_kl_scale!r}")
        if self.comparison_latent not in self.latents:
            raise ValueError(f"comparison_latent {self.comparison_latent} is not one of the "
                             f"latent sizes {self.latents}")
        if self.variant_filters not in self.filters:
            raise ValueError(f"variant_filters {self.variant_filters} is not a filter base of "
                             f"{self.filters}")


def depth_tag(depth) -> str:
    """``1`` -> "1", ``(3, 3, 2, 1)`` -> "3-3-2-1"."""
    return str(depth).strip("()").replace(", ", "-")


def cell_name(model: str, filters: int, depth, latent: int, variant: str = "",
              seed: int | None = None) -> str:
    """``dae_f64_d1_k128``, ``dae_f128_d2_k96_frozen``, ``vae_f32_d1_k64_s1``."""
    tail = (f"_{variant}" if variant else "") + (f"_s{seed}" if seed else "")
    return f"{model}_f{filters}_d{depth_tag(depth)}_k{latent}{tail}"


def vae_kl_weight(grid: GridConfig, dataset: str) -> float:
    channels, side = IMAGE_SHAPES[dataset]
    return grid.vae_beta * (channels * side * side if grid.vae_kl_scale == "pixels" else 1)


def grid_rows(grid: GridConfig, dataset: str) -> tuple[TableRow, ...]:
    """Every cell of ``grid`` as a table row (duplicates once)."""
    beta = vae_kl_weight(grid, dataset)
    rows: dict[str, TableRow] = {}

    def dae(f, d, k, variant="", seed=None, **options):
        name = cell_name("dae", f, d, k, variant, seed)
        rows.setdefault(name, TableRow(
            name=name, kind="ae", reconstruction="bce", base_filters=f, depth=d, latent_dim=k,
            seed=seed, label=f"DAE f{f} d{depth_tag(d)} k{k}" + (f" {variant}" if variant else "")
            + (f" seed {seed}" if seed else ""), **options))

    def vae(f, k, seed=None):
        name = cell_name("vae", f, 1, k, "", seed)
        rows.setdefault(name, TableRow(
            name=name, kind="vae", head="gaussian", reconstruction="bce", beta=beta,
            base_filters=f, depth=1, latent_dim=k, seed=seed,
            label=f"VAE f{f} k{k}" + (f" seed {seed}" if seed else "")))

    for f in grid.filters:
        for k in grid.latents:
            dae(f, 1, k)
            vae(f, k)
        for seed in grid.seeds:
            dae(f, 1, grid.comparison_latent, seed=seed)
            vae(f, grid.comparison_latent, seed=seed)
    for f, d in grid.depths:
        for k in grid.depth_latents or grid.latents:
            dae(f, d, k)
    f = grid.variant_filters
    for k in grid.variant_latents:
        for norm in grid.latent_norms:
            dae(f, 1, k, norm, latent_norm=norm)
        for d in grid.noise_depths:
            dae(f, d, k)
            for std in grid.decoder_noise:
                dae(f, d, k, f"noise{std:g}", decoder_noise_std=std)
        for d in grid.frozen_depths:
            dae(f, d, k)
            dae(f, d, k, "frozen", freeze_latent=True)
    return tuple(rows.values())


@dataclass(frozen=True)
class Config(TableConfig):
    """A table whose rows are always the cells of ``grid`` (:func:`grid_rows`), so that
    ``--set grid.latents=...`` changes them."""

    grid: GridConfig = GridConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", grid_rows(self.grid, self.dataset))


def _eval(n: int, bins: int, feature_ae: FeatureAEConfig, **kw) -> ColumnsConfig:
    """The columns of every cell: reconstructions (train and test) and the three samplers,
    scored by FID (with the weights), FD in the feature AE, pixel MMD and NDB/K; pixel-space
    KID / precision / recall / PRD are off (hundreds of cells)."""
    return ColumnsConfig(n_samples=n, ndb_bins=bins, samplers=SAMPLERS, prd_runs=0,
                         pixel_generation=False, feature_ae=feature_ae,
                         train_reconstructions=True, latent_pairs=6, **kw)


#: Daly et al.'s optimisation: Adam, batch 128, one warm-up epoch at 1e-4, then 1e-3 / 1e-4 /
#: 1e-5 at epochs 33 / 66 of the 100 after it.
PAPER_TRAIN = TrainConfig(epochs=101, batch_size=128, lr=1e-3, warmup_epochs=1, warmup_lr=1e-4,
                          lr_milestones=(33, 66), lr_decay=0.1)


def paper_grid(dataset: str) -> GridConfig:
    """The paper's grid: filter bases 32-256 over :data:`PAPER_LATENTS`; depths 1-3 at 64 and
    1, 2, [3, 3, 2, 1] at 128 filters; BN / SN / LN, decoder noise and the frozen layer at 128
    filters (depths 1 and 2); three seeds at Table 2's latent size."""
    return GridConfig(
        filters=PAPER_FILTERS, latents=PAPER_LATENTS,
        depths=((64, 2), (64, 3), (128, 2), (128, (3, 3, 2, 1))),
        variant_filters=128, variant_latents=PAPER_LATENTS,
        noise_depths=(1, 2), frozen_depths=(1, 2),
        comparison_latent=PAPER_TABLE2_LATENTS[dataset], seeds=(1, 2), large_latent=512)


def preset(name: str) -> Config:
    """``quick`` (MNIST, reduced grid, CPU), ``quick_celeba`` (the CelebA images of
    ``../shared``, reduced grid, CPU), ``paper`` (CIFAR-10) / ``paper_celeba`` (CelebA-64,
    centre crop 140 -> 64): the paper's grid and set-up (GPU); ``smoke`` (seconds; tests)."""
    daly = ConvSpec(layout="daly", kernel_size=4)
    if name == "quick":
        # MNIST, 5,000 training images, 3 epochs (1e-3, then 1e-4 in the last): the paper's
        # schedule compressed. Filter bases 4 / 8 / 16 stand in for 32 / 64 / 128 (a 28 x 28
        # image needs less), latents 4-128 for the paper's 16-768; the depth curves at 3 and
        # the variants at 2 of them (about 20 minutes on 2 cores).
        grid = GridConfig(
            filters=(4, 8, 16), latents=(4, 8, 16, 32, 64, 128),
            depths=((8, 2), (8, 3), (16, 2), (16, (3, 3, 2, 1))), depth_latents=(8, 32, 128),
            variant_filters=16, variant_latents=(8, 32),
            noise_depths=(1,), frozen_depths=(1, 2), comparison_latent=16, seeds=(1, 2),
            large_latent=32)
        return Config(
            preset=name, train_limit=5_000, test_limit=2_000, net=daly,
            train=TrainConfig(epochs=3, batch_size=128, lr=1e-3, lr_milestones=(2,),
                              progress=False),
            grid=grid,
            eval=_eval(1000, 20, FeatureAEConfig(latent_dim=32, base_filters=8, epochs=5)),
            device="cpu", threads=2,
        )
    if name == "quick_celeba":
        # The 6,000 CelebA images of ../shared at 64 x 64 (centre crop 140): 4,000 to train,
        # validation + test ids to score; filter bases 4 / 8 for 32 / 64, latents 16-256; the
        # variants at the comparison size only (about 30 minutes on 2 cores).
        grid = GridConfig(
            filters=(4, 8), latents=(16, 32, 64, 128, 256),
            depths=((4, 2), (8, 2)), variant_filters=8, variant_latents=(64,),
            latent_norms=("bn",), decoder_noise=(0.5,), noise_depths=(1,), frozen_depths=(1,),
            comparison_latent=64, seeds=(1, 2), large_latent=128)
        return Config(
            preset=name, dataset="celeba", train_limit=4_000, test_limit=1_000,
            eval_splits=("valid", "test"), net=ConvSpec(layout="daly", kernel_size=5),
            train=TrainConfig(epochs=3, batch_size=128, lr=1e-3, lr_milestones=(2,),
                              progress=False),
            grid=grid,
            eval=_eval(500, 20, FeatureAEConfig(latent_dim=64, base_filters=8, kernel_size=5,
                                                epochs=5)),
            device="cpu", threads=2,
        )
    if name in ("paper", "paper_celeba"):
        dataset = "cifar10" if name == "paper" else "celeba"
        return Config(
            preset=name, dataset=dataset, eval_splits=("test",),
            net=ConvSpec(layout="daly", kernel_size=4 if dataset == "cifar10" else 5),
            train=PAPER_TRAIN, grid=paper_grid(dataset),
            eval=_eval(10_000, 100, FeatureAEConfig(latent_dim=128, base_filters=32,
                                                    epochs=20)),
            device="auto",
        )
    if name == "smoke":
        grid = GridConfig(filters=(2, 4), latents=(2, 4), depths=((2, 2),), variant_filters=2,
                          variant_latents=(4,), latent_norms=("bn",), decoder_noise=(0.5,),
                          frozen_depths=(1,), comparison_latent=4, seeds=(1,), large_latent=2)
        return Config(
            preset=name, train_limit=64, test_limit=64, net=daly,
            train=TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
            grid=grid,
            eval=_eval(32, 4, FeatureAEConfig(latent_dim=4, base_filters=2, epochs=1),
                       gmm_components=2),
            device="cpu", threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


# ---------------------------------------------------------------------------- curves & checks


def score_key(results: dict) -> str:
    """The score of the curves and checks: FID where it was computed, else ``fd_ae``."""
    return "fid" if results.get("fid") == "computed" else "fd_ae"


def cell_of(model: dict) -> dict:
    """What a cell is, from its saved row spec: model, variant, filters, depth, latent, seed."""
    spec = model["spec"]
    variant = ("frozen" if spec["freeze_latent"] else
               f"noise{spec['decoder_noise_std']:g}" if spec["decoder_noise_std"] else
               spec["latent_norm"] if spec["latent_norm"] != "none" else "")
    depth = spec["depth"]
    return {"model": "vae" if spec["kind"] == "vae" else "dae", "variant": variant,
            "filters": spec["base_filters"], "depth": depth_tag(depth),
            "latent": spec["latent_dim"], "seed": spec.get("seed") or 0}


def curves(models: dict[str, dict], key: str) -> list[dict]:
    """One curve per (model, variant, filters, depth) over latent sizes (seed 0), with every
    column's ``key`` score and the pair normality: what the figures draw."""
    groups: dict[tuple, dict] = {}
    for m in models.values():
        c = cell_of(m)
        if c["seed"]:
            continue
        g = groups.setdefault((c["model"], c["variant"], c["filters"], c["depth"]), {
            "model": c["model"], "variant": c["variant"], "filters": c["filters"],
            "depth": c["depth"], "points": []})
        g["points"].append((c["latent"], m))
    out = []
    for g in groups.values():
        points = sorted(g.pop("points"), key=lambda p: p[0])
        g["latents"] = [k for k, _ in points]
        g["scores"] = {col: [m["columns"][col].get(key) for _, m in points] for col in COLUMNS}
        g["pair_mmd_mean"] = [m.get("pair_mmd_mean") for _, m in points]
        out.append(g)
    return out


def curve(curves_: list[dict], model="dae", variant="", filters=None, depth="1") -> dict | None:
    for c in curves_:
        if (c["model"], c["variant"], c["filters"], c["depth"]) == (model, variant, filters,
                                                                     depth):
            return c
    return None


def seed_spread(models: dict[str, dict], key: str) -> dict[str, Any]:
    """The standard deviation over seeds of the comparison cells (each DAE and VAE at the
    comparison latent size, run with several seeds), per column: ``pooled`` over every
    comparison cell (root mean variance) and per ``"<model>_f<filters>"`` (the yardstick of the
    checks at that model and filter base: noise differs between widths)."""
    groups: dict[tuple, list[dict]] = {}
    for m in models.values():
        c = cell_of(m)
        groups.setdefault((c["model"], c["variant"], c["filters"], c["depth"], c["latent"]),
                          []).append(m)
    repeated = {k: g for k, g in groups.items() if len(g) > 1}

    def spread(cells_groups, col):
        variances = []
        for g in cells_groups:
            values = [m.get(col) if col == "pair_mmd_mean" else m["columns"][col].get(key)
                      for m in g]
            if all(_known(v) for v in values):
                variances.append(float(np.var(values, ddof=1)))
        return float(np.sqrt(np.mean(variances))) if variances else None

    cols = (*COLUMNS, "pair_mmd_mean")
    out: dict[str, Any] = {"pooled": {col: spread(repeated.values(), col) for col in cols}}
    for (model, _, f, _, _), g in repeated.items():
        out[f"{model}_f{f}"] = {col: spread([g], col) for col in cols}
    return out


def _verdict(difference: float | None, margin: float | None) -> str:
    """``difference`` is how much the claim's side is better (positive = as claimed)."""
    if difference is None or margin is None:
        return "not tested"
    if difference > margin:
        return "shown"
    if difference < -margin:
        return "contradicted"
    return "within seed spread"


def _known(value) -> bool:
    """A score that exists (not None, not an "n/a ..." string)."""
    return not is_missing(value)


def _mean(values: list) -> float | None:
    values = [v for v in values if _known(v)]
    return float(np.mean(values)) if values else None


def _at(c: dict | None, latent: int, col: str) -> float | None:
    if c is None or latent not in c["latents"]:
        return None
    return c["scores"][col][c["latents"].index(latent)]


def checks(results: dict, grid: GridConfig) -> dict[str, Any]:
    """Daly et al.'s claims on the run's score (FID or ``fd_ae``, lower is better), each with
    its verdict against the seed spread: a difference counts as shown when it exceeds
    ``margin`` = 2 x the larger seed standard deviation of the cells compared, in the column
    concerned (:func:`seed_spread`; the pooled one where a cell has no seeds), contradicted
    when it exceeds it the other way, else within the spread. "Changes little" claims are
    shown when every gap is within the margin: a wide spread makes them easy to pass.
    Differences are signed so that positive means "as the paper claims"."""
    cs, spread, k0 = results["curves"], results["seed_spread"], grid.comparison_latent
    out: dict[str, Any] = {"score": results["score"]}

    def margin(col: str, *cells: str) -> float | None:
        """2 x the largest seed standard deviation of ``cells`` (``"dae_f16"``...) in
        ``col``, or of the pooled spread when a cell has no seeds of its own."""
        sds = [(spread.get(c) or spread["pooled"]).get(col) for c in cells]
        return None if any(v is None for v in sds) else 2 * max(sds)

    def record(name: str, difference, col: str, cells: tuple[str, ...], **extra) -> None:
        m = margin(col, *cells)
        out[name] = {"verdict": _verdict(difference, m), "difference": difference,
                     "margin": m, **extra}

    f_var = grid.variant_filters
    for col in ("mvg", "gmm"):
        for f in grid.filters:  # DAEs beat VAEs at the comparison size
            record(f"dae_beats_vae[{col},f{f}]",
                   _diff(_at(curve(cs, "vae", "", f), k0, col),
                         _at(curve(cs, "dae", "", f), k0, col)), col, (f"dae_f{f}", f"vae_f{f}"))
        lo, hi = min(grid.filters), f_var  # DAE generation improves with the filter base
        record(f"dae_improves_with_filters[{col},f{lo}->f{hi}]",
               _diff(_at(curve(cs, "dae", "", lo), k0, col),
                     _at(curve(cs, "dae", "", hi), k0, col)), col, (f"dae_f{lo}", f"dae_f{hi}"))
    for f, d in grid.depths:  # depth flattens the curve and moves the optimum lower
        base, deep = curve(cs, "dae", "", f), curve(cs, "dae", "", f, depth_tag(d))
        if base and deep:  # on the latent sizes both curves have
            ks = [k for k in deep["latents"] if k in base["latents"]]
            scores = [[_at(c, k, "gmm") for k in ks] for c in (base, deep)]
            rng = [max(v) - min(v) for v in scores]
            record(f"depth_flattens_curve[gmm,f{f},d{depth_tag(d)}]", rng[0] - rng[1], "gmm",
                   (f"dae_f{f}",), range_depth1=rng[0], range_deeper=rng[1], latents=ks)
            best = [ks[int(np.argmin(v))] for v in scores]
            out[f"depth_moves_optimum_lower[gmm,f{f},d{depth_tag(d)}]"] = {
                "verdict": "shown" if best[1] < best[0] else "not shown",
                "best_latent_depth1": best[0], "best_latent_deeper": best[1], "latents": ks}
    for d in grid.frozen_depths:  # freezing the latent layer changes little
        base, frozen = curve(cs, "dae", "", f_var, depth_tag(d)), curve(
            cs, "dae", "frozen", f_var, depth_tag(d))
        _within(out, f"frozen_changes_little[gmm,d{depth_tag(d)}]", base, frozen, "gmm",
                margin("gmm", f"dae_f{f_var}"))
    base = curve(cs, "dae", "", f_var)
    for norm in grid.latent_norms:  # BN rescues N(0, I); norms change MVG / GMM little
        normed = curve(cs, "dae", norm, f_var)
        if norm == "bn" and base and normed:
            diffs = [_diff(_at(base, k, "normal"), _at(normed, k, "normal"))
                     for k in normed["latents"]]
            record("bn_rescues_normal", _mean(diffs), "normal", (f"dae_f{f_var}",),
                   per_latent=diffs)
        for col in ("mvg", "gmm"):
            _within(out, f"{norm}_changes_{col}_little", base, normed, col,
                    margin(col, f"dae_f{f_var}"))
    for d in grid.noise_depths if grid.decoder_noise else ():  # noise: DAE towards the VAE
        dae_d = curve(cs, "dae", "", f_var, depth_tag(d))
        top = curve(cs, "dae", f"noise{max(grid.decoder_noise):g}", f_var, depth_tag(d))
        vae = curve(cs, "vae", "", f_var)
        if dae_d and top:
            ks = top["latents"]
            worse = _mean([_diff(_at(top, k, "gmm"), _at(dae_d, k, "gmm")) for k in ks])
            gap_before = _mean([abs(_at(dae_d, k, "gmm") - _at(vae, k, "gmm")) for k in ks
                                if _at(vae, k, "gmm") is not None])
            gap_after = _mean([abs(_at(top, k, "gmm") - _at(vae, k, "gmm")) for k in ks
                               if _at(vae, k, "gmm") is not None])
            record(f"noise_degrades_dae[gmm,d{depth_tag(d)}]", worse, "gmm",
                   (f"dae_f{f_var}",))
            record(f"noise_moves_dae_towards_vae[gmm,d{depth_tag(d)}]",
                   None if gap_before is None else gap_before - gap_after, "gmm",
                   (f"dae_f{f_var}", f"vae_f{f_var}"), gap_before=gap_before,
                   gap_after=gap_after)
    for f in grid.filters:  # VAEs unstable with many latents, DAEs not
        for model in ("vae", "dae"):
            c = curve(cs, model, "", f)
            if c is None:
                continue
            large = [v for k, v in zip(c["latents"], c["scores"]["gmm"], strict=True)
                     if k > grid.large_latent]
            if not large:
                out[f"{model}_degrades_above_{grid.large_latent}[gmm,f{f}]"] = {
                    "verdict": "not tested", "why": "no latent size above the threshold"}
                continue
            record(f"{model}_degrades_above_{grid.large_latent}[gmm,f{f}]",
                   max(large) - min(c["scores"]["gmm"]), "gmm", (f"{model}_f{f}",))
    lo, hi = min(grid.filters), max(grid.filters)  # larger encoders, more Gaussian pairs
    pairs = [_at_pairs(curve(cs, "dae", "", f), k0) for f in (lo, hi)]
    record(f"larger_encoder_more_gaussian_pairs[dae,f{lo}->f{hi}]", _diff(*pairs),
           "pair_mmd_mean", (f"dae_f{lo}", f"dae_f{hi}"),
           pair_mmd=dict(zip((f"f{lo}", f"f{hi}"), pairs, strict=True)))
    out["summary"] = _summary(out)
    return out


def _diff(worse: float | None, better: float | None) -> float | None:
    """How much ``better`` beats ``worse`` (lower is better), None if either is missing."""
    if not _known(worse) or not _known(better):
        return None
    return float(worse - better)


def _at_pairs(c: dict | None, latent: int) -> float | None:
    if c is None or latent not in c["latents"]:
        return None
    return c["pair_mmd_mean"][c["latents"].index(latent)]


def _within(out: dict, name: str, base: dict | None, other: dict | None, col: str,
            margin: float | None) -> None:
    """"Changes little": at every latent size of ``other``, within ``margin`` of ``base``."""
    if base is None or other is None or margin is None:
        out[name] = {"verdict": "not tested"}
        return
    gaps = [abs(_at(other, k, col) - _at(base, k, col)) for k in other["latents"]
            if _at(base, k, col) is not None]
    close = sum(g <= margin for g in gaps)
    out[name] = {"verdict": "shown" if close == len(gaps) else "not shown",
                 "within_margin": f"{close}/{len(gaps)} latent sizes", "gaps": gaps,
                 "margin": margin}


def _summary(out: dict) -> dict[str, str]:
    """Per claim (the name before ``[``): how many of its instances were shown."""
    counts: dict[str, list[str]] = {}
    for name, value in out.items():
        if name in ("score", "summary") or "verdict" not in value:
            continue
        counts.setdefault(name.split("[")[0], []).append(value["verdict"])
    return {claim: f"{v.count('shown')}/{len(v)} shown" + (
        f", {v.count('contradicted')} contradicted" if "contradicted" in v else "")
        for claim, v in counts.items()}


# ----------------------------------------------------------------------------------- tables


def table2(results: dict, grid: GridConfig) -> tuple[list[str], list[list]]:
    """Our Table 2: every filter base's DAE, DAE (BN) and VAE at the comparison latent size,
    mean over seeds, with the seed standard deviation of each column."""
    key, k0 = results["score"], grid.comparison_latent
    rows = []
    for f in grid.filters:
        for label, model, variant in (("DAE", "dae", ""), ("DAE (BN)", "dae", "bn"),
                                      ("VAE", "vae", "")):
            cells = [m for m in results["models"].values()
                     if (c := cell_of(m))["model"] == model and c["variant"] == variant
                     and c["filters"] == f and c["depth"] == "1" and c["latent"] == k0]
            if not cells:
                continue
            row = [f, label, len(cells)]
            for col in COLUMNS:
                row.append(_mean([m["columns"][col].get(key) for m in cells]))
            rows.append(row)
    return ["filters", "model", "seeds", *[COLUMN_LABELS[c] for c in COLUMNS]], rows


def paper_table2(dataset: str) -> tuple[list[str], list[list]]:
    """The paper's Table 2 for ``dataset`` (CIFAR-10 for MNIST runs), cited rows marked."""
    index = 1 if dataset == "celeba" else 0
    rows = [[f, model + (" (cited)" if model in CITED else ""), *values[index]]
            for (f, model), values in PAPER_TABLE2.items()]
    return ["filters", "model", *[COLUMN_LABELS[c] for c in COLUMNS]], rows


def table3(results: dict) -> tuple[list[str], list[list]]:
    """Our Table 3: per filter base (depth 1), the DAE's and the VAE's best latent size by the
    GMM score, with its scores."""
    rows = []
    for c in results["curves"]:
        if c["variant"] or c["depth"] != "1":
            continue
        gmm = c["scores"]["gmm"]
        if not any(_known(v) for v in gmm):
            continue
        i = int(np.nanargmin([v if _known(v) else np.nan for v in gmm]))
        rows.append([c["latents"][i], c["filters"], c["model"].upper(),
                     *[c["scores"][col][i] for col in ("rec", *SAMPLERS)]])
    rows.sort(key=lambda r: (r[1], r[2]))
    return ["latents", "filters", "model", "Test R", "N(0,I)", "MVG", "GMM"], rows


def paper_table3(dataset: str) -> tuple[list[str], list[list]]:
    rows = [list(r) for r in PAPER_TABLE3["celeba" if dataset == "celeba" else "cifar10"]]
    return ["latents", "filters", "model", "Test R", "N(0,I)", "MVG", "GMM"], rows


def paper_dataset(dataset: str) -> str:
    return "celeba" if dataset == "celeba" else "cifar10"


def _tables(results: dict, grid: GridConfig) -> list[str]:
    key = results["score"]
    space = ("FID" if key == "fid" else
             "FD in the feature AE's codes (fd_ae; no Inception weights, so not FID)")
    pd = paper_dataset(results["dataset"])
    return [
        f"Table 2 (ours; {space}; latent size {grid.comparison_latent}; mean over seeds):\n\n"
        + markdown_table(*table2(results, grid)),
        f"Table 2 (paper, {pd} FID at {PAPER_TABLE2_LATENTS[pd]} latents; (cited): the "
        "paper's citations of other work):\n\n" + markdown_table(*paper_table2(pd)),
        f"Table 3 (ours; {space}; best latent size by GMM per filter base):\n\n"
        + markdown_table(*table3(results)),
        f"Table 3 (paper, {pd} FID):\n\n" + markdown_table(*paper_table3(pd)),
        "Checks:\n\n" + markdown_table(("claim", "instances"),
                                       list(results["checks"]["summary"].items())),
    ]


def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    """Run (or resume) every cell of the grid; write and return the combined results."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    results = run_rows(NAME, config, run_dir, progress)
    grid = config.grid
    key = score_key(results)
    scatter = [cell_name(model, f, 1, grid.comparison_latent) for f in grid.filters
               for model in ("dae", "vae")]
    combine_samples(run_dir, scatter, PAIRS_FILE)
    results.update(
        score=key, grid=config.grid, vae_kl_weight=vae_kl_weight(grid, config.dataset),
        curves=curves(results["models"], key),
        seed_spread=seed_spread(results["models"], key),
        scatter_cells=scatter, paper_source=PAPER_SOURCE,
        paper={"dataset": paper_dataset(config.dataset),
               "table2_latent": PAPER_TABLE2_LATENTS[paper_dataset(config.dataset)]},
    )
    results["checks"] = checks(results, grid)
    pd = paper_dataset(config.dataset)
    results["tables"] = {name: dict(zip(("columns", "rows"), table, strict=True))
                         for name, table in (("table2", table2(results, grid)),
                                             ("paper_table2", paper_table2(pd)),
                                             ("table3", table3(results)),
                                             ("paper_table3", paper_table3(pd)))}
    from balance.runs import config_to_dict

    results["grid"] = config_to_dict(grid)
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text("\n\n".join(_tables(results, grid)))
    return results


def report(results: dict) -> str:
    from balance.runs import config_from_dict

    grid = config_from_dict(GridConfig, results["grid"])
    return reporting.report(_tables(results, grid), results["checks"]["summary"],
                            results["wall_time_s"])


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
