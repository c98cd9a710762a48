"""The autoencoder-table protocol shared by the RAE table (E4) and the DAE sweep (E5): train
every row (a conv model and its objective) in its own folder, then score the columns of
:mod:`balance.evaluation.columns` against held-out images.

A row is one :class:`TableRow`: the objective (``kind``, a kind of
:func:`balance.objectives.loss`, and its weights) and the model's options over the table's
conv pair (:class:`balance.models.registry.ConvSpec`). Adding a model to a table is one
``TableRow`` in its preset, e.g.::

    TableRow("rae_bn", "rae", beta=0.25, latent_norm="bn", label="RAE + latent BN")

Run folder::

    config.json ...            the table's identity
    <row>/                     one training run (config.json, model.json, metrics.jsonl,
                               checkpoint.pt, results.json, samples.npz)
    <row>/vae2/                the second-stage VAE (rows with ``second_stage``)
    reference.json             held-out real images scored like a column
    samples.npz                a few images per row and column (``<row>/<column>``)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from balance.engine import EngineConfig, run_cells
from balance.evaluation.columns import ColumnsConfig, sample_columns
from balance.evaluation.images import ImageScorer
from balance.models.autoencoder import AEConfig
from balance.models.registry import ConvSpec, build, save_model_record
from balance.models.vae import GammaConfig
from balance.reporting import NA_FID
from balance.runs import (
    Stage,
    prepare_run,
    read_json,
    results_header,
    run_identity,
    write_json,
)
from balance.train import TrainConfig, train

__all__ = ["SAMPLER_HEADERS", "SAMPLER_METRICS", "TableConfig", "TableRow", "fid_note",
           "row_model", "run_rows", "sampler_rows", "sampler_wins"]

SAMPLES_FILE = "samples.npz"
#: Codes of seeded pairs of latent dimensions (``ColumnsConfig.latent_pairs``) for scatter plots.
PAIRS_FILE = "pairs.npz"


@dataclass(frozen=True)
class TableRow:
    """One model of a table: objective ``kind`` (``"elbo"`` or an AE kind) with ``beta`` /
    ``lam`` / ``reconstruction`` / ``gp_estimator``; the encoder ``head``; the ``AEConfig``
    options; overrides of the table's width, depth and latent size; ``gamma`` for a Gaussian
    VAE trained on the ELBO (its ``lr`` the decoder variance's learning rate);
    ``second_stage``: sample N(0, I) through a second-stage VAE on codes z ~ q(z|x) (Dai &
    Wipf's 2sVAE); ``lr``: the row's own learning rate; ``seed``: the row's own seed
    (initial weights, data order and noise; default the table's ``train.seed``)."""

    name: str
    kind: str
    head: str = "deterministic"
    beta: float = 0.0
    lam: float = 0.0
    reconstruction: str = "mse"
    gp_estimator: str = "hutchinson"
    spectral_norm: str = "none"
    latent_norm: str = "none"
    decoder_noise_std: float = 0.0
    freeze_latent: bool = False
    base_filters: int | None = None
    depth: int | tuple[int, ...] | None = None
    latent_dim: int | None = None
    gamma: GammaConfig | None = None
    second_stage: bool = False
    lr: float | None = None
    seed: int | None = None
    label: str | None = None

    def __post_init__(self):
        if self.depth is not None and not isinstance(self.depth, int):
            object.__setattr__(self, "depth", tuple(int(d) for d in self.depth))
        if (self.kind == "elbo") != (self.gamma is not None):
            raise ValueError(f"row {self.name!r}: the ELBO needs gamma (a GaussianVAE), and "
                             "gamma is only used by the ELBO")


@dataclass(frozen=True)
class TableConfig:
    """A table: data (``dataset``, limits, the subset seed, CelebA's pooled ``eval_splits``),
    the conv pair of every row (``net``; rows override width, depth, latent), training,
    rows, columns, device and threads."""

    preset: str = "quick"
    dataset: str = "mnist"
    data_root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    subset_seed: int = 0
    eval_splits: tuple[str, ...] = ("test",)
    net: ConvSpec = ConvSpec()
    train: TrainConfig = TrainConfig()
    rows: tuple[TableRow, ...] = ()
    eval: ColumnsConfig = ColumnsConfig()
    device: str = "auto"
    threads: int | None = None
    engine: EngineConfig = EngineConfig()


def row_model(row: TableRow, net: ConvSpec) -> ConvSpec:
    """The row's model spec: the table's conv pair with the row's head, options, overrides."""
    changes = {k: getattr(row, k) for k in ("base_filters", "depth", "latent_dim")
               if getattr(row, k) is not None}
    ae = AEConfig(latent_norm=row.latent_norm, decoder_noise_std=row.decoder_noise_std,
                  freeze_latent=row.freeze_latent, spectral_norm=row.spectral_norm)
    return replace(net, head=row.head, ae=ae, gamma=row.gamma, **changes)


def row_loss(row: TableRow):
    from balance.objectives import loss

    if row.kind == "elbo":
        return loss("elbo")
    return loss(row.kind, reconstruction=row.reconstruction, beta=row.beta, lam=row.lam,
                gp_estimator=row.gp_estimator)


def table_identity(config: TableConfig) -> dict:
    """What a table's folder records and compares on resume (``eval_splits`` only for
    CelebA, where it changes the data)."""
    drop = ("rows",) + (() if config.dataset == "celeba" else ("eval_splits",))
    return run_identity(config, drop=drop)


class _Data:
    """The table's images and scorer, loaded on first use (nothing is loaded when every row
    is finished); the feature autoencoder of ``config.eval.feature_ae`` trains (or is loaded)
    in ``run_dir / "feature_ae"``."""

    def __init__(self, config: TableConfig, run_dir: Path | None = None):
        self.config = config
        self.run_dir = run_dir
        self._data = None
        self._scorer = None

    def images(self):
        if self._data is None:
            from balance.data.splits import load_images

            c = self.config
            self._data = load_images(c.dataset, c.data_root, c.train_limit, c.test_limit,
                                     c.subset_seed, c.eval_splits)
        return self._data

    def scorer(self) -> ImageScorer:
        if self._scorer is None:
            train_x, test_x = self.images()
            from balance.runs import pick_device

            e = self.config.eval
            self._scorer = ImageScorer(train_x, test_x[: e.n_samples], ndb_bins=e.ndb_bins,
                                       seed=e.seed, device=pick_device(self.config.device),
                                       kid_subsets=e.kid_subsets,
                                       kid_subset_size=e.kid_subset_size, prd_runs=e.prd_runs,
                                       pixel_generation=e.pixel_generation,
                                       features=self.features())
        return self._scorer

    def features(self):
        """The feature space of ``eval.feature_ae`` (None without one)."""
        e = self.config.eval
        if e.feature_ae is None:
            return None
        if self.run_dir is None:
            raise ValueError("a feature autoencoder needs the table's run folder")
        from balance.evaluation.feature_ae import feature_space

        return feature_space(e.feature_ae, self.images()[0], self.run_dir / "feature_ae",
                             self.config.device)


@functools.lru_cache(maxsize=1)
def _shared_data(config: TableConfig, run_dir: Path) -> _Data:
    """One table's images and scorer per process: every row of a table (in this process or
    in one engine worker) uses the same."""
    return _Data(config, run_dir)


def _row_cell(row: TableRow, config: TableConfig, run_dir: Path, progress: bool) -> dict:
    """One row as an engine cell (``balance.engine.run_cells``)."""
    from balance.threads import limit_threads

    with limit_threads(config.threads):
        return run_row(row, config, _shared_data(config, run_dir), run_dir, progress)


def run_row(row: TableRow, config: TableConfig, data: _Data, run_dir: Path,
            progress: bool) -> dict:
    """Train (or resume) and evaluate one row; skipped when its results.json exists."""
    spec = row_model(row, config.net)
    stage = Stage(run_dir / row.name,
                  {"row": row, "model": spec, "train": config.train, "dataset": config.dataset,
                   "train_limit": config.train_limit, "subset_seed": config.subset_seed},
                  config.device)
    if stage.done is not None:
        return stage.done
    train_x, test_x = data.images()
    seed = config.train.seed if row.seed is None else row.seed
    model = build(spec, train_x.shape[1:], seed)
    save_model_record(stage.folder, spec, train_x.shape[1:], seed)
    train_cfg = replace(config.train, device=config.device, progress=progress, seed=seed,
                        lr=row.lr if row.lr is not None else config.train.lr)
    history = train(model, row_loss(row), train_x, train_cfg, run_dir=stage.folder)
    started = stage.elapsed()
    metrics, grids = sample_columns(model, train_x, test_x, data.scorer(), config.eval,
                                    second_stage_for_normal=row.second_stage,
                                    run_dir=stage.folder, device=config.device)
    if row.gamma is not None:
        metrics["gamma"] = float(model.gamma)
    pair_points = grids.pop("pair_points", None)
    if pair_points is not None:
        np.savez_compressed(stage.folder / PAIRS_FILE, points=pair_points,
                            pairs=np.asarray(metrics["pairs"]))
    np.savez_compressed(stage.folder / SAMPLES_FILE, **grids)
    last = {k: v for k, v in history[-1].items() if isinstance(v, int | float)} if history else {}
    return stage.save({
        "model": row.name,
        "label": row.label or row.name,
        "spec": asdict(row),
        "n_train": int(train_x.shape[0]),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        **metrics,
        "final_epoch": last,
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
        "eval_time_s": stage.elapsed() - started,
    })


def reference_scores(config: TableConfig, run_dir: Path, data: _Data) -> dict[str, Any] | None:
    """Held-out real images (the test images after the first ``n_samples``) scored like a
    column: the floor each metric reaches on real data at this sample size (NDB/K ~ alpha);
    saved once in ``reference.json``."""
    path = run_dir / "reference.json"
    if path.is_file():
        return read_json(path)
    _, test_x = data.images()
    n = config.eval.n_samples
    held_out = test_x[n : 2 * n]
    scores = data.scorer().score(held_out) if held_out.shape[0] >= 2 else None
    write_json(path, scores)
    return scores


def combine_samples(run_dir: Path, names: Sequence[str], file: str = SAMPLES_FILE) -> Path:
    """One ``run_dir / file`` with each row's ``<row>/file`` arrays as ``<row>/<key>`` (by
    default the ``samples.npz`` grids, uint8 [n, C, H, W]; rows without the file are
    skipped)."""
    arrays = {}
    for name in names:
        path = run_dir / name / file
        if path.is_file():
            with np.load(path) as f:
                arrays.update({f"{name}/{k}": f[k] for k in f.files})
    out = run_dir / file
    np.savez_compressed(out, **arrays)
    return out


def run_rows(name: str, config: TableConfig, run_dir: Path,
             progress: bool = False) -> dict:
    """Run (or resume) every row of ``config`` in ``run_dir``; returns the results common to
    the tables (name, preset, device, held-out reference scores, rows, FID status, times)."""
    from balance.threads import limit_threads

    prepare_run(run_dir, table_identity(config), device=config.device)
    if config.eval.feature_ae is not None:  # trained once, before the cells that share it
        with limit_threads(config.threads):
            _shared_data(config, run_dir).features()
    local = config.engine.name == "local"
    done = run_cells(_row_cell, [(row, config, run_dir, progress and local) for row in config.rows],
                     config.engine, progress=progress and not local,
                     done=lambda cell: (run_dir / cell[0].name / "results.json").is_file())
    models = {row.name: result for row, result in zip(config.rows, done, strict=True)}
    data = _shared_data(config, run_dir)
    with limit_threads(config.threads):
        combine_samples(run_dir, list(models))
        fid = any(isinstance(c.get("fid"), float) for m in models.values()
                  for c in m["columns"].values())
        return {
            **results_header(name, config), "dataset": config.dataset,
            "reference": reference_scores(config, run_dir, data),
            "fid": "computed" if fid else NA_FID,
            "models": models,
            "wall_time_s": float(sum(m["wall_time_s"] for m in models.values())),
        }


#: The per-sampler metrics of :func:`sampler_rows`, with whether lower is better. All in
#: pixel space (``_x``); NDB/K on the training images' k-means bins.
SAMPLER_METRICS = {"mmd_x": True, "kid_x": True, "precision_x": False, "recall_x": False,
                   "prd_f8_x": False, "prd_f1_8_x": False, "ndb_over_k": True}
SAMPLER_HEADERS = ("model", "sampler", "MMD_x", "KID_x", "precision_x", "recall_x",
                   "PRD F8_x", "PRD F1/8_x", "NDB/K")


def sampler_rows(results: dict, samplers: Sequence[str],
                 labels: dict[str, str] | None = None) -> list[list]:
    """One row per (model, ex-post sampler): every metric of :data:`SAMPLER_METRICS`."""
    labels = labels or {}
    rows = []
    for model in results["models"].values():
        for sampler in samplers:
            scores = model["columns"].get(sampler)
            if scores is None:
                continue
            rows.append([model["label"], labels.get(sampler, sampler),
                         *[scores.get(k) for k in SAMPLER_METRICS]])
    return rows


def sampler_wins(models: dict[str, dict], samplers: Sequence[str],
                 names: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """For each metric of :data:`SAMPLER_METRICS`: how many of the models (``names``, default
    all) score best with each sampler (ties go to the first in ``samplers``)."""
    out: dict[str, dict[str, int]] = {}
    for metric, lower in SAMPLER_METRICS.items():
        counts = dict.fromkeys(samplers, 0)
        for name in names if names is not None else list(models):
            cols = models[name]["columns"]
            scored = [(cols[s][metric], i, s) for i, s in enumerate(samplers)
                      if s in cols and cols[s].get(metric) is not None]
            if scored:
                best = min(scored) if lower else min((-v, i, s) for v, i, s in scored)
                counts[best[2]] += 1
        out[metric] = counts
    return out


def fid_note(results: dict) -> str:
    """A line above a table whose FID columns are empty for want of the Inception weights."""
    return "" if results["fid"] == "computed" else f"FID: {NA_FID}\n\n"
