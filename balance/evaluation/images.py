"""Image scores against held-out images, and uint8 images and grids for figures.

:class:`ImageScorer` scores a set of images [M, C, H, W] in [0, 1] against reference (test)
images: FID with pytorch-fid's Inception network where its weights exist (else the string
``balance.reporting.NA_FID``), NDB / NDB/K / JS on k-means bins of the training images
(Richardson & Weiss 2018; lower is better), the unbiased MMD^2 between the images and the
reference images in pixel space (multi-scale IMQ kernel; lower is better), and the metrics of
:mod:`balance.metrics.generation` in two feature spaces, each key naming its space: pixel space
(``kid_x``, ``precision_x``, ``recall_x``, ``prd_f8_x``, ``prd_f1_8_x``; always) and Inception
pool features (``kid``, ``precision``, ``recall``; where the weights exist). With a ``features``
space (:class:`balance.evaluation.feature_ae.FeatureSpace`) it adds the Frechet distance in that
space, ``fd_<name>`` (e.g. ``fd_ae``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FIDScorer", "ImageScorer", "down_up", "feature_frechet", "image_grid", "ndb_evaluators",
           "save_png", "thumbnails", "to_uint8"]


class ImageScorer:
    """Scores images against ``reference [N, C, H, W]`` (FID, pixel MMD^2) and against NDB
    bins fitted once, lazily, on ``train [N', C, H, W]`` (``ndb_bins`` bins, ``seed``).

    FID features and the pixel MMD run on ``device`` (the device the models train on); the
    NDB bins are scikit-learn's k-means on the CPU. Every score names its device."""

    def __init__(self, train: Tensor, reference: Tensor, *, ndb_bins: int = 20, seed: int = 1234,
                 device: str | torch.device = "cpu", kid_subsets: int = 20,
                 kid_subset_size: int = 500, prd_runs: int = 10,
                 pixel_generation: bool = True, features=None):
        from balance.metrics.fid import inception_weights_available

        self.pixel_generation = bool(pixel_generation)
        self.features = features
        self._feature_reference = None
        self.kid_subsets = int(kid_subsets)
        self.kid_subset_size = int(kid_subset_size)
        self.prd_runs = int(prd_runs)
        self.reference = reference
        self.train_flat = train.flatten(1)
        self.ndb_bins = int(ndb_bins)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.fid_device = self.device
        self.fid_available = inception_weights_available()
        self._fid_reference = None
        self._reference_features = None
        self._ndb = None

    def fid(self, images: Tensor, features: np.ndarray | None = None) -> float | str:
        from balance.reporting import NA_FID

        if not self.fid_available:
            return NA_FID
        from balance.metrics.fid import FIDStatistics, fid_from_statistics

        if self._fid_reference is None:
            self._fid_reference = FIDStatistics.from_features(self.reference_features())
        if features is None:
            features = self.inception(images)
        return float(fid_from_statistics(self._fid_reference, FIDStatistics.from_features(
            features)))

    def inception(self, images: Tensor) -> np.ndarray:
        """Inception pool features [N, 2048] of ``images`` on the scorer's device."""
        from balance.metrics.fid import inception_features

        return inception_features(images, device=self.fid_device)

    def reference_features(self) -> np.ndarray:
        """The reference images' Inception features, cached on disk like FID's reference
        statistics (:func:`balance.metrics.fid.reference_features`)."""
        if self._reference_features is None:
            from balance.metrics.fid import load_inception, reference_features

            model = load_inception(device=self.fid_device)
            self._reference_features = reference_features(self.reference, model=model,
                                                          device=self.fid_device)
        return self._reference_features

    def generation(self, real: Tensor, fake: Tensor, suffix: str) -> dict[str, float]:
        """KID, improved precision / recall and PRD of ``fake`` against ``real`` features,
        their keys ending in ``suffix`` (the feature space: ``_x`` pixels, ``""`` Inception)."""
        from balance.metrics.generation import kid, prd, precision_recall

        gen = torch.Generator().manual_seed(self.seed)
        k = kid(real, fake, subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                generator=gen)
        pr = precision_recall(real, fake)
        out = {f"kid{suffix}": k["kid"], f"kid_std{suffix}": k["kid_std"],
               f"precision{suffix}": pr["precision"], f"recall{suffix}": pr["recall"]}
        if self.prd_runs:
            curve = prd(real, fake, runs=self.prd_runs, seed=self.seed)
            out.update({f"prd_f8{suffix}": curve["f8"], f"prd_f1_8{suffix}": curve["f1_8"]})
        return out

    def ndb(self, images: Tensor) -> dict[str, float]:
        """NDB, NDB/K and JS divergence of ``images`` against the training images' bins."""
        from balance.metrics.ndb import NDBBins

        if self._ndb is None:
            self._ndb = NDBBins.fit(self.train_flat, self.ndb_bins, seed=self.seed)
        res = self._ndb.evaluate(images.flatten(1))
        return {"ndb": int(res.ndb), "ndb_over_k": float(res.ndb_over_k), "js": float(res.js)}

    def mmd(self, images: Tensor) -> float:
        """Unbiased MMD^2 between ``images`` and the reference images, pixels as vectors."""
        from balance.kernels import imq_kernel, mmd_unbiased

        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # no fp64 on MPS
        with torch.no_grad():
            a = images.flatten(1).to(self.device, dtype)
            b = self.reference.flatten(1).to(self.device, dtype)
            return float(mmd_unbiased(a, b, imq_kernel))

    def feature_fd(self, images: Tensor) -> dict[str, float]:
        """``{"fd_<name>": ...}``: the Frechet distance to the reference images in the
        scorer's feature space (empty without one)."""
        if self.features is None:
            return {}
        if self._feature_reference is None:
            self._feature_reference = self.features(self.reference)
        return {f"fd_{self.features.name}": feature_frechet(self._feature_reference,
                                                            self.features(images))}

    def score(self, images: Tensor) -> dict[str, Any]:
        """``{"fid", "ndb", "ndb_over_k", "js", "mmd_x", "device"}``, the pixel-space KID,
        precision, recall and PRD (``*_x``; unless ``pixel_generation`` is off), ``fd_<name>``
        in a feature space when the scorer has one, and, with the Inception weights, ``kid``,
        ``precision``, ``recall`` on its features and ``fid_network`` (the weights' tag:
        ``inception-2015-12-05`` for the official ones)."""
        features = self.inception(images) if self.fid_available else None
        out = {"fid": self.fid(images, features), **self.ndb(images), "mmd_x": self.mmd(images),
               **self.feature_fd(images), "device": str(self.device)}
        if self.pixel_generation:
            out.update(self.generation(self.reference.flatten(1).to(self.device),
                                       images.flatten(1).to(self.device), "_x"))
        if self.fid_available:
            from balance.metrics.fid import load_inception

            real = torch.from_numpy(self.reference_features()).to(self.device)
            out.update({k: v for k, v in self.generation(
                real, torch.from_numpy(features).to(self.device), "").items()
                if not k.startswith("prd")})
            out["fid_network"] = load_inception(device=self.fid_device).fid_network_tag
        return out


def to_uint8(images: Tensor) -> np.ndarray:
    """Images [N, C, H, W] in [0, 1] -> uint8 array [N, C, H, W] (clamped, rounded)."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def thumbnails(images: Tensor, side: int) -> Tensor:
    """Resize [N, C, H, W] to [N, C, side, side] (antialiased bilinear)."""
    if images.shape[-1] == side:
        return images
    return torch.nn.functional.interpolate(
        images.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def image_grid(rows: Sequence[Tensor], side: int, pad: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] grid: one row per tensor [n, 3, h, w] (resized to ``side``), white gaps."""
    cols = max(r.shape[0] for r in rows)
    height = len(rows) * side + (len(rows) + 1) * pad
    width = cols * side + (cols + 1) * pad
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        tiles = to_uint8(thumbnails(row, side)).transpose(0, 2, 3, 1)
        for j, tile in enumerate(tiles):
            top, left = pad + i * (side + pad), pad + j * (side + pad)
            grid[top : top + side, left : left + side] = tile
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, 3] array as a PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)
    return path


def down_up(x: Tensor, side: int) -> Tensor:
    """Downsample to ``side`` (antialiased bilinear) and back up (bilinear), in [0, 1]: the
    "Downsample" row of E3."""
    out = []
    for b in x.split(256):
        small = thumbnails(b, side)
        out.append(torch.nn.functional.interpolate(
            small, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1))
    return torch.cat(out)


def feature_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, d] (float64): FID's
    formula in a feature space that needs no Inception weights (e.g. a frozen AE's codes)."""
    from balance.metrics.frechet import frechet_distance

    return float(frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                  b.mean(0), np.cov(b, rowvar=False)))


class FIDScorer:
    """FID against fixed real images with pytorch-fid's Inception network, or
    ``balance.reporting.NA_FID`` for every score when its weights file is absent."""

    def __init__(self, real: Tensor, *, weights: str | None = None,
                 device: str | torch.device = "cpu"):
        from balance.metrics.fid import image_statistics, inception_weights_available

        self.weights = weights
        self.device = device
        self.available = inception_weights_available(weights)
        self.reference = (image_statistics(real, weights=weights, device=device)
                          if self.available else None)
        self.network = None
        if self.available:
            from balance.metrics.fid import load_inception

            self.network = load_inception(weights, device=device).fid_network_tag

    def __call__(self, fake: Tensor) -> float | str:
        from balance.metrics.fid import fid_from_images
        from balance.reporting import NA_FID

        if self.reference is None:
            return NA_FID
        return fid_from_images(self.reference, fake, weights=self.weights, device=self.device)


def ndb_evaluators(train_vectors: np.ndarray, ks: Sequence[int], *, seed: int = 0) -> dict:
    """``{k: samples [M, D] -> {"k", "ndb", "ndb_over_k", "js", ...}}`` against k-means bins
    fitted once per K on ``train_vectors [N, D]`` (Richardson & Weiss 2018); K above N is left
    out."""
    from balance.metrics.ndb import NDBBins

    def evaluator(bins):
        def evaluate(samples: np.ndarray) -> dict:
            r = bins.evaluate(samples)
            return {"k": r.k, "ndb": r.ndb, "ndb_over_k": r.ndb_over_k, "js": r.js,
                    "n_train": r.n_train, "n_samples": r.n_samples}

        return evaluate

    return {k: evaluator(NDBBins.fit(train_vectors, k, seed=seed)) for k in ks
            if k <= train_vectors.shape[0]}
