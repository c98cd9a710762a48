"""Ex-post density estimation on discrete codes (:mod:`balance.models.discrete`): ``m``
categorical variables of ``K`` classes, codes given as one-hot vectors flattened to
``[N, m K]`` (what the models' ``encode`` returns and ``decode`` takes). The interface is the
continuous estimators' (:mod:`balance.density_estimation`): ``fit(codes)``,
``log_prob(codes) -> [N]`` (nats), ``sample(n, generator=...) -> [n, m K]`` one-hot.

- :class:`ProductOfCategoricals`: q(y) = prod_i Cat(y_i; p_i), the per-variable frequencies
  (with add-``alpha`` smoothing); the discrete analogue of the diagonal Gaussian.
- :class:`CategoricalMixture`: q(y) = sum_c w_c prod_i Cat(y_i; p_ci), fitted by EM (latent
  class analysis; no library fits mixtures of categorical products, so the E and M steps are
  written here, in log space, with Dirichlet smoothing ``alpha`` and seeded restarts).
- :class:`AutoregressivePrior`: q(y) = prod_i Cat(y_i; softmax(f_i(y_<i))), a MADE (Germain et
  al. 2015) whose masks are zuko's ``MaskedMLP``, trained by maximum likelihood through
  :func:`balance.train.train` (progress, checkpoint, resume); sampled variable by variable.

The uniform prior of a categorical VAE is ``ProductOfCategoricals`` with all p_i uniform,
:meth:`ProductOfCategoricals.uniform`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["AutoregressivePrior", "CategoricalMixture", "ProductOfCategoricals",
           "codes_to_indices", "indices_to_codes"]


def codes_to_indices(codes: Tensor, m: int, k: int) -> Tensor:
    """One-hot codes ``[N, m K]`` -> class indices ``[N, m]`` (ValueError if not one-hot)."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or codes.shape[1] != m * k:
        raise ValueError(f"codes must be [N, {m * k}] (m={m}, k={k}), got {tuple(codes.shape)}")
    blocks = codes.reshape(-1, m, k)
    if not (torch.isin(blocks, torch.tensor([0.0, 1.0], dtype=blocks.dtype)).all()
            and torch.equal(blocks.sum(-1), torch.ones_like(blocks.sum(-1)))):
        raise ValueError("codes must be one-hot per variable (one 1 in each block of k)")
    return blocks.argmax(-1)


def indices_to_codes(indices: Tensor, k: int) -> Tensor:
    """Class indices ``[N, m]`` -> one-hot codes ``[N, m K]`` (float32)."""
    return torch.nn.functional.one_hot(indices, k).flatten(1).float()


class ProductOfCategoricals:
    """Independent categorical variables (module docstring)."""

    def __init__(self, m: int, k: int, *, alpha: float = 1.0):
        self.m, self.k, self.alpha = int(m), int(k), float(alpha)
        self.probs: Tensor | None = None  # [m, k]

    @classmethod
    def uniform(cls, m: int, k: int) -> ProductOfCategoricals:
        est = cls(m, k)
        est.probs = torch.full((m, k), 1.0 / k, dtype=torch.float64)
        return est

    def fit(self, codes: Tensor) -> ProductOfCategoricals:
        idx = codes_to_indices(codes, self.m, self.k)
        counts = torch.nn.functional.one_hot(idx, self.k).sum(0).double() + self.alpha
        self.probs = counts / counts.sum(-1, keepdim=True)
        return self

    def _check(self) -> Tensor:
        if self.probs is None:
            raise RuntimeError("ProductOfCategoricals is not fitted: call fit(codes) first")
        return self.probs

    def log_prob(self, codes: Tensor) -> Tensor:
        probs = self._check()
        idx = codes_to_indices(codes, self.m, self.k)
        return probs.log().gather(1, idx.T).T.sum(1) if len(idx) else torch.zeros(0)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        probs = self._check()
        idx = torch.multinomial(probs, n, replacement=True, generator=generator).T  # [n, m]
        return indices_to_codes(idx, self.k)


class CategoricalMixture:
    """A mixture of ``components`` products of categoricals fitted by EM (module docstring):
    ``restarts`` seeded random starts, the best final log-likelihood kept; ``iterations`` at
    most, stopping when the mean log-likelihood gains less than ``tol``."""

    def __init__(self, m: int, k: int, components: int = 10, *, alpha: float = 1.0,
                 iterations: int = 200, tol: float = 1e-6, restarts: int = 3, seed: int = 0):
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.m, self.k, self.components = int(m), int(k), int(components)
        self.alpha, self.iterations, self.tol = float(alpha), int(iterations), float(tol)
        self.restarts, self.seed = int(restarts), int(seed)
        self.weights: Tensor | None = None  # [C]
        self.probs: Tensor | None = None  # [C, m, k]
        self.log_likelihood: float | None = None

    def _joint(self, onehot: Tensor, weights: Tensor, probs: Tensor) -> Tensor:
        """log w_c + log prod_i p_c,i(y_i), [N, C]."""
        return weights.log() + torch.einsum("nmk,cmk->nc", onehot, probs.log())

    def fit(self, codes: Tensor) -> CategoricalMixture:
        idx = codes_to_indices(codes, self.m, self.k)
        onehot = torch.nn.functional.one_hot(idx, self.k).double()  # [N, m, k]
        best = None
        for restart in range(self.restarts):
            g = torch.Generator().manual_seed(self.seed * 1000 + restart)
            resp = torch.rand(len(idx), self.components, generator=g, dtype=torch.float64)
            resp /= resp.sum(1, keepdim=True)  # a random soft assignment starts EM
            previous = -math.inf
            for _ in range(self.iterations):
                # M step (Dirichlet-smoothed), then E step in log space
                weights = (resp.sum(0) + 1e-12) / len(idx)
                counts = torch.einsum("nc,nmk->cmk", resp, onehot) + self.alpha
                probs = counts / counts.sum(-1, keepdim=True)
                joint = self._joint(onehot, weights, probs)
                total = torch.logsumexp(joint, 1)
                resp = (joint - total.unsqueeze(1)).exp()
                ll = float(total.mean())
                if ll - previous < self.tol:
                    break
                previous = ll
            if best is None or ll > best[0]:
                best = (ll, weights, probs)
        self.log_likelihood, self.weights, self.probs = best
        return self

    def _check(self) -> None:
        if self.probs is None:
            raise RuntimeError("CategoricalMixture is not fitted: call fit(codes) first")

    def log_prob(self, codes: Tensor) -> Tensor:
        self._check()
        onehot = torch.nn.functional.one_hot(codes_to_indices(codes, self.m, self.k),
                                             self.k).double()
        return torch.logsumexp(self._joint(onehot, self.weights, self.probs), 1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        self._check()
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        per = self.probs[comp].reshape(n * self.m, self.k)  # [n m, k]
        idx = torch.multinomial(per, 1, generator=generator).view(n, self.m)
        return indices_to_codes(idx, self.k)


class _MADE(torch.nn.Module):
    """Logits ``[B, m, K]`` of each variable given the one-hot codes of the variables before
    it (block-lower-triangular masks)."""

    def __init__(self, m: int, k: int, hidden: tuple[int, ...]):
        super().__init__()
        import zuko

        block = torch.arange(m).repeat_interleave(k)  # the variable of each one-hot column
        adjacency = block.unsqueeze(1) > block.unsqueeze(0)  # output i sees inputs j < i
        self.net = zuko.nn.MaskedMLP(adjacency, hidden)
        self.m, self.k = m, k

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(codes).view(-1, self.m, self.k)


def made_nll(model: torch.nn.Module, codes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Trainer loss of the autoregressive prior: mean negative log-likelihood (nats per code)."""
    logits = model(codes)
    target = codes.view(-1, model.m, model.k).argmax(-1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target,
                                            reduction="none").sum(1).mean()
    return nll, {"nll": nll.detach()}


class AutoregressivePrior:
    """An autoregressive density over discrete codes (module docstring)."""

    def __init__(self, m: int, k: int, *, hidden: tuple[int, ...] = (128, 128),
                 epochs: int = 50, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                 device: str = "cpu", progress: bool = False):
        self.m, self.k, self.hidden = int(m), int(k), tuple(int(h) for h in hidden)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.seed, self.device, self.progress = int(seed), device, progress
        self.model: _MADE | None = None
        self.history = None

    def fit(self, codes: Tensor, *, run_dir=None) -> AutoregressivePrior:
        from balance.train import TrainConfig, train

        codes_to_indices(codes, self.m, self.k)  # checks the layout
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = _MADE(self.m, self.k, self.hidden)
        config = TrainConfig(epochs=self.epochs, batch_size=min(self.batch_size, len(codes)),
                             lr=self.lr, seed=self.seed, device=self.device,
                             progress=self.progress)
        self.history = train(self.model, made_nll, torch.as_tensor(codes).float(), config,
                             run_dir=run_dir)
        self.model.to("cpu").eval()
        return self

    def _check(self) -> _MADE:
        if self.model is None:
            raise RuntimeError("AutoregressivePrior is not fitted: call fit(codes) first")
        return self.model

    @torch.no_grad()
    def log_prob(self, codes: Tensor) -> Tensor:
        model = self._check()
        idx = codes_to_indices(codes, self.m, self.k)
        log_p = torch.log_softmax(model(torch.as_tensor(codes).float()).double(), -1)
        return log_p.gather(2, idx.unsqueeze(2)).squeeze(2).sum(1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        model = self._check()
        codes = torch.zeros(n, self.m * self.k)
        for i in range(self.m):  # variable i depends only on the variables before it
            probs = torch.softmax(model(codes)[:, i], -1)
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            codes[:, i * self.k:(i + 1) * self.k] = torch.nn.functional.one_hot(pick, self.k)
        return codes
