"""Multi-stage training protocols built from the library's models, objectives and trainer:

- :mod:`balance.pipelines.vae_plus`: the VAE+ pipeline of E3 (AE -> feature VAE -> second stage).
"""
