"""Evaluation protocols the experiments share, over any model with the
:mod:`balance.models.output` contract (``encode(x) -> (mu_z, logvar_z)``, ``decode(z)``):

- :mod:`balance.evaluation.codec`: encode and decode in batches, on the model's device;
- :mod:`balance.evaluation.vae`: the VAE test metrics (reconstruction error, IWAE NLL,
  negative ELBO, active units, KL and posterior variance per dimension, gamma);
- :mod:`balance.evaluation.images`: image scores against held-out images (FID where the
  Inception weights exist, NDB/K, pixel MMD^2) and uint8 image grids;
- :mod:`balance.evaluation.columns`: the REC / N(0, I) / MVG / GMM / 2nd-stage / Interp
  columns of the RAE and DAE tables.
"""
