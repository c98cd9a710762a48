"""balance: regularization balance in autoencoder-based generative models.

Importing the package is cheap and has no side effects; import the submodules you need,
e.g. ``from balance.theory import affine`` or ``from balance.metrics import frechet_distance``.
"""

__version__ = "0.1.0"
