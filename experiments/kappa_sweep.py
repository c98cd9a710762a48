"""E1: the kappa sweep (balanced-regularization paper, Table 1; EXPERIMENTS.md E1).

A Gaussian VAE with a learnable decoder variance gamma on continuous MNIST (pixels in [0, 1]):
MLP encoder (the paper's 6 layers), residual MLP decoder (3 blocks of 2 layers) with the affine
skip z -> x of eq. (5). For each latent size kappa (the paper's grid 50-784 in the paper preset;
5-100 in the quick preset, see ``preset``) it reports, on test images:

- rec. err.: ``||x - mu_x(mu_z(x))||^2`` per image (squared [0, 1] pixel units, summed);
- NLL: importance-weighted estimate of ``-log p(x)`` with k samples (nats per image; the
  data are continuous, so this is a density and can be negative);
- # active: latent dimensions with ``Var_x(E_q[z_k]) >= 0.01`` (Burda et al. 2015).

Variants: ``skip`` (residual decoder + affine skip, the paper's model) and ``noskip`` (the same
depth as a plain MLP: no identity skips and no affine skip), the ablation whose deep decoder
over-regularises (Theorem 2). ``--dataset manifold`` runs the same sweep on synthetic data on
a nonlinear r-dimensional manifold (``balance.data.synthetic.nonlinear_manifold``), where the
number of active dimensions should approach the true r.

Claims checked in direction (a quick run cannot match the paper's numbers): active dimensions
saturate well below kappa; the NLL improves with kappa; without skips (nearly) every dimension
is switched off; on the manifold the active count approaches r.

Usage::

    python experiments/kappa_sweep.py                     # quick preset, skip and no-skip
    python experiments/kappa_sweep.py --no-skip           # the ablation only
    python experiments/kappa_sweep.py --skip-only         # the paper's model only
    python experiments/kappa_sweep.py --dataset manifold
    python experiments/kappa_sweep.py --preset paper      # full MNIST, long schedule (GPU)
    python paper_figures/kappa_sweep.py runs/kappa_sweep/quick_mnist

Run folder (default ``runs/kappa_sweep/<preset>_<dataset>``)::

    config.json, command.txt, environment.json   the sweep
    <variant>/kappa<k>/                          one training run per kappa (config, metrics.jsonl,
                                                 checkpoint.pt, results.json when finished)
    results.json, table.md                       every finished kappa, the paper's numbers beside

Re-running a command resumes it: finished kappas are skipped, an interrupted run continues
from its last epoch.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

try:  # imported as part of the repository (tests, python -m)
    from experiments import _common as common
except ImportError:  # run as a script: experiments/ is on sys.path
    import _common as common

from balance.reporting import markdown_table
from balance.runs import RESULTS_FILE, is_complete, prepare_run, seed_everything, write_json
from balance.threads import limit_threads
from balance.train import TrainConfig, train

NAME = "kappa_sweep"
DEFAULT_RUN_ROOT = Path("runs") / NAME
VARIANTS = ("skip", "noskip")
DATASETS = ("mnist", "manifold")
MNIST_SHAPE = (1, 28, 28)

#: EXPERIMENTS.md E1 (the paper's Table 1): kappa -> (rec. err., NLL, # active), with skips.
PAPER_TABLE1 = {
    50: {"rec": 4.98, "nll": -315.0, "active": 10},
    100: {"rec": 3.42, "nll": -580.0, "active": 15},
    200: {"rec": 2.74, "nll": -718.0, "active": 20},
    400: {"rec": 2.57, "nll": -743.0, "active": 22},
    784: {"rec": 2.78, "nll": -806.0, "active": 22},
}
#: The paper's claim for the ablation: every dimension switched off.
PAPER_NOSKIP_ACTIVE = 0

# Direction checks (recorded in results.json).
WELL_BELOW = 0.5  # active <= WELL_BELOW * kappa for every kappa >= 50 (MNIST) / > r (manifold)
SATURATION = 1.25  # active(largest kappa) <= SATURATION * active(second largest)
NEARLY_ALL_OFF = 2  # no-skip: at most this many active dimensions at every kappa
NEAR_R = 1  # manifold: |active - r| <= NEAR_R for every kappa >= r
# Descriptive only (no check): dimensions with a posterior-mean variance of at least this, which
# separates strongly used dimensions from the tail just above Burda's 0.01.
STRONG = 0.1


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class DataConfig:
    """Which data. MNIST: ``train_limit`` / ``test_limit`` random images of the official splits
    (None: all), drawn with ``seed``. Manifold: ``n_train`` + ``n_test`` points of
    ``nonlinear_manifold(d, r, noise)`` from ``seed``."""

    dataset: str = "mnist"
    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    d: int = 24
    r: int = 4
    n_train: int = 4000
    n_test: int = 1000
    noise: float = 0.01


@dataclass(frozen=True)
class NetConfig:
    """Encoder: ``encoder_depth`` hidden layers of ``width`` (+ the output layer). Decoder:
    ``decoder_blocks`` residual blocks of two layers (variant ``skip``; plus the affine skip) or
    the same number of layers as a plain MLP (variant ``noskip``). Gamma starts at
    ``gamma_init``; ``gamma_min`` an optional smooth floor."""

    width: int = 500
    encoder_depth: int = 5
    decoder_blocks: int = 3
    activation: str = "relu"
    gamma_init: float = 1.0
    gamma_min: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Test metrics: IWAE samples ``iwae_k`` on the first ``iwae_limit`` test images (None:
    all), batch sizes, the active-unit threshold and the noise seed."""

    iwae_k: int = 5000
    iwae_limit: int | None = None
    iwae_batch: int = 20
    batch_size: int = 1000
    au_threshold: float = 0.01
    seed: int = 1234


@dataclass(frozen=True)
class Config:
    """The sweep. ``gamma_lr``: Adam's learning rate for log gamma (None: ``train.lr``); a
    short run needs a larger one for gamma to travel from ``gamma_init`` to its small final
    value (Adam moves log gamma by about ``lr`` per step). ``workers``: runs trained at once
    in separate processes (CPU: one per core, each with ``threads`` threads)."""

    preset: str = "quick"
    data: DataConfig = DataConfig()
    kappas: tuple[int, ...] = (50, 100, 200, 400, 784)
    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig()
    gamma_lr: float | None = None
    eval: EvalConfig = EvalConfig()
    variants: tuple[str, ...] = VARIANTS
    device: str = "auto"
    threads: int | None = None
    workers: int = 1


def preset(name: str, dataset: str = "mnist") -> Config:
    """``paper`` (full MNIST, the paper's architecture and kappa grid, a long schedule; for a
    GPU), ``quick`` (2 CPU cores, <= 15 minutes for both variants; kappa <= 100, see below)
    or ``smoke`` (seconds, for the tests)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    manifold = dataset == "manifold"
    if name == "paper":
        # Widths and epochs are not in the paper: 500 units, 300 epochs, lr halved twice.
        data = DataConfig(dataset=dataset, n_train=60_000, n_test=10_000)
        return Config(
            preset=name,
            data=data,
            kappas=(2, 4, 8, 16, 24) if manifold else (50, 100, 200, 400, 784),
            net=NetConfig(width=500),
            train=TrainConfig(epochs=300, batch_size=100, lr=1e-3, lr_milestones=(150, 250),
                              lr_decay=0.5),
            eval=EvalConfig(iwae_k=5000, iwae_batch=20),
            device="auto",
        )
    if name == "quick":
        # Two CPU cores: IWAE with k = 100 on 500 test points, two runs at a time in separate
        # single-threaded processes.
        cpu = dict(preset=name, gamma_lr=1e-2, device="cpu", threads=1, workers=2,
                   eval=EvalConfig(iwae_k=100, iwae_limit=500, iwae_batch=100))
        if manifold:
            return Config(data=DataConfig(dataset=dataset, n_train=4000, n_test=1000),
                          kappas=(2, 4, 8, 16, 24), net=NetConfig(width=128),
                          train=TrainConfig(epochs=60, batch_size=100, lr=1e-3), **cpu)
        # <= 15 minutes for both variants (measured: 6 minutes on a shared 2-core machine):
        # 6,000 random training images, 1,000 test images, width 256, 2,100 steps of 100.
        # The balanced state (unused
        # dimensions switched off) takes longer to reach as kappa grows: measured with these
        # settings, kappa = 100 is down to 12-15 active dimensions after ~2,000 steps, while
        # after 1,800 steps kappa = 200 still has 94 dimensions with variance >= 0.01 (15 above
        # 0.05) and kappa = 784 all 784 (395 above 0.05). The quick grid therefore stops at 100;
        # the paper preset runs the paper's grid.
        return Config(data=DataConfig(dataset=dataset, train_limit=6000, test_limit=1000),
                      kappas=(5, 10, 20, 50, 100), net=NetConfig(width=256),
                      train=TrainConfig(epochs=35, batch_size=100, lr=1e-3), **cpu)
    if name == "smoke":
        data = DataConfig(dataset=dataset, train_limit=64, test_limit=32, d=8, r=2, n_train=64,
                          n_test=32)
        return Config(
            preset=name,
            data=data,
            kappas=(2, 4) if manifold else (4, 8),
            net=NetConfig(width=16, encoder_depth=2, decoder_blocks=1),
            train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            gamma_lr=1e-2,
            eval=EvalConfig(iwae_k=4, iwae_batch=16, batch_size=16),
            device="cpu",
            threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose quick, paper or smoke")


def sweep_identity(config: Config) -> dict:
    """What defines the sweep's results (saved as the run folder's config.json): the run
    identity (``_common.run_identity``: no device, progress, threads or workers) without the
    variants run by this invocation and the data root (MNIST files are md5-verified: where
    they are does not change the results)."""
    identity = common.run_identity(config)
    identity.pop("variants")
    identity["data"].pop("root")
    return identity


# -------------------------------------------------------------------------------------- data


def check_images(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """Refuse data that would train silently into nonsense: wrong per-sample shape, non-float
    values, NaN or infinities (``ValueError`` naming the first bad sample)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{what}: expected a float tensor, got {type(x).__name__}")
    if x.dim() < 2 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] == 0:
        raise ValueError(
            f"{what}: expected samples of shape {tuple(shape)} (a tensor [N, "
            f"{', '.join(map(str, shape))}]), got {tuple(x.shape)}"
        )
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{what}: {int(bad.sum())} sample(s) hold NaN or infinite values, first at index "
            f"{first}"
        )
    return x


def load_data(data: DataConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(train, test, info)``: float32 tensors ``[N, *shape]`` and a description."""
    generator = torch.Generator().manual_seed(data.seed)
    if data.dataset == "mnist":
        from balance.data.mnist import load_mnist

        train_x, _ = load_mnist("train", root=data.root)
        test_x, _ = load_mnist("test", root=data.root)
        train_x = common.random_subset(check_images(train_x, MNIST_SHAPE, "MNIST train"),
                                       data.train_limit, generator)
        test_x = common.random_subset(check_images(test_x, MNIST_SHAPE, "MNIST test"),
                                      data.test_limit, generator)
        info = {"dataset": "mnist", "shape": list(MNIST_SHAPE), "r": None}
    elif data.dataset == "manifold":
        from balance.data.synthetic import nonlinear_manifold

        points = nonlinear_manifold(data.n_train + data.n_test, data.d, data.r,
                                    generator=generator, noise=data.noise)
        x = check_images(points.x.float(), (data.d,), "manifold data")
        train_x, test_x = x[: data.n_train], x[data.n_train:]
        info = {"dataset": "manifold", "shape": [data.d], "r": data.r, "noise": data.noise}
    else:
        raise ValueError(f"unknown dataset {data.dataset!r}; choose one of {DATASETS}")
    info.update(n_train=int(train_x.shape[0]), n_test=int(test_x.shape[0]))
    return train_x.contiguous(), test_x.contiguous(), info


# ------------------------------------------------------------------------------------- model


def build_vae(net: NetConfig, shape: tuple[int, ...], kappa: int, variant: str, seed: int):
    """The Gaussian VAE of one run; weights from ``seed``."""
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
    from balance.models.vae import GammaConfig, GaussianVAE

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    seed_everything(seed)
    encoder = MLPEncoder(MLPEncoderConfig(shape, kappa, width=net.width,
                                          depth=net.encoder_depth, activation=net.activation))
    if variant == "skip":
        dec_cfg = MLPDecoderConfig(shape, kappa, width=net.width, depth=net.decoder_blocks,
                                   residual=True, affine_skip=True, activation=net.activation)
    else:  # the same number of linear layers, no identity skip, no affine skip
        dec_cfg = MLPDecoderConfig(shape, kappa, width=net.width,
                                   depth=2 * net.decoder_blocks + 1, residual=False,
                                   affine_skip=False, activation=net.activation)
    gamma = GammaConfig(init=net.gamma_init, gamma_min=net.gamma_min)
    return GaussianVAE(encoder, MLPDecoder(dec_cfg), gamma)


# ---------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(model, test_x: torch.Tensor, cfg: EvalConfig) -> dict:
    """Test rec. err., IWAE NLL, negative ELBO, active units, KL per dimension."""
    from balance.metrics.active_units import active_units, posterior_means
    from balance.metrics.iwae import iwae_nll
    from balance.metrics.reconstruction import module_device, reconstruction_error
    from balance.objectives.elbo import elbo_terms, nats_to_bits_per_dim

    model.eval()
    mu = posterior_means(model, test_x, batch_size=cfg.batch_size)
    count, variances = active_units(mu, cfg.au_threshold)
    rec = reconstruction_error(model, test_x, batch_size=cfg.batch_size)
    iwae_x = test_x[: cfg.iwae_limit] if cfg.iwae_limit else test_x
    generator = torch.Generator().manual_seed(cfg.seed)
    nll = iwae_nll(model, iwae_x, cfg.iwae_k, generator=generator, batch_size=cfg.iwae_batch)
    device = module_device(model)
    neg_elbo, kl = [], []
    for start in range(0, test_x.shape[0], cfg.batch_size):
        xb = test_x[start : start + cfg.batch_size].to(device)
        out = model(xb, generator=generator if device.type == "cpu" else None)
        terms = elbo_terms(xb, out)
        neg_elbo.append(terms.negative_elbo.cpu())
        kl.append((0.5 * (out.mu_z.square() + out.logvar_z.exp() - 1 - out.logvar_z)).cpu())
    neg_elbo = torch.cat(neg_elbo).double()
    kl_dims = torch.cat(kl).double().mean(0)
    d = test_x[0].numel()
    return {
        "n_test": int(test_x.shape[0]),
        "rec": float(rec.mean()),
        "rec_se": float(rec.std() / math.sqrt(rec.numel())),
        "nll": float(nll.mean()),
        "nll_se": float(nll.std() / math.sqrt(nll.numel())),
        "nll_bits_per_dim": float(nats_to_bits_per_dim(float(nll.mean()), d)),
        "iwae_k": cfg.iwae_k,
        "n_iwae": int(nll.numel()),
        "neg_elbo": float(neg_elbo.mean()),
        "active": count,
        "latent_variances": variances.tolist(),
        "kl_per_dim": kl_dims.tolist(),
        "gamma": model.gamma,
    }


# --------------------------------------------------------------------------------------- run


def run_one(folder: Path, config: Config, variant: str, kappa: int, data, info: dict,
            progress: bool) -> dict:
    """Train and evaluate one (variant, kappa); returns the saved results (skipped if done)."""
    done = common.stage_done(folder)
    if done is not None:
        return done
    from balance.objectives.elbo import vae_loss

    timer = common.Timer()
    spec = {"experiment": NAME, "variant": variant, "kappa": kappa,
            **sweep_identity(replace(config, kappas=(kappa,)))}
    common.prepare(folder, spec, config.device)
    train_x, test_x = data
    shape = tuple(info["shape"])
    model = build_vae(config.net, shape, kappa, variant, config.train.seed)
    train_cfg = replace(config.train, device=config.device, progress=progress)
    history = train(model, vae_loss, train_x, train_cfg, run_dir=folder,
                    optimizer_fn=common.gamma_adam(model, train_cfg, config.gamma_lr))
    metrics = evaluate(model, test_x, config.eval)
    keys = ("epoch", "loss", "reconstruction", "kl", "squared_error", "gamma", "grad_z_norm",
            "time_s")
    results = {
        "experiment": NAME,
        "variant": variant,
        "kappa": kappa,
        **metrics,
        "epochs": [{k: h.get(k) for k in keys} for h in history],
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
        "wall_time_s": timer(),
    }
    return common.save_stage(folder, results)


def _run_in_worker(folder: Path, config: Config, variant: str, kappa: int) -> str:
    """One (variant, kappa) in a worker process: loads the data itself, no progress bars."""
    with limit_threads(config.threads):
        train_x, test_x, info = load_data(config.data)
        run_one(folder, config, variant, kappa, (train_x, test_x), info, progress=False)
    return f"{variant} kappa={kappa}"


def _run_parallel(run_dir: Path, config: Config, todo: list[tuple[str, int]]) -> None:
    """The unfinished runs over ``config.workers`` processes, largest kappa first (they take
    longest); an error in any run is raised here once the others have stopped."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(todo, key=lambda vk: -vk[1])
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
        futures = [pool.submit(_run_in_worker, run_dir / v / f"kappa{k}", config, v, k)
                   for v, k in order]
        for future in as_completed(futures):
            print(f"finished {future.result()}", flush=True)


def _collect(run_dir: Path, kappas: tuple[int, ...]) -> dict[str, dict[int, dict]]:
    """Every finished (variant, kappa) in the run folder, from earlier invocations too."""
    found: dict[str, dict[int, dict]] = {}
    for variant in VARIANTS:
        for kappa in kappas:
            done = common.stage_done(run_dir / variant / f"kappa{kappa}")
            if done is not None:
                found.setdefault(variant, {})[kappa] = done
    return found


def direction_checks(runs: dict[str, dict[int, dict]], dataset: str, r: int | None) -> dict:
    """The paper's claims, as yes/no from the finished runs (None where a variant is missing)."""
    checks: dict = {"thresholds": {"well_below": WELL_BELOW, "saturation": SATURATION,
                                   "nearly_all_off": NEARLY_ALL_OFF, "near_r": NEAR_R}}
    skip = runs.get("skip", {})
    if len(skip) >= 2:
        ks = sorted(skip)
        active = [skip[k]["active"] for k in ks]
        nll = [skip[k]["nll"] for k in ks]
        floor_k = 50 if dataset == "mnist" else (r or 0) + 1
        checks["active_well_below_kappa"] = all(
            a <= WELL_BELOW * k for a, k in zip(active, ks, strict=True) if k >= floor_k
        )
        checks["active_saturates"] = active[-1] <= SATURATION * max(active[-2], 1)
        checks["nll_improves_with_kappa"] = nll[-1] < nll[0]
        checks["nll_monotone"] = all(b <= a for a, b in zip(nll, nll[1:], strict=False))
        if dataset == "manifold" and r is not None:
            checks["active_near_r"] = all(
                abs(a - r) <= NEAR_R for a, k in zip(active, ks, strict=True) if k >= r
            )
    noskip = runs.get("noskip", {})
    if noskip:
        checks["noskip_nearly_all_off"] = all(
            res["active"] <= NEARLY_ALL_OFF for res in noskip.values()
        )
    return checks


TABLE_HEADERS = ("variant", "kappa", "rec. err. (ours)", "rec. err. (paper)", "NLL (ours)",
                 "NLL (paper)", "# active (ours)", "# active (paper)", f"# var >= {STRONG}",
                 "gamma", "train s")


def table_rows(results: dict) -> list[list]:
    """Rows of Table 1: ours beside the paper's (MNIST only; the paper has no no-skip numbers
    except that every dimension is off)."""
    mnist = results["data"]["dataset"] == "mnist"
    rows = []
    for variant in VARIANTS:
        for kappa_str, run in sorted(results["runs"].get(variant, {}).items(),
                                     key=lambda kv: int(kv[0])):
            kappa = int(kappa_str)
            paper = PAPER_TABLE1.get(kappa, {}) if mnist and variant == "skip" else {}
            paper_active = paper.get("active")
            if mnist and variant == "noskip":
                paper_active = f"{PAPER_NOSKIP_ACTIVE} (all off)"
            strong = sum(v >= STRONG for v in run["latent_variances"])
            rows.append([variant, kappa, run["rec"], paper.get("rec"), run["nll"],
                         paper.get("nll"), run["active"], paper_active, strong, run["gamma"],
                         run["train_time_s"]])
    return rows


def main(config: Config, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) the sweep for ``config.variants``; returns the combined results of every
    finished run in the folder (and writes them to ``results.json`` and ``table.md``/``.csv``).
    Small MLPs: one thread per process (``threads``) avoids splitting tiny matmuls across
    cores."""
    unknown = set(config.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    with limit_threads(config.threads):
        timer = common.Timer()
        run_dir = common.run_folder(run_dir,
                                    DEFAULT_RUN_ROOT / f"{config.preset}_{config.data.dataset}")
        prepare_run(run_dir, sweep_identity(config), device=config.device)
        todo = [(v, k) for v in config.variants for k in config.kappas
                if not is_complete(run_dir / v / f"kappa{k}")]
        if config.workers > 1 and len(todo) > 1:
            _run_parallel(run_dir, config, todo)
        elif todo:
            train_x, test_x, info = load_data(config.data)
            for variant, kappa in todo:
                run_one(run_dir / variant / f"kappa{kappa}", config, variant, kappa,
                        (train_x, test_x), info, progress)
        runs = _collect(run_dir, config.kappas)
        r = config.data.r if config.data.dataset == "manifold" else None
        results = {
            **common.results_header(NAME, config),
            "data": {**dataclasses.asdict(config.data), "r": r},
            "config": sweep_identity(config),
            "kappas": list(config.kappas),
            "runs": {v: {str(k): res for k, res in per.items()} for v, per in runs.items()},
            "checks": direction_checks(runs, config.data.dataset, r),
            "paper": {"skip": {str(k): v for k, v in PAPER_TABLE1.items()},
                      "noskip_active": PAPER_NOSKIP_ACTIVE},
            "wall_time_s": float(sum(res["wall_time_s"] for per in runs.values()
                                     for res in per.values())),
            "this_invocation_s": timer(),
        }
        write_json(run_dir / RESULTS_FILE, results)
        common.write_table(run_dir, "table", TABLE_HEADERS, table_rows(results))
        return results


def report(results: dict) -> str:
    table = markdown_table(TABLE_HEADERS, table_rows(results))
    return common.report(results, [table], results["checks"])


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path | None, bool]:
    p = common.parser(__doc__, ("quick", "paper", "smoke"), DEFAULT_RUN_ROOT,
                      run_dir_help="<preset>_<dataset>")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--no-skip", action="store_true",
                       help="run only the ablation without skip connections")
    group.add_argument("--skip-only", action="store_true",
                       help="run only the paper's model (residual decoder + affine skip)")
    p.add_argument("--kappas", type=int, nargs="+", default=None,
                   help="latent sizes (default: the preset's)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs trained at once in separate processes (default: the preset's)")
    args = p.parse_args(argv)
    config = common.apply_args(preset(args.preset, args.dataset), args)
    overrides: dict = {}
    if args.no_skip:
        overrides["variants"] = ("noskip",)
    elif args.skip_only:
        overrides["variants"] = ("skip",)
    if args.kappas:
        overrides["kappas"] = tuple(args.kappas)
    if args.workers is not None:
        overrides["workers"] = args.workers
    return replace(config, **overrides), args.run_dir, args.progress


def cli(argv: list[str] | None = None) -> dict:
    config, run_dir, progress = parse_args(argv)
    results = main(config, run_dir, progress=progress)
    print(report(results))
    return results


if __name__ == "__main__":
    common.run_cli(cli, sys.argv[1:])
