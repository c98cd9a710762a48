"""VAE+ (balanced-regularization paper, section 6; EXPERIMENTS.md E3): an unregularized
autoencoder to a feature space, a VAE with skip connections on those features, and a
second-stage VAE on its aggregate posterior.

- Stage 1: a deterministic conv autoencoder ``E_ae, D_ae`` (images -> ``features`` dims),
  trained on the squared error, then frozen (:class:`Frozen`: no gradients, batch norm in
  eval mode).
- Stage 2: a feature model whose encoder is ``E_ae`` then an MLP encoder and whose decoder is
  an MLP decoder then ``D_ae``, so that the ordinary ELBO measures reconstruction in image
  space. :class:`FeatureModelSpec` ``arm``: ``"skip"`` (residual blocks + the affine skip,
  VAE+) or ``"plain"`` (the same number of linear layers without skips, the plain VAE
  baseline); ``deterministic=True`` keeps only the mean (WAE-MMD's encoder).
- Stage 3: Dai & Wipf's second-stage VAE on codes ``z ~ q(z|x)`` of the training images
  (:class:`balance.density_estimation.SecondStageVAE`). :class:`VAEPlus` samples
  ``u ~ N(0, I) -> second stage -> feature decoder -> D_ae``.

The feature model is a :class:`balance.models.vae.GaussianVAE` (or an ``Autoencoder`` when
deterministic) and follows the encode contract of :mod:`balance.models.output`; its
``state_dict`` holds the frozen AE too, so :func:`balance.models.registry.load_model`
rebuilds it from its run folder alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balance.models.vae import GammaConfig

__all__ = ["DeterministicHead", "FeatureModelSpec", "Frozen", "VAEPlus", "attach_autoencoder",
           "build_feature_model"]


class Frozen(nn.Module):
    """A submodule whose parameters are not trained and which always runs in eval mode
    (``train(True)`` on the parent leaves it in eval mode: its batch norm keeps its running
    statistics)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Frozen:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: Tensor):
        return self.module(x)


class DeterministicHead(nn.Module):
    """A deterministic encoder from one that returns ``(mu, logvar)``: ``x -> mu``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)[0]


@dataclass(frozen=True)
class FeatureModelSpec:
    """A feature model of VAE+ (module docstring). ``ae``: the stage-1 autoencoder's spec
    (a deterministic :class:`balance.models.registry.ConvSpec`); MLP encoder of
    ``encoder_depth`` hidden layers of ``width``; decoder of ``decoder_blocks`` residual
    blocks with the affine skip (``arm="skip"``) or a plain MLP (``"plain"``); kappa =
    ``latent_dim``; ``gamma``: the learnable decoder variance (unused when deterministic)."""

    ae: object  # balance.models.registry.ConvSpec (annotated loosely: no import cycle)
    latent_dim: int = 64
    width: int = 512
    encoder_depth: int = 3
    decoder_blocks: int = 3
    arm: str = "skip"
    deterministic: bool = False
    gamma: GammaConfig = GammaConfig()

    def __post_init__(self) -> None:
        if self.arm not in ("skip", "plain"):
            raise ValueError(f"arm must be 'skip' or 'plain', got {self.arm!r}")
        from balance.models.registry import ConvSpec
        from balance.runs import config_from_dict

        if isinstance(self.ae, dict):  # rebuilt from a run folder's JSON
            object.__setattr__(self, "ae", config_from_dict(ConvSpec, self.ae))
        if not isinstance(self.ae, ConvSpec) or self.ae.head != "deterministic":
            raise ValueError("FeatureModelSpec.ae must be a deterministic ConvSpec")


def build_feature_model(spec: FeatureModelSpec, data_shape: tuple[int, ...],
                        seed: int = 0) -> nn.Module:
    """The feature model of ``spec`` for images ``data_shape``; the AE part at a random
    initialisation (load the trained one with :func:`attach_autoencoder`), the MLPs from
    ``seed``."""
    from balance.models.autoencoder import Autoencoder
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
    from balance.models.registry import build
    from balance.models.vae import GaussianVAE
    from balance.runs import seed_everything

    ae = build(spec.ae, data_shape, seed)
    seed_everything(seed)  # the MLPs' weights do not depend on the AE's architecture
    shape = (spec.ae.latent_dim,)
    mlp_encoder = MLPEncoder(MLPEncoderConfig(data_shape=shape, latent_dim=spec.latent_dim,
                                              width=spec.width, depth=spec.encoder_depth))
    skip = spec.arm == "skip"
    mlp_decoder = MLPDecoder(MLPDecoderConfig(
        data_shape=shape, latent_dim=spec.latent_dim, width=spec.width,
        depth=spec.decoder_blocks if skip else 2 * spec.decoder_blocks + 1,
        residual=skip, affine_skip=skip))
    decoder = nn.Sequential(mlp_decoder, Frozen(ae.decoder))
    if spec.deterministic:
        return Autoencoder(nn.Sequential(Frozen(ae.encoder), DeterministicHead(mlp_encoder)),
                           decoder)
    return GaussianVAE(nn.Sequential(Frozen(ae.encoder), mlp_encoder), decoder, spec.gamma,
                       latent_dim=spec.latent_dim)


@torch.no_grad()
def attach_autoencoder(model: nn.Module, ae: nn.Module) -> nn.Module:
    """Copy the trained stage-1 autoencoder's weights into the frozen parts of a feature
    model; returns the model."""
    model.encoder[0].module.load_state_dict(ae.encoder.state_dict())
    model.decoder[1].module.load_state_dict(ae.decoder.state_dict())
    return model


class VAEPlus:
    """The VAE+ sampler: a trained feature model and a fitted second stage.

    ``sample(n, generator)``: ``u ~ N(0, I)`` -> second-stage decoder -> ``z`` -> feature
    decoder -> images ``[n, C, H, W]`` (clamped to [0, 1], in batches on the model's device).
    """

    def __init__(self, feature_model: nn.Module, second_stage, batch_size: int = 250):
        self.model = feature_model.eval()
        self.second_stage = second_stage
        self.batch_size = batch_size

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        from balance.evaluation.codec import Codec

        z = self.second_stage.sample(n, generator=generator)
        return Codec(self.model, self.batch_size).decode(z.float())
