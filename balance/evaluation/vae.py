"""The VAE test metrics of the kappa sweep (E1) and the gamma experiment (E2).

For a :class:`balance.models.vae.GaussianVAE` and test images ``x [N, ...]``:

- ``rec``: ``||x - mu_x(mu_z(x))||^2`` per image (squared pixel units, summed), mean and s.e.;
- ``nll``: IWAE estimate of ``-log p(x)`` with ``iwae_k`` samples (nats per image; the data are
  continuous, so this is a density and can be negative), mean and s.e., bits per dimension;
- ``neg_elbo``: the one-sample negative ELBO (nats per image);
- ``active``: Burda et al.'s count, dimensions with ``Var_x(E_q[z_k]) >= au_threshold``, and
  those variances;
- ``kl_per_dim``: ``E_x KL(q(z_k | x) || N(0, 1))`` per dimension (nats);
- ``posterior_variance_per_dim``: ``E_x[s_k^2(x)]`` per dimension: near 0 on active
  dimensions and near 1 on idle ones at a balanced optimum (Dai & Wipf's stochastic balance);
- ``gamma``: the decoder variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["VAEMetricsConfig", "prior_match_metrics", "vae_test_metrics"]


@dataclass(frozen=True)
class VAEMetricsConfig:
    """IWAE samples ``iwae_k`` on the first ``iwae_limit`` test images (None: all), batch
    sizes, the active-unit threshold and the noise seed."""

    iwae_k: int = 5000
    iwae_limit: int | None = None
    iwae_batch: int = 20
    batch_size: int = 1000
    au_threshold: float = 0.01
    seed: int = 1234


@torch.no_grad()
def vae_test_metrics(model: nn.Module, test_x: Tensor, cfg: VAEMetricsConfig) -> dict:
    """The metrics of the module docstring, as a JSON-ready dict."""
    from balance.metrics.active_units import active_units, posterior_means
    from balance.metrics.iwae import iwae_nll
    from balance.metrics.reconstruction import module_device, reconstruction_error
    from balance.objectives.elbo import elbo_terms, nats_to_bits_per_dim

    model.eval()
    mu = posterior_means(model, test_x, batch_size=cfg.batch_size)
    count, variances = active_units(mu, cfg.au_threshold)
    rec = reconstruction_error(model, test_x, batch_size=cfg.batch_size)
    iwae_x = test_x[: cfg.iwae_limit] if cfg.iwae_limit else test_x
    device = module_device(model)
    # The importance-sampling noise is drawn where the model runs (a seeded generator on its
    # device: the same numbers for the same seed on a given device; on the CPU as before).
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    nll = iwae_nll(model, iwae_x, cfg.iwae_k, generator=generator, batch_size=cfg.iwae_batch)
    neg_elbo, kl, post_var = [], [], []
    for start in range(0, test_x.shape[0], cfg.batch_size):
        xb = test_x[start : start + cfg.batch_size].to(device)
        out = model(xb, generator=generator)
        neg_elbo.append(elbo_terms(xb, out).negative_elbo.cpu())
        var = out.logvar_z.exp()
        kl.append((0.5 * (out.mu_z.square() + var - 1 - out.logvar_z)).cpu())
        post_var.append(var.cpu())
    neg_elbo_t: Tensor = torch.cat(neg_elbo).double()
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
        "neg_elbo": float(neg_elbo_t.mean()),
        "active": count,
        "latent_variances": variances.tolist(),
        "kl_per_dim": torch.cat(kl).double().mean(0).tolist(),
        "posterior_variance_per_dim": torch.cat(post_var).double().mean(0).tolist(),
        "gamma": model.gamma,
        "device": str(device),
    }


@torch.no_grad()
def prior_match_metrics(model: nn.Module, x: Tensor, *, batch_size: int = 500,
                        au_threshold: float = 0.01, mmd_samples: int | None = 10000,
                        seed: int = 1234) -> dict:
    """The test metrics of E2 for a Gaussian VAE: reconstruction error (from the posterior
    mean), the unbiased MMD^2 between q(z) (one z ~ q(z|x) per image, at most ``mmd_samples``)
    and N(0, I) (``balance.metrics.mmd``), the MMD^2 of as many N(0, I) draws against N(0, I)
    (the estimator's noise level), active units and the mean KL (nats per image)."""
    from balance.evaluation.codec import Codec
    from balance.metrics.active_units import active_units
    from balance.metrics.mmd import mmd_to_standard_normal
    from balance.metrics.reconstruction import module_device, reconstruction_error

    device = module_device(model)
    mu, logvar = Codec(model, batch_size).posterior(x)  # eval mode, batched
    rec = reconstruction_error(model, x, batch_size=batch_size).cpu()
    generator = torch.Generator().manual_seed(seed)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
    z = z[:mmd_samples] if mmd_samples else z
    mmd = mmd_to_standard_normal(z.double(), generator=generator)
    noise_level = mmd_to_standard_normal(
        torch.randn(z.shape, generator=generator, dtype=torch.float64), generator=generator)
    count, variances = active_units(mu, au_threshold)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
    return {
        "n_test": int(x.shape[0]),
        "rec": float(rec.mean()),
        "rec_se": float(rec.std() / math.sqrt(rec.numel())) if rec.numel() > 1 else None,
        "mmd": mmd,
        "mmd_prior_noise_level": noise_level,
        "active_units": count,
        "latent_variances": variances.tolist(),
        "kl": float(kl.mean()),
        "device": str(device),
    }
