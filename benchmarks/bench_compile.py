"""The training step of the E1 model eager against ``TrainConfig(compile=True)``
(``torch.compile`` of the model the loss is called with), same data, same run, interleaved;
steps per second after a warm-up epoch (which pays the compilation). The default of
``TrainConfig.compile`` (off) follows this measurement on the CPU; on a GPU, where small MLP
steps are launch-bound, compile is the opt-in.

    python -m benchmarks.bench_compile [--quick]
"""

from __future__ import annotations

import argparse

import torch

from balance.models.registry import MLPVAESpec, build
from balance.objectives import loss
from balance.train import TrainConfig, train


def _steps_per_second(compiled: bool, x: torch.Tensor, width: int, epochs: int) -> tuple:
    model = build(MLPVAESpec(latent_dim=50, width=width), (1, 28, 28), 0)
    cfg = TrainConfig(epochs=epochs, batch_size=100, progress=False, compile=compiled)
    history = train(model, loss("elbo"), x, cfg)
    warm = history[0]["time_s"]
    rest = history[1:]
    steps = sum(h["steps"] for h in rest)
    return steps / sum(h["time_s"] for h in rest), warm, history[-1]["loss"]


def main(quick: bool = False) -> list[str]:
    n, width, epochs = (2000, 128, 3) if quick else (6000, 256, 3)
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    eager, eager_warm, eager_loss = _steps_per_second(False, x, width, epochs)
    comp, comp_warm, comp_loss = _steps_per_second(True, x, width, epochs)
    return [f"compile: E1 MLP VAE (width {width}, kappa 50, batch 100) on "
            f"{'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} "
            f"threads: eager {eager:.1f} steps/s, compiled {comp:.1f} steps/s "
            f"({comp / eager:.2f}x); first epoch {eager_warm:.1f} s vs {comp_warm:.1f} s "
            f"(compilation); final loss {eager_loss:.6g} vs {comp_loss:.6g}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    print("\n".join(main(parser.parse_args().quick)))
