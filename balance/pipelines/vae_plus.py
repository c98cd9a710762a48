"""The VAE+ pipeline of E3 (balanced-regularization paper, Tables 3 and 4): train the stages
of :mod:`balance.models.vae_plus` in sub-folders of one run folder, then score every row.

Stages (each skipped once its ``results.json`` exists; an interrupted training resumes):

1. ``ae``: the unregularized conv AE to the feature space (squared error);
2. ``vae_plus``, ``vae``, ``wae_mmd``: the feature models (ELBO with learnable gamma for the
   two VAEs, WAE-MMD with weight ``wae_beta``); ``vae`` has the plain decoder;
3. ``second_stage``: Dai & Wipf's second-stage VAE on the VAE+ codes z ~ q(z|x);
4. ``evaluate``: reconstructions and samples of every row (:data:`MODELS`) on the held-out
   images: reconstruction error, FID (where the Inception weights exist), NDB/K per K, the
   Frechet distance in the frozen AE's feature space (FD-AE, which needs no weights), latent
   MMD^2 to N(0, I), and image grids.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from balance.data.splits import CelebAData, load_celeba_train_eval
from balance.density_estimation import FlowConfig, SecondStageConfig
from balance.engine import EngineConfig, run_cells
from balance.evaluation.codec import Codec, batched_map
from balance.evaluation.images import (
    FIDScorer,
    down_up,
    feature_frechet,
    image_grid,
    ndb_evaluators,
    save_png,
    thumbnails,
)
from balance.models.registry import ConvSpec, build, load_model, save_model_record
from balance.models.vae import GammaConfig
from balance.models.vae_plus import FeatureModelSpec, VAEPlus, attach_autoencoder
from balance.runs import RESULTS_FILE, Stage
from balance.train import TrainConfig, train

__all__ = ["MODELS", "Stages", "VAEPlusConfig", "VAEPlusEval", "Features"]

#: Models of the tables, in row order (vae_plus_prior: VAE+ sampled from N(0, I), an ablation;
#: vae_plus_<sampler>: VAE+ sampled from an ex-post density on its training codes instead of
#: the second stage, for each of ``VAEPlusConfig.samplers``).
MODELS = ("downsample", "wae_mmd", "vae", "vae_plus_prior", "vae_plus", "vae_plus_flow",
          "vae_plus_dpgmm")
LABELS = {
    "real": "real (held-out)",
    "downsample": "Downsample",
    "wae_mmd": "WAE-MMD",
    "vae": "VAE",
    "vae_plus_prior": "VAE+ without 2nd stage",
    "vae_plus": "VAE+",
    "vae_plus_flow": "VAE+ with a flow (RealNVP)",
    "vae_plus_dpgmm": "VAE+ with a DP-GMM",
}


@dataclass(frozen=True)
class Features:
    """The MLP networks on the AE features (``balance.models.vae_plus.FeatureModelSpec``):
    encoder ``encoder_depth`` hidden layers of ``width``; decoder ``decoder_blocks`` residual
    blocks with the affine skip (VAE+, WAE-MMD) or the same number of plain layers (VAE);
    kappa = ``latent_dim``; ``gamma``: the VAEs' learnable decoder variance (its ``lr``: Adam's
    lr for log gamma, None: the network's)."""

    latent_dim: int = 64
    width: int = 512
    encoder_depth: int = 3
    decoder_blocks: int = 3
    gamma: GammaConfig = GammaConfig()


@dataclass(frozen=True)
class VAEPlusEval:
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
class VAEPlusConfig:
    preset: str = "quick"
    data: CelebAData = CelebAData()
    resolution: int = 128
    downsample_to: int = 64
    ae: ConvSpec = ConvSpec(latent_dim=64, base_filters=64, kernel_size=5)
    ae_train: TrainConfig = TrainConfig()
    features: Features = Features()
    vae_plus_train: TrainConfig = TrainConfig()
    vae_train: TrainConfig = TrainConfig()
    wae_train: TrainConfig = TrainConfig()
    wae_beta: float = 8000.0
    second_stage: SecondStageConfig = SecondStageConfig()
    samplers: tuple[str, ...] = ("flow", "dpgmm")
    flow: FlowConfig = FlowConfig()
    eval: VAEPlusEval = VAEPlusEval()
    device: str = "auto"
    threads: int | None = None
    engine: EngineConfig = EngineConfig()


#: feature model -> (arm, deterministic encoder, objective kind, its training config field).
FEATURE_MODELS = {"vae_plus": ("skip", False, "elbo", "vae_plus_train"),
                  "vae": ("plain", False, "elbo", "vae_train"),
                  "wae_mmd": ("skip", True, "wae", "wae_train")}


def feature_spec(config: VAEPlusConfig, kind: str) -> FeatureModelSpec:
    arm, deterministic, _, _ = FEATURE_MODELS[kind]
    f = config.features
    return FeatureModelSpec(ae=config.ae, latent_dim=f.latent_dim, width=f.width,
                            encoder_depth=f.encoder_depth, decoder_blocks=f.decoder_blocks,
                            arm=arm, deterministic=deterministic, gamma=f.gamma)


class Stages:
    """The run's stages (each a sub-folder, skipped once finished) over shared data."""

    def __init__(self, config: VAEPlusConfig, run_dir: Path, progress: bool) -> None:
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self._data: tuple[Tensor, Tensor] | None = None

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        if self._data is None:
            self._data = load_celeba_train_eval(self.config.data, self.config.resolution,
                                                progress=self.progress)
        return self._data

    def _train(self, model, loss_fn, cfg: TrainConfig, folder: Path):
        cfg = replace(cfg, device=self.config.device, progress=self.progress)
        return train(model, loss_fn, self.data[0], cfg, run_dir=folder)

    def ae(self) -> dict:
        """1. The unregularized conv AE to the feature space."""
        from balance.objectives import loss

        c = self.config
        shape = (3, c.resolution, c.resolution)
        stage = Stage(self.run_dir / "ae", {"stage": "ae", "ae": c.ae, "train": c.ae_train,
                                            "data": c.data, "resolution": c.resolution},
                      c.device)
        if stage.done is not None:
            return stage.done
        model = build(c.ae, shape, c.ae_train.seed)
        save_model_record(stage.folder, c.ae, shape, c.ae_train.seed)
        history = self._train(model, loss("ae", reconstruction="mse"), c.ae_train, stage.folder)
        recon = Codec(model, c.eval.batch_size).reconstruct(self.data[1], clamp=False)
        rec = (self.data[1] - recon).pow(2).flatten(1).sum(1)
        return stage.save({"stage": "ae", "rec_eval": float(rec.mean()),
                           "epochs": _epochs(history), "device": c.device})

    def feature_model(self, kind: str) -> dict:
        """2-4. VAE+, the plain VAE and WAE-MMD on the frozen AE's features."""
        from balance.objectives import loss

        c = self.config
        _, _, objective, train_field = FEATURE_MODELS[kind]
        train_cfg = getattr(c, train_field)
        spec = feature_spec(c, kind)
        identity = {"stage": kind, "model": spec, "train": train_cfg, "data": c.data}
        if kind == "wae_mmd":
            identity["wae_beta"] = c.wae_beta
        self.ae()
        stage = Stage(self.run_dir / kind, identity, c.device)
        if stage.done is not None:
            return stage.done
        shape = (3, c.resolution, c.resolution)
        model = attach_autoencoder(build(spec, shape, train_cfg.seed),
                                   load_model(self.run_dir / "ae"))
        save_model_record(stage.folder, spec, shape, train_cfg.seed)
        loss_fn = loss("wae", reconstruction="mse", beta=c.wae_beta) if objective == "wae" \
            else loss("elbo")
        history = self._train(model, loss_fn, train_cfg, stage.folder)
        out = {"stage": kind, "epochs": _epochs(history), "device": c.device}
        if not spec.deterministic:
            out["gamma_final"] = model.gamma
        return stage.save(out)

    def feature_models(self) -> dict[str, dict]:
        """2-4 once the AE (their input) is trained: on the config's engine, so that Ray runs
        the three at once (each task loads the data itself)."""
        self.ae()
        if self.config.engine.name == "local":
            return {kind: self.feature_model(kind) for kind in FEATURE_MODELS}
        cells = [(self.config, self.run_dir, kind) for kind in FEATURE_MODELS]
        done = run_cells(_feature_cell, cells, self.config.engine, progress=self.progress,
                         done=lambda cell: (self.run_dir / cell[2] / RESULTS_FILE).is_file())
        return dict(zip(FEATURE_MODELS, done, strict=True))

    def model(self, kind: str):
        """A trained feature model, rebuilt from its run folder, on the run's device."""
        from balance.runs import pick_device

        self.feature_model(kind)
        return load_model(self.run_dir / kind).to(pick_device(self.config.device))

    def second_stage(self, vae_plus=None):
        """5. The second-stage VAE on one z ~ q(z|x) per training image (trained once, then
        loaded from its run folder)."""
        from balance.density_estimation import SecondStageVAE

        c = self.config
        stage = Stage(self.run_dir / "second_stage",
                      {"stage": "second_stage", "second_stage": c.second_stage,
                       "seed": c.eval.seed}, c.device)
        vae_plus = vae_plus if vae_plus is not None else self.model("vae_plus")
        codec = Codec(vae_plus, c.eval.batch_size)
        fitted = SecondStageVAE(replace(c.second_stage, progress=self.progress))
        if c.second_stage.resample:  # Dai & Wipf: z ~ q(z|x) drawn afresh at every step
            mu, logvar = codec.posterior(self.data[0])
            fitted.fit(mu, logvar=logvar, run_dir=stage.folder)
        else:  # one fixed draw per image
            codes = codec.sample_posterior(self.data[0],
                                           torch.Generator().manual_seed(c.eval.seed))
            fitted.fit(codes, run_dir=stage.folder)
        if stage.done is None:
            stage.save({"stage": "second_stage", "gamma_z": fitted.gamma,
                        "n_codes": int(self.data[0].shape[0]),
                        "resampled": c.second_stage.resample,
                        "epochs": _epochs(fitted.history), "device": c.device})
        return fitted, stage.done

    def expost_samples(self, vae_plus, recon: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """VAE+ sampled through each ex-post density of ``config.samplers`` fitted on one draw
        z ~ q(z|x) per training image (the flow trains in ``<run>/expost_flow``):
        ``{"vae_plus_<sampler>": (the VAE+ reconstructions, samples)}``."""
        from balance.density_estimation import make_estimator

        c, e = self.config, self.config.eval
        codec = Codec(vae_plus, e.batch_size)
        codes = codec.sample_posterior(self.data[0], torch.Generator().manual_seed(e.seed + 10))
        n = e.n_samples or self.data[1].shape[0]
        out = {}
        for name in c.samplers:
            if name == "flow":
                est = make_estimator("flow", config=replace(c.flow, seed=e.seed)).fit(
                    codes, run_dir=self.run_dir / "expost_flow")
            else:
                est = make_estimator(name, seed=e.seed).fit(codes)
            z = est.sample(n, generator=torch.Generator().manual_seed(e.seed + 11),
                           dtype=torch.float32)
            out[f"vae_plus_{name}"] = (recon, codec.decode(z))
        return out

    def evaluate(self) -> dict:
        """6. Reconstructions and samples of every model, scored on the held-out images."""
        c, e = self.config, self.config.eval
        stage = Stage(self.run_dir / "evaluate", {"stage": "evaluate", "eval": e,
                                                  "data": c.data, "samplers": c.samplers,
                                                  "flow": c.flow}, c.device)
        if stage.done is not None:
            return stage.done
        models = {k: self.model(k) for k in FEATURE_MODELS}
        stage2, _ = self.second_stage(models["vae_plus"])
        train_x, eval_x = self.data
        outputs, extra = generate(c, models, stage2, eval_x)
        outputs.update(self.expost_samples(models["vae_plus"], outputs["vae_plus"][0]))
        per_model = score(c, load_model(self.run_dir / "ae"), train_x, eval_x, outputs, extra)
        kinds = [k for k in MODELS if k in outputs]
        rows = [eval_x[: e.grid_columns]] + [outputs[k][1][: e.grid_columns] for k in kinds]
        save_png(image_grid(rows, e.grid_tile), self.run_dir / "sample_grid.png")
        save_png(image_grid(rows, c.resolution), stage.folder / "sample_grid_full.png")
        recon_kinds = [k for k in kinds if k in ("downsample", "wae_mmd", "vae", "vae_plus")]
        recon_rows = [eval_x[: e.grid_columns]] + [outputs[k][0][: e.grid_columns]
                                                   for k in recon_kinds]
        save_png(image_grid(recon_rows, e.grid_tile), self.run_dir / "reconstruction_grid.png")
        return stage.save({
            "models": per_model, "n_eval": int(eval_x.shape[0]), "n_train": int(train_x.shape[0]),
            "fid_available": any(isinstance(m["recon_fid"], float) for m in per_model.values()),
            "ndb_ks": [int(k) for k in next(iter(per_model.values()))["ndb"]],
            "grid_rows": ["real"] + kinds, "recon_grid_rows": ["real"] + recon_kinds,
            "device": c.device,
        })


def _feature_cell(config: VAEPlusConfig, run_dir: Path, kind: str) -> dict:
    """One feature model as an engine cell."""
    from balance.threads import limit_threads

    with limit_threads(config.threads):
        return Stages(config, run_dir, progress=False).feature_model(kind)


def generate(c: VAEPlusConfig, models: dict, stage2, eval_x: Tensor) -> tuple[dict, dict]:
    """``{row: (reconstructions, samples)}`` of the held-out images and the latent scores."""

    from balance.metrics.mmd import mmd_to_standard_normal

    e = c.eval
    n = e.n_samples or eval_x.shape[0]
    g = torch.Generator().manual_seed(e.seed)

    def mmd(z: Tensor) -> float:
        return mmd_to_standard_normal((z[: e.mmd_samples] if e.mmd_samples else z).double(),
                                      generator=g)

    down = down_up(eval_x, c.downsample_to)
    outputs, extra = {"downsample": (down, down)}, {}
    for kind in ("wae_mmd", "vae", "vae_plus"):  # the order of the draws from g
        model = models[kind]
        codec = Codec(model, e.batch_size)
        mu, logvar = codec.posterior(eval_x)
        z = mu if logvar is None else mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape,
                                                                                 generator=g)
        recon = codec.decode(mu)
        prior_z = torch.randn(n, c.features.latent_dim, generator=g)
        info = {"latent_mmd": mmd(z)}
        if kind == "vae_plus":
            outputs["vae_plus_prior"] = (recon, codec.decode(prior_z))
            extra["vae_plus_prior"] = dict(info)
            outputs["vae_plus"] = (recon, VAEPlus(model, stage2, e.batch_size).sample(
                n, generator=g))
            u = Codec(stage2.model, e.batch_size).sample_posterior(
                ((z - stage2.shift) / stage2.scale).float(), g)
            info["second_stage_latent_mmd"] = mmd(u)
            info["second_stage_gamma_z"] = stage2.gamma
        else:
            outputs[kind] = (recon, codec.decode(prior_z))
        if kind != "wae_mmd":
            info["gamma_final"] = model.gamma
        extra[kind] = info
    return outputs, extra


def score(c: VAEPlusConfig, ae, train_x: Tensor, eval_x: Tensor, outputs: dict,
          extra: dict) -> dict:
    """Every row's reconstruction error, FD in the frozen AE's feature space, NDB/K per K and
    FID (where the Inception weights exist)."""
    from balance.runs import pick_device

    e = c.eval
    device = pick_device(c.device)
    ae = ae.to(device)

    def ndb_vectors(images: Tensor) -> np.ndarray:
        return batched_map(lambda b: thumbnails(b, e.ndb_resolution), images, e.batch_size,
                           "cpu").flatten(1).numpy()

    def features(images: Tensor) -> np.ndarray:
        return Codec(ae, e.batch_size).encode(images).double().numpy()

    ndb = ndb_evaluators(ndb_vectors(train_x[: e.ndb_train_limit]), e.ndb_ks, seed=e.seed)
    real_features = features(eval_x)
    fid = FIDScorer(eval_x, weights=e.fid_weights, device=device)
    per_model = {}
    for kind in [k for k in MODELS if k in outputs]:
        recon, samples = outputs[kind]
        fd_rec = feature_frechet(real_features, features(recon))
        gen_features = features(recon if kind == "downsample" else samples)
        fd_gen = fd_rec if kind == "downsample" else feature_frechet(real_features, gen_features)
        recon_fid = fid(recon)
        per_model[kind] = {
            "label": LABELS[kind],
            "rec_error": float((eval_x - recon).pow(2).flatten(1).sum(1).mean()),
            "fd_ae_recon": fd_rec, "fd_ae_gen": fd_gen, "fd_ae_gap": fd_gen - fd_rec,
            "ndb": {str(k): f(ndb_vectors(samples)) for k, f in ndb.items()},
            "recon_fid": recon_fid,
            "gen_fid": recon_fid if kind == "downsample" else fid(samples),
            "n_samples": int(samples.shape[0]),
            "device": str(device),
            **_generation_ae(real_features, gen_features, e.seed),
            **extra.get(kind, {}),
        }
    return per_model


def _generation_ae(real: np.ndarray, fake: np.ndarray, seed: int) -> dict[str, float]:
    """KID and improved precision / recall in the frozen AE's feature space (``_ae``: needs no
    pretrained network), :mod:`balance.metrics.generation`."""
    from balance.metrics.generation import kid, precision_recall

    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    k = kid(real_t, fake_t, subsets=20, subset_size=min(500, len(real), len(fake)),
            generator=torch.Generator().manual_seed(seed))
    pr = precision_recall(real_t, fake_t)
    return {"kid_ae": k["kid"], "kid_std_ae": k["kid_std"], "precision_ae": pr["precision"],
            "recall_ae": pr["recall"]}


def _epochs(history: list[dict] | None) -> list[dict]:
    keep = ("epoch", "step", "loss", "reconstruction", "squared_error", "gamma", "latent",
            "decoder", "time_s")
    return [{k: h[k] for k in keep if k in h} for h in (history or [])]


