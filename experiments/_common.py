"""Plumbing shared by the experiment scripts in ``experiments/``.

Only what several scripts need and the library does not have: the common command line, run
folders and their identity (the config without the run-environment settings), finished-stage
bookkeeping, the results header, table files and the printed report, Adam with its own
learning rate for log gamma, batched evaluation, and the CelebA helpers of E2/E3 (data
selection, frozen submodules, a per-step trace of one log term, image grids, NDB bins).
Number and table formatting lives in ``balance.reporting``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from balance.reporting import csv_table, format_number, markdown_table
from balance.runs import (
    RESULTS_FILE,
    config_to_dict,
    device_name,
    load_checkpoint,
    pick_device,
    prepare_run,
    read_json,
    read_jsonl,
    write_json,
    write_text,
)

# ------------------------------------------------------------------------------ command line


def run_cli(cli: Callable[[Sequence[str]], Any], argv: Sequence[str]) -> None:
    """Run a script's ``cli(argv)``; problems the user can fix (missing or corrupt data,
    weights or checkpoints, a changed config on resume, a diverged run) end with their message
    and exit status 2 instead of a traceback, and Ctrl-C says how to resume."""
    from balance.data.errors import DataError
    from balance.metrics.fid import FIDWeightsMissing
    from balance.runs import CheckpointError, ConfigMismatchError
    from balance.train import NonFiniteLossError

    try:
        cli(argv)
    except (DataError, FIDWeightsMissing, CheckpointError, ConfigMismatchError,
            NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(130)


def parser(description: str, presets: Sequence[str], default_run_root: str | Path, *,
           run_dir_help: str = "<preset>", data: bool = True, device: bool = True,
           progress: bool | None = True) -> argparse.ArgumentParser:
    """The command line every experiment shares: ``--preset`` (default quick), ``--run-dir``,
    ``--threads`` and, where they apply, ``--data-root``, ``--device`` and
    ``--progress/--no-progress`` (``progress``: the default; None leaves the option out).

    ``--threads`` and ``--device`` default to None, meaning the preset's (see
    :func:`apply_args`).
    """
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(presets), default="quick",
                   help="settings to run (default: quick)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help=f"run folder (default: {default_run_root}/{run_dir_help}); re-running "
                        "the same command resumes it and skips what is finished")
    if data:
        p.add_argument("--data-root", default=None,
                       help="data root (default: $BALANCE_DATA, else the user cache)")
    if device:
        p.add_argument("--device", default=None,
                       help="auto, cpu, cuda... (default: the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and the BLAS/OpenMP pools (default: the preset's)")
    if progress is not None:
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=progress,
                       help=f"show the progress bars (default: {'on' if progress else 'off'})")
    return p


def apply_args(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with the common command-line overrides: ``device``, ``threads`` and the data
    root (``config.data_root``, else ``config.data.root``)."""
    changes: dict[str, Any] = {}
    if getattr(args, "device", None) is not None:
        changes["device"] = args.device
    if args.threads is not None:
        changes["threads"] = args.threads
    root = getattr(args, "data_root", None)
    if root is not None:
        if hasattr(config, "data_root"):
            changes["data_root"] = root
        else:
            changes["data"] = dataclasses.replace(config.data, root=root)
    return dataclasses.replace(config, **changes)


# ------------------------------------------------------------------------------- run folders


#: Run-environment settings: they may change between a run and its resumption (another
#: device, no progress bars, other thread or worker counts) without changing its results.
RUNTIME_FIELDS = frozenset({"device", "progress", "threads", "workers"})


def run_identity(config: Any) -> dict:
    """``config`` (a dataclass, or a dict of values and dataclasses) as a JSON dict without the
    :data:`RUNTIME_FIELDS` at any depth: what ``balance.runs.prepare_run`` compares on resume."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in RUNTIME_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(config_to_dict(config))


def prepare(run_dir: Path, config: Any, device: str | None) -> Path:
    """Create or resume ``run_dir`` for ``config`` (:func:`run_identity`); ``device`` is the
    device recorded in its environment.json."""
    return prepare_run(run_dir, run_identity(config), device=device)


def run_folder(run_dir: str | Path | None, default: Path) -> Path:
    return Path(run_dir) if run_dir is not None else Path(default)


def open_run(config: Any, run_dir: str | Path | None, default: Path) -> Path:
    """The experiment's run folder (``run_dir``, else ``default``), created or resumed for
    ``config`` (:func:`prepare`, on ``config.device``)."""
    folder = run_folder(run_dir, default)
    prepare(folder, config, config.device)
    return folder


def stage_done(folder: Path) -> dict | None:
    """The saved results of a finished stage or run (its ``results.json``), else None."""
    path = Path(folder) / RESULTS_FILE
    return read_json(path) if path.is_file() else None


def save_stage(folder: Path, results: dict) -> dict:
    write_json(Path(folder) / RESULTS_FILE, results)
    return results


def device_record(device_label: str) -> dict[str, str]:
    device = pick_device(device_label)
    return {"device": str(device), "device_name": device_name(device)}


def results_header(name: str, config: Any) -> dict:
    """The first fields of an experiment's results.json: name, preset, device, CPU threads."""
    return {"experiment": name, "preset": config.preset, **device_record(config.device),
            "torch_threads": torch.get_num_threads()}


class Timer:
    """Seconds since construction, when called."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def lazy(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Call ``fn`` once, on first use (data and scorers are skipped when all is finished)."""
    cache: list = []

    def get() -> Any:
        if not cache:
            cache.append(fn())
        return cache[0]

    return get


# ---------------------------------------------------------------------------- tables, report


def write_table(run_dir: Path, stem: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, before: str = "", after: str = "") -> str:
    """Write ``<stem>.md`` (``before`` + the Markdown table + ``after``) and ``<stem>.csv``;
    returns the Markdown text."""
    text = before + markdown_table(columns, rows) + after
    write_text(Path(run_dir) / f"{stem}.md", text)
    write_text(Path(run_dir) / f"{stem}.csv", csv_table(columns, rows))
    return text


def report(results: Mapping[str, Any], tables: Sequence[str],
           checks: Mapping[str, Any] | None = None, lines: Sequence[str] = ()) -> str:
    """What a script prints at the end: its tables, the direction checks (``name: value``, the
    ``thresholds`` entry left out), extra ``lines``, then the device and the total run time."""
    out = list(tables)
    out += [f"{k}: {format_number(v)}" for k, v in (checks or {}).items() if k != "thresholds"]
    out += list(lines)
    out.append(f"device: {results['device_name']}, {results['torch_threads']} thread(s); "
               f"wall time {results['wall_time_s']:.0f} s")
    return "\n".join(out)


# ------------------------------------------------------------------------------ optimisation


def gamma_adam(model: nn.Module, train_cfg: Any, gamma_lr: float | None):
    """An ``optimizer_fn`` for ``balance.train.train``: Adam over the trainable parameters with
    the learnable log gamma (``model.raw_log_gamma``) at ``gamma_lr``; None (the trainer's
    Adam) when ``gamma_lr`` is None or gamma is not learned. Adam moves log gamma by about its
    lr per step, so a short run needs a larger one to reach gamma's small final value."""
    gamma = getattr(model, "raw_log_gamma", None)
    if gamma_lr is None or not isinstance(gamma, nn.Parameter) or not gamma.requires_grad:
        return None

    def make(params):
        rest = [p for p in params if p is not gamma]
        return torch.optim.Adam(
            [{"params": rest}, {"params": [gamma], "lr": gamma_lr}],
            lr=train_cfg.lr, betas=train_cfg.betas, weight_decay=train_cfg.weight_decay,
        )

    return make


# -------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def batched(fn: Callable[[Tensor], Any], x: Tensor, batch_size: int, device) -> list[Any]:
    """``[fn(x[i:i+b].to(device)) ...]`` over consecutive batches (outputs left where fn puts
    them)."""
    return [fn(x[i : i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]


def random_subset(x: Tensor, limit: int | None, generator: torch.Generator) -> Tensor:
    """``limit`` samples of ``x`` drawn without replacement (all of ``x`` when None or larger):
    the official splits are not in random order (the first MNIST test images come from other
    writers than the rest), so a prefix would be a biased sample."""
    if limit is None or limit >= x.shape[0]:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:limit]]


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


# ------------------------------------------------------------------------------- CelebA data


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


# ------------------------------------------------------------------------------------ images


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


# --------------------------------------------------------------------------------------- NDB


def ndb_evaluator(train: np.ndarray, k: int, *, seed: int = 0) -> Callable[[np.ndarray], dict]:
    """``samples [M, D] -> {"k", "ndb", "ndb_over_k", "js", ...}`` against k-means bins fitted
    once on ``train [N, D]`` (``balance.metrics.ndb.NDBBins``, Richardson & Weiss 2018)."""
    from balance.metrics.ndb import NDBBins

    bins = NDBBins.fit(train, k, seed=seed)

    def evaluate(samples: np.ndarray) -> dict:
        result = bins.evaluate(samples)
        return {"k": result.k, "ndb": result.ndb, "ndb_over_k": result.ndb_over_k,
                "js": result.js, "n_train": result.n_train, "n_samples": result.n_samples}

    return evaluate
