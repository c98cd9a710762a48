"""Model specs and builders: a preset names a model with a small frozen spec, and
:func:`build` turns it into a module; a run folder records the spec so that
:func:`load_model` rebuilds the trained model from the folder alone.

- :class:`MLPVAESpec`: ``GaussianVAE`` with an MLP encoder and decoder, 4 skip arms (E1);
- :class:`ConvSpec`: ``Autoencoder`` (AE family, VAE, CV-VAE) or ``GaussianVAE`` on the conv
  pair (E2, E4, E5);
- :class:`balance.models.vae_plus.FeatureModelSpec`: a VAE+ feature model (E3);
- :class:`DiscreteSpec`: a discrete-latent autoencoder (E6);
- :class:`balance.models.grammar_ae.SequenceAEConfig`: a Grammar VAE / GrammarRAE (E7).

Adding a model family: a spec dataclass, a builder ``(spec, data_shape) -> nn.Module`` and one
line in :data:`BUILDERS`. Each builder seeds torch with ``seed`` first, so the initial weights
are a function of the spec, the data shape and the seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from balance.models.autoencoder import AEConfig
from balance.models.grammar_ae import SequenceAEConfig
from balance.models.vae import GammaConfig
from balance.models.vae_plus import FeatureModelSpec

__all__ = ["ARMS", "BUILDERS", "ConvSpec", "DiscreteSpec", "MLPVAESpec", "build", "load_model",
           "MODEL_FILE"]

#: The file of a run folder that records how to rebuild its model.
MODEL_FILE = "model.json"

#: Decoder arms of the MLP VAE (E1): which of the two skips the decoder has.
#: ``residual``: residual blocks, no affine skip (the paper's E1 decoder); ``residual_affine``:
#: residual blocks plus the affine skip z -> x of eq. (5); ``affine``: a plain MLP plus the
#: affine skip; ``none``: a plain MLP of the same number of linear layers.
ARMS = ("residual", "residual_affine", "affine", "none")


@dataclass(frozen=True)
class MLPVAESpec:
    """Gaussian VAE of MLPs (``balance.models.mlp``): encoder ``encoder_depth`` hidden layers of
    ``width``; decoder ``decoder_blocks`` residual blocks of two layers (arms ``residual*``) or
    a plain MLP with the same number of linear layers (``2 blocks + 2``; arms ``affine``,
    ``none``); gamma as in :class:`balance.models.vae.GammaConfig`."""

    latent_dim: int
    width: int = 500
    encoder_depth: int = 5
    decoder_blocks: int = 3
    arm: str = "residual"
    activation: str = "relu"
    gamma: GammaConfig = GammaConfig()

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"unknown arm {self.arm!r}; choose one of {ARMS}")


@dataclass(frozen=True)
class ConvSpec:
    """The conv encoder/decoder pair (``balance.models.conv.conv_pair``) in an
    :class:`balance.models.autoencoder.Autoencoder` (options in ``ae``), or in a
    :class:`balance.models.vae.GaussianVAE` when ``gamma`` is given (then ``head`` must be
    ``"gaussian"`` and ``ae`` is unused); ``layout``: ``"mirror"`` (Ghosh et al.) or ``"daly"``
    (Daly et al.'s strided-last stages and two-layer decoder; :mod:`balance.models.conv`)."""

    latent_dim: int = 16
    base_filters: int = 16
    depth: int | tuple[int, ...] = 1
    kernel_size: int = 4
    head: str = "deterministic"
    output: str = "sigmoid"
    fixed_std: float = 0.7
    logvar_bound: float | None = 10.0
    ae: AEConfig = AEConfig()
    gamma: GammaConfig | None = None
    layout: str = "mirror"

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int):
            object.__setattr__(self, "depth", tuple(int(d) for d in self.depth))
        if self.gamma is not None and self.head != "gaussian":
            raise ValueError("a ConvSpec with gamma (a GaussianVAE) needs head='gaussian'")


def _mlp_vae(spec: MLPVAESpec, data_shape: tuple[int, ...]) -> nn.Module:
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
    from balance.models.vae import GaussianVAE

    encoder = MLPEncoder(MLPEncoderConfig(data_shape, spec.latent_dim, width=spec.width,
                                          depth=spec.encoder_depth, activation=spec.activation))
    residual = spec.arm.startswith("residual")
    decoder = MLPDecoder(MLPDecoderConfig(
        data_shape, spec.latent_dim, width=spec.width,
        depth=spec.decoder_blocks if residual else 2 * spec.decoder_blocks + 1,
        residual=residual, affine_skip=spec.arm in ("residual_affine", "affine"),
        activation=spec.activation,
    ))
    return GaussianVAE(encoder, decoder, spec.gamma)


def _conv(spec: ConvSpec, data_shape: tuple[int, ...]) -> nn.Module:
    from balance.models.autoencoder import Autoencoder
    from balance.models.conv import conv_pair
    from balance.models.vae import GaussianVAE

    if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
        raise ValueError(f"the conv pair needs square images [C, R, R], got {data_shape}")
    encoder, decoder = conv_pair(
        in_channels=data_shape[0], resolution=data_shape[1], latent_dim=spec.latent_dim,
        base_filters=spec.base_filters, depth=spec.depth, kernel_size=spec.kernel_size,
        head=spec.head, output=spec.output, fixed_std=spec.fixed_std,
        logvar_bound=spec.logvar_bound, layout=spec.layout,
    )
    if spec.gamma is not None:
        return GaussianVAE(encoder, decoder, spec.gamma, latent_dim=spec.latent_dim)
    return Autoencoder(encoder, decoder, spec.ae)


def _feature_model(spec: FeatureModelSpec, data_shape: tuple[int, ...]) -> nn.Module:
    import torch

    from balance.models.vae_plus import build_feature_model

    return build_feature_model(spec, data_shape, torch.initial_seed())


@dataclass(frozen=True)
class DiscreteSpec:
    """A discrete-latent autoencoder of MLPs (:mod:`balance.models.discrete`): ``kind``
    (``categorical_vae``, ``discrete_rae``, ``vqvae``), ``m`` variables of ``k`` classes
    (VQ-VAE: ``k`` codebook vectors of size ``d``), encoder and decoder of ``depth`` hidden
    layers of ``width``, a sigmoid output; the discrete RAE's decoder optionally spectrally
    normalised, the VQ-VAE's codebook optionally updated by EMA."""

    kind: str = "discrete_rae"
    m: int = 20
    k: int = 10
    d: int = 4
    width: int = 256
    depth: int = 2
    spectral_norm: bool = False
    ema: bool = False
    tau_0: float = 1.0
    tau_min: float = 0.5
    tau_rate: float = 1e-4

    def __post_init__(self) -> None:
        kinds = ("categorical_vae", "discrete_rae", "vqvae")
        if self.kind not in kinds:
            raise ValueError(f"unknown discrete model {self.kind!r}; choose one of {kinds}")


def _discrete(spec: DiscreteSpec, data_shape: tuple[int, ...]) -> nn.Module:
    import math

    from balance.models import discrete

    pixels = math.prod(data_shape)
    code = spec.m * (spec.d if spec.kind == "vqvae" else spec.k)

    def mlp(n_in: int, n_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for i in range(spec.depth):
            layers += [nn.Linear(n_in if i == 0 else spec.width, spec.width), nn.ReLU()]
        return [*layers, nn.Linear(spec.width if spec.depth else n_in, n_out)]

    encoder = nn.Sequential(nn.Flatten(), *mlp(pixels, code))
    decoder = nn.Sequential(*mlp(code, pixels), nn.Sigmoid(), nn.Unflatten(1, data_shape))
    if spec.kind == "vqvae":
        return discrete.VQVAE(encoder, decoder, spec.m, spec.d, spec.k, ema=spec.ema)
    if spec.kind == "categorical_vae":
        schedule = discrete.TemperatureConfig(spec.tau_0, spec.tau_min, spec.tau_rate)
        return discrete.CategoricalVAE(encoder, decoder, spec.m, spec.k, schedule)
    return discrete.DiscreteRAE(encoder, decoder, spec.m, spec.k,
                                spectral_norm=spec.spectral_norm)


def _grammar(spec, data_shape: tuple[int, ...]) -> nn.Module:
    from balance.models.grammar_ae import GrammarAutoencoder

    if len(data_shape) != 2 or tuple(data_shape) != (spec.steps, spec.classes):
        raise ValueError(f"a grammar autoencoder of {spec.steps} steps x {spec.classes} "
                         f"classes cannot take data of shape {data_shape}")
    return GrammarAutoencoder(spec)


#: spec type -> (name recorded in a run folder, builder).
BUILDERS: dict[type, tuple[str, Callable[[Any, tuple[int, ...]], nn.Module]]] = {
    MLPVAESpec: ("mlp_vae", _mlp_vae),
    ConvSpec: ("conv", _conv),
    FeatureModelSpec: ("vae_plus_features", _feature_model),
    DiscreteSpec: ("discrete", _discrete),
    SequenceAEConfig: ("grammar", _grammar),
}


def build(spec: Any, data_shape: Sequence[int], seed: int = 0) -> nn.Module:
    """The module of ``spec`` for samples of shape ``data_shape``, initial weights from
    ``seed`` (torch's global generator is seeded with it)."""
    from balance.runs import seed_everything

    entry = BUILDERS.get(type(spec))
    if entry is None:
        known = ", ".join(t.__name__ for t in BUILDERS)
        raise TypeError(f"no builder for {type(spec).__name__}; known specs: {known}")
    seed_everything(seed)
    return entry[1](spec, tuple(int(s) for s in data_shape))


def model_record(spec: Any, data_shape: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """What :func:`load_model` needs, as JSON: the builder's name, the spec, shape and seed."""
    from balance.runs import config_to_dict

    name = BUILDERS[type(spec)][0]
    return {"builder": name, "spec": config_to_dict(spec), "data_shape": list(data_shape),
            "seed": int(seed)}


def save_model_record(run_dir: str | os.PathLike, spec: Any, data_shape: Sequence[int],
                      seed: int = 0) -> Path:
    """Write ``model.json`` into ``run_dir`` (:func:`model_record`)."""
    from balance.runs import write_json

    return write_json(Path(run_dir) / MODEL_FILE, model_record(spec, data_shape, seed))


def load_model(run_dir: str | os.PathLike, *, map_location: str = "cpu") -> nn.Module:
    """Rebuild the trained model of ``run_dir`` from its ``model.json`` and the weights of its
    ``checkpoint.pt``, in eval mode.

    Raises ``FileNotFoundError`` for a folder without a model record or checkpoint and
    :class:`balance.runs.CheckpointError` for a record or checkpoint that does not describe
    this model (corrupt, foreign or from another version).
    """
    from balance.runs import CheckpointError, config_from_dict, load_checkpoint, read_json

    run_dir = Path(run_dir)
    record_path = run_dir / MODEL_FILE
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {MODEL_FILE}: it is not a model run folder written by balance "
            "(point load_model at the folder of one training run, e.g. runs/kappa_sweep/"
            "quick/residual/kappa50)"
        )
    try:
        record = read_json(record_path)
        by_name = {name: (cls, fn) for cls, (name, fn) in BUILDERS.items()}
        cls, fn = by_name[record["builder"]]
        spec = config_from_dict(cls, record["spec"])
        shape = tuple(int(s) for s in record["data_shape"])
        seed = int(record.get("seed", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{record_path} does not describe a model this version of balance can build "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    model = build(spec, shape, seed)
    from balance.train import CHECKPOINT_FILE

    state = load_checkpoint(run_dir / CHECKPOINT_FILE, map_location=map_location)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"the checkpoint in {run_dir} does not fit the model its {MODEL_FILE} describes "
            f"({type(exc).__name__}: {exc}); the folder is damaged or mixes two runs"
        ) from exc
    return model.eval()


def with_latent(spec: Any, latent_dim: int) -> Any:
    """``spec`` with another latent size."""
    return replace(spec, latent_dim=int(latent_dim))
