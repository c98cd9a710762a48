"""E1: the kappa sweep (balanced-regularization paper, Table 1; EXPERIMENTS.md E1).

Claim: a Gaussian VAE with learnable decoder variance gamma on continuous MNIST switches off
the latent dimensions it does not need: as kappa grows, the number of active dimensions
saturates (about 20) well below kappa while the NLL keeps improving up to kappa = d = 784;
without skip connections the same deep model over-regularizes and switches every dimension
off (Theorem 2). "Both the skip connections and sufficiently large kappa are needed."

Model (``balance.models.registry.MLPVAESpec``): 6-layer MLP encoder, decoder of 3 residual
blocks of 2 layers. Arms (``balance.models.registry.ARMS``): ``residual`` (the paper's E1
decoder), ``residual_affine`` (plus the affine skip z -> x of eq. 5), ``affine`` (a plain MLP
plus the affine skip), ``none`` (a plain MLP of the same depth). Test metrics
(``balance.evaluation.vae``): reconstruction error, IWAE NLL (nats per image), active units
(Burda: ``Var_x(E_q[z_k]) >= 0.01``), KL and posterior variance per dimension, gamma.

Presets: ``quick`` (the main job, ``make sweep``: 6,000 images, kappa 5-100, 2 CPU cores),
``full`` (all 60,000/10,000 images, the paper's kappa grid, the residual and no-skip arms,
sized for 2 CPU cores), ``paper`` (the same with the paper's IWAE k = 5,000, for a GPU),
``manifold_quick`` (synthetic data on a nonlinear r = 4 manifold in R^24, where the active count
should approach r) and ``smoke`` / ``manifold_smoke`` (seconds, the tests).

Usage: ``python experiments/kappa_sweep.py [--preset full] [--arms none --kappas 50 100]
[--seeds 0 1 2] [--set train.epochs=50]``.

Run folder (default ``runs/kappa_sweep/<preset>``): ``<arm>/kappa<k>/`` per training run
(config, model.json, metrics.jsonl, checkpoint.pt, results.json), then ``results.json`` and
``table.md`` with every finished run and the paper's numbers. Re-running resumes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # python experiments/kappa_sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.data.splits import VectorData, load_vector_data
from balance.engine import EngineConfig, run_cells
from balance.evaluation.vae import VAEMetricsConfig, vae_test_metrics
from balance.experiment import run_script
from balance.models.registry import ARMS, MLPVAESpec, build, save_model_record
from balance.models.vae import GammaConfig
from balance.reporting import markdown_table
from balance.runs import (
    RESULTS_FILE,
    Stage,
    prepare_run,
    read_json,
    results_header,
    run_identity,
    write_json,
)
from balance.threads import limit_threads
from balance.train import TrainConfig, train

NAME = "kappa_sweep"
PRESETS = ("quick", "full", "paper", "manifold_quick", "manifold_paper", "smoke", "manifold_smoke")
SEED_FIELDS = ("train.seed",)
FLAGS = ("arms", "kappas")  # --arms none --kappas 50 100

#: EXPERIMENTS.md E1 (the paper's Table 1): kappa -> rec. err., NLL, # active (residual arm).
PAPER_TABLE1 = {
    50: {"rec": 4.98, "nll": -315.0, "active": 10},
    100: {"rec": 3.42, "nll": -580.0, "active": 15},
    200: {"rec": 2.74, "nll": -718.0, "active": 20},
    400: {"rec": 2.57, "nll": -743.0, "active": 22},
    784: {"rec": 2.78, "nll": -806.0, "active": 22},
}
PAPER_NOSKIP_ACTIVE = 0  # "all dimensions off" without skips
MAIN_ARM, NOSKIP_ARM = "residual", "none"

WELL_BELOW = 0.5  # active <= WELL_BELOW * kappa for every kappa >= 50 (MNIST) / > r (manifold)
SATURATION = 1.25  # active(largest kappa) <= SATURATION * active(second largest)
NEARLY_ALL_OFF = 1  # no-skip arm: at most this many active dimensions at every kappa
NEAR_R = 1  # manifold: |active - r| <= NEAR_R for every kappa >= r
STRONG = 0.1  # descriptive: dimensions with posterior-mean variance >= this


@dataclass(frozen=True)
class Config:
    """The sweep: ``model`` is the spec of every run (its ``latent_dim`` set to each kappa,
    its ``arm`` to each of ``arms``); ``engine`` where the runs train (``balance.engine``:
    here one after another, or Ray tasks, e.g. one per core with ``threads`` threads each)."""

    preset: str = "quick"
    data: VectorData = VectorData()
    kappas: tuple[int, ...] = (50, 100, 200, 400, 784)
    arms: tuple[str, ...] = (MAIN_ARM, NOSKIP_ARM)
    model: MLPVAESpec = MLPVAESpec(latent_dim=1)
    train: TrainConfig = TrainConfig()
    eval: VAEMetricsConfig = VAEMetricsConfig()
    device: str = "auto"
    threads: int | None = None
    engine: EngineConfig = EngineConfig()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {ARMS}")


def preset(name: str) -> Config:
    """The presets of the module docstring."""
    manifold = name.startswith("manifold")
    data = VectorData(dataset="manifold" if manifold else "mnist")
    if name in ("paper", "manifold_paper", "full"):
        # The paper gives neither widths nor a schedule (its supplement is not available).
        # full: width 256 and 100 epochs of 600 steps fit 10 runs in ~2.5 h on 2 CPU cores
        # (measured: 12 s per epoch per core at width 256, 26 s at 500); IWAE with k = 100 on
        # all 10,000 test images (k = 5,000 would take ~1.5 h per run on one core).
        full = name == "full"
        return Config(
            preset=name, data=replace(data, n_train=60_000, n_test=10_000),
            kappas=(2, 4, 8, 16, 24) if manifold else (50, 100, 200, 400, 784),
            model=MLPVAESpec(latent_dim=1, width=256 if full else 500),
            # paper (a GPU): the small MLP steps are launch-bound there, so the step is compiled
            # and TF32 allowed; on a CPU compile gives 1.04x (benchmarks/bench_compile.py).
            train=TrainConfig(epochs=100 if full else 300, batch_size=100, lr=1e-3,
                              lr_milestones=(50, 80) if full else (150, 250), lr_decay=0.5,
                              compile=not full, tf32=not full),
            eval=VAEMetricsConfig(iwae_k=100 if full else 5000, iwae_batch=100 if full else 20),
            device="cpu" if full else "auto", threads=1 if full else None,
        )
    # CPU presets: one thread per run (--engine ray runs one per core); Adam moves log gamma by
    # about its lr per step, so a short run needs gamma lr 1e-2 to reach gamma's small final
    # value.
    cpu = dict(preset=name, arms=ARMS, device="cpu", threads=1,
               eval=VAEMetricsConfig(iwae_k=100, iwae_limit=500, iwae_batch=100))
    fast_gamma = GammaConfig(lr=1e-2)
    if name == "manifold_quick":
        return Config(data=data, kappas=(2, 4, 8, 16, 24),
                      model=MLPVAESpec(latent_dim=1, width=128, gamma=fast_gamma),
                      train=TrainConfig(epochs=60, batch_size=100, lr=1e-3), **cpu)
    if name == "quick":
        # 6,000 random training images, 1,000 test images, width 256, 2,100 steps of 100.
        # After ~2,000 steps kappa = 100 is down to 12-15 active dimensions, while kappa =
        # 200 still has ~94 dimensions above 0.01: the quick grid stops at 100.
        return Config(data=replace(data, train_limit=6000, test_limit=1000),
                      kappas=(5, 10, 20, 50, 100),
                      model=MLPVAESpec(latent_dim=1, width=256, gamma=fast_gamma),
                      train=TrainConfig(epochs=35, batch_size=100, lr=1e-3), **cpu)
    if name in ("smoke", "manifold_smoke"):
        return Config(
            preset=name,
            data=replace(data, train_limit=64, test_limit=32, d=8, r=2, n_train=64, n_test=32),
            kappas=(2, 4) if manifold else (4, 8), arms=("residual_affine", NOSKIP_ARM),
            model=MLPVAESpec(latent_dim=1, width=16, encoder_depth=2, decoder_blocks=1,
                             gamma=fast_gamma),
            train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            eval=VAEMetricsConfig(iwae_k=4, iwae_batch=16, batch_size=16),
            device="cpu", threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")



def sweep_identity(config: Config) -> dict:
    """What defines the sweep's results (its config.json): the config without runtime fields,
    the arms and kappas of this invocation (each run checks its own) and the data root (MNIST
    files are md5-verified)."""
    return run_identity(config, drop=("arms", "kappas", "data.root"))


EPOCH_KEYS = ("epoch", "loss", "reconstruction", "latent", "squared_error", "gamma",
              "grad_z_norm", "time_s")


def run_cell(run_dir: Path, config: Config, arm: str, kappa: int,
             progress: bool = False) -> dict:
    """Train and evaluate one (arm, kappa) in ``run_dir/<arm>/kappa<k>`` (skipped if done)."""
    spec = replace(config.model, latent_dim=kappa, arm=arm)
    stage = Stage(run_dir / arm / f"kappa{kappa}",
                  {"experiment": NAME, "arm": arm, "kappa": kappa,
                   **sweep_identity(replace(config, model=spec))}, config.device)
    if stage.done is not None:
        return stage.done
    with limit_threads(config.threads):
        train_x, test_x, info = load_vector_data(config.data)
        model = build(spec, info["shape"], config.train.seed)
        save_model_record(stage.folder, spec, info["shape"], config.train.seed)
        from balance.objectives import loss

        train_cfg = replace(config.train, device=config.device, progress=progress)
        history = train(model, loss("elbo"), train_x, train_cfg, run_dir=stage.folder)
        metrics = vae_test_metrics(model, test_x, config.eval)
    return stage.save({
        "experiment": NAME, "arm": arm, "kappa": kappa, **metrics,
        "epochs": [{k: h.get(k) for k in EPOCH_KEYS} for h in history],
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
    })


def collect(run_dir: Path, kappas, arms=ARMS) -> dict[str, dict[str, dict]]:
    """Every finished (arm, kappa) in the run folder, from earlier invocations too."""
    found: dict[str, dict[str, dict]] = {}
    for arm in arms:
        for kappa in kappas:
            path = run_dir / arm / f"kappa{kappa}" / RESULTS_FILE
            if path.is_file():
                found.setdefault(arm, {})[str(kappa)] = read_json(path)
    return found


def direction_checks(runs: dict, dataset: str, r: int | None) -> dict:
    """The paper's claims as yes/no on the finished runs (left out where an arm is missing),
    with the numbers behind each in ``evidence``; with seeds (``balance.seeds.MeanSE``
    values), ``nll_improvement_beyond_spread`` says whether the NLL gain exceeds two combined
    standard errors."""
    from balance.reporting import format_number as f
    from balance.seeds import exceeds_spread

    checks: dict = {"thresholds": {"well_below": WELL_BELOW, "saturation": SATURATION,
                                   "nearly_all_off": NEARLY_ALL_OFF, "near_r": NEAR_R}}
    why: dict[str, str] = {}
    arm = MAIN_ARM if runs.get(MAIN_ARM) else "residual_affine"
    main = runs.get(arm) or {}
    if len(main) >= 2:
        ks = sorted(main, key=int)
        active = [main[k]["active"] for k in ks]
        nll = [main[k]["nll"] for k in ks]
        at = f"at kappa {'/'.join(ks)} ({arm})"
        floor_k = 50 if dataset == "mnist" else (r or 0) + 1
        checks["active_well_below_kappa"] = all(
            a <= WELL_BELOW * int(k) for a, k in zip(active, ks, strict=True) if int(k) >= floor_k)
        checks["active_saturates"] = bool(active[-1] <= SATURATION * max(active[-2], 1))
        why["active_well_below_kappa"] = why["active_saturates"] = \
            f"active {'/'.join(f(a) for a in active)} {at}"
        checks["nll_improves_with_kappa"] = bool(nll[-1] < nll[0])
        checks["nll_monotone"] = all(b <= a for a, b in zip(nll, nll[1:], strict=False))
        why["nll_improves_with_kappa"] = why["nll_monotone"] = \
            f"NLL {'/'.join(f(v) for v in nll)} {at}"
        spread = exceeds_spread(nll[0], nll[-1])
        if spread is not None:  # an improvement, and larger than the seed-to-seed spread
            checks["nll_improvement_beyond_spread"] = bool(nll[-1] < nll[0] and spread)
        if dataset == "manifold" and r is not None:
            checks["active_near_r"] = all(
                abs(a - r) <= NEAR_R for a, k in zip(active, ks, strict=True) if int(k) >= r)
            why["active_near_r"] = f"r = {r}; " + why["active_saturates"]
    noskip = runs.get(NOSKIP_ARM, {})
    if noskip:
        ks = sorted(noskip, key=int)
        checks["noskip_nearly_all_off"] = all(
            noskip[k]["active"] <= NEARLY_ALL_OFF for k in ks)
        why["noskip_nearly_all_off"] = (f"active {'/'.join(f(noskip[k]['active']) for k in ks)} "
                                        f"at kappa {'/'.join(ks)} without skips")
    for other, per in runs.items():
        shared = sorted(set(per) & set(noskip), key=int) if other != NOSKIP_ARM else []
        if shared:
            checks[f"{other}_nll_beats_noskip"] = all(
                per[k]["nll"] < noskip[k]["nll"] for k in shared)
    checks["evidence"] = why
    return checks


def recheck(results: dict) -> dict:
    """The direction checks on results over seeds (``balance.experiment.run_seeds``)."""
    return direction_checks(results["runs"], results["data"]["dataset"], results["data"]["r"])


def main(config: Config, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) every (arm, kappa) of ``config``; returns (and saves) the results of
    every finished run in the folder with the direction checks and the table."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, sweep_identity(config), device=config.device)
    order = sorted(((a, k) for a in config.arms for k in config.kappas),
                   key=lambda ak: -ak[1])  # largest kappa first: they take longest
    local = config.engine.name == "local"
    run_cells(run_cell, [(run_dir, config, a, k, progress and local) for a, k in order],
              config.engine, progress=progress and not local,
              done=lambda cell: (run_dir / cell[2] / f"kappa{cell[3]}" / RESULTS_FILE).is_file())
    runs = collect(run_dir, sorted(set(config.kappas) | set(PAPER_TABLE1)))
    r = config.data.r if config.data.dataset == "manifold" else None
    results = {
        **results_header(NAME, config),
        "data": {**sweep_identity(config)["data"], "r": r},
        "config": sweep_identity(config),
        "kappas": list(config.kappas),
        "runs": runs,
        "checks": direction_checks(runs, config.data.dataset, r),
        "paper": {"residual": {str(k): v for k, v in PAPER_TABLE1.items()},
                  "noskip_active": PAPER_NOSKIP_ACTIVE},
        "wall_time_s": float(sum(run["wall_time_s"] for per in runs.values()
                                 for run in per.values())),
    }
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


TABLE_HEADERS = ("arm", "kappa", "rec. err. (ours)", "rec. err. (paper)", "NLL (ours)",
                 "NLL (paper)", "# active (ours)", "# active (paper)", f"# var >= {STRONG}",
                 "gamma", "train s")


def table_rows(results: dict) -> list[list]:
    """Table 1, arms x kappa: ours beside the paper's (MNIST; the paper's numbers are for the
    residual decoder, and for no skips only "all off")."""
    mnist = results["data"]["dataset"] == "mnist"
    paper = results.get("paper", {}).get("residual", {}) if mnist else {}
    rows = []
    for arm in ARMS:
        for kappa, run in sorted(results["runs"].get(arm, {}).items(), key=lambda kv: int(kv[0])):
            ref = paper.get(kappa, {}) if arm == MAIN_ARM else {}
            ref_active = f"{PAPER_NOSKIP_ACTIVE} (all off)" if mnist and arm == NOSKIP_ARM \
                else ref.get("active")
            strong = sum(v >= STRONG for v in run["latent_variances"])
            rows.append([arm, int(kappa), run["rec"], ref.get("rec"), run["nll"], ref.get("nll"),
                         run["active"], ref_active, strong, run["gamma"], run["train_time_s"]])
    return rows


def report(results: dict) -> str:
    """Table 1 and each claim: yes/no with the numbers behind it."""
    checks = dict(results["checks"])
    why = checks.pop("evidence", {})
    lines = [f"{k}: {reporting.format_number(v)}" + (f" ({why[k]})" if k in why else "")
             for k, v in checks.items() if k != "thresholds"]
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))],
                            wall_time_s=results["wall_time_s"], lines=lines)


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
