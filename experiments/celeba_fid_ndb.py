"""E3: CelebA-128 FID and NDB of VAE+ against WAE-MMD, a plain VAE and "Downsample"
(balanced-regularization paper, Tables 3 and 4; EXPERIMENTS.md E3).

Stages (each a sub-folder of the run folder, skipped once its ``results.json`` exists):

1. ``ae``: an unregularized conv autoencoder (``balance.models.conv`` pair in
   ``balance.models.autoencoder.Autoencoder``, squared error) from 128 x 128 images to a
   64-dimensional feature space. Frozen afterwards (weights fixed, batch norm in eval mode).
2. ``vae_plus``: a Gaussian VAE with kappa = 64 on those features, MLP encoder and a residual
   MLP decoder with the affine skip (``balance.models.mlp``), learnable gamma. Its encoder is
   "AE encoder, then MLP encoder" and its decoder "MLP decoder, then AE decoder", so the
   ordinary ELBO (``balance.objectives.elbo``) measures reconstruction in image space.
3. ``vae``: the same with a plain MLP decoder (same number of layers, no residual blocks, no
   skip) and no second stage: samples come from N(0, I).
4. ``wae_mmd``: the VAE+ networks with a deterministic encoder and the WAE-MMD objective
   (``balance.objectives.autoencoders``, squared error + beta MMD^2 to N(0, I)); N(0, I) samples.
5. ``second_stage``: Dai & Wipf's second-stage VAE (``balance.density_estimation``) on the VAE+
   codes z ~ q(z|x) of the training images. VAE+ samples: u ~ N(0, I) -> second stage -> VAE
   decoder -> AE decoder.
6. ``evaluate``: on held-out images, per model: reconstruction error, reconstruction and
   generation FID (pytorch-fid's Inception; "n/a (no Inception weights)" without its weights
   file), NDB/K for K = 100, 200, 300 (bins: k-means on the training images), MMD^2 between the
   latent codes and N(0, I), and a weight-free stand-in for FID: the Frechet distance between
   real and generated images in the frozen AE's feature space ("FD-AE"). "Downsample" is the
   held-out originals against their 64 x 64-downsampled (and back up, bilinear) versions.

Claims to see in the quick preset: VAE+ generation is closer to its reconstruction than the
plain VAE's, and VAE+ has a lower NDB than the VAE and WAE-MMD.

Usage::

    python experiments/celeba_fid_ndb.py --preset quick    # CPU minutes, the 6,000-image sample
    python experiments/celeba_fid_ndb.py --preset paper    # GPU, full CelebA
    python paper_figures/celeba_fid_ndb.py runs/celeba_fid_ndb/quick

The run folder (default ``runs/celeba_fid_ndb/<preset>``) ends with ``results.json``,
``table3.md``/``.csv``, ``table4.md``/``.csv`` and ``sample_grid.png`` (rows: real images,
Downsample, WAE-MMD, VAE, VAE+ from N(0, I), VAE+).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

try:  # imported as part of the repository (tests, python -m)
    from experiments import _common as common
except ImportError:  # run as a script: experiments/ is on sys.path
    import _common as common

from balance.density_estimation import SecondStageConfig
from balance.metrics.reconstruction import module_device
from balance.reporting import NA_FID, markdown_table
from balance.runs import load_checkpoint, pick_device, seed_everything, write_json
from balance.threads import limit_threads
from balance.train import CHECKPOINT_FILE, TrainConfig, train

NAME = "celeba_fid_ndb"
DEFAULT_RUN_ROOT = Path("runs") / NAME
#: Models of the tables, in row order (vae_plus_prior: VAE+ sampled from N(0, I), an ablation).
MODELS = ("downsample", "wae_mmd", "vae", "vae_plus_prior", "vae_plus")
LABELS = {
    "real": "real (held-out)",
    "downsample": "Downsample",
    "wae_mmd": "WAE-MMD",
    "vae": "VAE",
    "vae_plus_prior": "VAE+ without 2nd stage",
    "vae_plus": "VAE+",
}
#: EXPERIMENTS.md E3 (the paper's Tables 3 and 4).
PAPER = {
    "downsample": {"recon_fid": 39.2, "gen_fid": 39.2, "ndb_over_k": {"100": 0.05, "200": 0.06,
                                                                     "300": 0.04}},
    "wae_mmd": {"recon_fid": 59.8, "gen_fid": 66.9, "ndb_over_k": {"100": 0.64, "200": 0.62,
                                                                  "300": 0.58}},
    "vae": {"recon_fid": 45.9, "gen_fid": 64.8, "ndb_over_k": {"100": 0.88, "200": 0.85,
                                                              "300": 0.81}},
    "vae_plus": {"recon_fid": 45.6, "gen_fid": 47.5, "ndb_over_k": {"100": 0.29, "200": 0.28,
                                                                   "300": 0.24}},
}


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class AEStageConfig:
    """The unregularized conv AE to the feature space (``balance.models.conv``)."""

    latent_dim: int = 64
    base_filters: int = 64
    kernel_size: int = 5
    depth: int = 1
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class FeatureModelConfig:
    """The MLP networks on the AE features (``balance.models.mlp``).

    Encoder: ``encoder_depth`` hidden layers of ``width``. Decoder of VAE+ and WAE-MMD:
    ``decoder_blocks`` residual blocks of two layers with the affine skip z -> features; the
    plain VAE's decoder has the same number of linear layers without residual connections or
    skip. kappa = ``latent_dim``. ``gamma_init`` / ``gamma_lr``: the learnable decoder variance
    of the VAEs (``gamma_lr`` None: the network's learning rate).
    """

    latent_dim: int = 64
    width: int = 512
    encoder_depth: int = 3
    decoder_blocks: int = 3
    gamma_init: float = 1.0
    gamma_lr: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: generated samples (None: as many as held-out images); NDB bins, the
    resolution the NDB vectors are taken at and the number of training images the bins are
    fitted on (the first ones; None: all); the Inception weights file (None: the default
    lookup of ``balance.metrics.fid``); batch size, sample-grid size and seed."""

    n_samples: int | None = None
    ndb_ks: tuple[int, ...] = (100, 200, 300)
    ndb_resolution: int = 64
    ndb_train_limit: int | None = None
    fid_weights: str | None = None
    batch_size: int = 250
    grid_columns: int = 8
    grid_tile: int = 64
    mmd_samples: int | None = 10000
    seed: int = 1234


@dataclass(frozen=True)
class Config:
    preset: str = "quick"
    data: common.CelebAData = common.CelebAData()
    resolution: int = 128
    downsample_to: int = 64
    ae: AEStageConfig = AEStageConfig()
    features: FeatureModelConfig = FeatureModelConfig()
    vae_plus_train: TrainConfig = TrainConfig()
    vae_train: TrainConfig = TrainConfig()
    wae_train: TrainConfig = TrainConfig()
    wae_beta: float = 8000.0
    second_stage: SecondStageConfig = SecondStageConfig()
    eval: EvalConfig = EvalConfig()
    device: str = "auto"
    threads: int | None = None


def preset(name: str) -> Config:
    """``quick`` (CPU minutes on the 6,000-image sample), ``paper`` (GPU, full CelebA) or
    ``smoke`` (a few images, seconds; for the tests)."""
    if name == "paper":
        # Full CelebA; the RAE-style conv AE (5 x 5 kernels, base 64) and Dai & Wipf's second
        # stage (3 x 1024 units, lr 1e-4 halved every 300 epochs). The paper does not give the
        # epochs of each stage; these fit a GPU in a few hours. 10,000 held-out test images
        # against 10,000 samples, as in Dai & Wipf's FID protocol.
        return Config(
            preset=name,
            data=common.CelebAData(eval_splits=("test",), eval_limit=10_000,
                                   min_train_images=150_000),
            ae=AEStageConfig(base_filters=64, kernel_size=5,
                             train=TrainConfig(epochs=30, batch_size=64, lr=5e-4,
                                               lr_milestones=(20,), lr_decay=0.2)),
            features=FeatureModelConfig(width=512, encoder_depth=3, decoder_blocks=3),
            vae_plus_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            vae_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            wae_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            wae_beta=8000.0,
            second_stage=SecondStageConfig(width=1024, depth=3, epochs=100, batch_size=64,
                                           lr=1e-4, lr_milestones=(40, 80), device="auto"),
            # NDB bins on 64 x 64 thumbnails of 20,000 training images (k-means on all 162,770
            # would take most of an hour per K on the host's CPU).
            eval=EvalConfig(n_samples=10_000, ndb_resolution=64, ndb_train_limit=20_000),
            device="auto",
        )
    if name == "quick":
        # 2 shared CPU cores: a narrow AE (base 8, 4 x 4 kernels) for a few epochs on the 4,560
        # training images of the sample, the feature models for a few epochs each (gamma's log
        # learned faster, so that it gets small within them), 1,440 held-out images (valid +
        # test) and as many samples; NDB on 32 x 32 thumbnails (k-means on 128 x 128 x 3 vectors
        # would dominate the run time).
        return Config(
            preset=name,
            data=common.CelebAData(eval_splits=("valid", "test")),
            ae=AEStageConfig(base_filters=8, kernel_size=4,
                             train=TrainConfig(epochs=3, batch_size=32, lr=1e-3)),
            features=FeatureModelConfig(width=256, encoder_depth=3, decoder_blocks=3,
                                        gamma_lr=2e-2),
            vae_plus_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            vae_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            wae_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            wae_beta=8000.0,
            second_stage=SecondStageConfig(width=256, depth=2, epochs=60, batch_size=64,
                                           lr=1e-3, lr_milestones=(40,), device="cpu"),
            eval=EvalConfig(ndb_resolution=32, grid_columns=6, grid_tile=48),
            device="cpu",
            threads=1,
        )
    if name == "smoke":
        tiny = TrainConfig(epochs=1, batch_size=8, lr=1e-3)
        return Config(
            preset=name,
            data=common.CelebAData(train_limit=24, eval_splits=("test",), eval_limit=12),
            ae=AEStageConfig(latent_dim=8, base_filters=4, kernel_size=4, train=tiny),
            features=FeatureModelConfig(latent_dim=8, width=16, encoder_depth=1,
                                        decoder_blocks=1),
            vae_plus_train=tiny, vae_train=tiny, wae_train=tiny,
            second_stage=SecondStageConfig(width=16, depth=1, epochs=2, batch_size=8,
                                           lr=1e-3, lr_milestones=(), device="cpu"),
            eval=EvalConfig(ndb_ks=(2, 3), ndb_resolution=8, batch_size=8, grid_columns=4,
                            grid_tile=16),
            device="cpu",
            threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose quick, paper or smoke")


# ------------------------------------------------------------------------------------ models


class MeanOnly(nn.Module):
    """A deterministic encoder from one that returns ``(mu, logvar)``: ``x -> mu``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)[0]


def build_ae(config: Config):
    """The conv AE (deterministic code of ``ae.latent_dim``, sigmoid output), seeded init."""
    from balance.models.autoencoder import Autoencoder
    from balance.models.conv import conv_pair

    a = config.ae
    seed_everything(a.train.seed)
    encoder, decoder = conv_pair(
        in_channels=3, resolution=config.resolution, latent_dim=a.latent_dim,
        base_filters=a.base_filters, depth=a.depth, kernel_size=a.kernel_size,
        head="deterministic", output="sigmoid",
    )
    return Autoencoder(encoder, decoder)


def frozen_ae(config: Config, run_dir: Path) -> tuple[common.Frozen, common.Frozen]:
    """The trained AE's encoder and decoder (from its checkpoint), frozen."""
    ae = build_ae(config)
    ae.load_state_dict(load_checkpoint(run_dir / "ae" / CHECKPOINT_FILE, "cpu")["model"])
    return common.Frozen(ae.encoder), common.Frozen(ae.decoder)


def _mlps(config: Config, *, skip: bool, seed: int):
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig

    f = config.features
    seed_everything(seed)
    shape = (config.ae.latent_dim,)
    encoder = MLPEncoder(MLPEncoderConfig(data_shape=shape, latent_dim=f.latent_dim,
                                          width=f.width, depth=f.encoder_depth))
    if skip:
        dec_cfg = MLPDecoderConfig(data_shape=shape, latent_dim=f.latent_dim, width=f.width,
                                   depth=f.decoder_blocks, residual=True, affine_skip=True)
    else:  # the same 2 * blocks + 2 linear layers, plain
        dec_cfg = MLPDecoderConfig(data_shape=shape, latent_dim=f.latent_dim, width=f.width,
                                   depth=2 * f.decoder_blocks + 1, residual=False,
                                   affine_skip=False)
    return encoder, MLPDecoder(dec_cfg)


def build_feature_model(config: Config, run_dir: Path, kind: str, seed: int):
    """``vae_plus`` / ``vae``: a ``GaussianVAE`` (AE encoder -> MLP encoder, MLP decoder -> AE
    decoder, learnable gamma); ``wae_mmd``: an ``Autoencoder`` with the same structure and a
    deterministic MLP encoder."""
    from balance.models.autoencoder import Autoencoder
    from balance.models.vae import GammaConfig, GaussianVAE

    ae_encoder, ae_decoder = frozen_ae(config, run_dir)
    mlp_encoder, mlp_decoder = _mlps(config, skip=(kind != "vae"), seed=seed)
    decoder = nn.Sequential(mlp_decoder, ae_decoder)
    if kind == "wae_mmd":
        return Autoencoder(nn.Sequential(ae_encoder, MeanOnly(mlp_encoder)), decoder)
    return GaussianVAE(
        nn.Sequential(ae_encoder, mlp_encoder), decoder,
        GammaConfig(init=config.features.gamma_init, learnable=True),
        latent_dim=config.features.latent_dim,
    )


# ------------------------------------------------------------------------------------ stages


class Stages:
    """The run's stages over shared data, loaded on first need."""

    def __init__(self, config: Config, run_dir: Path, progress: bool) -> None:
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        self._data: tuple[Tensor, Tensor] | None = None
        self._second_stage = None

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        if self._data is None:
            self._data = common.load_train_eval(self.config.data, self.config.resolution,
                                                progress=self.progress)
        return self._data

    def _train_cfg(self, cfg: TrainConfig) -> TrainConfig:
        return replace(cfg, device=self.config.device, progress=self.progress)

    def _prepare(self, stage: str, spec: dict) -> Path:
        return common.prepare(self.run_dir / stage, spec, self.config.device)

    # -- 1. the AE -------------------------------------------------------------------------
    def ae(self) -> dict:
        folder = self.run_dir / "ae"
        done = common.stage_done(folder)
        if done is not None:
            return done
        from balance.objectives.autoencoders import AEObjectiveConfig, make_loss_fn

        timer = common.Timer()
        c = self.config
        self._prepare("ae", {"stage": "ae", "ae": c.ae, "data": c.data,
                             "resolution": c.resolution})
        model = build_ae(c)
        train_x, eval_x = self.data
        history = train(model, make_loss_fn(AEObjectiveConfig(kind="ae", reconstruction="mse")),
                        train_x, self._train_cfg(c.ae.train), run_dir=folder)
        model.eval()
        device = module_device(model)
        rec = torch.cat(common.batched(
            lambda x: (x - model.decode(model.encode(x))).pow(2).flatten(1).sum(1).cpu(),
            eval_x, c.eval.batch_size, device))
        return common.save_stage(folder, {
            "stage": "ae", "rec_eval": float(rec.mean()), "epochs": _epochs(history),
            "wall_time_s": timer(), **common.device_record(c.device),
        })

    # -- 2-4. the feature models -----------------------------------------------------------
    def feature_model(self, kind: str) -> dict:
        folder = self.run_dir / kind
        done = common.stage_done(folder)
        if done is not None:
            return done
        from balance.objectives.autoencoders import AEObjectiveConfig, make_loss_fn
        from balance.objectives.elbo import vae_loss

        self.ae()
        timer = common.Timer()
        c = self.config
        train_cfg = {"vae_plus": c.vae_plus_train, "vae": c.vae_train,
                     "wae_mmd": c.wae_train}[kind]
        spec = {"stage": kind, "ae": c.ae, "features": c.features, "train": train_cfg,
                "data": c.data}
        if kind == "wae_mmd":
            spec["wae_beta"] = c.wae_beta
        self._prepare(kind, spec)
        model = build_feature_model(c, self.run_dir, kind, seed=train_cfg.seed)
        if kind == "wae_mmd":
            loss_fn = make_loss_fn(AEObjectiveConfig(kind="wae", reconstruction="mse",
                                                     beta=c.wae_beta))
        else:
            loss_fn = vae_loss
        train_x, _ = self.data
        cfg = self._train_cfg(train_cfg)
        history = train(model, loss_fn, train_x, cfg, run_dir=folder,
                        optimizer_fn=common.gamma_adam(model, cfg, c.features.gamma_lr))
        out = {"stage": kind, "epochs": _epochs(history), "wall_time_s": timer(),
               **common.device_record(c.device)}
        if hasattr(model, "gamma"):
            out["gamma_final"] = model.gamma
        return common.save_stage(folder, out)

    def load_feature_model(self, kind: str):
        """A trained feature model (resuming ``train`` on a finished checkpoint only loads it)."""
        self.feature_model(kind)
        c = self.config
        train_cfg = {"vae_plus": c.vae_plus_train, "vae": c.vae_train,
                     "wae_mmd": c.wae_train}[kind]
        model = build_feature_model(c, self.run_dir, kind, seed=train_cfg.seed)
        state = load_checkpoint(self.run_dir / kind / CHECKPOINT_FILE, "cpu")["model"]
        model.load_state_dict(state)
        return model.to(pick_device(c.device)).eval()

    # -- 5. the second stage ---------------------------------------------------------------
    def vae_plus_codes(self, model) -> Tensor:
        """One z ~ q(z|x) per training image (seeded), [N, kappa] on the CPU."""
        train_x, _ = self.data
        device = module_device(model)
        g = torch.Generator().manual_seed(self.config.eval.seed)
        parts = common.batched(model.encode, train_x, self.config.eval.batch_size, device)
        mu = torch.cat([m.cpu() for m, _ in parts])
        logvar = torch.cat([v.cpu() for _, v in parts])
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)

    def second_stage(self, vae_plus=None):
        """The fitted second-stage VAE (trained on first call, then loaded from its run)."""
        from balance.density_estimation import SecondStageVAE

        if self._second_stage is not None:
            return self._second_stage
        c = self.config
        folder = self.run_dir / "second_stage"
        done = common.stage_done(folder)
        timer = common.Timer()
        if done is None:
            self._prepare("second_stage", {"stage": "second_stage", "second_stage":
                                           c.second_stage, "seed": c.eval.seed})
        vae_plus = vae_plus if vae_plus is not None else self.load_feature_model("vae_plus")
        codes = self.vae_plus_codes(vae_plus)
        stage = SecondStageVAE(replace(c.second_stage, progress=self.progress))
        stage.fit(codes, run_dir=folder)
        if done is None:
            common.save_stage(folder, {
                "stage": "second_stage", "gamma_z": stage.gamma, "n_codes": codes.shape[0],
                "epochs": _epochs(stage.history), "wall_time_s": timer(),
                **common.device_record(c.device),
            })
        self._second_stage = stage
        return stage

    # -- 6. evaluation ---------------------------------------------------------------------
    def evaluate(self) -> dict:
        folder = self.run_dir / "evaluate"
        done = common.stage_done(folder)
        if done is not None:
            return done
        timer = common.Timer()
        c = self.config
        e = c.eval
        self._prepare("evaluate", {"stage": "evaluate", "eval": e, "data": c.data})
        models = {k: self.load_feature_model(k) for k in ("wae_mmd", "vae", "vae_plus")}
        stage2 = self.second_stage(models["vae_plus"])
        train_x, eval_x = self.data
        n = e.n_samples or eval_x.shape[0]
        device = module_device(models["vae"])
        g = torch.Generator().manual_seed(e.seed)
        ae_encoder, _ = frozen_ae(c, self.run_dir)
        ae_encoder.to(device)

        # NDB bins on the training images, fitted once per K.
        def ndb_vectors(images: Tensor) -> np.ndarray:
            small = torch.cat(common.batched(
                lambda b: common.thumbnails(b, e.ndb_resolution).cpu(), images, e.batch_size,
                "cpu"))
            return small.flatten(1).numpy()

        train_vectors = ndb_vectors(train_x[: e.ndb_train_limit])
        ndb = {k: common.ndb_evaluator(train_vectors, k, seed=e.seed)
               for k in e.ndb_ks if k <= train_vectors.shape[0]}

        def features(images: Tensor) -> np.ndarray:
            return torch.cat(common.batched(lambda b: ae_encoder(b).cpu(), images,
                                            e.batch_size, device)).double().numpy()

        real_features = features(eval_x)
        fid_real = _fid_statistics(eval_x, e, device)

        def decode_all(model, z: Tensor) -> Tensor:
            return torch.cat(common.batched(lambda b: model.decode(b).clamp(0, 1).cpu(), z,
                                            e.batch_size, device))

        def codes(model, kind: str) -> tuple[Tensor, Tensor]:
            """(posterior means or codes, z ~ q(z|x)) of the held-out images."""
            if kind == "wae_mmd":
                z = torch.cat(common.batched(lambda b: model.encode(b).cpu(), eval_x,
                                             e.batch_size, device))
                return z, z
            parts = common.batched(model.encode, eval_x, e.batch_size, device)
            mu = torch.cat([m.cpu() for m, _ in parts])
            logvar = torch.cat([v.cpu() for _, v in parts])
            return mu, mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)

        outputs: dict[str, tuple[Tensor, Tensor]] = {}
        extra: dict[str, dict] = {}
        down = _down_up(eval_x, c.downsample_to)
        outputs["downsample"] = (down, down)
        from tqdm import tqdm

        for kind in tqdm(("wae_mmd", "vae", "vae_plus"), desc="reconstruct and sample",
                         disable=not self.progress):
            model = models[kind]
            mu, z = codes(model, kind)
            recon = decode_all(model, mu)
            prior_z = torch.randn(n, c.features.latent_dim, generator=g)
            info = {"latent_mmd": _mmd(z, e, g)}
            if kind == "vae_plus":
                outputs["vae_plus_prior"] = (recon, decode_all(model, prior_z))
                extra["vae_plus_prior"] = dict(info)
                stage_z = stage2.sample(n, generator=g)
                outputs["vae_plus"] = (recon, decode_all(model, stage_z))
                info["second_stage_latent_mmd"] = _second_stage_mmd(stage2, z, e, g)
                info["second_stage_gamma_z"] = stage2.gamma
            else:
                outputs[kind] = (recon, decode_all(model, prior_z))
            if hasattr(model, "gamma"):
                info["gamma_final"] = model.gamma
            extra[kind] = info

        per_model = {}
        for kind in tqdm(MODELS, desc="metrics", disable=not self.progress):
            recon, samples = outputs[kind]
            rec = (eval_x - recon).pow(2).flatten(1).sum(1)
            fd_rec = _frechet(real_features, features(recon))
            fd_gen = fd_rec if kind == "downsample" else _frechet(real_features,
                                                                  features(samples))
            row = {
                "label": LABELS[kind],
                "rec_error": float(rec.mean()),
                "fd_ae_recon": fd_rec,
                "fd_ae_gen": fd_gen,
                "fd_ae_gap": fd_gen - fd_rec,
                "ndb": {str(k): f(ndb_vectors(samples)) for k, f in ndb.items()},
                "recon_fid": _fid(fid_real, recon, e, device),
                "gen_fid": _fid(fid_real, samples, e, device) if kind != "downsample" else None,
                "n_samples": int(samples.shape[0]),
                **extra.get(kind, {}),
            }
            if kind == "downsample":
                row["gen_fid"] = row["recon_fid"]
            per_model[kind] = row

        rows = [eval_x[: e.grid_columns]] + [outputs[k][1][: e.grid_columns] for k in MODELS]
        common.save_png(common.image_grid(rows, e.grid_tile), self.run_dir / "sample_grid.png")
        common.save_png(common.image_grid(rows, c.resolution),
                        folder / "sample_grid_full.png")
        recon_rows = [eval_x[: e.grid_columns]] + [
            outputs[k][0][: e.grid_columns] for k in MODELS if k != "vae_plus_prior"]
        common.save_png(common.image_grid(recon_rows, e.grid_tile),
                        self.run_dir / "reconstruction_grid.png")
        return common.save_stage(folder, {
            "models": per_model,
            "n_eval": int(eval_x.shape[0]),
            "n_train": int(train_x.shape[0]),
            "fid_available": fid_real is not None,
            "ndb_ks": list(ndb),
            "grid_rows": ["real"] + list(MODELS),
            "recon_grid_rows": ["real"] + [k for k in MODELS if k != "vae_plus_prior"],
            "wall_time_s": timer(),
            **common.device_record(c.device),
        })


def _epochs(history: list[dict] | None) -> list[dict]:
    keep = ("epoch", "step", "loss", "reconstruction", "kl", "squared_error", "gamma", "rec",
            "latent", "time_s")
    return [{k: h[k] for k in keep if k in h} for h in (history or [])]


def _down_up(x: Tensor, side: int) -> Tensor:
    """Downsample to ``side`` (antialiased bilinear) and back up (bilinear), in [0, 1]."""
    out = []
    for b in x.split(256):
        small = common.thumbnails(b, side)
        out.append(torch.nn.functional.interpolate(
            small, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1))
    return torch.cat(out)


def _mmd(z: Tensor, e: EvalConfig, g: torch.Generator) -> float:
    from balance.metrics.mmd import mmd_to_standard_normal

    z = z[: e.mmd_samples] if e.mmd_samples else z
    return mmd_to_standard_normal(z.double(), generator=g)


@torch.no_grad()
def _second_stage_mmd(stage2, z: Tensor, e: EvalConfig, g: torch.Generator) -> float:
    """MMD^2 between the second stage's q(u) on the held-out codes z and N(0, I)."""
    model = stage2.model
    mu, logvar = model.encode(((z - stage2.shift) / stage2.scale).float())
    u = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
    return _mmd(u, e, g)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, d] (float64)."""
    from balance.metrics.frechet import frechet_distance

    return float(frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                  b.mean(0), np.cov(b, rowvar=False)))


def _fid_statistics(real: Tensor, e: EvalConfig, device):
    """Inception statistics of the held-out images, or None without the weights file."""
    from balance.metrics.fid import image_statistics, inception_weights_available

    if not inception_weights_available(e.fid_weights):
        return None
    return image_statistics(real, weights=e.fid_weights, device=device)


def _fid(real_stats, fake: Tensor, e: EvalConfig, device) -> float | str:
    from balance.metrics.fid import fid_from_images

    if real_stats is None:
        return NA_FID
    return fid_from_images(real_stats, fake, weights=e.fid_weights, device=device)


# ------------------------------------------------------------------------------------ tables


TABLE3_HEADERS = (
    "model", "recon FID (ours)", "recon FID (paper)", "gen FID (ours)", "gen FID (paper)",
    "rec. error", "FD-AE recon", "FD-AE gen", "FD-AE gap", "latent MMD^2",
)


def table3_rows(results: dict) -> list[list]:
    rows = []
    for kind, m in results["models"].items():
        paper = results["paper"].get(kind, {})
        rows.append([m["label"], m["recon_fid"], paper.get("recon_fid"), m["gen_fid"],
                     paper.get("gen_fid"), m["rec_error"], m["fd_ae_recon"], m["fd_ae_gen"],
                     m["fd_ae_gap"], m.get("latent_mmd")])
    return rows


def table4_headers(ks: list[int]) -> list[str]:
    out = ["model"]
    for k in ks:
        out += [f"NDB/K K={k} (ours)", f"K={k} (paper)"]
    return out


def table4_rows(results: dict) -> list[list]:
    rows = []
    for kind, m in results["models"].items():
        paper = results["paper"].get(kind, {}).get("ndb_over_k", {})
        row = [m["label"]]
        for k in results["ndb_ks"]:
            row += [m["ndb"][str(k)]["ndb_over_k"], paper.get(str(k))]
        rows.append(row)
    return rows


def directions(models: dict, ks: list[int]) -> dict:
    """The claims of the quick preset, as numbers and yes/no."""
    vp, v, w = models["vae_plus"], models["vae"], models["wae_mmd"]
    out = {
        "fd_ae_gap_vae_plus": vp["fd_ae_gap"],
        "fd_ae_gap_vae": v["fd_ae_gap"],
        "vae_plus_generation_closer_to_reconstruction_than_vae":
            bool(vp["fd_ae_gap"] < v["fd_ae_gap"]),
    }
    if isinstance(vp["gen_fid"], float) and isinstance(v["gen_fid"], float):
        out["fid_gap_vae_plus"] = vp["gen_fid"] - vp["recon_fid"]
        out["fid_gap_vae"] = v["gen_fid"] - v["recon_fid"]
        out["vae_plus_fid_gap_smaller_than_vae"] = bool(out["fid_gap_vae_plus"]
                                                        < out["fid_gap_vae"])
    for k in ks:
        key = str(k)
        out[f"vae_plus_lower_ndb_than_vae_and_wae_k{k}"] = bool(
            vp["ndb"][key]["ndb"] < v["ndb"][key]["ndb"]
            and vp["ndb"][key]["ndb"] < w["ndb"][key]["ndb"]
        )
    return out


# -------------------------------------------------------------------------------------- main


def main(config: Config, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) every stage; returns the combined results (also in results.json)."""
    with limit_threads(config.threads):
        timer = common.Timer()
        run_dir = common.open_run(config, run_dir, DEFAULT_RUN_ROOT / config.preset)
        stages = Stages(config, run_dir, progress)
        stage_results = {"ae": stages.ae()}
        for kind in ("vae_plus", "vae", "wae_mmd"):
            stage_results[kind] = stages.feature_model(kind)
        if common.stage_done(run_dir / "second_stage") is None:
            stages.second_stage()
        stage_results["second_stage"] = common.stage_done(run_dir / "second_stage")
        evaluation = stages.evaluate()
        stage_results["evaluate"] = {k: v for k, v in evaluation.items() if k != "models"}
        results = {
            **common.results_header(NAME, config),
            "config": common.run_identity(config),
            "models": evaluation["models"],
            "ndb_ks": evaluation["ndb_ks"],
            "fid_available": evaluation["fid_available"],
            "n_eval": evaluation["n_eval"],
            "n_train": evaluation["n_train"],
            "directions": directions(evaluation["models"], evaluation["ndb_ks"]),
            "stages": stage_results,
            "paper": PAPER,
            "wall_time_s": float(sum(s.get("wall_time_s", 0.0) for s in stage_results.values())),
            "this_invocation_s": timer(),
        }
        write_json(run_dir / "results.json", results)
        common.write_table(run_dir, "table3", TABLE3_HEADERS, table3_rows(results))
        common.write_table(run_dir, "table4", table4_headers(results["ndb_ks"]),
                           table4_rows(results))
        return results


def report(results: dict) -> str:
    tables = [
        "Table 3 (FD-AE: Frechet distance in the frozen AE's feature space, needs no weights)",
        markdown_table(TABLE3_HEADERS, table3_rows(results)),
        "Table 4 (NDB/K)",
        markdown_table(table4_headers(results["ndb_ks"]), table4_rows(results)),
    ]
    return common.report(results, tables, results["directions"])


def cli(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__, ("quick", "paper", "smoke"), DEFAULT_RUN_ROOT).parse_args(argv)
    config = common.apply_args(preset(args.preset), args)
    if args.device is not None:
        config = replace(config, second_stage=replace(config.second_stage, device=args.device))
    results = main(config, args.run_dir, progress=args.progress)
    print(report(results))
    return results


if __name__ == "__main__":
    common.run_cli(cli, sys.argv[1:])
