"""The E1 ``paper`` preset's projected time, from measured per-step figures on this machine.

Measures, for the paper preset's model (``experiments/kappa_sweep.py``: width 500, a 6-layer
encoder, 3 residual decoder blocks, batch 100) at its smallest and largest kappa, the training
steps per second eager and (where asked) compiled after a warm-up, and the IWAE rate (images
per second at the preset's k and batch) on a few test-sized images. The projection multiplies
by the preset's work: every (arm, kappa) run of ``epochs x 600`` steps and IWAE on 10,000 test
images, one run after another (the local engine). On a GPU the same script projects the GPU
time; here it projects whatever device ``--device`` picks.

    python -m benchmarks.bench_e1_projection [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch

from balance.metrics.iwae import iwae_nll
from balance.models.registry import MLPVAESpec, build
from balance.objectives import loss
from balance.runs import device_name, pick_device
from balance.train import TrainConfig, train


def _steps_per_second(kappa: int, device: torch.device, steps: int, compiled: bool) -> float:
    x = torch.rand(100 * steps, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = build(MLPVAESpec(latent_dim=kappa, width=500), (1, 28, 28), 0)
    cfg = TrainConfig(epochs=2, batch_size=100, progress=False, device=str(device),
                      compile=compiled, tf32=compiled)
    history = train(model, loss("elbo"), x, cfg)  # epoch 1: warm-up (and compilation)
    return history[1]["steps"] / history[1]["time_s"]


def _iwae_rate(kappa: int, device: torch.device, k: int, batch: int, n: int) -> float:
    model = build(MLPVAESpec(latent_dim=kappa, width=500), (1, 28, 28), 0).to(device).eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        iwae_nll(model, x[:batch], k, generator=generator, batch_size=batch)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        iwae_nll(model, x, k, generator=generator, batch_size=batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def main(quick: bool = False, compiled: bool = False, device: str = "auto") -> list[str]:
    from experiments.kappa_sweep import preset

    paper = preset("paper")
    dev = pick_device(device)
    steps = 20 if quick else 100
    kappas = (min(paper.kappas), max(paper.kappas))
    rates = {k: _steps_per_second(k, dev, steps, compiled) for k in kappas}
    k_iwae, batch = paper.eval.iwae_k, paper.eval.iwae_batch
    n_iwae = batch if quick else 2 * batch
    iwae = {k: _iwae_rate(k, dev, k_iwae, batch, n_iwae) for k in kappas}
    per_run_steps = paper.train.epochs * 600  # 60,000 images, batch 100
    runs = [(arm, k) for arm in paper.arms for k in paper.kappas]
    mean_rate = sum(rates.values()) / len(rates)  # the grid's kappas lie between the two
    mean_iwae = sum(iwae.values()) / len(iwae)
    train_h = len(runs) * per_run_steps / mean_rate / 3600
    iwae_h = len(runs) * 10_000 / mean_iwae / 3600
    mode = "compiled + TF32" if compiled else "eager"
    return [
        f"e1_projection on {device_name(dev)} ({dev}), {torch.get_num_threads()} threads, "
        f"{mode}: E1 paper model (width 500, batch 100) "
        + ", ".join(f"kappa {k}: {rates[k]:.1f} steps/s" for k in kappas)
        + f"; IWAE k = {k_iwae}: "
        + ", ".join(f"kappa {k}: {iwae[k]:.2f} images/s" for k in kappas)
        + f". Projected paper preset ({len(runs)} runs x {per_run_steps:,} steps, IWAE on "
        f"10,000 images each, one after another): training {train_h:.1f} h + IWAE "
        f"{iwae_h:.1f} h = {train_h + iwae_h:.1f} h"
    ]


def _cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    for line in main(a.quick, a.compile, a.device):
        print(line)


if __name__ == "__main__":
    _cli()
