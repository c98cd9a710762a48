"""The affine Gaussian VAE in closed form (THEORY.md section 1, Theorem 1), float64 throughout.

Model. Data x in R^d (rows of X, n x d), latent z in R^kappa, prior N(0, I), decoder
p(x | z) = N(W_x z + b_x, gamma I) (gamma is a VARIANCE), encoder
q(z | x) = N(W_z x + b_z, diag(s2)) with s2 independent of x.

Energy (THEORY section 1; twice the negative ELBO up to constants), per row, averaged over rows::

    L = E_q ||x - W_x z - b_x||^2 / gamma + d log gamma + sum_k (s2_k - log s2_k)
        + ||W_z x + b_z||^2                                                          (1)

Exact relation with the ELBO, per row, in nats::

    ELBO(x) = -(L(x) + d log(2 pi) - kappa) / 2                                      (2)

because -log p(x|z) = ||x - W_x z - b_x||^2 / (2 gamma) + d log(2 pi gamma) / 2 and
KL(q || N(0, I)) = (sum_k (s2_k - log s2_k) + ||mu||^2 - kappa) / 2.

Identities used below (derived in THEORY section 1 and tested in tests/test_affine.py):

- E_q ||x - W z - b||^2 = ||x - W mu - b||^2 + sum_k s2_k ||w_k||^2.
- For fixed W = W_x: s2_k = gamma / (gamma + ||w_k||^2), mu = (W^T W + gamma I)^-1 W^T (x - m),
  b_x = m (the data mean). Substituting gives the reduced energy::

      L(W) = tr((gamma I + W W^T)^-1 S) + sum_k log(1 + ||w_k||^2 / gamma)
             + d log gamma + kappa                                                    (3)

  with S the 1/n covariance. By Hadamard's inequality L(W) >= log|gamma I + W W^T|
  + tr((gamma I + W W^T)^-1 S) + kappa (the probabilistic-PCA bound), equal iff the columns of W
  are orthogonal.
- Global minima: columns u_i sqrt(l_i - gamma) for the a = min(kappa, #{l_i > gamma}) top
  eigen-directions of S, in any a of the kappa slots with any signs, the other columns zero::

      L* = a + sum_{i > a} l_i / gamma + sum_{i <= a} log l_i + (d - a) log gamma + kappa.     (4)

  Their number is kappa! / (kappa - a)! * 2^a.

Energies are in "nats x 2" per sample (twice nats, as in (1)); log-likelihoods and ELBOs are
in nats per sample.
"""


from __future__ import annotations

from balance.theory.affine.barriers import (
    BarrierProfile,
    barrier,
)
from balance.theory.affine.energy import (
    DTYPE,
    LOG_2PI,
    AffineEnergyTerms,
    AffineParams,
    data_moments,
    data_with_spectrum,
    elbo,
    energy,
    energy_mc,
    energy_terms,
    exact_posterior,
    log_marginal_likelihood,
    ppca_bound,
    reduced_energy,
    spectrum,
)
from balance.theory.affine.fit import (
    TrainResult,
    train,
    train_restarts,
)
from balance.theory.affine.optima import (
    AffineOptimum,
    closed_form_energy,
    closed_form_optimum,
    count_minima,
    enumerate_minima,
    match_minimum,
    optimal_params,
    params_distance,
)

__all__ = [
    "DTYPE",
    "LOG_2PI",
    "AffineParams",
    "AffineOptimum",
    "AffineEnergyTerms",
    "TrainResult",
    "BarrierProfile",
    "data_moments",
    "spectrum",
    "data_with_spectrum",
    "energy_terms",
    "energy",
    "energy_mc",
    "elbo",
    "log_marginal_likelihood",
    "exact_posterior",
    "reduced_energy",
    "ppca_bound",
    "optimal_params",
    "closed_form_energy",
    "closed_form_optimum",
    "count_minima",
    "enumerate_minima",
    "params_distance",
    "match_minimum",
    "train",
    "train_restarts",
    "barrier",
]
