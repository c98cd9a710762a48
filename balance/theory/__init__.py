"""The theorems of THEORY.md, one module each, with the check that verifies it.

- Theorem 1 (every local minimum of the affine Gaussian VAE is global and balanced):
  :mod:`balance.theory.affine` (``energy``, ``optima``, ``fit``, ``barriers``);
  checked by ``proofs_checks/test_theorem1.py``.
- Theorem 2 (the over-regularized stationary point of a deep VAE, and the affine-skip
  escape): :mod:`balance.theory.over_regularized`; checked by ``proofs_checks/test_theorem2.py``;
  escape times over seeds in ``experiments/theorem2_escape.py``.
- Theorem 3 (zero reconstruction error with few active rows needs a penalty with an unbounded
  gradient): :mod:`balance.theory.penalties`; checked by ``proofs_checks/test_theorem3.py``;
  minimisers of L_h from random starts in ``experiments/theorem3_penalties.py``.
- Section 4 prescriptions (regularized deterministic autoencoders, ex-post densities):
  :mod:`balance.objectives.autoencoders`, :mod:`balance.density_estimation`; no theorem, their
  formulas tested in ``tests/test_autoencoders.py`` and ``tests/test_density_estimation.py``;
  ``experiments/rae_table.py``, ``experiments/dae_sweep.py``.
- The homotopy view (learned gamma vs gamma fixed at its final value):
  :class:`balance.models.vae.GammaConfig`; checked by ``proofs_checks/test_homotopy.py``;
  over seeds in ``experiments/homotopy.py``, on CelebA in
  ``experiments/gamma_fixed_vs_learned.py``.

Submodules are imported on use: ``from balance.theory import affine``.
"""
