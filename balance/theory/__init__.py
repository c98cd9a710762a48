"""The theorems of THEORY.md, one module each, with the check that verifies it.

- Theorem 1 (every local minimum of the affine Gaussian VAE is global and balanced):
  :mod:`balance.theory.affine` (``energy``, ``optima``, ``fit``, ``barriers``);
  checked by ``proofs_checks/test_theorem1.py``.
- Theorem 2 (the over-regularized stationary point of a deep VAE, and the affine-skip
  escape): :mod:`balance.theory.over_regularized`; checked by ``proofs_checks/test_theorem2.py``;
  escape times over seeds in ``experiments/theorem2_escape.py``.
- Theorem 3 (zero reconstruction error with few active rows needs a penalty with an unbounded
  gradient): :mod:`balance.theory.penalties`; checked by ``proofs_checks/test_theorem3.py``.

Submodules are imported on use: ``from balance.theory import affine``.
"""
