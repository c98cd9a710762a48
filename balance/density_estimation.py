"""Ex-post density estimation on an autoencoder's training codes (THEORY.md section 4).

A deterministic autoencoder becomes generative once a density q(z) is fitted to its training
codes {z_i = E(x_i)} and new images are decoded from z ~ q (Ghosh et al. 2020; Daly et al. 2022;
the second stage of Dai & Wipf 2019). Every estimator has

    fit(codes [N, k]) -> self,   sample(n, *, generator=None) -> [n, k],

and ``log_prob(z [M, k]) -> [M]`` (nats) where it is cheap:

- :class:`StandardNormal` (``"normal"``): q = N(0, I), the VAE prior (fit only records k).
- :class:`FullGaussian` (``"mvg"``): q = N(m, S) with the codes' mean and (unbiased) covariance, in
  float64; samples m + L eps with L the Cholesky factor of S + jitter I.
- :class:`GaussianMixture` (``"gmm"``): scikit-learn ``GaussianMixture`` with full covariances,
  10 components, ``max_iter = 2000``, ``tol = 1e-3`` (the RAE reference's ``GMM_10``), seeded.
- :class:`KernelDensity` (``"kde"``): a Gaussian KDE, bandwidth by cross-validation.
- ``"dpgmm"``: :class:`GaussianMixture` with a Dirichlet-process prior on the weights.
- :class:`NormalizingFlow` (``"flow"``, ``"realnvp"``, ``"maf"``, ``"nsf"``): a zuko flow
  trained by maximum likelihood with :func:`balance.train.train`.
- :class:`SecondStageVAE` (``"vae2"``): a Gaussian VAE on the codes (Dai & Wipf 2019: encoder and
  decoder MLPs of three 1024-unit ReLU layers whose output is concatenated with their input,
  linear heads, a learnable scalar variance gamma_z of the decoder), trained with
  :func:`balance.train.train`; samples u ~ N(0, I) -> decoder mean (+ sqrt(gamma_z) noise).

Sampling follows the fitted codes' dtype and device unless ``dtype``/``device`` are given and draws
all randomness from ``generator`` (a CPU ``torch.Generator``; default torch's global one).
``make_estimator(name, **kwargs)`` builds one by name for experiment scripts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from balance.threads import limit_threads


def check_codes(codes: Tensor, *, min_count: int = 1, dim: int | None = None) -> Tensor:
    """Validate codes [N, k]: 2-D, finite, at least ``min_count`` rows, k == dim if given."""
    if not isinstance(codes, Tensor):
        codes = torch.as_tensor(codes)
    if codes.dim() != 2:
        raise ValueError(f"codes must be a 2-D tensor [N, k], got shape {tuple(codes.shape)}")
    if dim is not None and codes.shape[1] != dim:
        raise ValueError(f"codes have {codes.shape[1]} dimensions, the estimator expects {dim}")
    if codes.shape[0] < min_count:
        raise ValueError(f"need at least {min_count} codes, got {codes.shape[0]}")
    if not torch.isfinite(codes).all():
        raise ValueError("codes contain NaN or infinite values")
    return codes


def _randn(shape, generator, dtype=torch.float64) -> Tensor:
    """Standard normal draws on the CPU from ``generator`` (then moved where needed)."""
    return torch.randn(shape, generator=generator, dtype=dtype)


class DensityEstimator(ABC):
    """Ex-post density q(z) fitted on codes [N, k] (module docstring)."""

    dim: int | None = None
    _dtype: torch.dtype = torch.float32
    _device: torch.device = torch.device("cpu")

    def _remember(self, codes: Tensor) -> None:
        self.dim = codes.shape[1]
        self._dtype = codes.dtype if codes.is_floating_point() else torch.float32
        self._device = codes.device

    def _check_fitted(self) -> None:
        if self.dim is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(codes) first")

    def _out(self, z: Tensor, dtype, device) -> Tensor:
        return z.to(device=device or self._device, dtype=dtype or self._dtype)

    @abstractmethod
    def fit(self, codes: Tensor) -> DensityEstimator: ...

    @abstractmethod
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, dtype=None, device=None
    ) -> Tensor: ...

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no cheap log_prob")


def _sklearn_log_prob(est: DensityEstimator, z: Tensor) -> Tensor:
    """log q(z), [M], nats, from the fitted scikit-learn model's ``score_samples`` (float64 on
    the CPU), in z's dtype and device."""
    est._check_fitted()
    z = check_codes(z, dim=est.dim)
    lp = est.model.score_samples(z.detach().to("cpu", torch.float64).numpy())
    return torch.as_tensor(lp).to(z.device, z.dtype)


class StandardNormal(DensityEstimator):
    """q = N(0, I_k); ``fit`` only checks the codes and records k."""

    def fit(self, codes: Tensor) -> StandardNormal:
        self._remember(check_codes(codes))
        return self

    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        return self._out(_randn((n, self.dim), generator), dtype, device)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) = -||z||^2 / 2 - k/2 log(2 pi), [M], nats."""
        self._check_fitted()
        z = check_codes(z, dim=self.dim)
        return -0.5 * z.pow(2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)


class FullGaussian(DensityEstimator):
    """q = N(m, S): the codes' mean and unbiased covariance (float64), a.k.a. MVG.

    Sampling uses the Cholesky factor of S + jitter I, the jitter growing tenfold from
    ``jitter`` (relative to mean(diag S)) until the factorisation succeeds.
    """

    def __init__(self, jitter: float = 1e-9):
        self.jitter = jitter
        self.mean: Tensor | None = None
        self.cov: Tensor | None = None
        self.scale_tril: Tensor | None = None

    def fit(self, codes: Tensor) -> FullGaussian:
        codes = check_codes(codes, min_count=2)
        self._remember(codes)
        c = codes.detach().to(device="cpu", dtype=torch.float64)
        self.mean = c.mean(0)
        self.cov = torch.cov(c.T, correction=1).reshape(self.dim, self.dim)
        self.scale_tril = _cholesky_with_jitter(self.cov, self.jitter)
        return self

    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        eps = _randn((n, self.dim), generator)
        return self._out(self.mean + eps @ self.scale_tril.T, dtype, device)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; m, L L^T) in nats, [M] (float64 computation)."""
        self._check_fitted()
        z = check_codes(z, dim=self.dim)
        dist = torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril)
        return dist.log_prob(z.detach().to("cpu", torch.float64)).to(z.device, z.dtype)


def _cholesky_with_jitter(cov: Tensor, jitter: float) -> Tensor:
    scale = float(cov.diagonal().mean().clamp_min(1e-300))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    eps = 0.0
    for _ in range(12):
        factor, info = torch.linalg.cholesky_ex(cov + eps * scale * eye)
        if int(info) == 0:
            return factor
        eps = jitter if eps == 0.0 else 10 * eps
    raise ValueError("covariance is not positive definite even with jitter")


class GaussianMixture(DensityEstimator):
    """k-component full-covariance GMM (scikit-learn), fitted by EM with ``random_state=seed``.

    Defaults match the RAE reference's ``GMM_10``: 10 components, ``max_iter = 2000``,
    ``tol = 1e-3``. ``threads`` caps the BLAS threads during EM (None: no cap).
    ``dirichlet_process``: scikit-learn's ``BayesianGaussianMixture`` with a Dirichlet-process
    prior on the weights (``n_components`` is then an upper bound; the RAE code's
    ``GMM_Dirichlet``), fitted by variational inference.
    Samples: component c ~ Categorical(weights), z = mu_c + L_c eps (L_c the Cholesky factor
    of the fitted covariance), all from the torch ``generator``.
    """

    def __init__(
        self,
        n_components: int = 10,
        *,
        max_iter: int = 2000,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        n_init: int = 1,
        seed: int = 0,
        threads: int | None = 1,
        dirichlet_process: bool = False,
    ):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.seed = seed
        self.threads = threads
        self.dirichlet_process = dirichlet_process
        self.model = None
        self.weights: Tensor | None = None
        self.means: Tensor | None = None
        self.covariances: Tensor | None = None
        self.scale_trils: Tensor | None = None

    def fit(self, codes: Tensor) -> GaussianMixture:
        from sklearn.mixture import BayesianGaussianMixture
        from sklearn.mixture import GaussianMixture as SkGMM

        codes = check_codes(codes)
        if codes.shape[0] < self.n_components and not self.dirichlet_process:
            raise ValueError(
                f"need at least n_components={self.n_components} codes, got {codes.shape[0]}"
            )
        self._remember(codes)
        data = codes.detach().to("cpu", torch.float64).numpy()
        settings = dict(covariance_type="full", max_iter=self.max_iter, tol=self.tol,
                        reg_covar=self.reg_covar, n_init=self.n_init, random_state=self.seed)
        if self.dirichlet_process:  # variational DP mixture: unused components get ~0 weight
            # the truncation level: at most one component per code
            model = BayesianGaussianMixture(
                n_components=min(self.n_components, codes.shape[0]),
                weight_concentration_prior_type="dirichlet_process", **settings)
        else:
            model = SkGMM(self.n_components, **settings)
        # EM on [N, k] codes with k of tens: BLAS threads cost more than they save (a 10x
        # slow-down measured on a busy 2-core machine); ``threads=None`` keeps the default.
        # The k tiny Cholesky factorisations below suffer the same way, so they stay inside.
        with limit_threads(self.threads):
            self.model = model.fit(data)
            self.weights = torch.as_tensor(self.model.weights_, dtype=torch.float64)
            self.means = torch.as_tensor(self.model.means_, dtype=torch.float64)
            self.covariances = torch.as_tensor(self.model.covariances_, dtype=torch.float64)
            self.scale_trils = torch.stack(
                [_cholesky_with_jitter(c, 1e-12) for c in self.covariances]
            )
        return self

    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = _randn((n, self.dim), generator)
        z = self.means[comp] + torch.einsum("nij,nj->ni", self.scale_trils[comp], eps)
        return self._out(z, dtype, device)

    def log_prob(self, z: Tensor) -> Tensor:
        """log sum_c w_c N(z; mu_c, S_c), [M], nats (scikit-learn's ``score_samples``)."""
        return _sklearn_log_prob(self, z)


class KernelDensity(DensityEstimator):
    """Gaussian kernel density estimate (scikit-learn ``KernelDensity``) with the bandwidth
    chosen by ``folds``-fold cross-validated held-out likelihood (``GridSearchCV``) over
    ``bandwidths`` times the codes' mean standard deviation, as the RAE code's KDE sampler
    does. ``log_prob``: scikit-learn's ``score_samples``. Samples: a training code drawn
    uniformly plus ``bandwidth * eps`` (a Gaussian KDE's law), from the torch ``generator``.
    """

    def __init__(self, bandwidths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
                 folds: int = 5, threads: int | None = 1):
        self.bandwidths = tuple(float(b) for b in bandwidths)
        self.folds = int(folds)
        self.threads = threads
        self.model = None
        self.bandwidth: float | None = None
        self.codes: Tensor | None = None

    def fit(self, codes: Tensor) -> KernelDensity:
        from sklearn.model_selection import GridSearchCV
        from sklearn.neighbors import KernelDensity as SkKDE

        codes = check_codes(codes, min_count=max(2, self.folds))
        self._remember(codes)
        data = codes.detach().to("cpu", torch.float64)
        scale = float(data.std(0).mean())
        grid = {"bandwidth": [b * scale for b in self.bandwidths]}
        with limit_threads(self.threads):
            search = GridSearchCV(SkKDE(kernel="gaussian"), grid, cv=self.folds)
            search.fit(data.numpy())
        self.model = search.best_estimator_
        self.bandwidth = float(self.model.bandwidth)
        self.codes = data
        return self

    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        pick = torch.randint(self.codes.shape[0], (n,), generator=generator)
        z = self.codes[pick] + self.bandwidth * _randn((n, self.dim), generator)
        return self._out(z, dtype, device)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z), [M], nats (scikit-learn's ``score_samples``)."""
        return _sklearn_log_prob(self, z)


# ----------------------------------------------------------------------------- flows

#: Flow families of :class:`NormalizingFlow` (zuko's classes).
FLOWS = ("realnvp", "maf", "nsf")


@dataclass(frozen=True)
class FlowConfig:
    """A normalizing flow on codes: ``kind`` (``realnvp``: affine coupling layers, Dinh et al.
    2017; ``maf``: masked autoregressive affine layers, Papamakarios et al. 2017; ``nsf``:
    autoregressive rational-quadratic splines, Durkan et al. 2019), ``transforms`` layers of
    MLPs with ``hidden`` units, trained by maximum likelihood (Adam, ``epochs``, ``batch_size``,
    ``lr``) through :func:`balance.train.train`. ``normalise`` standardises the codes first."""

    kind: str = "realnvp"
    transforms: int = 5
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    normalise: bool = True
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kind not in FLOWS:
            raise ValueError(f"unknown flow {self.kind!r}; choose one of {FLOWS}")


def flow_nll(model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Trainer loss of a zuko flow: the mean negative log-likelihood (nats per code)."""
    nll = -model().log_prob(batch).mean()
    return nll, {"nll": nll.detach()}


class NormalizingFlow(DensityEstimator):
    """A normalizing flow fitted to the codes (RealNVP, MAF or NSF; :class:`FlowConfig`), the
    invertible alternative to a second-stage VAE for sampling q(z) (004 section 5).

    The flows are zuko's (``zuko.flows``): a small, maintained library whose flows are plain
    ``nn.Module`` objects, so they train through the package's own loop (progress, checkpoint,
    resume with ``fit(codes, run_dir=...)``) and run on any torch device. ``log_prob`` is exact
    (change of variables, the standardisation's Jacobian included); ``sample`` maps base draws
    from ``generator`` through the inverse transform.
    """

    def __init__(self, config: FlowConfig | None = None, **overrides):
        config = config or FlowConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.flow = None
        self.history = None
        self.shift: Tensor | None = None
        self.scale: Tensor | None = None

    def fit(self, codes: Tensor, *, run_dir: str | Path | None = None) -> NormalizingFlow:
        import zuko

        from balance.train import TrainConfig, train

        codes = check_codes(codes, min_count=2)
        self._remember(codes)
        c = codes.detach().to("cpu", torch.float32)
        cfg = self.config
        self.shift = c.mean(0) if cfg.normalise else torch.zeros(self.dim)
        self.scale = c.std(0).clamp_min(1e-6) if cfg.normalise else torch.ones(self.dim)
        family = {"realnvp": zuko.flows.RealNVP, "maf": zuko.flows.MAF,
                  "nsf": zuko.flows.NSF}[cfg.kind]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # reproducible initial weights, global RNG untouched
            self.flow = family(self.dim, transforms=cfg.transforms, hidden_features=cfg.hidden)
        train_config = TrainConfig(epochs=cfg.epochs, batch_size=min(cfg.batch_size, len(c)),
                                   lr=cfg.lr, seed=cfg.seed, device=cfg.device,
                                   progress=cfg.progress)
        self.history = train(self.flow, flow_nll, (c - self.shift) / self.scale, train_config,
                             run_dir=run_dir)
        self.flow.to("cpu").eval()
        return self

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.flow is None:
            raise RuntimeError("NormalizingFlow is not fitted: call fit(codes) first")

    @torch.no_grad()
    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z), [M], nats: the flow's density of the standardised codes minus
        sum(log scale)."""
        self._check_fitted()
        z = check_codes(z, dim=self.dim)
        u = (z.detach().to("cpu", torch.float32) - self.shift) / self.scale
        lp = self.flow().log_prob(u).double() - self.scale.double().log().sum()
        return lp.to(z.device, z.dtype)

    @torch.no_grad()
    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        dist = self.flow()
        eps = _randn((n, self.dim), generator, torch.float32)
        base = dist.base
        u = dist.transform.inv(base.mean + base.stddev * eps)  # the base: a diagonal normal
        return self._out(u * self.scale + self.shift, dtype, device)

    def round_trip_error(self, z: Tensor) -> float:
        """max |f^-1(f(u)) - u| over the standardised ``z``: the flow's numerical
        invertibility."""
        self._check_fitted()
        u = (z.detach().to("cpu", torch.float32) - self.shift) / self.scale
        t = self.flow().transform
        with torch.no_grad():
            return float((t.inv(t(u)) - u).abs().max())


# ----------------------------------------------------------------------------- second stage


class SkipMLP(nn.Module):
    """Dai & Wipf's second-stage network: ``depth`` Dense(width)+ReLU layers, then
    ``concat([input, h])`` (the skip), then linear heads of size ``out_dim``.

    Forward: ``[B, in_dim] -> (head_0, head_1, ...)``, each [B, out_dim] (one tensor if one head).
    """

    def __init__(self, in_dim: int, out_dim: int, *, width: int = 1024, depth: int = 3,
                 heads: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(in_dim + d, out_dim) for _ in range(heads))

    def forward(self, u: Tensor) -> Tensor | tuple[Tensor, ...]:
        h = torch.cat([u, self.body(u)], dim=1)
        outs = tuple(head(h) for head in self.heads)
        return outs[0] if len(outs) == 1 else outs


@dataclass(frozen=True)
class SecondStageConfig:
    """Second-stage VAE on codes (Dai & Wipf 2019; their defaults: 3 x 1024 units, latent = k,
    batch 64, lr 1e-4 halved every 300 of 800 epochs). ``latent_dim=None`` uses k.

    ``normalise`` standardises the codes (per-dimension mean and std of the training codes)
    before fitting and undoes it when sampling. As Dai & Wipf: ``resample`` draws the codes
    z ~ q(z | x) afresh at every step from the stored (mu_z, logvar_z) of the first stage
    (``fit(mu, logvar=...)``), and ``sample_noise`` adds sqrt(gamma_z) eps, the learned
    variance of the second stage's decoder, to the decoded means when sampling. With
    ``resample=False, sample_noise=False`` (this package's earlier behaviour, kept for
    comparison) the stage fits one fixed draw per image and samples the decoder means.
    """

    width: int = 1024
    depth: int = 3
    latent_dim: int | None = None
    epochs: int = 800
    batch_size: int = 64
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (300, 600)
    lr_decay: float = 0.5
    log_gamma_init: float = 0.0
    normalise: bool = True
    resample: bool = True
    sample_noise: bool = True
    seed: int = 0
    device: str = "cpu"
    progress: bool = False


def resampled_vae_loss(model: nn.Module, batch: tuple[Tensor, Tensor]):
    """The second stage's loss on codes drawn afresh: ``batch = (mu, logvar)`` of the first
    stage's posteriors; z = mu + exp(logvar / 2) eps with eps from torch's global generator
    (which the trainer seeds and checkpoints, so a resumed run draws the same), then the
    negative ELBO of z (:func:`balance.objectives.elbo.vae_loss`)."""
    from balance.objectives.elbo import vae_loss

    mu, logvar = batch
    return vae_loss(model, mu + (0.5 * logvar).exp() * torch.randn_like(mu))


class SecondStageVAE(DensityEstimator):
    """Dai & Wipf's second-stage VAE as an ex-post density (module docstring).

    The model is a :class:`balance.models.vae.GaussianVAE` (learnable scalar variance gamma_z)
    with :class:`SkipMLP` encoder and decoder, trained on the negative ELBO
    (:func:`balance.objectives.elbo.vae_loss`). ``fit(codes, run_dir=None)`` trains with
    :func:`balance.train.train` (resumable when ``run_dir`` is given); ``history`` keeps what
    it returned.
    """

    def __init__(self, config: SecondStageConfig | None = None, **overrides):
        config = config or SecondStageConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.model = None  # a balance.models.vae.GaussianVAE once fitted
        self.history = None
        self.shift: Tensor | None = None
        self.scale: Tensor | None = None

    def fit(self, codes: Tensor, *, logvar: Tensor | None = None,
            run_dir: str | Path | None = None) -> SecondStageVAE:
        """Train on ``codes [N, k]``: with ``logvar`` (the first stage's posterior
        log-variances) and ``config.resample``, ``codes`` are the posterior means and every
        step draws z ~ N(mu, exp(logvar)) afresh; otherwise the codes are used as they are."""
        from balance.models.vae import GammaConfig, GaussianVAE
        from balance.objectives.elbo import vae_loss
        from balance.train import TrainConfig, train

        codes = check_codes(codes, min_count=2)
        self._remember(codes)
        c = codes.detach().to("cpu", torch.float32)
        resample = logvar is not None and self.config.resample
        if resample:
            lv = check_codes(logvar, min_count=len(c), dim=self.dim).detach().to(
                "cpu", torch.float32)
        if self.config.normalise:  # the law of z: mean of mu, variance of mu + E[sigma^2]
            self.shift = c.mean(0)
            var = c.var(0) + (lv.exp().mean(0) if resample else 0.0)
            self.scale = var.sqrt().clamp_min(1e-6)
        else:
            self.shift = torch.zeros(self.dim)
            self.scale = torch.ones(self.dim)
        data = (c - self.shift) / self.scale
        loss_fn = vae_loss
        if resample:
            data = (data, lv - 2 * self.scale.log())  # log-variances of the standardised z
            loss_fn = resampled_vae_loss
        cfg = self.config
        latent = cfg.latent_dim or self.dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # reproducible initial weights, global RNG untouched
            self.model = GaussianVAE(
                SkipMLP(self.dim, latent, width=cfg.width, depth=cfg.depth, heads=2),
                SkipMLP(latent, self.dim, width=cfg.width, depth=cfg.depth),
                GammaConfig(init=math.exp(cfg.log_gamma_init), learnable=True),
                latent_dim=latent,
            )
        train_config = TrainConfig(
            epochs=cfg.epochs,
            batch_size=min(cfg.batch_size, len(c)),
            lr=cfg.lr,
            lr_milestones=tuple(cfg.lr_milestones),
            lr_decay=cfg.lr_decay,
            seed=cfg.seed,
            device=cfg.device,
            progress=cfg.progress,
        )
        self.history = train(self.model, loss_fn, data, train_config, run_dir=run_dir)
        self.model.to("cpu").eval()
        return self

    @property
    def gamma(self) -> float:
        """The learned decoder variance gamma_z (in standardised code units)."""
        self._check_fitted()
        return self.model.gamma

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if self.model is None:
            raise RuntimeError("SecondStageVAE is not fitted: call fit(codes) first")

    @torch.no_grad()
    def sample(self, n, *, generator=None, dtype=None, device=None) -> Tensor:
        self._check_fitted()
        z = self.model.sample(n, generator=generator, add_noise=self.config.sample_noise)
        z = z * self.scale + self.shift
        return self._out(z, dtype, device)


# ----------------------------------------------------------------------------- interpolation


def interpolate(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Linear interpolation (1 - t) z_a + t z_b at t = 0, 1/(steps-1), ..., 1.

    ``z_a``, ``z_b``: [B, k] -> [B, steps, k] (endpoints included). ``steps >= 2``.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)} must be equal [B, k]")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device).view(1, steps, 1)
    return (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)


def random_pairs(
    codes: Tensor, n_pairs: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``n_pairs`` random pairs (i != j) of rows of ``codes`` [N, k] -> (z_a, z_b) [n_pairs, k]."""
    codes = check_codes(codes, min_count=2)
    n = codes.shape[0]
    i = torch.randint(n, (n_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (n_pairs,), generator=generator)) % n  # j != i
    return codes[i.to(codes.device)], codes[j.to(codes.device)]


# ----------------------------------------------------------------------------- registry

ESTIMATORS: dict[str, type[DensityEstimator]] = {
    "normal": StandardNormal,
    "mvg": FullGaussian,
    "gmm": GaussianMixture,
    "dpgmm": GaussianMixture,  # with dirichlet_process=True (make_estimator sets it)
    "kde": KernelDensity,
    "flow": NormalizingFlow,
    "vae2": SecondStageVAE,
}


def make_estimator(name: str, **kwargs) -> DensityEstimator:
    """Estimator by name: ``"normal"``, ``"mvg"``, ``"gmm"`` (``"gmm<k>"``: k components, the
    RAE code's GMM_1 ... GMM_200), ``"dpgmm"`` (Dirichlet-process GMM, at most 20 components
    unless ``n_components`` is given), ``"kde"``, ``"flow"`` / ``"realnvp"`` / ``"maf"`` /
    ``"nsf"`` (a normalizing flow), ``"vae2"``; kwargs: the class's."""
    import re

    match = re.fullmatch(r"gmm(\d+)", name)
    if match:
        return GaussianMixture(int(match.group(1)), **kwargs)
    if name in FLOWS:  # "realnvp", "maf", "nsf": a flow of that kind
        return NormalizingFlow(kind=name, **kwargs)
    if name == "dpgmm":
        kwargs.setdefault("n_components", 20)
        return GaussianMixture(dirichlet_process=True, **kwargs)
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose from {sorted(ESTIMATORS)} or "
                         "gmm<k>") from None
    return cls(**kwargs)
