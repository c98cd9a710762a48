"""E4: the RAE table (Ghosh et al. 2020, Table 1; EXPERIMENTS.md E4, THEORY.md section 4).

Nine autoencoders, one conv architecture (``balance.models.conv``), each evaluated in four
columns: REC (reconstructions of test images), N(0, I) (decoded draws from the standard normal),
GMM (decoded draws from a 10-component full-covariance GMM fitted to the training codes; ex-post
density estimation, ``balance.density_estimation``) and Interp (decoded midpoints of random pairs
of test codes):

| row    | objective (``balance.objectives.autoencoders``)              | model                  |
| ------ | ------------------------------------------------------------ | ---------------------- |
| VAE    | rec + beta KL                                                | (mu, logvar) head      |
| CV-VAE | rec + beta ||mu||^2 / 2, z = mu + 0.7 eps                    | fixed-variance head    |
| WAE    | rec + beta MMD(q(z), N(0, I)) (multi-scale IMQ)              | deterministic          |
| 2sVAE  | Gaussian VAE with learnable gamma (negative ELBO), then a    | ``GaussianVAE`` + the  |
|        | second-stage VAE on its codes; its N column samples through  | ``"vae2"`` estimator   |
|        | the second stage (Dai & Wipf 2019)                           |                        |
| RAE-GP | rec + beta ||z||^2 / 2 + lam ||dD/dz||_F^2 (Hutchinson)      | deterministic          |
| RAE-L2 | rec + beta ||z||^2 / 2 + lam ||theta_dec||^2                 | deterministic          |
| RAE-SN | rec + beta ||z||^2 / 2                                       | spectrally normalised  |
|        |                                                              | decoder layers         |
| RAE    | rec + beta ||z||^2 / 2                                       | deterministic          |
| AE     | rec                                                          | deterministic          |

rec is the squared error per image (summed over pixels). The weights are the RAE reference's
(``REFERENCE_IMPLEMENTATIONS.md``) converted to that scale: the reference averages the squared
error of [-1, 1]-scaled pixels over the D pixels and the embedding loss over the k latents, so its
weight w becomes ``beta = w D / (2 k)`` here, an L2 weight ``lam = w D / 4``, and the VAE's
per-image squared error on [-1, 1] pixels divides its KL weight by 4. The GP weight is ours (the
reference penalises ``||grad_z sum D(z)^2||^2``, a different quantity; see
``balance.objectives.autoencoders``). WAE: lambda = 10 on a 0.05-scaled cost (the WAE code's
MNIST setting), i.e. beta = 200.

Metrics per column. FID (pytorch-fid's Inception, against the test images) where its weights
exist, else "n/a (no Inception weights)"; always NDB/K (Richardson & Weiss 2018: k-means bins on
the training images, two-proportion z-tests; lower is better), and the unbiased MMD^2 between
the column's images and test images in pixel space (multi-scale IMQ kernel; lower is better).
Per model also the test reconstruction error and MMD^2(q(z), N(0, I)) of the training codes.

Usage::

    python experiments/rae_table.py --preset quick     # MNIST subset, CPU, ~15 min for all nine
    python experiments/rae_table.py --preset quick_celeba   # CelebA-64 sample, CPU, ~8 min
    python experiments/rae_table.py --preset paper     # MNIST as in the paper (GPU)
    python experiments/rae_table.py --preset paper_cifar10 | paper_celeba
    python -m paper_figures.rae_table runs/rae_table/quick out/

Run folder (default ``runs/rae_table/<preset>``, e.g. ``runs/rae_table/quick_celeba``)::

    config.json, command.txt, environment.json   the whole experiment
    <model>/                                     one training run (metrics.jsonl, checkpoint.pt,
                                                 config.json, results.json, samples.npz)
    <model>/vae2/                                the second-stage VAE's training run (2sVAE)
    results.json, table.md, table.csv            all models, the paper's numbers beside ours
    samples.npz                                  a few images per model and column (grids)

Re-running the same command resumes: finished models are skipped, an interrupted one continues
from its last epoch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

try:  # imported as part of the repository (tests, python -m)
    from experiments import _common as common
except ImportError:  # run as a script: experiments/ is on sys.path
    import _common as common

from balance.density_estimation import SecondStageConfig
from balance.metrics.reconstruction import module_device
from balance.reporting import NA_FID, markdown_table, shorten_na
from balance.runs import RESULTS_FILE, read_json, write_json
from balance.threads import limit_threads
from balance.train import TrainConfig

NAME = "rae_table"
DEFAULT_RUN_ROOT = Path("runs") / NAME
SAMPLES_FILE = "samples.npz"
#: Images per model and column kept for the sample grids.
GRID_IMAGES = 8
INTERP_STEPS = 8

COLUMNS = ("rec", "normal", "gmm", "interp")
COLUMN_LABELS = {"rec": "REC", "normal": "N(0,I)", "gmm": "GMM", "interp": "Interp.",
                 "mvg": "MVG", "vae2": "2nd-stage VAE"}
LABELS = {
    "vae": "VAE", "cv_vae": "CV-VAE", "wae": "WAE", "2svae": "2sVAE", "rae_gp": "RAE-GP",
    "rae_l2": "RAE-L2", "rae_sn": "RAE-SN", "rae": "RAE", "ae": "AE",
}
MODEL_ORDER = tuple(LABELS)

#: Ghosh et al. (2020), Table 1: FID of REC, N(0, I), GMM, Interp. Only the values given in
#: EXPERIMENTS.md E4 (confirmed in the authors' configuration comments); every other cell is
#: None, shown as "–". CIFAR-10 RAE-L2 is given there as "~74" only.
PAPER_SOURCE = "Ghosh et al. (2020), Table 1 (FID), the values quoted in EXPERIMENTS.md E4"
PAPER = {
    "mnist": {
        **{name: dict.fromkeys(COLUMNS) for name in MODEL_ORDER},
        "vae": {"rec": None, "normal": 19.21, "gmm": 17.66, "interp": None},
        "wae": {"rec": None, "normal": None, "gmm": 9.39, "interp": None},
        "rae_gp": {"rec": None, "normal": None, "gmm": 11.54, "interp": None},
        "rae_l2": {"rec": None, "normal": None, "gmm": 8.69, "interp": None},
        "rae_sn": {"rec": None, "normal": None, "gmm": 11.74, "interp": None},
        "rae": {"rec": None, "normal": None, "gmm": 9.81, "interp": None},
    },
    "cifar10": {"wae": {"gmm": 93.53}, "rae_l2": {"gmm": "~74"}, "rae_sn": {"gmm": 75.30}},
    "celeba": {"rae_sn": {"gmm": 40.95}, "rae_gp": {"gmm": 45.63}},
}


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class ModelSpec:
    """One row: objective ``kind`` (``balance.objectives.autoencoders.KINDS`` or ``"2svae"``),
    encoder head, weights and the ``AEConfig`` options; ``lr`` overrides the training lr."""

    name: str
    kind: str
    head: str = "deterministic"
    beta: float = 0.0
    lam: float = 0.0
    reconstruction: str = "mse"
    spectral_norm: str = "none"
    latent_norm: str = "none"
    decoder_noise_std: float = 0.0
    freeze_latent: bool = False
    gp_estimator: str = "hutchinson"
    base_filters: int | None = None
    depth: int | tuple[int, ...] | None = None
    latent_dim: int | None = None
    lr: float | None = None
    label: str | None = None

    def __post_init__(self):
        if self.depth is not None and not isinstance(self.depth, int):
            object.__setattr__(self, "depth", tuple(int(d) for d in self.depth))


@dataclass(frozen=True)
class NetConfig:
    """The conv pair (``balance.models.conv``); a ModelSpec may override width, depth, latent."""

    latent_dim: int = 16
    base_filters: int = 16
    depth: int | tuple[int, ...] = 1
    kernel_size: int = 4
    output: str = "sigmoid"
    logvar_bound: float | None = 10.0
    fixed_std: float = 0.7

    def __post_init__(self):
        if not isinstance(self.depth, int):
            object.__setattr__(self, "depth", tuple(int(d) for d in self.depth))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: images per column (``n_samples``; also the test images compared against),
    NDB bins, ex-post densities (``samplers``), the GMM's settings, the second stage, seed."""

    n_samples: int = 1000
    ndb_bins: int = 20
    samplers: tuple[str, ...] = ("normal", "gmm")
    gmm_components: int = 10
    gmm_max_iter: int = 2000
    gmm_tol: float = 1e-3
    second_stage: SecondStageConfig = SecondStageConfig()
    batch_size: int = 500
    seed: int = 1234


@dataclass(frozen=True)
class Config:
    preset: str = "quick"
    dataset: str = "mnist"
    data_root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    subset_seed: int = 0
    #: CelebA only: the official splits pooled into the test images (left out of the other
    #: datasets' run identity, see :func:`run_identity`).
    eval_splits: tuple[str, ...] = ("test",)
    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig()
    gamma_lr: float | None = None
    models: tuple[ModelSpec, ...] = ()
    eval: EvalConfig = EvalConfig()
    device: str = "auto"
    threads: int | None = None


def ghosh_models(pixels: int, latent_dim: int, *, gp_lam: float = 0.1) -> tuple[ModelSpec, ...]:
    """The nine rows with the reference weights converted to per-image squared error
    (module docstring): ``beta = w D / (2 k)``, L2 ``lam = w D / 4``, VAE KL weight / 4."""
    emb = pixels / (2 * latent_dim)
    return (
        ModelSpec("vae", "vae", head="gaussian", beta=0.312 / 4),
        ModelSpec("cv_vae", "cv_vae", head="fixed_variance", beta=0.039 / 4),
        ModelSpec("wae", "wae", beta=200.0),
        ModelSpec("2svae", "2svae", head="gaussian"),
        ModelSpec("rae_gp", "rae_gp", beta=5e-4 * emb, lam=gp_lam),
        ModelSpec("rae_l2", "rae_l2", beta=1e-4 * emb, lam=1e-7 * pixels / 4),
        ModelSpec("rae_sn", "rae_sn", beta=9e-3 * emb, spectral_norm="decoder"),
        ModelSpec("rae", "rae", beta=5e-4 * emb),
        ModelSpec("ae", "ae"),
    )


DATASETS = {"mnist": (1, 28, 16), "cifar10": (3, 32, 128), "celeba": (3, 64, 64)}


def preset(name: str) -> Config:
    """``quick`` (MNIST subset, CPU minutes), ``quick_celeba`` (the CelebA-64 sample of the
    data folder, CPU minutes), ``paper`` (MNIST), ``paper_cifar10``, ``paper_celeba`` (the
    papers' set-ups, GPU) or ``smoke`` (seconds; the tests)."""
    # CPU presets: data subsets, one thread (less oversubscription on a shared machine).
    cpu = dict(preset=name, gamma_lr=2e-2, device="cpu", threads=1)
    if name == "quick":
        # 2 shared CPU cores, ~15 minutes for nine models: a 10,000-image subset, 3 epochs,
        # base width 16 (the paper: 128).
        return Config(
            train_limit=10_000, test_limit=2_000, net=NetConfig(latent_dim=16, base_filters=16),
            train=TrainConfig(epochs=3, batch_size=100, lr=1e-3, progress=False),
            models=ghosh_models(28 * 28, 16),
            eval=EvalConfig(
                n_samples=1000, ndb_bins=20,
                second_stage=SecondStageConfig(width=256, depth=3, epochs=30, batch_size=128,
                                               lr=1e-3, lr_milestones=(20,)),
            ),
            **cpu,
        )
    if name == "quick_celeba":
        # The paper's CelebA set-up (latent 64, kernel 5) shrunk for 2 shared CPU cores, ~8
        # minutes for nine models (RAE-GP's double backward ~2 of them): the data folder's
        # CelebA sample (4,560 training images; the 1,440 validation and test images pooled as
        # test images, half scored per column, half the held-out reference), base width 8
        # (the paper: 128), 4 epochs of batch 64.
        channels, side, latent = DATASETS["celeba"]
        return Config(
            dataset="celeba", eval_splits=("valid", "test"),
            net=NetConfig(latent_dim=latent, base_filters=8, kernel_size=5),
            train=TrainConfig(epochs=4, batch_size=64, lr=1e-3, progress=False),
            models=ghosh_models(channels * side * side, latent),
            eval=EvalConfig(
                n_samples=720, ndb_bins=20,
                second_stage=SecondStageConfig(width=256, depth=3, epochs=30, batch_size=128,
                                               lr=1e-3, lr_milestones=(20,)),
            ),
            **cpu,
        )
    if name.startswith("paper"):
        dataset = {"paper": "mnist", "paper_cifar10": "cifar10",
                   "paper_celeba": "celeba"}.get(name)
        if dataset is None:
            raise ValueError(f"unknown preset {name!r}")
        channels, side, latent = DATASETS[dataset]
        # Ghosh et al.: widths 128-1024, kernel 4 (5 for CelebA), batch 100, 100 epochs, Adam,
        # lr 5e-4 (1e-4 for the VAEs), halved late in training; 10k samples per column.
        vae_lr = {"vae": 1e-4, "cv_vae": 1e-4, "2svae": 1e-4}
        models = tuple(replace(m, lr=vae_lr.get(m.name)) for m in
                       ghosh_models(channels * side * side, latent))
        return Config(
            preset=name,
            dataset=dataset,
            net=NetConfig(latent_dim=latent, base_filters=128,
                          kernel_size=5 if dataset == "celeba" else 4),
            train=TrainConfig(epochs=100, batch_size=100, lr=5e-4, lr_milestones=(50, 75),
                              lr_decay=0.5),
            gamma_lr=1e-3,
            models=models,
            eval=EvalConfig(n_samples=10_000, ndb_bins=100,
                            second_stage=SecondStageConfig(epochs=400, lr_milestones=(150, 300))),
            device="auto",
        )
    if name == "smoke":
        return Config(
            train_limit=64, test_limit=64, net=NetConfig(latent_dim=4, base_filters=2),
            train=TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
            models=ghosh_models(28 * 28, 4),
            eval=EvalConfig(n_samples=32, ndb_bins=4, gmm_components=2,
                            second_stage=SecondStageConfig(width=16, depth=3, epochs=2,
                                                           batch_size=32)),
            **cpu,
        )
    raise ValueError(f"unknown preset {name!r}; choose {', '.join(PRESETS)}")


# -------------------------------------------------------------------------------------- data


def load_data(dataset: str, root: str | None, train_limit: int | None,
              test_limit: int | None, subset_seed: int = 0,
              eval_splits: Sequence[str] = ("test",)) -> tuple[Tensor, Tensor]:
    """``(train, test)`` images in [0, 1]: ``*_limit`` images of each official split, a seeded
    random subset (``_common.random_subset``) for MNIST and CIFAR-10; CelebA (64 x 64): the
    first ids of the training split, and of the ``eval_splits`` pooled (in that order) as the
    test images."""
    if dataset == "celeba":
        data = common.CelebAData(root=root, train_limit=train_limit,
                                 eval_splits=tuple(eval_splits), eval_limit=test_limit)
        return common.load_train_eval(data, DATASETS["celeba"][1], progress=False)
    if dataset == "mnist":
        from balance.data.mnist import load_mnist

        train, test = load_mnist("train", root)[0], load_mnist("test", root)[0]
    elif dataset == "cifar10":
        from balance.data.cifar import load_cifar10

        train, test = load_cifar10("train", root)[0], load_cifar10("test", root)[0]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose {sorted(DATASETS)}")
    gen = torch.Generator().manual_seed(subset_seed)
    return (common.random_subset(train, train_limit, gen),
            common.random_subset(test, test_limit, gen))


# ------------------------------------------------------------------------------------ models


def net_for(spec: ModelSpec, net: NetConfig) -> NetConfig:
    """The spec's overrides of width, depth and latent size applied to ``net``."""
    changes = {k: getattr(spec, k) for k in ("base_filters", "depth", "latent_dim")
               if getattr(spec, k) is not None}
    return replace(net, **changes)


def build_model(spec: ModelSpec, net: NetConfig, channels: int, side: int) -> nn.Module:
    """``Autoencoder`` (or ``GaussianVAE`` for 2sVAE) with the conv pair of ``net``."""
    from balance.models.autoencoder import AEConfig, Autoencoder
    from balance.models.conv import conv_pair

    net = net_for(spec, net)
    enc, dec = conv_pair(
        in_channels=channels, resolution=side, latent_dim=net.latent_dim,
        base_filters=net.base_filters, depth=net.depth, kernel_size=net.kernel_size,
        head=spec.head, output=net.output, fixed_std=net.fixed_std,
        logvar_bound=net.logvar_bound,
    )
    if spec.kind == "2svae":
        from balance.models.vae import GammaConfig, GaussianVAE

        return GaussianVAE(enc, dec, GammaConfig(init=1.0), latent_dim=net.latent_dim)
    return Autoencoder(enc, dec, AEConfig(
        latent_norm=spec.latent_norm, decoder_noise_std=spec.decoder_noise_std,
        freeze_latent=spec.freeze_latent, spectral_norm=spec.spectral_norm,
    ))


def loss_for(spec: ModelSpec) -> Callable:
    if spec.kind == "2svae":
        from balance.objectives.elbo import vae_loss

        return vae_loss
    from balance.objectives.autoencoders import AEObjectiveConfig, make_loss_fn

    return make_loss_fn(AEObjectiveConfig(
        kind=spec.kind, reconstruction=spec.reconstruction, beta=spec.beta, lam=spec.lam,
        gp_estimator=spec.gp_estimator,
    ))


class Codec:
    """Batched, eval-mode, no-grad access to a trained model: codes and decodings."""

    def __init__(self, model: nn.Module, batch_size: int):
        self.model = model.eval()
        self.batch_size = batch_size
        self.device = module_device(model)

    def _map(self, fn, x: Tensor) -> Tensor:
        return torch.cat(common.batched(lambda b: fn(b).cpu(), x, self.batch_size, self.device))

    def _mu(self, x: Tensor) -> Tensor:
        code = self.model.encode(x)
        return code[0] if isinstance(code, tuple) else code

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic codes (the posterior mean for VAEs), [N, k]."""
        return self._map(self._mu, x)

    def encode_sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One z ~ q(z | x) per image for Gaussian encoders (the code itself otherwise)."""
        def draw(xb):
            code = self.model.encode(xb)
            if not isinstance(code, tuple):
                return code
            mu, logvar = code
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)
            return mu + (0.5 * logvar).exp() * eps

        return self._map(draw, x)

    def decode(self, z: Tensor) -> Tensor:
        return self._map(self.model.decode, z).clamp(0, 1)


# -------------------------------------------------------------------------------- evaluation


class ImageScorer:
    """Scores a set of images against the test images: FID (when the Inception weights exist),
    NDB/K on k-means bins of the training images, and the pixel-space MMD^2 (IMQ kernel)."""

    def __init__(self, train_x: Tensor, test_x: Tensor, cfg: EvalConfig):
        from balance.metrics.fid import inception_weights_available

        self.cfg = cfg
        self.test = test_x[: cfg.n_samples]
        self.train_flat = train_x.flatten(1)
        self.fid_available = inception_weights_available()
        self._fid_reference = None
        self._ndb = None

    def fid(self, images: Tensor) -> float | str:
        if not self.fid_available:
            return NA_FID
        from balance.metrics.fid import fid_from_statistics, image_statistics

        if self._fid_reference is None:
            self._fid_reference = image_statistics(self.test)
        return float(fid_from_statistics(self._fid_reference, image_statistics(images)))

    def ndb(self, images: Tensor) -> dict[str, float]:
        """NDB, NDB/K and JS divergence of ``images`` against the training images' bins."""
        from balance.metrics.ndb import NDBBins

        # k-means on a few thousand images: BLAS/OpenMP threads as capped by main's
        # limit_threads (more only add contention on a small shared machine).
        if self._ndb is None:
            self._ndb = NDBBins.fit(self.train_flat, self.cfg.ndb_bins, seed=self.cfg.seed)
        res = self._ndb.evaluate(images.flatten(1))
        return {"ndb": int(res.ndb), "ndb_over_k": float(res.ndb_over_k), "js": float(res.js)}

    def mmd(self, images: Tensor) -> float:
        """Unbiased MMD^2 between ``images`` and the test images, pixels as vectors."""
        from balance.kernels import imq_kernel, mmd_unbiased

        with torch.no_grad():
            a = images.flatten(1).double()
            b = self.test.flatten(1).double()
            return float(mmd_unbiased(a, b, imq_kernel))

    def score(self, images: Tensor) -> dict[str, Any]:
        return {"fid": self.fid(images), **self.ndb(images), "mmd_x": self.mmd(images)}

    def reference(self, test_x: Tensor) -> dict[str, Any] | None:
        """Scores of held-out real images (the test images after the first ``n_samples``):
        the floor each metric reaches on real data at this sample size (NDB/K ~ alpha)."""
        held_out = test_x[self.cfg.n_samples : 2 * self.cfg.n_samples]
        return self.score(held_out) if held_out.shape[0] >= 2 else None


def fit_estimator(name: str, codes: Tensor, cfg: EvalConfig, run_dir: Path | None,
                  device: str):
    from balance.density_estimation import make_estimator

    if name == "gmm":
        kwargs = dict(n_components=cfg.gmm_components, max_iter=cfg.gmm_max_iter,
                      tol=cfg.gmm_tol, seed=cfg.seed)
        return make_estimator("gmm", **kwargs).fit(codes)
    if name == "vae2":
        est = make_estimator("vae2", config=replace(cfg.second_stage, device=device,
                                                    seed=cfg.seed))
        return est.fit(codes, run_dir=run_dir)
    return make_estimator(name).fit(codes)


def evaluate_model(model: nn.Module, spec: ModelSpec, train_x: Tensor, test_x: Tensor,
                   scorer: ImageScorer, cfg: EvalConfig, stage_dir: Path,
                   device: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Every column's images and scores; returns (metrics, a few uint8 images per column)."""
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
    if spec.kind == "2svae":
        # Dai & Wipf fit the second stage on z ~ q(z|x); the N column samples through it.
        train_codes = codec.encode_sample(train_x, gen)
    else:
        train_codes = codec.encode(train_x)
    samplers = list(cfg.samplers)
    fitted = {}
    for name in samplers:
        fitted[name] = fit_estimator(name, train_codes, cfg, None, device)
    if spec.kind == "2svae":
        stage2 = fit_estimator("vae2", train_codes, cfg, stage_dir / "vae2", device)
        fitted["normal"] = stage2
    for name, est in fitted.items():
        z = est.sample(n, generator=torch.Generator().manual_seed(cfg.seed + 1),
                       dtype=torch.float32)
        images[name] = codec.decode(z)
    test_codes = codec.encode(test)
    z_a, z_b = random_pairs(test_codes, n, generator=torch.Generator().manual_seed(cfg.seed + 2))
    path = interpolate(z_a, z_b, INTERP_STEPS)
    mid = 0.5 * (z_a + z_b)
    images["interp"] = codec.decode(mid)
    grid_path = codec.decode(path[:2].reshape(-1, path.shape[-1]))  # 2 full interpolations
    columns = {name: scorer.score(images[name]) for name in images}
    metrics = {
        "rec_error": rec_error,
        "mmd_q_prior": mmd_to_standard_normal(
            train_codes[: max(n, 2)].double(), generator=torch.Generator().manual_seed(cfg.seed)
        ),
        "code_std": float(train_codes.std(0).mean()),
        "columns": columns,
    }
    if spec.kind == "2svae":
        metrics["stage2_gamma"] = fitted["normal"].gamma
        metrics["gamma"] = float(model.gamma)
    grids = {f"{name}": to_uint8(images[name][:GRID_IMAGES]) for name in images}
    grids["test"] = to_uint8(test[:GRID_IMAGES])
    grids["interp_path"] = to_uint8(grid_path)
    return metrics, grids


def to_uint8(images: Tensor) -> np.ndarray:
    return images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


# -------------------------------------------------------------------------------- run driver


def run_model(spec: ModelSpec, config: Config, data: Callable[[], tuple[Tensor, Tensor]],
              scorer: Callable[[], ImageScorer], run_dir: Path, progress: bool) -> dict:
    """Train (or resume) and evaluate one row; skipped when its results.json exists."""
    from balance.train import train

    stage_dir = run_dir / spec.name
    done = common.stage_done(stage_dir)
    if done is not None:
        return done
    timer = common.Timer()
    train_x, test_x = data()
    channels, side = train_x.shape[1], train_x.shape[-1]
    identity = {"spec": spec, "net": net_for(spec, config.net), "train": config.train,
                "dataset": config.dataset, "train_limit": config.train_limit,
                "subset_seed": config.subset_seed}
    common.prepare(stage_dir, identity, config.device)
    torch.manual_seed(config.train.seed)
    model = build_model(spec, config.net, channels, side)
    train_cfg = replace(config.train, device=config.device, progress=progress,
                        lr=spec.lr if spec.lr is not None else config.train.lr)
    gamma_lr = config.gamma_lr if spec.kind == "2svae" else None
    history = train(model, loss_for(spec), train_x, train_cfg, run_dir=stage_dir,
                    optimizer_fn=common.gamma_adam(model, train_cfg, gamma_lr))
    train_time = float(sum(h.get("time_s", 0.0) for h in history))
    eval_timer = common.Timer()
    metrics, grids = evaluate_model(model, spec, train_x, test_x, scorer(), config.eval,
                                    stage_dir, config.device)
    np.savez_compressed(stage_dir / SAMPLES_FILE, **grids)
    last = {k: v for k, v in history[-1].items() if isinstance(v, int | float)} if history else {}
    return common.save_stage(stage_dir, {
        "model": spec.name,
        "label": spec.label or LABELS.get(spec.name, spec.name),
        "spec": asdict(spec),
        "n_train": int(train_x.shape[0]),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        **metrics,
        "final_epoch": last,
        "train_time_s": train_time,
        "eval_time_s": eval_timer(),
        "wall_time_s": timer(),
    })


def reference_scores(config: Config, run_dir: Path,
                     data: Callable[[], tuple[Tensor, Tensor]]) -> dict[str, Any] | None:
    """Held-out real images scored like a column (saved once in ``reference.json``)."""
    path = run_dir / "reference.json"
    if path.is_file():
        return read_json(path)
    train_x, test_x = data()
    scores = ImageScorer(train_x, test_x, config.eval).reference(test_x)
    write_json(path, scores)
    return scores


def combine_samples(run_dir: Path, names: Sequence[str]) -> Path:
    """One ``samples.npz`` with ``<model>/<column>`` arrays (uint8 [n, C, H, W])."""
    arrays = {}
    for name in names:
        path = run_dir / name / SAMPLES_FILE
        if path.is_file():
            with np.load(path) as f:
                arrays.update({f"{name}/{k}": f[k] for k in f.files})
    out = run_dir / SAMPLES_FILE
    np.savez_compressed(out, **arrays)
    return out


def run_identity(config: Config) -> dict:
    """What a run folder records and compares on resume (``_common.run_identity``), without
    ``eval_splits`` for datasets other than CelebA: it changes nothing there (and run folders
    made before the field existed still resume)."""
    identity = common.run_identity(config)
    if config.dataset != "celeba":
        identity.pop("eval_splits", None)
    return identity


def run_models(name: str, config: Config, run_dir: Path | None,
               progress: bool) -> tuple[Path, dict]:
    """Run (or resume) every model of ``config`` in ``run_dir`` (default
    ``runs/<name>/<preset>``); returns the folder and the results common to this script and
    ``dae_sweep`` (header, held-out reference scores, models, FID status, times). Call inside
    ``limit_threads(config.threads)``."""
    timer = common.Timer()
    run_dir = common.run_folder(run_dir, Path("runs") / name / config.preset)
    common.prepare(run_dir, run_identity(config), config.device)
    data = common.lazy(lambda: load_data(config.dataset, config.data_root, config.train_limit,
                                         config.test_limit, config.subset_seed,
                                         config.eval_splits))
    scorer = common.lazy(lambda: ImageScorer(*data(), config.eval))
    models = {spec.name: run_model(spec, config, data, scorer, run_dir, progress)
              for spec in config.models}
    combine_samples(run_dir, list(models))
    return run_dir, {
        **common.results_header(name, config),
        "dataset": config.dataset,
        "reference": reference_scores(config, run_dir, data),
        "fid": "computed" if fid_done(models) else NA_FID,
        "models": models,
        "wall_time_s": float(sum(m["wall_time_s"] for m in models.values())),
        "this_invocation_s": timer(),
    }


def fid_done(models: dict) -> bool:
    return any(isinstance(c.get("fid"), float) for m in models.values()
               for c in m["columns"].values())


def fid_note(results: dict) -> str:
    return "" if results["fid"] == "computed" else f"FID: {NA_FID}\n\n"


# --------------------------------------------------------------------------------- the table


def directions(models: dict[str, dict]) -> dict[str, Any]:
    """The paper's claims checked on the FID-free metrics (pixel MMD^2 and NDB/K; lower is
    better), each a yes/no (or a count) in the results:

    - ``gmm_beats_normal``: ex-post GMM sampling beats N(0, I) for the deterministic
      autoencoders and ``vae_gmm_beats_normal`` for the VAE (paper: 17.66 < 19.21);
    - ``best_rae_gmm_le_vae_gmm``: the best regularized AE under GMM sampling matches or beats
      the VAE under GMM sampling (paper: RAE-L2 8.69 vs 17.66);
    - ``ae_worst_normal``: the unregularized AE is the worst N(0, I) sampler.
    """
    out: dict[str, Any] = {}
    det = [m for m in ("rae_gp", "rae_l2", "rae_sn", "rae", "ae", "wae") if m in models]
    for metric in ("mmd_x", "ndb_over_k"):
        col = {m: {c: r["columns"].get(c, {}).get(metric) for c in ("normal", "gmm")}
               for m, r in models.items()}
        gmm_wins = [m for m in det if col[m]["gmm"] is not None
                    and col[m]["gmm"] < col[m]["normal"]]
        out[f"gmm_beats_normal[{metric}]"] = f"{len(gmm_wins)}/{len(det)}"
        if "vae" in models:
            out[f"vae_gmm_beats_normal[{metric}]"] = bool(
                col["vae"]["gmm"] < col["vae"]["normal"])
        raes = [m for m in ("rae_gp", "rae_l2", "rae_sn", "rae") if m in models]
        if "vae" in models and raes:
            best = min(raes, key=lambda m: col[m]["gmm"])
            out[f"best_rae_gmm_le_vae_gmm[{metric}]"] = bool(
                col[best]["gmm"] <= col["vae"]["gmm"])
            out[f"best_rae_gmm[{metric}]"] = best
        normals = {m: col[m]["normal"] for m in models if col[m]["normal"] is not None}
        if "ae" in normals:
            out[f"ae_worst_normal[{metric}]"] = bool(max(normals, key=normals.get) == "ae")
    return out


TABLE_HEADERS = (
    "model", "FID REC", "FID N", "FID GMM", "FID Interp",
    "paper REC", "paper N", "paper GMM", "paper Interp",
    "rec. err.", "MMD(q,N)",
    "NDB/K REC", "NDB/K N", "NDB/K GMM", "NDB/K Interp",
    "MMD_x REC", "MMD_x N", "MMD_x GMM", "MMD_x Interp",
)


def table_rows(results: dict) -> list[list]:
    """Ours beside the paper's FID ("n/a" without the Inception weights, "–" where the paper
    value is not given), then the FID-free metrics; first the held-out real images."""
    paper = results.get("paper", {})
    rows = []
    ref = results.get("reference")
    if ref:
        rows.append(["held-out test images", shorten_na(ref["fid"]), *[None] * 9,
                     ref["ndb_over_k"], None, None, None, ref["mmd_x"], None, None, None])
    for name, r in results["models"].items():
        cols = r["columns"]
        p = paper.get(name, {})
        rows.append([
            r["label"],
            *[shorten_na(cols.get(c, {}).get("fid")) for c in COLUMNS],
            *[p.get(c) for c in COLUMNS],
            r["rec_error"], r["mmd_q_prior"],
            *[cols.get(c, {}).get("ndb_over_k") for c in COLUMNS],
            *[cols.get(c, {}).get("mmd_x") for c in COLUMNS],
        ])
    return rows


def main(config: Config, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) every model of ``config``; write and return the combined results."""
    with limit_threads(config.threads):
        run_dir, results = run_models(NAME, config, run_dir, progress)
    results.update(paper=PAPER.get(config.dataset, {}), paper_source=PAPER_SOURCE,
                   directions=directions(results["models"]))
    write_json(run_dir / RESULTS_FILE, results)
    common.write_table(run_dir, "table", TABLE_HEADERS, table_rows(results),
                       before=fid_note(results))
    return results


def report(results: dict) -> str:
    table = fid_note(results) + markdown_table(TABLE_HEADERS, table_rows(results))
    return common.report(results, [table], results["directions"])


def parser(doc: str, presets: Sequence[str], default_root: Path) -> argparse.ArgumentParser:
    """The common command line (progress bars off by default: many short runs) and
    ``--models``."""
    p = common.parser(doc.split("\n\n")[0], presets, default_root, progress=False)
    p.add_argument("--models", default=None,
                   help="comma-separated subset of the preset's models (default: all)")
    return p


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    config = common.apply_args(config, args)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        known = {m.name: m for m in config.models}
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise SystemExit(f"unknown models {unknown}; choose from {sorted(known)}")
        config = replace(config, models=tuple(known[m] for m in wanted))
    return config


PRESETS = ("quick", "quick_celeba", "paper", "paper_cifar10", "paper_celeba", "smoke")


def cli(argv: list[str] | None = None) -> dict:
    args = parser(__doc__, PRESETS, DEFAULT_RUN_ROOT).parse_args(argv)
    config = apply_overrides(preset(args.preset), args)
    results = main(config, args.run_dir, progress=args.progress)
    print(report(results))
    return results


if __name__ == "__main__":
    common.run_cli(cli, sys.argv[1:])
