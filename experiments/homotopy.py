"""The homotopy view of learned gamma, controlled (THEORY.md section 3; 004 section 5).

Claim: learning the decoder variance gamma (a homotopy from large to small gamma) is better than
fixing gamma at its small final value gamma* from the start: near the balanced optimum the
energy's gradient grows like 1/gamma, so a run at gamma* from the first step starts with a huge
gradient and can settle away from balance. "Better" is measured two ways: learned gamma reaches
balance (active dimensions = r, on data of known rank r) where fixed gamma* does not, or reaches
a lower MMD(q(z), N(0, I)) at a similar reconstruction error.

Design, per dataset and seed: ``learned`` trains a Gaussian VAE with learnable gamma from 1 and
records its final gamma*; ``fixed`` retrains the same network from the same initial weights with
gamma fixed at gamma* (read from ``learned``'s saved results); ``floor`` retrains it with gamma
learnable from 1 but floored at ``floor_factor * gamma*`` (``GammaConfig.gamma_min``): does a
floor change where gamma ends and what balance is reached? Each run logs ``||dL/dz||`` at every
step (``balance.tracing``); on the test points it reports reconstruction error, MMD^2 between
q(z) and N(0, I), active units (Burda, 0.01) and KL (``balance.evaluation.vae``).

Data: ``subspace`` (an r = 2 affine subspace of R^12), ``manifold`` (an r = 4 nonlinear manifold
in R^24), both with noise 0.01 (``balance.data.splits.VectorData``), and MNIST (quick subset,
r unknown). Model: ``balance.models.registry.MLPVAESpec`` (default arm ``affine``: a plain MLP
decoder plus the affine skip, the decoder Theorem 2 recommends).

Usage: ``python experiments/homotopy.py [--preset quick|smoke] [--datasets subspace manifold]
[--engine ray]``. Run folder (default ``runs/homotopy/<preset>``):
``<dataset>/seed<s>/{learned,fixed,floor}/`` (one training run each), ``results.json``,
``table.md``. Re-running resumes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # python experiments/homotopy.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.data.splits import VectorData, load_vector_data
from balance.engine import EngineConfig, run_cells
from balance.evaluation.vae import prior_match_metrics
from balance.experiment import run_script
from balance.models.registry import MLPVAESpec, build, save_model_record
from balance.models.vae import GammaConfig
from balance.reporting import format_number, markdown_table
from balance.runs import (
    RESULTS_FILE,
    Stage,
    prepare_run,
    read_json,
    results_header,
    run_identity,
    write_json,
)
from balance.seeds import MeanSE
from balance.threads import limit_threads
from balance.tracing import StepTrace, trace_summary
from balance.train import CHECKPOINT_FILE, TrainConfig, train

NAME = "homotopy"
PRESETS = ("quick", "smoke")
SEED_FIELDS = ("seed_offset",)
FLAGS = ("datasets",)
DATA_ROOT_FIELD = "mnist.data.root"
DATASETS = ("subspace", "manifold", "mnist")
ARMS = ("learned", "fixed", "floor")

# Thresholds of the checks (recorded in results.json), fixed before any outcome was seen.
SIMILAR_REC = 0.2  # |mean rec fixed - mean rec learned| / mean rec learned at most this
LARGER_GRAD = 10.0  # early ||dL/dz||: fixed / learned at least this: "much larger"
CONVERGED = 0.1  # |log gamma(end) - log gamma(80% of the epochs)| below this: gamma levelled off


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset: its data, the model (``latent_dim`` is kappa; ``gamma`` the learned run's
    initial value and lr) and the optimisation of every arm."""

    data: VectorData = VectorData()
    model: MLPVAESpec = MLPVAESpec(latent_dim=8)
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class EvalConfig:
    """Test metrics: batch size, active-unit threshold, samples for the MMD, the first steps
    summarised as the early gradient, seed of the posterior draws."""

    batch_size: int = 500
    au_threshold: float = 0.01
    mmd_samples: int | None = 2000
    summary_steps: int = 50
    trace_points: int = 300
    seed: int = 1234


@dataclass(frozen=True)
class Config:
    preset: str = "quick"
    datasets: tuple[str, ...] = DATASETS
    subspace: DatasetConfig = DatasetConfig()
    manifold: DatasetConfig = DatasetConfig()
    mnist: DatasetConfig = DatasetConfig()
    seeds: int = 10
    seed_offset: int = 0
    floor_factor: float = 10.0
    eval: EvalConfig = EvalConfig()
    device: str = "cpu"
    threads: int | None = 1
    engine: EngineConfig = EngineConfig()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; choose from {DATASETS}")
        if not self.floor_factor > 1:
            raise ValueError(f"floor_factor must be > 1 (a floor above gamma*), got "
                             f"{self.floor_factor}")


def preset(name: str) -> Config:
    """``quick``: 10 seeds x 3 datasets x 3 arms, one thread per run (``--engine ray`` runs
    a run per core);
    ``smoke``: seconds, for the tests."""
    # Adam moves log gamma by about its lr per step: gamma lr 1e-2 lets gamma travel from 1 to
    # its final value within a few hundred steps, so the learned run levels off in budget.
    fast_gamma = GammaConfig(init=1.0, lr=1e-2)
    vector = dict(width=64, encoder_depth=3, decoder_blocks=2, arm="affine", gamma=fast_gamma)
    if name == "quick":
        # Long enough for the learned gamma to level off near the noise variance (1e-4).
        synthetic = TrainConfig(epochs=250, batch_size=100, lr=1e-3)
        return Config(
            preset=name,
            subspace=DatasetConfig(VectorData("subspace", d=12, r=2, n_train=2000, n_test=500),
                                   MLPVAESpec(latent_dim=8, **vector), synthetic),
            manifold=DatasetConfig(VectorData("manifold", d=24, r=4, n_train=2000, n_test=500),
                                   MLPVAESpec(latent_dim=12, **vector), synthetic),
            mnist=DatasetConfig(VectorData("mnist", train_limit=3000, test_limit=1000),
                                MLPVAESpec(latent_dim=32, **{**vector, "width": 256}),
                                TrainConfig(epochs=60, batch_size=100, lr=1e-3)),
        )
    if name == "smoke":
        small = dict(width=16, encoder_depth=2, decoder_blocks=1, arm="affine", gamma=fast_gamma)
        tiny = TrainConfig(epochs=2, batch_size=32, lr=1e-3)
        return Config(
            preset=name, datasets=("subspace", "mnist"), seeds=2,
            subspace=DatasetConfig(VectorData("subspace", d=6, r=2, n_train=64, n_test=32),
                                   MLPVAESpec(latent_dim=4, **small), tiny),
            mnist=DatasetConfig(VectorData("mnist", train_limit=64, test_limit=32),
                                MLPVAESpec(latent_dim=4, **small), tiny),
            eval=EvalConfig(batch_size=16, summary_steps=2, trace_points=10),
        )
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


# --------------------------------------------------------------------------------------- run


def run_arm(folder: Path, config: Config, dataset: str, seed: int, arm: str, gamma: GammaConfig,
            data: tuple) -> dict:
    """Train one arm from the seed's initial weights and evaluate it; skipped when done."""
    ds = getattr(config, dataset)
    spec = replace(ds.model, gamma=gamma)
    train_cfg = replace(ds.train, seed=seed, device=config.device, progress=False)
    stage = Stage(folder, {"experiment": NAME, "dataset": dataset, "arm": arm, "seed": seed,
                           "data": replace(ds.data, root=None), "model": spec, "train": train_cfg,
                           "eval": config.eval}, config.device)
    if stage.done is not None:
        return stage.done
    train_x, test_x, info = data
    model = build(spec, info["shape"], seed)  # the same initial weights for every arm
    save_model_record(folder, spec, info["shape"], seed)
    trace = StepTrace(folder / "grad_z_norm.jsonl", "grad_z_norm", folder / CHECKPOINT_FILE)
    from balance.objectives import loss

    history = train(model, trace.wrap(loss("elbo")), train_x, train_cfg, run_dir=folder,
                    eval_fn=trace.flush)
    e = config.eval
    metrics = prior_match_metrics(model, test_x, batch_size=e.batch_size,
                                  au_threshold=e.au_threshold, mmd_samples=e.mmd_samples,
                                  seed=e.seed)
    gammas = [h["gamma"] for h in history]
    mark = gammas[max(0, int(0.8 * len(gammas)) - 1)] if gammas else model.gamma
    return stage.save({
        "dataset": dataset, "arm": arm, "seed": seed, "r": info["r"],
        "gamma_init": gamma.init, "gamma_learnable": gamma.learnable,
        "gamma_min": gamma.gamma_min, "gamma_final": model.gamma,
        "gamma_levelled_off": bool(abs(math.log(model.gamma / mark)) < CONVERGED),
        **metrics,
        "grad_z_norm": trace_summary(trace.read(), e.summary_steps, e.trace_points),
        "gamma_per_epoch": gammas,
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
    })


def run_seed(run_dir: Path, config: Config, dataset: str, seed: int) -> dict:
    """The three arms of one (dataset, seed): learned, then fixed and floor from its gamma*."""
    folder = run_dir / dataset / f"seed{seed}"
    ds = getattr(config, dataset)
    with limit_threads(config.threads):
        data = load_vector_data(ds.data)
        learned_gamma = replace(ds.model.gamma, learnable=True)
        out = {"learned": run_arm(folder / "learned", config, dataset, seed, "learned",
                                  learned_gamma, data)}
        # gamma* from the learned run's saved results (not from memory)
        star = read_json(folder / "learned" / RESULTS_FILE)["gamma_final"]
        out["fixed"] = run_arm(folder / "fixed", config, dataset, seed, "fixed",
                               replace(learned_gamma, init=star, learnable=False), data)
        floor_value = config.floor_factor * star  # above 1 only when gamma rose (tiny runs)
        floor = replace(learned_gamma, gamma_min=floor_value,
                        init=max(learned_gamma.init, 2 * floor_value))
        out["floor"] = run_arm(folder / "floor", config, dataset, seed, "floor", floor, data)
    return out


def _mean(values) -> MeanSE:
    return MeanSE.of([float(v) for v in values])


def dataset_checks(seeds: list[dict], r: int | None) -> dict:
    """What holds across the seeds of one dataset, with the numbers behind it."""
    arm = {a: [s[a] for s in seeds] for a in ARMS}
    rec = {a: _mean(run["rec"] for run in arm[a]) for a in ARMS}
    mmd_gap = _mean(f["mmd"] - learned["mmd"] for f, learned in zip(arm["fixed"], arm["learned"],
                                                                     strict=True))
    grad_ratio = _mean(f["grad_z_norm"]["early_mean"] / learned["grad_z_norm"]["early_mean"]
                       for f, learned in zip(arm["fixed"], arm["learned"], strict=True))
    rec_rel = abs(float(rec["fixed"]) - float(rec["learned"])) / float(rec["learned"])
    out = {
        "seeds": len(seeds),
        "learned_gamma_levelled_off": sum(run["gamma_levelled_off"] for run in arm["learned"]),
        "active": {a: _mean(run["active_units"] for run in arm[a]) for a in ARMS},
        "mmd": {a: _mean(run["mmd"] for run in arm[a]) for a in ARMS},
        "rec": rec,
        "gamma_final": {a: _mean(run["gamma_final"] for run in arm[a]) for a in ARMS},
        "mmd_fixed_minus_learned": mmd_gap,
        "early_grad_ratio_fixed_over_learned": grad_ratio,
        "rec_relative_difference": rec_rel,
        "similar_reconstruction": bool(rec_rel <= SIMILAR_REC),
        # paired over seeds (same initial weights): the gap exceeds two standard errors
        "lower_mmd_with_learned": bool(mmd_gap > 2 * mmd_gap.se and mmd_gap > 0),
        "larger_early_gradient_with_fixed": bool(grad_ratio >= LARGER_GRAD),
        "floor_over_learned_gamma": _mean(f["gamma_final"] / learned["gamma_final"]
                                          for f, learned in zip(arm["floor"], arm["learned"],
                                                                strict=True)),
    }
    balanced_learned = balanced_fixed = None
    if r is not None:
        balanced = {a: sum(run["active_units"] == r for run in arm[a]) for a in ARMS}
        out["balanced_seeds"] = balanced  # seeds with active = r
        balanced_learned, balanced_fixed = balanced["learned"], balanced["fixed"]
        out["balance_with_learned_not_fixed"] = bool(balanced_learned > balanced_fixed)
    out["claim_holds"] = bool(out.get("balance_with_learned_not_fixed", False)
                              or (out["lower_mmd_with_learned"]
                                  and out["similar_reconstruction"]))
    return out


def main(config: Config, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) every (dataset, seed) of ``config``; returns the combined results."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    identity = run_identity(config, drop=("datasets", "mnist.data.root"))
    prepare_run(run_dir, identity, device=config.device)
    seeds = range(config.seed_offset, config.seed_offset + config.seeds)
    cells = [(run_dir, config, d, s) for d in config.datasets for s in seeds]
    run_cells(run_seed, cells, config.engine, progress=progress,
              done=lambda cell: all((run_dir / cell[2] / f"seed{cell[3]}" / a / RESULTS_FILE)
                                    .is_file() for a in ARMS))
    per_dataset = {}
    for dataset in DATASETS:  # every finished dataset, from earlier invocations too
        found = [{a: read_json(run_dir / dataset / f"seed{s}" / a / RESULTS_FILE) for a in ARMS}
                 for s in seeds
                 if (run_dir / dataset / f"seed{s}" / ARMS[-1] / RESULTS_FILE).is_file()]
        if found:
            r = found[0]["learned"]["r"]
            per_dataset[dataset] = {"r": r, "runs": found, "checks": dataset_checks(found, r)}
    results = {
        **results_header(NAME, config),
        "config": identity,
        "datasets": per_dataset,
        "checks": {f"{d}_{k}": v for d, per in per_dataset.items()
                   for k, v in per["checks"].items()
                   if k in ("claim_holds", "balance_with_learned_not_fixed",
                            "lower_mmd_with_learned", "similar_reconstruction",
                            "larger_early_gradient_with_fixed")},
        "thresholds": {"similar_rec": SIMILAR_REC, "larger_grad": LARGER_GRAD,
                       "converged": CONVERGED, "floor_factor": config.floor_factor},
        "wall_time_s": float(sum(run[a]["wall_time_s"] for per in per_dataset.values()
                                 for run in per["runs"] for a in ARMS)),
    }
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


TABLE_HEADERS = ("data", "r", "arm", "seeds", "active (mean ± s.e.)", "active = r",
                 "MMD^2 q(z) vs N(0,I)", "rec. err.", "gamma final", "early ||dL/dz||")


def table_rows(results: dict) -> list[list]:
    rows = []
    for dataset, per in results["datasets"].items():
        c = per["checks"]
        for arm in ARMS:
            runs = [s[arm] for s in per["runs"]]
            balanced = c.get("balanced_seeds", {}).get(arm)
            rows.append([dataset, per["r"], arm, len(runs), c["active"][arm],
                         f"{balanced}/{len(runs)}" if balanced is not None else None,
                         c["mmd"][arm], c["rec"][arm], c["gamma_final"][arm],
                         _mean(run["grad_z_norm"]["early_mean"] for run in runs)])
    return rows


def report(results: dict) -> str:
    from balance.seeds import revive

    lines = []
    summary = ("seeds", "learned_gamma_levelled_off", "mmd_fixed_minus_learned",
               "lower_mmd_with_learned", "rec_relative_difference", "similar_reconstruction",
               "early_grad_ratio_fixed_over_learned", "larger_early_gradient_with_fixed",
               "floor_over_learned_gamma", "claim_holds")
    for dataset, per in results["datasets"].items():
        checks = revive(per["checks"])
        c = {k: format_number(checks[k]) for k in summary}
        lines.append(
            f"{dataset}: learned gamma levelled off in {c['learned_gamma_levelled_off']}/"
            f"{c['seeds']} seeds; MMD fixed - learned = {c['mmd_fixed_minus_learned']} (lower "
            f"with learned: {c['lower_mmd_with_learned']}); rec. differs by "
            f"{c['rec_relative_difference']} (similar: {c['similar_reconstruction']}); early "
            f"gradient fixed/learned = {c['early_grad_ratio_fixed_over_learned']} (>= "
            f"{LARGER_GRAD:g}: {c['larger_early_gradient_with_fixed']}); floor's gamma / "
            f"gamma* = {c['floor_over_learned_gamma']}; claim holds: {c['claim_holds']}")
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))],
                            None, results["wall_time_s"], lines=lines)


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
