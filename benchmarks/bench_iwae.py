"""IWAE NLL throughput: ``balance.metrics.iwae.iwae_nll`` (k importance samples drawn and
decoded in chunks, images in batches) against a naive per-datapoint loop, in the same run.

Device: ``balance.runs.pick_device("auto")`` (a GPU when there is one). Model: the kappa sweep's
Gaussian VAE (``balance.models.vae.GaussianVAE`` with the paper's MLP
encoder, 784-500x5-kappa, and residual decoder with affine skip, kappa = 64), at its random
initialisation (throughput does not depend on training). Data: MNIST test images (random images
of that shape when MNIST is absent). k = 100.

- package: ``iwae_nll(model, x, k, batch_size=100)`` on ``n`` images;
- naive: for each image, for each of the k samples: draw z ~ q(z|x), decode one z, add
  log p(x|z) + log p(z) - log q(z|x) to a list; then ``logsumexp`` (the textbook estimator,
  Burda et al. 2015, eq. 8), on fewer images (it is slow; it also stops after 20 s, 5 s with
  ``--quick``).

Throughput is images per second (each image with its k samples). Before timing, both are
checked to compute the same estimator: on a few images, with the same noise, the package's
log-weights (``iwae_log_weights(..., noise=)``) and the naive loop's agree.

    python -m benchmarks.bench_iwae [--quick] [--k K] [--n N]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

K = 100
LATENT = 64


def build_model() -> torch.nn.Module:
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
    from balance.models.vae import GammaConfig, GaussianVAE

    shape = (1, 28, 28)
    torch.manual_seed(0)
    model = GaussianVAE(MLPEncoder(MLPEncoderConfig.paper(shape, LATENT)),
                        MLPDecoder(MLPDecoderConfig.paper(shape, LATENT)),
                        GammaConfig(init=0.05))
    return model.eval()


def load_images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from balance.data.mnist import load_mnist

        images, _ = load_mnist("test", download=False)
        return images[:n].contiguous(), "MNIST test"
    except Exception as exc:  # the timing needs only shapes
        gen = torch.Generator().manual_seed(0)
        return (torch.rand(n, 1, 28, 28, generator=gen),
                f"RANDOM images (MNIST unavailable: {type(exc).__name__})")


@torch.no_grad()
def naive_log_weights(model, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``[k]`` log-weights of one image ``x [1, ...]``, one sample at a time.

    ``noise [k, 1, kappa]``: the standard normal draws, ``z_s = mu + sigma * noise[s]``.
    """
    from balance.density import (
        diag_gaussian_log_prob,
        gaussian_log_prob_isotropic,
        standard_normal_log_prob,
    )

    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    log_gamma = model.log_gamma()
    out = []
    for eps in noise.to(mu.device):
        z = mu + std * eps
        x_hat = model.decode(z)
        out.append(gaussian_log_prob_isotropic(x, x_hat, log_gamma)
                   + standard_normal_log_prob(z) - diag_gaussian_log_prob(z, mu, logvar))
    return torch.cat(out)


@torch.no_grad()
def naive_nll(model, x: torch.Tensor, k: int, generator: torch.Generator,
              budget_s: float = math.inf) -> torch.Tensor:
    """``[N']`` IWAE NLL, one image and one sample at a time (float64 logsumexp), for the first
    ``N' <= N`` images: it stops after the image that exceeds ``budget_s`` seconds."""
    device = next(model.parameters()).device
    nll = []
    start = time.perf_counter()
    for i in range(x.shape[0]):
        noise = torch.randn(k, 1, LATENT, generator=generator)
        log_w = naive_log_weights(model, x[i : i + 1].to(device), noise)
        nll.append(-(torch.logsumexp(log_w.double(), 0) - math.log(k)).cpu())
        if time.perf_counter() - start > budget_s:
            break
    return torch.stack(nll)


def check_same_estimator(model, x: torch.Tensor, k: int) -> float:
    """Largest relative difference of the log-weights of both paths, same noise, 3 images."""
    from balance.metrics.iwae import iwae_log_weights

    x = x[:3].to(next(model.parameters()).device)
    noise = torch.randn(k, x.shape[0], LATENT, generator=torch.Generator().manual_seed(1))
    ours = iwae_log_weights(model, x, k, noise=noise)  # [k, B]
    naive = torch.stack([naive_log_weights(model, x[i : i + 1], noise[:, i : i + 1])
                         for i in range(x.shape[0])], dim=1)
    return float(((ours - naive).abs() / naive.abs().clamp_min(1.0)).max())


def machine(device: torch.device) -> str:
    from balance.runs import device_name

    where = f"{device_name(device)} ({device}), " if device.type != "cpu" else ""
    return (f"{where}{device_name('cpu')}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}, python {platform.python_version()}")


def main(quick: bool = False, k: int = K, n: int | None = None,
         n_naive: int | None = None) -> list[str]:
    """Time both; print details, return the summary line."""
    from balance.metrics.iwae import iwae_nll
    from balance.runs import pick_device

    n = n or (100 if quick else 500)
    n_naive = n_naive or (4 if quick else 10)
    budget = 5.0 if quick else 20.0  # the naive loop stops after the image that passes it
    device = pick_device("auto")
    model = build_model().to(device)
    images, source = load_images(max(n, n_naive))
    rel = check_same_estimator(model, images, k)
    print(f"data: {source}; model: GaussianVAE, paper MLP encoder / residual decoder, "
          f"kappa = {LATENT}; k = {k}")
    print(f"  same estimator: log-weights agree to {rel:.1e} (relative, same noise)")

    iwae_nll(model, images[:10], k, generator=torch.Generator().manual_seed(0))  # warm-up
    naive_nll(model, images[:1], k, torch.Generator().manual_seed(0))

    start = time.perf_counter()
    ours = iwae_nll(model, images[:n], k, generator=torch.Generator().manual_seed(0),
                    batch_size=100)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_nll(model, images[:n_naive], k, torch.Generator().manual_seed(0), budget)
    naive_s = time.perf_counter() - start
    n_naive = naive.shape[0]
    ours_rate, naive_rate = n / ours_s, n_naive / naive_s
    print(f"  balance iwae_nll (batched): {n:4d} images in {ours_s:7.3f} s = "
          f"{ours_rate:9.1f} images/s")
    print(f"  naive per-datapoint loop:   {n_naive:4d} images in {naive_s:7.3f} s = "
          f"{naive_rate:9.1f} images/s")
    print(f"  mean NLL of the first {n_naive} images: {float(ours[:n_naive].mean()):.1f} "
          f"(package) and {float(naive.mean()):.1f} (naive) nats/image, independent noise, "
          "untrained model")
    return [
        f"iwae (k={k}, MLP VAE kappa={LATENT}): balance iwae_nll {ours_rate:.1f} images/s "
        f"({n} images), naive per-datapoint loop {naive_rate:.2f} images/s ({n_naive} images), "
        f"speed-up {ours_rate / naive_rate:.0f}x; "
        f"log-weights agree to {rel:.0e}; on {machine(device)}"
    ]


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100 images (naive: 4) instead of 500 (10)")
    parser.add_argument("--k", type=int, default=K, help=f"importance samples (default {K})")
    parser.add_argument("--n", type=int, default=None, help="images for the package")
    parser.add_argument("--n-naive", type=int, default=None, help="images for the naive loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for line in main(quick=args.quick, k=args.k, n=args.n, n_naive=args.n_naive):
        print(line)


if __name__ == "__main__":
    _cli()
