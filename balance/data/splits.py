"""Train / held-out image sets of the experiments: checked, subset and pooled the same way
everywhere.

- :func:`check_images`: refuse data that would train silently into nonsense;
- :func:`random_subset`: a seeded subset without replacement (the official splits are not in
  random order, so a prefix would be a biased sample);
- :func:`load_images`: ``(train, test)`` of MNIST, CIFAR-10 or CelebA at a resolution;
- :class:`CelebAData` / :func:`load_celeba_train_eval`: CelebA with a minimum training-set size
  (the paper presets need the full dataset, not the 6,000-image sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CelebAData", "VectorData", "check_images", "load_celeba_train_eval", "load_images",
           "load_manifold", "load_vector_data", "random_subset"]

#: (channels, side) of each image dataset at its default resolution.
IMAGE_SHAPES = {"mnist": (1, 28), "cifar10": (3, 32), "celeba": (3, 64)}


def check_images(x: Tensor, shape: Sequence[int], what: str) -> Tensor:
    """``x`` if it is a float tensor ``[N, *shape]`` (N >= 1) of finite values; otherwise a
    ``ValueError`` naming the problem (and the first bad sample)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{what}: expected a float tensor, got {type(x).__name__}")
    if x.dim() < 2 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] == 0:
        raise ValueError(
            f"{what}: expected samples of shape {tuple(shape)} (a tensor [N, "
            f"{', '.join(map(str, shape))}]), got {tuple(x.shape)}"
        )
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{what}: {int(bad.sum())} sample(s) hold NaN or infinite values, first at index "
            f"{first}"
        )
    return x


def random_subset(x: Tensor, limit: int | None, generator: torch.Generator) -> Tensor:
    """``limit`` samples of ``x`` drawn without replacement (all of ``x`` when None or larger)."""
    if limit is None or limit >= x.shape[0]:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:limit]]


@dataclass(frozen=True)
class CelebAData:
    """Which CelebA images an experiment uses.

    ``root``: data root (None: ``$BALANCE_DATA``, else the user cache). ``folder``: image folder
    under ``<root>/celeba`` (None: ``img_align_celeba``, the 178 x 218 originals).
    ``train_limit`` / ``eval_limit``: the first images of the split(s), in id order (None: all).
    ``eval_splits``: official splits pooled into the evaluation set.
    ``min_train_images``: refuse to run on fewer training images.
    """

    root: str | None = None
    folder: str | None = None
    train_limit: int | None = None
    eval_splits: tuple[str, ...] = ("test",)
    eval_limit: int | None = None
    min_train_images: int = 1


def load_celeba_train_eval(data: CelebAData, resolution: int, *, train_limit: int | None = None,
                           progress: bool = True,
                           train_as_bytes: bool = False) -> tuple[Tensor, Tensor]:
    """``(train, eval)`` CelebA images ``[N, 3, R, R]`` in [0, 1] (the training images as
    uint8 bytes with ``train_as_bytes``: a quarter of the memory, for the trainer alone);
    ``DataError`` below ``min_train_images`` training images (with a hint to point the data
    root at full CelebA)."""
    from balance.data.celeba import celeba_ids, load_celeba

    limit = train_limit if train_limit is not None else data.train_limit
    present = len(celeba_ids("train", root=data.root, folder=data.folder, limit=limit))
    if present < data.min_train_images:  # checked before decoding anything
        from balance.data.errors import DataError

        raise DataError(
            f"this preset needs at least {data.min_train_images} CelebA training images but "
            f"the data root holds {present}: put the full img_align_celeba/ (202,599 "
            "images) and list_eval_partition.txt under <root>/celeba/ and pass --data-root "
            "(or set BALANCE_DATA), or use --preset quick"
        )

    def split(name: str, n: int | None, as_bytes: bool = False) -> Tensor:
        return load_celeba(name, resolution, root=data.root, limit=n, folder=data.folder,
                           progress=progress, as_bytes=as_bytes)

    train = split("train", limit, train_as_bytes)
    parts = [split(s, data.eval_limit) for s in data.eval_splits]
    held_out = torch.cat(parts) if len(parts) > 1 else parts[0]
    if data.eval_limit is not None:
        held_out = held_out[: data.eval_limit]
    return train, held_out


def load_images(dataset: str, root: str | None = None, train_limit: int | None = None,
                test_limit: int | None = None, subset_seed: int = 0,
                eval_splits: Sequence[str] = ("test",)) -> tuple[Tensor, Tensor]:
    """``(train, test)`` images in [0, 1], ``[N, C, H, W]``: ``*_limit`` images of each official
    split, a seeded random subset (:func:`random_subset`) for MNIST and CIFAR-10; CelebA
    (64 x 64): the first ids of the training split, and of the ``eval_splits`` pooled (in that
    order) as the test images."""
    if dataset == "celeba":
        data = CelebAData(root=root, train_limit=train_limit, eval_splits=tuple(eval_splits),
                          eval_limit=test_limit)
        return load_celeba_train_eval(data, IMAGE_SHAPES["celeba"][1], progress=False)
    if dataset == "mnist":
        from balance.data.mnist import load_mnist

        train, test = load_mnist("train", root)[0], load_mnist("test", root)[0]
    elif dataset == "cifar10":
        from balance.data.cifar import load_cifar10

        train, test = load_cifar10("train", root)[0], load_cifar10("test", root)[0]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(IMAGE_SHAPES)}")
    channels, side = IMAGE_SHAPES[dataset]
    shape = (channels, side, side)
    train = check_images(train, shape, f"{dataset} train")
    test = check_images(test, shape, f"{dataset} test")
    gen = torch.Generator().manual_seed(subset_seed)
    return random_subset(train, train_limit, gen), random_subset(test, test_limit, gen)


def load_manifold(n_train: int, n_test: int, d: int, r: int, *, noise: float = 0.01,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train, test)`` float32 points ``[N, d]`` of one draw of
    :func:`balance.data.synthetic.nonlinear_manifold` (an r-dimensional manifold in R^d)
    from ``seed``, the first ``n_train`` for training."""
    from balance.data.synthetic import nonlinear_manifold

    points = nonlinear_manifold(n_train + n_test, d, r,
                                generator=torch.Generator().manual_seed(seed), noise=noise)
    x = check_images(points.x.float(), (d,), "manifold data")
    return x[:n_train], x[n_train:]


def load_subspace(n_train: int, n_test: int, d: int, r: int, *, noise: float = 0.01,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train, test)`` float32 points ``[N, d]`` of one draw of
    :func:`balance.data.synthetic.affine_subspace` (an r-dimensional affine subspace of R^d)
    from ``seed``, the first ``n_train`` for training."""
    from balance.data.synthetic import affine_subspace

    points = affine_subspace(n_train + n_test, d, r,
                             generator=torch.Generator().manual_seed(seed), noise=noise)
    x = check_images(points.x.float(), (d,), "subspace data")
    return x[:n_train], x[n_train:]


@dataclass(frozen=True)
class VectorData:
    """Vector data of the MLP experiments. MNIST: ``train_limit`` / ``test_limit`` random images
    of the official splits (None: all), drawn with ``seed``. Manifold / subspace: ``n_train`` +
    ``n_test`` points of ``nonlinear_manifold(d, r, noise)`` / ``affine_subspace(d, r, noise)``
    from ``seed`` (:func:`load_manifold`, :func:`load_subspace`): data of known rank r."""

    dataset: str = "mnist"  # or "manifold", "subspace"
    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    d: int = 24
    r: int = 4
    n_train: int = 4000
    n_test: int = 1000
    noise: float = 0.01


def load_vector_data(data: VectorData) -> tuple[Tensor, Tensor, dict]:
    """``(train, test, info)``: float32 tensors ``[N, *shape]`` and a description."""
    if data.dataset == "mnist":
        train_x, test_x = load_images("mnist", data.root, data.train_limit, data.test_limit,
                                      data.seed)
        info = {"dataset": "mnist", "shape": [1, 28, 28], "r": None}
    elif data.dataset in ("manifold", "subspace"):
        loader = load_manifold if data.dataset == "manifold" else load_subspace
        train_x, test_x = loader(data.n_train, data.n_test, data.d, data.r, noise=data.noise,
                                 seed=data.seed)
        info = {"dataset": data.dataset, "shape": [data.d], "r": data.r, "noise": data.noise}
    else:
        raise ValueError(f"unknown dataset {data.dataset!r}; choose mnist, manifold or subspace")
    info.update(n_train=int(train_x.shape[0]), n_test=int(test_x.shape[0]))
    return train_x.contiguous(), test_x.contiguous(), info
