"""Training on image bytes: the same MNIST-sized data held as uint8 (converted per batch on the
device) against float32 (today's loaders), same model, same run, interleaved; samples per
second of the training loop, and the bytes each holds. The uint8 path must not be slower.

    python -m benchmarks.bench_uint8 [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from balance.models.registry import MLPVAESpec, build
from balance.objectives import loss
from balance.train import TrainConfig, train


def _rate(data: torch.Tensor, width: int) -> float:
    model = build(MLPVAESpec(latent_dim=16, width=width, encoder_depth=2, decoder_blocks=1),
                  (1, 28, 28), 0)
    history = train(model, loss("elbo"), data, TrainConfig(epochs=1, batch_size=100,
                                                           progress=False))
    return history[0]["samples"] / history[0]["time_s"]


def main(quick: bool = False, repeats: int = 3) -> list[str]:
    n, width = (3000, 64) if quick else (20000, 128)
    raw = torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(0),
                        dtype=torch.uint8)
    as_float = raw.to(torch.float32).div_(255.0)
    rates: dict[str, list[float]] = {"uint8": [], "float32": []}
    for _ in range(repeats):
        rates["uint8"].append(_rate(raw, width))
        rates["float32"].append(_rate(as_float, width))
    u, f = statistics.median(rates["uint8"]), statistics.median(rates["float32"])
    return [f"uint8: {n} MNIST-sized images, MLP VAE width {width}: uint8 {u:.0f} samples/s, "
            f"float32 {f:.0f} samples/s ({u / f:.3f}x); held {raw.numel() / 2**20:.1f} MiB vs "
            f"{as_float.numel() * 4 / 2**20:.1f} MiB"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    print("\n".join(main(parser.parse_args().quick)))
