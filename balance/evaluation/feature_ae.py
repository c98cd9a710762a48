"""A feature space that needs no download: a deterministic conv autoencoder trained once on a
table's training images, whose codes stand in for Inception's pool features. The Frechet
distance between Gaussians fitted to its codes of real and generated images (``fd_ae``) is FID's
formula in that space: it ranks samplers and models where pytorch-fid's weights are absent, and
is always labelled as its own feature space, never as FID.

The autoencoder trains in its own run folder (resumable, like every training run) and is
rebuilt from there by any process (an engine worker included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FeatureAEConfig", "FeatureSpace", "feature_space"]


@dataclass(frozen=True)
class FeatureAEConfig:
    """The feature autoencoder: the conv pair (mirror layout) with ``latent_dim`` codes and
    ``base_filters``, trained on the MSE for ``epochs`` with Adam at ``lr``."""

    latent_dim: int = 64
    base_filters: int = 16
    kernel_size: int = 4
    epochs: int = 5
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0


class FeatureSpace:
    """``images [N, C, H, W] -> codes [N, latent_dim]`` (float64 numpy) of a trained feature
    autoencoder; ``name`` labels the scores computed in it."""

    name = "ae"

    def __init__(self, model: torch.nn.Module, batch_size: int = 500):
        from balance.evaluation.codec import Codec

        self.codec = Codec(model.eval(), batch_size)

    def __call__(self, images: Tensor) -> np.ndarray:
        return self.codec.encode(images.float()).double().cpu().numpy()


def feature_space(config: FeatureAEConfig, train_x: Tensor, folder: str | Path,
                  device: str = "cpu") -> FeatureSpace:
    """The feature space of ``config`` trained on ``train_x`` in ``folder`` (trained on the
    first call, resumed after an interruption, loaded afterwards)."""
    from balance.models.registry import ConvSpec, build, load_model, save_model_record
    from balance.objectives import loss
    from balance.runs import Stage
    from balance.train import TrainConfig, train

    folder = Path(folder)
    spec = ConvSpec(latent_dim=config.latent_dim, base_filters=config.base_filters,
                    kernel_size=config.kernel_size)
    stage = Stage(folder, {"feature_ae": config, "model": spec,
                           "data_shape": list(train_x.shape[1:]), "n": int(train_x.shape[0])},
                  device)
    if stage.done is None:
        model = build(spec, train_x.shape[1:], config.seed)
        save_model_record(folder, spec, train_x.shape[1:], config.seed)
        cfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                          seed=config.seed, progress=False, device=device)
        history = train(model, loss("ae", reconstruction="mse"), train_x, cfg, run_dir=folder)
        stage.save({"final_loss": history[-1]["loss"] if history else None})
    from balance.runs import pick_device

    return FeatureSpace(load_model(folder, map_location="cpu").to(pick_device(device)))
