"""Objectives of deterministic, regularized and variational autoencoders (THEORY.md section 4).

All variants share one form, per sample i of a batch of B (Ghosh et al. 2020, eq. 11):

    L_i = rec(x_i, x_hat_i) + beta * latent_i + lam * decoder_i

| kind       | latent_i (weight beta)                   | decoder_i (weight lam)            |
| ---------- | ---------------------------------------- | --------------------------------- |
| ``ae``     | -                                        | -                                 |
| ``rae``    | ||z_i||^2 / 2                            | -                                 |
| ``rae_l2`` | ||z_i||^2 / 2                            | ||theta_dec||^2 (same for all i)  |
| ``rae_gp`` | ||z_i||^2 / 2                            | ||grad_z D(z)||_F^2 at z = E(x_i) |
| ``rae_sn`` | ||z_i||^2 / 2 (decoder layers are SN)    | -                                 |
| ``cv_vae`` | ||mu_i||^2 / 2 (KL up to constants)      | -                                 |
| ``vae``    | KL(N(mu_i, diag e^logvar_i) || N(0, I))  | -                                 |
| ``wae``    | MMD^2_u(codes, N(0, I) draws) (batch)    | -                                 |

Units: ``rec`` is per image (summed over pixels): the squared error for ``"mse"``, nats for
``"bce"`` (Bernoulli) and ``"gaussian"`` (fixed variance ``gamma``, constants included); the KL is
in nats. The official RAE code averages the squared error over pixels and the embedding
loss over latent dimensions, so its weight w maps to ``beta = 2 w D / k`` here (D pixels,
k latents); see REFERENCE_IMPLEMENTATIONS.md.

A zero weight drops its term from the loss (it is not computed; it is logged as zero).

Gradient penalty (RAE-GP). The paper defines L_GP = ||grad_z D(z)||_2^2 at z = E(x), i.e. the
squared Frobenius norm of the decoder Jacobian J_i = dD(z_i)/dz_i ([D, k]). Estimators:

- ``"hutchinson"`` (default): ||J_i^T v||^2 with v ~ N(0, I_D) in data space, averaged over
  ``gp_probes`` draws; unbiased because E[v v^T] = I gives E||J^T v||^2 = tr(J J^T) = ||J||_F^2.
  One extra backward pass per probe (with ``create_graph`` for the parameter gradient).
- ``"exact"``: sum over the k latent directions of ||J_i e_j||^2; each column J e_j is obtained by
  differentiating the (linear in u) vector-Jacobian product J^T u with respect to u, k + 1
  backward passes.
- ``"official"``: ||grad_z sum_j D(z)_j^2||^2 = ||2 J_i^T D(z_i)||^2, what the authors' code
  computes (weighted by the reconstructions, not the Jacobian's norm).

With batch normalisation in training mode the batch decoder couples samples, so the gradient
of sample i's output also has O(1/B) contributions from the other codes; the estimators
differentiate that batch function as the reference code does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balance.density import gaussian_log_prob_isotropic, kl_standard_normal

KINDS = ("ae", "rae", "rae_l2", "rae_gp", "rae_sn", "cv_vae", "vae", "wae")
RECONSTRUCTIONS = ("mse", "bce", "gaussian")
GP_ESTIMATORS = ("hutchinson", "exact", "official")
#: Decoder regularisers of the RAE-style objectives on other decoders (discrete, grammar).
DECODER_REGULARIZERS = ("none", "l2", "gp")
# Scales of the multi-scale IMQ kernel of the WAE (pythae / Tolstikhin et al.).
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # = balance.kernels.WAE_IMQ_SCALES

_LATENT_KINDS = ("rae", "rae_l2", "rae_gp", "rae_sn", "cv_vae", "vae", "wae")
_STOCHASTIC_KINDS = ("cv_vae", "vae")


@dataclass(frozen=True)
class AEObjectiveConfig:
    """Which objective (``kind``, table in the module docstring) and its weights.

    - ``beta``: weight of the latent term (embedding, KL or MMD).
    - ``lam``: weight of the decoder term (L2 or gradient penalty).
    - ``reconstruction``: ``"mse"`` (squared error per image), ``"bce"`` (Bernoulli NLL, nats) or
      ``"gaussian"`` (NLL with fixed variance ``gamma``, nats).
    - ``gp_estimator`` / ``gp_probes``: gradient-penalty estimator (module docstring).
    - ``wae_scales`` / ``wae_bandwidth``: the IMQ kernel sum of the WAE.
    """

    kind: str = "ae"
    reconstruction: str = "mse"
    beta: float = 0.0
    lam: float = 0.0
    gamma: float = 1.0
    gp_estimator: str = "hutchinson"
    gp_probes: int = 1
    wae_scales: tuple[float, ...] = WAE_SCALES
    wae_bandwidth: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTIONS}, got {self.reconstruction!r}"
            )
        if self.gp_estimator not in GP_ESTIMATORS:
            raise ValueError(
                f"gp_estimator must be one of {GP_ESTIMATORS}, got {self.gp_estimator!r}"
            )
        if self.beta < 0 or self.lam < 0 or not self.gamma > 0 or self.gp_probes < 1:
            raise ValueError("beta and lam must be >= 0, gamma > 0 and gp_probes >= 1")
        object.__setattr__(self, "wae_scales", tuple(float(s) for s in self.wae_scales))


@dataclass
class AETerms:
    """Per-sample terms ([B] each) and their weights; ``loss()`` is the batch mean of L_i."""

    rec: Tensor
    latent: Tensor
    decoder: Tensor
    beta: float = 0.0
    lam: float = 0.0
    extra: dict[str, Tensor] = field(default_factory=dict)

    def per_sample(self) -> Tensor:
        """L_i = rec_i + beta * latent_i + lam * decoder_i, [B]."""
        total = self.rec
        if self.beta:
            total = total + self.beta * self.latent
        if self.lam:
            total = total + self.lam * self.decoder
        return total

    def loss(self) -> Tensor:
        return self.per_sample().mean()


# ----------------------------------------------------------------------------- pure terms


def reconstruction_cost(x: Tensor, x_hat: Tensor, kind: str = "mse", gamma: float = 1.0) -> Tensor:
    """Per-image reconstruction cost [B], summed over all non-batch dimensions.

    - ``"mse"``: sum (x - x_hat)^2.
    - ``"bce"``: -sum [x log x_hat + (1 - x) log(1 - x_hat)] (nats; x_hat in [0, 1], torch
      clamps the logs at -100).
    - ``"gaussian"``: -log N(x; x_hat, gamma I)
      = sum (x - x_hat)^2 / (2 gamma) + D/2 log(2 pi gamma).
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape")
    if kind == "mse":
        return (x - x_hat).pow(2).flatten(1).sum(1)
    if kind == "bce":
        return F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
    if kind == "gaussian":
        return -gaussian_log_prob_isotropic(x, x_hat, math.log(gamma))
    raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {kind!r}")


def embedding_penalty(z: Tensor) -> Tensor:
    """||z||^2 / 2 per sample [B] (RAE; also the CV-VAE KL up to an additive constant)."""
    return 0.5 * z.pow(2).sum(1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample [B], nats:
    sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1) / 2 (``balance.density.kl_standard_normal``).
    """
    return kl_standard_normal(mu, logvar)


def decoder_weight_norm(decoder: nn.Module) -> Tensor:
    """||theta_dec||^2: sum of squared weights of the decoder's Linear / conv layers and the
    weight matrices of its recurrent layers (no biases, no normalisation parameters), a scalar.
    The RAE reference regularises the transposed convolutions' kernels (Keras
    ``kernel_regularizer``); this includes the first Linear too."""
    total = None
    for layer in decoder.modules():
        if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d):
            weights = [layer.weight]
        elif isinstance(layer, nn.RNNBase):
            weights = [w for name, w in layer.named_parameters() if name.startswith("weight")]
        else:
            continue
        for w in weights:
            sq = w.pow(2).sum()
            total = sq if total is None else total + sq
    if total is None:
        raise ValueError("decoder has no Linear / convolution / recurrent weights")
    return total


def gradient_penalty(
    x_hat: Tensor,
    z: Tensor,
    *,
    estimator: str = "hutchinson",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Decoder gradient penalty per sample [B] at the codes z ([B, k]) that produced x_hat.

    ``x_hat`` must be a differentiable function of ``z`` (same graph). Estimators (module
    docstring): ``"hutchinson"`` (unbiased for ||J_i||_F^2), ``"exact"`` (||J_i||_F^2 by k + 1
    backward passes), ``"official"`` (||2 J_i^T D(z_i)||^2). The result keeps the graph
    (``create_graph=True``), so it can be minimised.
    """
    if not z.requires_grad:
        raise ValueError("z must require grad (x_hat has to be computed from it)")
    if estimator == "official":
        (g,) = torch.autograd.grad(x_hat.pow(2).sum(), z, create_graph=True)
        return g.pow(2).sum(1)
    if estimator == "hutchinson":
        total = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for _ in range(n_probes):
            v = torch.randn(
                x_hat.shape, generator=generator, device=x_hat.device, dtype=x_hat.dtype
            )
            (g,) = torch.autograd.grad(x_hat, z, grad_outputs=v, create_graph=True)
            total = total + g.pow(2).sum(1)
        return total / n_probes
    if estimator == "exact":
        u = torch.zeros_like(x_hat, requires_grad=True)
        (jt_u,) = torch.autograd.grad(x_hat, z, grad_outputs=u, create_graph=True)  # J^T u, [B, k]
        total = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for j in range(z.shape[1]):
            (col,) = torch.autograd.grad(jt_u[:, j].sum(), u, create_graph=True)  # J e_j, x's shape
            total = total + col.pow(2).flatten(1).sum(1)
        return total
    raise ValueError(f"estimator must be one of {GP_ESTIMATORS}, got {estimator!r}")


def wae_mmd(
    z: Tensor,
    *,
    generator: torch.Generator | None = None,
    scales: Sequence[float] = WAE_SCALES,
    bandwidth: float = 1.0,
) -> Tensor:
    """Unbiased MMD^2 between the codes z [B, k] and B draws from N(0, I), a scalar.

    Kernel: sum over ``scales`` s of the IMQ kernel C_s / (C_s + ||a - b||^2) with
    C_s = 2 k bandwidth^2 s (Tolstikhin et al. 2018; pythae's WAE_MMD), via
    ``balance.kernels``. The prior draws come from ``generator``.
    """
    from balance.kernels import imq_kernel, mmd_unbiased

    prior = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    scales = tuple(scales)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return imq_kernel(a, b, scales, bandwidth=bandwidth)

    return mmd_unbiased(z, prior, kernel=kernel)


# ----------------------------------------------------------------------------- combination


def autoencoder_terms(
    x: Tensor,
    out,
    config: AEObjectiveConfig,
    *,
    decoder: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> AETerms:
    """Per-sample terms of ``config.kind`` for a batch x and the model's ``ModelOutput``.

    ``decoder`` is needed for ``rae_l2``; ``generator`` draws WAE prior samples and Hutchinson
    probes. Batch-level terms (L2 norm, MMD) are broadcast to [B] so that their mean is the term.
    """
    kind = config.kind
    if kind in _STOCHASTIC_KINDS and out.logvar_z is None:
        raise ValueError(f"kind {kind!r} needs an encoder that returns (mu, logvar)")
    rec = reconstruction_cost(x, out.x_hat, config.reconstruction, config.gamma)
    zeros = torch.zeros_like(rec)
    latent, dec = zeros, zeros
    beta = config.beta if kind in _LATENT_KINDS else 0.0
    lam = config.lam if kind in ("rae_l2", "rae_gp") else 0.0
    if beta:
        if kind == "vae":
            latent = gaussian_kl(out.mu_z, out.logvar_z)
        elif kind == "cv_vae":
            latent = embedding_penalty(out.mu_z)
        elif kind == "wae":
            mmd = wae_mmd(
                out.z, generator=generator, scales=config.wae_scales,
                bandwidth=config.wae_bandwidth,
            )
            latent = mmd.expand_as(rec)
        else:
            latent = embedding_penalty(out.z)
    if lam:
        if kind == "rae_l2":
            if decoder is None:
                raise ValueError("rae_l2 needs the decoder module")
            dec = decoder_weight_norm(decoder).expand_as(rec)
        else:
            dec = gradient_penalty(
                out.x_hat, out.z_dec, estimator=config.gp_estimator,
                n_probes=config.gp_probes, generator=generator,
            )
    return AETerms(rec=rec, latent=latent, decoder=dec, beta=beta, lam=lam)


def _check_unit_range(model: nn.Module, x: Tensor, config: AEObjectiveConfig) -> None:
    output = getattr(getattr(getattr(model, "decoder", None), "config", None), "output", None)
    if output != "sigmoid" and config.reconstruction != "bce":
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"the data lie in [{lo:.4g}, {hi:.4g}], but this model's decoder ends in a sigmoid "
            f"(or the loss is BCE) and so reaches only [0, 1]: rescale the images to [0, 1] "
            "(e.g. divide uint8 values by 255)")


def make_loss_fn(
    config: AEObjectiveConfig, *, generator: torch.Generator | None = None
) -> Callable[[nn.Module, object], tuple[Tensor, dict]]:
    """Adapter for ``balance.train.train``: ``loss_fn(model, batch) -> (loss, logs)``.

    ``model`` is a :class:`balance.models.autoencoder.Autoencoder`; ``batch`` is x or a tuple whose
    first entry is x. Logs hold the batch means of every term (``reconstruction``, ``latent``,
    ``decoder``: the vocabulary of :mod:`balance.objectives`; the trainer logs the loss
    itself). For ``rae_sn`` the model must have
    spectrally normalised layers (a ``ValueError`` otherwise, so that the variant cannot
    silently be a plain RAE).
    """
    checked = {}

    def loss_fn(model: nn.Module, batch) -> tuple[Tensor, dict]:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if "range" not in checked:  # once: a sigmoid decoder or BCE needs data in [0, 1]
            _check_unit_range(model, x, config)
            checked["range"] = True
        if config.kind == "rae_sn" and "sn" not in checked:
            from balance.models.autoencoder import has_spectral_norm

            if not has_spectral_norm(model.decoder):
                raise ValueError("rae_sn needs a model built with AEConfig(spectral_norm=...)")
            checked["sn"] = True
        out = model(x, generator=generator)
        terms = autoencoder_terms(x, out, config, decoder=model.decoder, generator=generator)
        loss = terms.loss()
        logs = {
            "reconstruction": terms.rec.detach().mean(),
            "latent": terms.latent.detach().mean(),
            "decoder": terms.decoder.detach().mean(),
        }
        return loss, logs

    return loss_fn
