"""Every step's value of one training log term, kept beside the run (e.g. ``||dL/dz||`` of
Figure 1), and a summary of such a trace."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from balance.runs import load_checkpoint, read_jsonl, write_text

__all__ = ["StepTrace", "trace_summary"]


class StepTrace:
    """Keeps every step's value of one training log term, written once per epoch.

    ``wrap(loss_fn)`` returns a loss function whose log term ``key`` (a value or a callable the
    trainer evaluates after ``backward``) is also appended here; ``flush`` (passed to
    :func:`balance.train.train` as ``eval_fn``) writes the epoch's values as one line of
    ``path`` (``{"epoch": e, "values": [...]}``; one host synchronisation per epoch).

    Resume: lines for epochs after the checkpoint in ``checkpoint_path`` (if any) are dropped,
    because the trainer repeats those epochs.
    """

    def __init__(self, path: Path, key: str, checkpoint_path: Path | None = None) -> None:
        self.path = Path(path)
        self.key = key
        done = 0
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            done = int(load_checkpoint(checkpoint_path, map_location="cpu")["epoch"])
        kept = []
        if self.path.is_file():
            kept = [r for r in read_jsonl(self.path) if r["epoch"] <= done]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.epoch = done
        self._values: list[Tensor] = []

    def wrap(self, loss_fn: Callable) -> Callable:
        def traced(model: nn.Module, batch: Any) -> tuple[Tensor, dict]:
            loss, logs = loss_fn(model, batch)
            value = logs[self.key]

            def record() -> Tensor:
                v = value() if callable(value) else value
                v = torch.as_tensor(v).detach().float().reshape(-1).mean()
                self._values.append(v)
                return v

            logs = dict(logs)
            logs[self.key] = record
            return loss, logs

        return traced

    def flush(self, model: nn.Module | None = None) -> dict[str, float]:
        self.epoch += 1
        values = torch.stack(self._values).cpu().tolist() if self._values else []
        self._values = []
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"epoch": self.epoch, "values": values}) + "\n")
        return {}

    def read(self) -> list[float]:
        """All values so far, in step order (the last line of an epoch wins)."""
        by_epoch: dict[int, list[float]] = {}
        for record in read_jsonl(self.path):
            by_epoch[int(record["epoch"])] = record["values"]
        return [v for e in sorted(by_epoch) for v in by_epoch[e]]


def trace_summary(values: list[float], summary_steps: int = 50, trace_points: int = 1500) -> dict:
    """Early / late means and the maximum of the per-step ``||dL/dz||``, and a subsample of at
    most ``trace_points`` steps (log-spaced, all steps when fewer) for the figure."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"steps": 0}
    k = min(summary_steps, v.size)
    if v.size <= trace_points:
        idx = np.arange(v.size)
    else:
        idx = np.unique(np.round(np.geomspace(1, v.size, trace_points)).astype(int) - 1)
    return {
        "steps": int(v.size),
        "early_mean": float(v[:k].mean()),
        "late_mean": float(v[-k:].mean()),
        "first": float(v[0]),
        "max": float(v.max()),
        "summary_steps": int(k),
        "trace_step": (idx + 1).tolist(),
        "trace_value": v[idx].tolist(),
    }
