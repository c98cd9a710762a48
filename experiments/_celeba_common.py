"""Helpers shared by the two CelebA experiments (``gamma_fixed_vs_learned``, ``celeba_fid_ndb``).

Only what both scripts need and nothing the library already has: the data selection, the CPU
thread setting, a frozen-submodule wrapper, a per-step recorder of one training log term (the
trainer itself keeps per-epoch means only), stage bookkeeping for resumable multi-stage runs,
the command line and small table/image writers.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from balance.runs import (
    RESULTS_FILE,
    device_name,
    load_checkpoint,
    pick_device,
    read_json,
    read_jsonl,
    write_json,
    write_text,
)

#: Okabe-Ito colours (colour-blind safe), in the order the figures use them.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
NA_FID = "n/a (no Inception weights)"


# ------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CelebAData:
    """Which CelebA images an experiment uses.

    ``root``: data root (None: ``$BALANCE_DATA``, else the user cache). ``folder``: image folder
    under ``<root>/celeba`` (None: ``img_align_celeba``, the 178 x 218 originals).
    ``train_limit`` / ``eval_limit``: the first images of the split(s), in id order (None: all).
    ``eval_splits``: official splits pooled into the evaluation set.
    ``min_train_images``: refuse to run on fewer training images (the paper presets need the
    full dataset, not the 6,000-image sample).
    """

    root: str | None = None
    folder: str | None = None
    train_limit: int | None = None
    eval_splits: tuple[str, ...] = ("test",)
    eval_limit: int | None = None
    min_train_images: int = 1


def load_split(
    data: CelebAData, split: str, resolution: int, limit: int | None, progress: bool
) -> Tensor:
    """Images ``[N, 3, R, R]`` in [0, 1] of one split (``balance.data.celeba.load_celeba``)."""
    from balance.data.celeba import load_celeba

    return load_celeba(
        split, resolution, root=data.root, limit=limit, folder=data.folder, progress=progress
    )


def load_train_eval(
    data: CelebAData, resolution: int, *, train_limit: int | None = None, progress: bool = True
) -> tuple[Tensor, Tensor]:
    """``(train, eval)`` images at ``resolution``; raises ``ValueError`` below
    ``min_train_images`` training images (with a hint to point the data root at full CelebA)."""
    from balance.data.celeba import celeba_ids

    limit = train_limit if train_limit is not None else data.train_limit
    present = len(celeba_ids("train", root=data.root, folder=data.folder, limit=limit))
    if present < data.min_train_images:  # checked before decoding anything
        raise ValueError(
            f"this preset needs at least {data.min_train_images} CelebA training images but "
            f"the data root holds {present}: put the full img_align_celeba/ (202,599 "
            "images) and list_eval_partition.txt under <root>/celeba/ and pass --data-root "
            "(or set BALANCE_DATA), or use --preset quick"
        )
    train = load_split(data, "train", resolution, limit, progress)
    parts = [load_split(data, s, resolution, data.eval_limit, progress) for s in data.eval_splits]
    held_out = torch.cat(parts) if len(parts) > 1 else parts[0]
    if data.eval_limit is not None:
        held_out = held_out[: data.eval_limit]
    return train, held_out


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Cap torch's CPU threads inside the block (None: leave torch's default), then restore.

    On a small machine shared with other jobs, one thread per process avoids the oversubscription
    that otherwise slows the convolutions several-fold.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ models


class Frozen(nn.Module):
    """A submodule whose parameters are not trained and which always runs in eval mode.

    ``train(True)`` on the parent (the trainer calls it every epoch) leaves the wrapped module in
    eval mode, so its batch-norm layers use their running statistics and never update them.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Frozen:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: Tensor) -> Any:
        return self.module(x)


@torch.no_grad()
def batched(fn: Callable[[Tensor], Any], x: Tensor, batch_size: int, device) -> list[Any]:
    """``[fn(x[i:i+b].to(device)) ...]`` over consecutive batches (outputs left where fn puts
    them)."""
    return [fn(x[i : i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


# ------------------------------------------------------------------------- per-step log trace


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
        write_text(self.path, "".join(_json_line(r) for r in kept))
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
            handle.write(_json_line({"epoch": self.epoch, "values": values}))
        return {}

    def read(self) -> list[float]:
        """All values so far, in step order (the last line of an epoch wins)."""
        by_epoch: dict[int, list[float]] = {}
        for record in read_jsonl(self.path):
            by_epoch[int(record["epoch"])] = record["values"]
        return [v for e in sorted(by_epoch) for v in by_epoch[e]]


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"


# ---------------------------------------------------------------------------------- stages


def stage_done(stage_dir: Path) -> dict | None:
    """The saved results of a finished stage (its ``results.json``), else None."""
    path = Path(stage_dir) / RESULTS_FILE
    return read_json(path) if path.is_file() else None


def save_stage(stage_dir: Path, results: dict) -> dict:
    write_json(Path(stage_dir) / RESULTS_FILE, results)
    return results


#: Settings that may change between a run and its resumption (not part of a run's identity).
RUNTIME_FIELDS = frozenset({"device", "progress", "threads"})


def run_identity(config: Any) -> dict:
    """``config`` as a JSON dict without the runtime settings (:data:`RUNTIME_FIELDS`), for
    ``balance.runs.prepare_run``: resuming on another device or without progress bars is the
    same run."""
    from balance.runs import config_to_dict

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in RUNTIME_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(config_to_dict(config))


def device_record(device_label: str) -> dict[str, str]:
    device = pick_device(device_label)
    return {"device": str(device), "device_name": device_name(device)}


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# ------------------------------------------------------------------------------ command line


def parser(
    description: str, presets: Sequence[str], default_run_root: str
) -> argparse.ArgumentParser:
    """The command line both experiments share."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", choices=list(presets), default="quick",
                   help="settings to run (default: quick)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help=f"run folder (default: {default_run_root}/<preset>); re-running the same "
                        "command resumes it and skips the finished stages")
    p.add_argument("--data-root", default=None,
                   help="data root holding celeba/ (default: $BALANCE_DATA)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda... (default: the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


# ---------------------------------------------------------------------------------- writers


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant figures, strings as they are."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(float(value)):
        return str(value)
    return f"{float(value):.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[fmt(c, 6) for c in row] for row in rows])
    return buffer.getvalue()


def to_uint8(images: Tensor) -> np.ndarray:
    """[N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3]."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def thumbnails(images: Tensor, side: int) -> Tensor:
    """Resize [N, 3, H, W] to [N, 3, side, side] (antialiased bilinear)."""
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
        tiles = to_uint8(thumbnails(row, side))
        for j, tile in enumerate(tiles):
            top, left = pad + i * (side + pad), pad + j * (side + pad)
            grid[top : top + side, left : left + side] = tile
    return grid


def save_png(array: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)
    return path


# ------------------------------------------------------------------------------------- NDB


def ndb_evaluator(train: np.ndarray, k: int, *, seed: int = 0) -> Callable[[np.ndarray], dict]:
    """``samples [M, D] -> {"k", "ndb", "ndb_over_k", "js"}`` against k-means bins fitted once
    on ``train [N, D]`` (``balance.metrics.ndb.NDBBins``, Richardson & Weiss 2018)."""
    from threadpoolctl import threadpool_limits

    from balance.metrics.ndb import NDBBins

    # As many BLAS/OpenMP threads as torch uses (torch_threads): no oversubscription.
    with threadpool_limits(limits=torch.get_num_threads()):
        bins = NDBBins.fit(train, k, seed=seed)

    def evaluate(samples: np.ndarray) -> dict:
        with threadpool_limits(limits=torch.get_num_threads()):
            result = bins.evaluate(samples)
        return {"k": result.k, "ndb": result.ndb, "ndb_over_k": result.ndb_over_k,
                "js": result.js, "n_train": result.n_train, "n_samples": result.n_samples}

    return evaluate
