"""Evaluation where the model runs against on the host: IWAE NLL with the importance-sampling
noise drawn on the model's device against noise drawn on the CPU and moved, and the tables'
pixel MMD^2 on the device against the host, same inputs, same run. On a machine without an
accelerator both sides are the CPU: the benchmark then times the CPU path and says so.

    python -m benchmarks.bench_eval_device [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from balance.kernels import mmd_unbiased
from balance.metrics.iwae import iwae_nll
from balance.models.registry import MLPVAESpec, build
from balance.runs import pick_device


def _time(fn) -> tuple[float, float]:
    start = time.perf_counter()
    value = float(fn())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def main(quick: bool = False) -> list[str]:
    device = pick_device("auto")
    n, k, n_mmd = (100, 100, 1000) if quick else (1000, 1000, 5000)
    model = build(MLPVAESpec(latent_dim=50, width=256), (1, 28, 28), 0).to(device).eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        t_dev, v_dev = _time(lambda: iwae_nll(model, x, k, generator=torch.Generator(
            device=device).manual_seed(0), batch_size=50).mean())
        t_host, v_host = _time(lambda: iwae_nll(model, x, k, generator=torch.Generator()
                                                .manual_seed(0), batch_size=50).mean())
        a = torch.rand(n_mmd, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        b = torch.rand(n_mmd, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        m_dev, mv_dev = _time(lambda: mmd_unbiased(a.to(device), b.to(device)))
        m_host, mv_host = _time(lambda: mmd_unbiased(a, b))
    where = ("no accelerator: device = host = cpu" if device.type == "cpu"
             else f"device {device}")
    return [f"eval_device ({where}): IWAE k = {k} on {n} images, noise on the device "
            f"{t_dev:.2f} s vs on the host {t_host:.2f} s ({t_host / t_dev:.2f}x; NLL "
            f"{v_dev:.2f} vs {v_host:.2f}, other noise streams); pixel MMD^2 N = {n_mmd} on the "
            f"device {m_dev:.2f} s vs host {m_host:.2f} s ({m_host / m_dev:.2f}x; "
            f"{mv_dev:.4e} vs {mv_host:.4e})"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    print("\n".join(main(parser.parse_args().quick)))
