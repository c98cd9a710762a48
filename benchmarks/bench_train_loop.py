"""Throughput of ``balance.train.train`` against a bare hand-written loop on the same model.

Both sides train the same MLP VAE (encoder 784-512-512-(16 + 16), decoder 16-512-512-784, ReLU,
Gaussian decoder with a learnable log gamma), batch 128, for one MNIST epoch, with fused Adam,
the same loss function, the same initial weights and data on the same device:

- bare: ``randperm`` -> for each batch: ``index_select``, ``zero_grad``, ``loss_fn``,
  ``backward``, ``step``; nothing else (no logging, no progress, no files).
- package: ``train(model, loss_fn, images, config, run_dir)`` with everything on: tqdm bars
  (written to a discarded stream), every log term kept per step, ``metrics.jsonl``, a
  checkpoint at the start and after the epoch, data checks, seeding.

Runs are interleaved (ABBA ABBA ...) so that slow drifts of a shared machine hit both sides
equally, and the medians are compared. Target: package / bare >= 0.95.

The model and loss are the package's (``balance.models.vae.GaussianVAE`` with
``balance.models.mlp`` networks, ``balance.objectives.elbo.vae_loss``) when importable, else
equivalent plain-torch definitions below; either way both sides use the identical pair, so the
ratio measures the loop alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

BATCH = 128
WIDTH = 512
LATENT = 16
LR = 1e-3
TARGET = 0.95


# ------------------------------------------------------------------------------ model and loss


class _PlainVAE(nn.Module):
    """Fallback: the same architecture in plain torch (used if the package's VAE is missing)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU()
        )
        self.mu = nn.Linear(WIDTH, LATENT)
        self.logvar = nn.Linear(WIDTH, LATENT)
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
            nn.Linear(WIDTH, 784),
        )
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor):
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return mu, logvar, z, self.decoder(z).view_as(x)


def _plain_loss(model: _PlainVAE, x: torch.Tensor):
    """Negative ELBO (nats per image) with a Gaussian decoder of variance gamma, and its terms."""
    mu, logvar, z, x_hat = model(x)
    d = x[0].numel()
    sq = (x - x_hat).square().flatten(1).sum(1)
    rec = 0.5 * sq * torch.exp(-model.log_gamma)
    norm = 0.5 * d * (1.8378770664093453 + model.log_gamma)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    loss = (rec + norm + kl).mean()
    return loss, {"reconstruction": rec.detach().mean(), "kl": kl.detach().mean(),
                  "gamma": model.log_gamma.detach().exp()}


def make_model_and_loss() -> tuple[Callable[[], nn.Module], Callable, str]:
    """``(build_model, loss_fn, description)``: the package's VAE and loss when available."""
    try:
        from balance.models.mlp import (
            MLPDecoder,
            MLPDecoderConfig,
            MLPEncoder,
            MLPEncoderConfig,
        )
        from balance.models.vae import GammaConfig, GaussianVAE
        from balance.objectives.elbo import vae_loss
    except ImportError as exc:
        return _PlainVAE, _plain_loss, f"plain-torch VAE and loss (package VAE missing: {exc})"

    def build() -> nn.Module:
        shape = (1, 28, 28)
        encoder = MLPEncoder(
            MLPEncoderConfig(data_shape=shape, latent_dim=LATENT, width=WIDTH, depth=2)
        )
        decoder = MLPDecoder(
            MLPDecoderConfig(data_shape=shape, latent_dim=LATENT, width=WIDTH, depth=2,
                             residual=False, affine_skip=False)
        )
        return GaussianVAE(encoder, decoder, GammaConfig(init=1.0, learnable=True))

    return build, vae_loss, "balance GaussianVAE (MLP 784-512-512-16) + objectives.elbo.vae_loss"


# ------------------------------------------------------------------------------ data


def load_images(quick: bool) -> tuple[torch.Tensor, str]:
    """MNIST training images [N, 1, 28, 28] in [0, 1], or random data of that shape."""
    try:
        from balance.data.mnist import load_mnist

        images, _ = load_mnist("train", download=False)
        source = "MNIST train"
    except Exception as exc:  # missing files, no data package yet: the timing needs only shapes
        images = torch.rand(60000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        source = f"RANDOM data of MNIST's shape (MNIST unavailable: {type(exc).__name__}: {exc})"
    if quick:
        images = images[: 40 * BATCH]
        source += f", first {images.shape[0]} images (--quick)"
    return images.contiguous(), source


# ------------------------------------------------------------------------------ the two loops


def bare_epoch(model: nn.Module, loss_fn: Callable, images: torch.Tensor, seed: int) -> None:
    """One epoch of the minimal loop: forward, loss, backward, fused Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    model.train()
    n = images.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(images.device)
    for start in range(0, n, BATCH):
        batch = images.index_select(0, perm[start : start + BATCH])
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
    if images.device.type == "cuda":
        torch.cuda.synchronize()


def package_epoch(
    model: nn.Module, loss_fn: Callable, images: torch.Tensor, seed: int, run_dir: str
) -> None:
    """One epoch through ``balance.train.train`` with progress, logs, metrics and checkpoints."""
    from balance.train import TrainConfig, train

    config = TrainConfig(epochs=1, batch_size=BATCH, lr=LR, seed=seed, progress=True)
    with contextlib.redirect_stderr(io.StringIO()):
        history = train(model, loss_fn, images, config, run_dir)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    assert history and history[-1]["steps"] == -(-images.shape[0] // BATCH)


def measure(quick: bool = False, repeats: int | None = None) -> dict:
    from balance.runs import device_name, pick_device

    device = pick_device("auto")
    images, source = load_images(quick)
    images = images.to(device)
    build, loss_fn, what = make_model_and_loss()
    print(f"data:   {source}")
    print(f"model:  {what}")
    print(f"device: {device_name(device)} ({device}), {torch.get_num_threads()} torch threads",
          flush=True)
    repeats = repeats if repeats is not None else (3 if quick else 5)

    torch.manual_seed(0)
    initial = build().to(device).state_dict()
    initial = {k: v.clone() for k, v in initial.items()}

    def timed(side: str, data: torch.Tensor) -> tuple[float, float]:
        model = build().to(device)
        model.load_state_dict(initial)
        torch.manual_seed(1)
        with tempfile.TemporaryDirectory() as run_dir:  # made and removed outside the timing
            wall, cpu = time.perf_counter(), time.process_time()
            if side == "bare":
                bare_epoch(model, loss_fn, data, 1)
            else:
                package_epoch(model, loss_fn, data, 1, run_dir)
            return time.perf_counter() - wall, time.process_time() - cpu

    # Warm-up (allocator, lazy init, first-call costs) on a few batches, not timed.
    for side in ("bare", "package"):
        timed(side, images[: 4 * BATCH])

    times: dict[str, list[tuple[float, float]]] = {"bare": [], "package": []}
    order = ("bare", "package")
    for rep in range(repeats):
        for side in order if rep % 2 == 0 else order[::-1]:  # ABBA: cancels linear drift
            times[side].append(timed(side, images))
            wall, cpu = times[side][-1]
            print(f"  {side:8s} epoch {rep + 1}/{repeats}: {wall:6.2f} s wall, {cpu:6.2f} s CPU",
                  flush=True)
    n = images.shape[0]

    def rate(side: str, which: int, reduce=statistics.median) -> float:
        return n / reduce([t[which] for t in times[side]])

    return {
        "device": f"{device_name(device)} ({device})",
        "threads": torch.get_num_threads(),
        "data": source,
        "model": what,
        "samples": n,
        "times_bare_s": times["bare"],
        "times_package_s": times["package"],
        "bare_samples_per_s": rate("bare", 0),
        "package_samples_per_s": rate("package", 0),
        "ratio": rate("package", 0) / rate("bare", 0),
        # On a shared machine other processes only ever add time: the fastest epoch of each
        # side, and the process CPU time, are less disturbed than the median wall time.
        "ratio_best": rate("package", 0, min) / rate("bare", 0, min),
        "ratio_cpu": rate("package", 1) / rate("bare", 1),
    }


def main(quick: bool = False, repeats: int | None = None) -> list[str]:
    result = measure(quick, repeats)
    for side in ("bare", "package"):
        runs = ", ".join(f"{w:.2f} ({c:.2f})" for w, c in result[f"times_{side}_s"])
        print(f"{side:8s} epoch wall (cpu) times, s: {runs}")
    print(f"ratio of medians {result['ratio']:.3f}, of best epochs {result['ratio_best']:.3f}, "
          f"of median CPU times {result['ratio_cpu']:.3f}")
    ok = "meets" if result["ratio"] >= TARGET else "BELOW"
    return [
        f"train_loop: package {result['package_samples_per_s']:.0f} samples/s vs bare "
        f"{result['bare_samples_per_s']:.0f} samples/s, ratio {result['ratio']:.3f} "
        f"({ok} target >= {TARGET}; best-epoch ratio {result['ratio_best']:.3f}, CPU-time "
        f"ratio {result['ratio_cpu']:.3f}; {result['samples']} samples/epoch, batch {BATCH}, "
        f"median of {len(result['times_bare_s'])} interleaved epochs each, {result['device']})"
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help="epochs per side")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for line in main(args.quick, args.repeats):
        print(line)
