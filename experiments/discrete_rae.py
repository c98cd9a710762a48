"""The discrete side of the RAE view (seed 002): does the RAE result carry over to discrete
latents? A categorical VAE (Gumbel-softmax, uniform prior) against its deterministic,
explicitly regularized counterparts (discrete RAEs: straight-through one-hot codes, a penalty
on the logits, and a decoder regularizer: none, L2, gradient penalty or spectral norm) and
VQ-VAE, each sampled from the uniform prior and from densities fitted ex post on its training
codes (``balance.discrete_density``: product of categoricals, mixture of products by EM, an
autoregressive MADE prior).

Claim checked: the best discrete RAE with an ex-post density samples at least as well as the
categorical VAE from its prior (pixel MMD^2 and KID to test images, lower is better); and ex-post
densities beat the uniform prior for the deterministic models, whose codes are not shaped to it.

Per model: test reconstruction error (squared error per image), code usage (the fraction of
the m x K classes used on the test codes) and perplexity (exp of the entropy of each
variable's class frequencies, averaged). Per (model, sampler): the scores of
``balance.evaluation.images.ImageScorer`` (pixel MMD^2, KID, precision / recall, PRD, NDB/K)
and ``fd_ae``, the Frechet distance in the codes of a feature autoencoder trained once on the
training images (:mod:`balance.evaluation.feature_ae`; FID's formula without Inception
weights, labelled as its own feature space).

Usage: ``python experiments/discrete_rae.py [--preset quick|quick_celeba|paper|smoke]
[--engine ray]``. Run folder (default ``runs/discrete_rae/<preset>``): ``feature_ae/``,
``<model>/`` per training run (``samples.npz`` beside), ``results.json``, ``samples.npz`` (the
sample grids), ``table.md``. Re-running resumes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # python experiments/discrete_rae.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.engine import EngineConfig, run_cells
from balance.evaluation.feature_ae import FeatureAEConfig
from balance.evaluation.table import combine_samples
from balance.experiment import run_script
from balance.models.registry import DiscreteSpec, build, save_model_record
from balance.reporting import markdown_table
from balance.runs import RESULTS_FILE, Stage, prepare_run, results_header, run_identity, write_json
from balance.threads import limit_threads
from balance.train import TrainConfig, train

NAME = "discrete_rae"
PRESETS = ("quick", "quick_celeba", "paper", "smoke")
DATA_ROOT_FIELD = "data_root"
SAMPLERS = ("uniform", "product", "mixture", "autoregressive")
SAMPLER_LABELS = {"uniform": "uniform prior", "product": "product of categoricals",
                  "mixture": "mixture (EM)", "autoregressive": "autoregressive (MADE)"}


@dataclass(frozen=True)
class DiscreteRow:
    """One model: its spec, objective (``balance.objectives.discrete``) and weights."""

    name: str
    spec: DiscreteSpec
    objective: str
    beta: float = 1.0
    decoder: str = "none"
    lam: float = 0.0
    label: str = ""


def rows(m: int, k: int, width: int, depth: int, *, tau_rate: float) -> tuple[DiscreteRow, ...]:
    """Categorical VAE, four discrete RAEs and VQ-VAE (EMA codebook) of one size."""
    base = DiscreteSpec(m=m, k=k, width=width, depth=depth)
    rae = replace(base, kind="discrete_rae")
    return (
        DiscreteRow("cat_vae", replace(base, kind="categorical_vae", tau_rate=tau_rate),
                    "categorical_vae", beta=1.0, label="categorical VAE"),
        DiscreteRow("drae", rae, "discrete_rae", beta=1e-3, label="discrete RAE"),
        DiscreteRow("drae_l2", rae, "discrete_rae", beta=1e-3, decoder="l2", lam=1e-4,
                    label="discrete RAE-L2"),
        DiscreteRow("drae_gp", rae, "discrete_rae", beta=1e-3, decoder="gp", lam=1e-2,
                    label="discrete RAE-GP"),
        DiscreteRow("drae_sn", replace(rae, spectral_norm=True), "discrete_rae", beta=1e-3,
                    label="discrete RAE-SN"),
        DiscreteRow("vqvae", replace(base, kind="vqvae", d=4, ema=True), "vqvae", beta=0.25,
                    label="VQ-VAE (EMA)"),
    )


@dataclass(frozen=True)
class EvalConfig:
    """Samples per sampler (and test images scored against), NDB bins, KID subsets, PRD
    clusterings, the mixture's components, the autoregressive prior's epochs, seed, the
    feature autoencoder of ``fd_ae`` (None: no ``fd_ae``)."""

    n_samples: int = 1000
    ndb_bins: int = 20
    kid_subsets: int = 20
    kid_subset_size: int = 500
    prd_runs: int = 10
    components: int = 10
    ar_epochs: int = 30
    seed: int = 1234
    feature_ae: FeatureAEConfig | None = FeatureAEConfig(latent_dim=32, base_filters=8)


@dataclass(frozen=True)
class Config:
    """Data (``dataset``: ``mnist`` or ``celeba``, limits, CelebA's pooled ``eval_splits``),
    models, training, evaluation, device, threads, engine."""

    preset: str = "quick"
    dataset: str = "mnist"
    eval_splits: tuple[str, ...] = ("test",)
    data_root: str | None = None
    train_limit: int | None = 10_000
    test_limit: int | None = 2_000
    subset_seed: int = 0
    models: tuple[DiscreteRow, ...] = ()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    device: str = "cpu"
    threads: int | None = 1
    engine: EngineConfig = EngineConfig()


def preset(name: str) -> Config:
    """``quick`` (MNIST, 10,000 images, CPU minutes), ``quick_celeba`` (the CelebA-64 images of
    ``../shared``: 4,000 to train, validation + test ids to score), ``paper`` (all of MNIST, a
    GPU) or ``smoke`` (seconds; the tests)."""
    if name == "quick_celeba":
        # 12,288 pixels per image: wider codes (30 variables of 10 classes) and MLPs of 2 x 512;
        # no PRD (its k-means on 12,288-pixel vectors costs more than the training)
        return Config(preset=name, dataset="celeba", eval_splits=("valid", "test"),
                      train_limit=4_000, test_limit=1_000,
                      models=rows(30, 10, 512, 2, tau_rate=1e-3),
                      train=TrainConfig(epochs=15, batch_size=100, lr=1e-3, progress=False),
                      eval=EvalConfig(n_samples=500, prd_runs=0, feature_ae=FeatureAEConfig(
                          latent_dim=64, base_filters=8, kernel_size=5)))
    if name == "quick":
        # 20 variables of 10 classes, MLPs of 2 x 256, 10 epochs of batch 100 (1,000 steps; the
        # Gumbel temperature falls from 1 to its floor 0.5 by step ~700)
        return Config(preset=name, models=rows(20, 10, 256, 2, tau_rate=1e-3),
                      train=TrainConfig(epochs=10, batch_size=100, lr=1e-3, progress=False))
    if name == "paper":
        return Config(preset=name, train_limit=None, test_limit=None,
                      models=rows(30, 10, 512, 2, tau_rate=3e-5),
                      train=TrainConfig(epochs=100, batch_size=100, lr=1e-3,
                                        lr_milestones=(50, 75), lr_decay=0.5),
                      eval=EvalConfig(n_samples=10_000, ndb_bins=100, ar_epochs=100),
                      device="auto", threads=None)
    if name == "smoke":
        return Config(preset=name, train_limit=64, test_limit=64,
                      models=rows(3, 4, 16, 1, tau_rate=1e-2),
                      train=TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
                      eval=EvalConfig(n_samples=32, ndb_bins=4, kid_subset_size=16, prd_runs=2,
                                      components=2, ar_epochs=1,
                                      feature_ae=FeatureAEConfig(latent_dim=4, base_filters=2,
                                                                 epochs=1)))
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


# --------------------------------------------------------------------------------------- run


def _densities(row: DiscreteRow, e: EvalConfig, folder: Path) -> dict:
    from balance.discrete_density import (
        AutoregressivePrior,
        CategoricalMixture,
        ProductOfCategoricals,
    )

    m, k = row.spec.m, row.spec.k
    return {"uniform": lambda codes: ProductOfCategoricals.uniform(m, k),
            "product": lambda codes: ProductOfCategoricals(m, k).fit(codes),
            "mixture": lambda codes: CategoricalMixture(m, k, e.components,
                                                        seed=e.seed).fit(codes),
            "autoregressive": lambda codes: AutoregressivePrior(
                m, k, epochs=e.ar_epochs, seed=e.seed).fit(codes, run_dir=folder / "made")}


def code_usage(codes: torch.Tensor, m: int, k: int) -> dict[str, float]:
    """Fraction of the m x K classes used, and the mean per-variable perplexity."""
    freq = codes.view(-1, m, k).double().mean(0)  # [m, K]
    entropy = -(freq * freq.clamp_min(1e-300).log()).sum(1)
    return {"usage": float((freq > 0).double().mean()),
            "perplexity": float(entropy.exp().mean())}


def _images(config: Config):
    from balance.data.splits import load_images

    return load_images(config.dataset, config.data_root, config.train_limit, config.test_limit,
                       config.subset_seed, config.eval_splits)


def _features(run_dir: Path, config: Config, train_x: torch.Tensor):
    """The feature space of ``fd_ae``, trained once in ``run_dir / "feature_ae"``."""
    if config.eval.feature_ae is None:
        return None
    from balance.evaluation.feature_ae import feature_space

    return feature_space(config.eval.feature_ae, train_x, run_dir / "feature_ae", config.device)


def run_model(run_dir: Path, config: Config, row: DiscreteRow) -> dict:
    """Train one model and score its reconstructions and every sampler (skipped when done)."""
    from balance.evaluation.codec import batched_map
    from balance.evaluation.images import ImageScorer, to_uint8
    from balance.objectives.discrete import discrete_loss
    from balance.runs import pick_device

    folder = run_dir / row.name
    stage = Stage(folder, {"row": row, "train": config.train, "eval": config.eval,
                           "train_limit": config.train_limit, "test_limit": config.test_limit,
                           "subset_seed": config.subset_seed}, config.device)
    if stage.done is not None:
        return stage.done
    with limit_threads(config.threads):
        train_x, test_x = _images(config)
        model = build(row.spec, train_x.shape[1:], config.train.seed)
        save_model_record(folder, row.spec, train_x.shape[1:], config.train.seed)
        loss_fn = discrete_loss(row.objective, beta=row.beta, decoder=row.decoder, lam=row.lam)
        history = train(model, loss_fn, train_x, replace(config.train, device=config.device),
                        run_dir=folder)
        model.eval()
        device = pick_device(config.device)
        e = config.eval
        with torch.no_grad():
            codes = batched_map(model.discrete_codes, train_x, 500, device)
            test_codes = batched_map(model.discrete_codes, test_x, 500, device)
            recon = batched_map(model.decode_codes, test_codes, 500, device)
        scorer = ImageScorer(train_x, test_x[: e.n_samples], ndb_bins=e.ndb_bins, seed=e.seed,
                             device=device, kid_subsets=e.kid_subsets,
                             kid_subset_size=e.kid_subset_size, prd_runs=e.prd_runs,
                             features=_features(run_dir, config, train_x))
        columns, grids = {}, {}
        for name, fit in _densities(row, e, folder).items():
            density = fit(codes)
            samples = density.sample(e.n_samples, generator=torch.Generator().manual_seed(e.seed))
            with torch.no_grad():
                images = batched_map(model.decode_codes, samples, 500, device)
            columns[name] = {**scorer.score(images),
                             "code_log_likelihood": float(density.log_prob(test_codes).mean())}
            grids[name] = to_uint8(images[:8])
        np.savez_compressed(folder / "samples.npz", **grids, test=to_uint8(test_x[:8]),
                            rec=to_uint8(recon[:8]))
    return stage.save({
        "model": row.name, "label": row.label,
        "rec_error": float((recon - test_x).pow(2).flatten(1).sum(1).mean()),
        **code_usage(test_codes, row.spec.m, row.spec.k),
        "columns": columns,
        "final_epoch": {k: history[-1][k] for k in ("epoch", "loss", "reconstruction",
                                                    "latent", "decoder") if k in history[-1]},
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
    })


def direction_checks(models: dict) -> dict:
    """The question of the module docstring, as yes/no with the numbers behind it."""
    out: dict = {}
    vae = models.get("cat_vae")
    raes = {n: m for n, m in models.items() if n.startswith("drae")}
    metrics = [k for k in ("mmd_x", "kid_x", "fd_ae") if vae and k in vae["columns"]["uniform"]]
    for metric in metrics:
        if vae and raes:
            best = min(((m["columns"][s][metric], n, s) for n, m in raes.items()
                        for s in SAMPLERS[1:]))
            prior = vae["columns"]["uniform"][metric]
            out[f"best_rae_expost_le_vae_prior[{metric}]"] = bool(best[0] <= prior)
            out[f"best_rae_expost[{metric}]"] = f"{best[1]} / {best[2]}: {best[0]:.4g} vs " \
                                                f"VAE prior {prior:.4g}"
        det = {n: m for n, m in models.items() if n != "cat_vae"}
        wins = sum(min(m["columns"][s][metric] for s in SAMPLERS[1:])
                   < m["columns"]["uniform"][metric] for m in det.values())
        out[f"expost_beats_uniform_for_deterministic[{metric}]"] = f"{wins}/{len(det)}"
    return out


def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, run_identity(config, drop=("data_root",)), device=config.device)
    if config.eval.feature_ae is not None and not (run_dir / "feature_ae" / RESULTS_FILE).is_file():
        with limit_threads(config.threads):  # once, before the cells that share it
            _features(run_dir, config, _images(config)[0])
    done = run_cells(run_model, [(run_dir, config, row) for row in config.models],
                     config.engine, progress=progress,
                     done=lambda cell: (run_dir / cell[2].name / RESULTS_FILE).is_file())
    models = {row.name: result for row, result in zip(config.models, done, strict=True)}
    results = {**results_header(NAME, config), "dataset": config.dataset,
               "config": run_identity(config),
               "models": models, "checks": direction_checks(models),
               "wall_time_s": float(sum(m["wall_time_s"] for m in models.values()))}
    write_json(run_dir / RESULTS_FILE, results)
    combine_samples(run_dir, [row.name for row in config.models])
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


TABLE_HEADERS = ("model", "rec. err.", "usage", "perplexity", "sampler", "code log-lik.",
                 "MMD_x", "KID_x", "FD_ae", "precision_x", "recall_x", "NDB/K")


def table_rows(results: dict) -> list[list]:
    rows_ = []
    for m in results["models"].values():
        for s in SAMPLERS:
            c = m["columns"][s]
            rows_.append([m["label"], m["rec_error"], m["usage"], m["perplexity"],
                          SAMPLER_LABELS[s], c["code_log_likelihood"], c["mmd_x"], c["kid_x"],
                          c.get("fd_ae"), c["precision_x"], c["recall_x"], c["ndb_over_k"]])
    return rows_


def report(results: dict) -> str:
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))],
                            results["checks"], results["wall_time_s"])


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
