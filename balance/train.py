"""A model-agnostic training loop: Adam, lr schedule, clipping, progress, logging, resume.

The trainer knows nothing about the model: it receives a ``torch.nn.Module``, a loss function
``loss_fn(model, batch) -> (loss, logs)`` and the data as tensors, and it owns only the loop::

    for epoch:                       # batches from a permutation seeded by (seed, epoch)
        for batch:
            loss, logs = loss_fn(model, batch)
            loss.backward()          # then: callables in logs, optional clipping
            optimizer.step()
        metrics.jsonl += per-epoch means of loss and every log term (+ lr, time, steps)
        eval_fn(model)               # optional, in eval mode, under no_grad
        checkpoint.pt  = model, optimizer, scheduler, RNG states, config, history (atomic)

Speed: the data lives on the training device and is batched by ``index_select`` with a
permutation (no DataLoader, no worker processes, no host-device copies per step). Per-step log
values are written into a preallocated device buffer with one ``torch.stack``; the host reads it
(one synchronisation) about twice a second to refresh the progress bar and check for non-finite
values, and once at the end of each epoch. Nothing calls ``.item()`` per step.

Non-finite values: a NaN/inf loss or log term raises :class:`NonFiniteLossError` naming the
epoch, the step and every term's value at that step (found at the next host read, so at most
~0.5 s of steps later; the parameters in memory may be spoiled by then, the checkpoint on disk
is not). A non-finite gradient is named at its own step when the gradient norm is logged
(``grad_clip`` or ``log_grad_norm``); otherwise it shows up as a non-finite loss at the next
step, or, at an epoch's last step, in a check of the parameters before each checkpoint.

Resume: a run killed at any moment restarts from its last checkpoint and ends with exactly the
parameters of an uninterrupted run: each epoch's permutation is derived from ``(seed, epoch)``
and the Python/NumPy/torch RNG states (used e.g. by a VAE's reparameterisation noise) are saved
with the checkpoint at each epoch boundary. A checkpoint of the initial state (epoch 0) is
written at the start, so that a run killed in its first epoch also restarts from the same
weights.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from balance.runs import (
    CONFIG_FILE,
    CheckpointError,
    ConfigMismatchError,
    config_to_dict,
    load_checkpoint,
    pick_device,
    read_json,
    save_checkpoint,
    seed_everything,
    to_jsonable,
    write_json,
    write_text,
)

__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "NonFiniteLossError",
    "TrainConfig",
    "parameter_groups",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
# Bump when the checkpoint layout changes; older checkpoints are then refused with a clear error.
CHECKPOINT_FORMAT = 1
# Seconds between host reads of the step-log buffer (progress bar, early non-finite check).
SYNC_SECONDS = 0.5
# Config fields that may change when a run is resumed (everything else must match).
RESUMABLE_FIELDS = frozenset({"epochs", "progress", "device", "checkpoint_every", "compile",
                              "tf32", "data_placement"})
PLACEMENTS = ("auto", "device", "host")
PRECISIONS = ("fp32", "bf16")
# Keys of each epoch record set by the trainer; log terms may not use them.
RESERVED_KEYS = frozenset(
    {"epoch", "step", "steps", "samples", "lr", "time_s", "eval_time_s", "loss", "grad_norm"}
)

Batch = torch.Tensor | tuple[torch.Tensor, ...]
LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Mapping[str, Any]]]


class NonFiniteLossError(FloatingPointError):
    """The loss, a log term, a gradient norm or a parameter became NaN or infinite.

    Attributes: ``epoch`` and ``step`` (1-based, step within the epoch; ``None`` for a parameter
    found non-finite at the end of an epoch) and ``logs`` (the values at that step).
    The run folder's checkpoint is left at the last good epoch.
    """

    def __init__(self, message: str, *, epoch: int, step: int | None, logs: dict[str, float]):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.logs = logs


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; saved with every checkpoint.

    epochs: passes over the data. batch_size: samples per step (the last, smaller batch of an
    epoch is kept unless ``drop_last``). lr, betas, weight_decay: Adam's (L2 penalty added to the
    gradient, as in ``torch.optim.Adam``). lr_milestones, lr_decay: ``MultiStepLR`` by epoch, i.e.
    the lr is multiplied by ``lr_decay`` once ``m`` epochs have been completed, for every milestone
    ``m`` (epoch ``m + 1``, counting from 1, is the first at the lower rate). warmup_epochs,
    warmup_lr: that many first epochs at ``warmup_lr`` (Daly et al.'s one epoch at 1e-4), after
    which ``lr`` and its milestones start, the milestones counted from the warm-up's end; the
    warm-up epochs are part of ``epochs``. grad_clip: maximum
    total L2 norm of the gradient (``None``: no clipping). seed: data order and RNG streams.
    device: ``"auto"``, ``"cpu"``, ``"cuda"``... progress: tqdm bars. checkpoint_every: epochs
    between checkpoints (the last epoch is always saved). max_steps_per_epoch: cap for smoke runs.
    log_grad_norm: log the gradient's total norm each step (always logged when clipping).
    compile: ``torch.compile`` each top-level submodule of the model in place (e.g. encoder
    and decoder; the model's own forward stays eager, so hooks on its intermediate tensors
    still fire); opt-in: it pays off for small models whose steps are launch- or
    overhead-bound, mainly on a GPU (``benchmarks/bench_compile.py`` measures it). State keys
    and checkpoints are unchanged.
    tf32: allow TensorFloat-32 matrix products on CUDA (Ampere and newer); a process-wide torch
    setting, left on after training.
    precision: ``"fp32"`` or ``"bf16"``: the model's forward (and so its backward) under
    ``torch.autocast`` to bfloat16, meant for the conv models on a GPU; the model's outputs are
    cast back to float32 before the loss, so every loss term, gamma and the logged values stay
    float32 (or the model's dtype), and the parameters and optimizer state stay float32.
    data_placement: where the data tensors are held: ``"device"`` (moved once), ``"host"``
    (CPU memory, pinned when CUDA is there; each batch copied asynchronously) or ``"auto"``
    (the device when the data fit in 80% of its free memory, else the host; always the device
    on a CPU). uint8 tensors are image bytes: held as uint8 (a quarter of float32) and
    converted per batch on the device to float32 ``byte / 255``, bit-identical to the
    loaders' float images. The choice is written to the run folder's ``data.json``.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    warmup_lr: float = 1e-4
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    checkpoint_every: int = 1
    max_steps_per_epoch: int | None = None
    drop_last: bool = False
    log_grad_norm: bool = False
    compile: bool = False
    tf32: bool = False
    data_placement: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON or argparse) for the tuple fields.
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        problems = []
        if self.epochs < 0:
            problems.append(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(
            m < 1 for m in self.lr_milestones
        ):
            problems.append(
                f"lr_milestones must be increasing positive epochs, got {self.lr_milestones}"
            )
        if self.warmup_epochs < 0 or not self.warmup_lr > 0:
            problems.append(f"warmup_epochs must be >= 0 and warmup_lr > 0, got "
                            f"{self.warmup_epochs}, {self.warmup_lr}")
        if not self.lr_decay > 0:
            problems.append(f"lr_decay must be > 0, got {self.lr_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed must be in [0, 2**32), got {self.seed}")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.data_placement not in PLACEMENTS:
            problems.append(f"data_placement must be one of {PLACEMENTS}, got "
                            f"{self.data_placement!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            problems.append(f"max_steps_per_epoch must be >= 1 or None, got "
                            f"{self.max_steps_per_epoch}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Pieces of the loop
# --------------------------------------------------------------------------------------------


def _as_tensors(
    data: torch.Tensor | Sequence[torch.Tensor],
) -> tuple[tuple[torch.Tensor, ...], bool]:
    """``(tensors, single)``: validate the data layout (samples first, same count).

    Values are not scanned here (a full pass over the data per call); NaN/inf data show up as a
    non-finite loss, and the error then names the offending samples (:func:`_bad_samples`).
    """
    single = isinstance(data, torch.Tensor)
    tensors = (data,) if single else tuple(data)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(
            "data must be a Tensor or a tuple of Tensors with the sample dimension first"
        )
    sizes = {t.shape[0] if t.ndim else None for t in tensors}
    if None in sizes:
        raise ValueError("data tensors need a sample dimension (got a 0-d tensor)")
    if len(sizes) != 1:
        shapes = [tuple(t.shape) for t in tensors]
        raise ValueError(f"data tensors must hold the same number of samples, got shapes {shapes}")
    if sizes == {0}:
        raise ValueError("data holds no samples")
    return tensors, single


def parameter_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``model``'s trainable parameters: one group at the
    trainer's learning rate, plus one per learning rate that a submodule asks for through a
    ``parameter_lrs() -> [(parameter, lr)]`` method (e.g. the decoder variance of
    :class:`balance.models.vae.GaussianVAE`, ``GammaConfig.lr``). The lr schedule scales every
    group alike."""
    own: dict[int, float] = {}
    for module in model.modules():
        lrs = getattr(module, "parameter_lrs", None)
        if callable(lrs):
            own.update({id(p): float(lr) for p, lr in lrs() if p.requires_grad})
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in own]}]
    for lr in sorted(set(own.values())):
        groups.append({"params": [p for p in params if own.get(id(p)) == lr], "lr": lr})
    return [g for g in groups if g["params"]]


def _make_adam(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over parameter ``groups`` with the fused kernel where this torch supports it."""
    kwargs = dict(lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    try:
        return torch.optim.Adam(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        # Older torch (no fused CPU kernel), unusual devices or dtypes: the multi-tensor version.
        log.debug("fused Adam unavailable (%s); using the default implementation", exc)
        return torch.optim.Adam(groups, **kwargs)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch``'s data order, independent across (seed, epoch) pairs."""
    state = np.random.SeedSequence([seed, epoch, 0x6BA1A4CE]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _epoch_permutation(seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """Sample order of epoch ``epoch`` (0-based), drawn on the CPU: the same on every device."""
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator).to(device)


def _rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain containers (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = (
        torch.cuda.get_rng_state_all()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = list(state["cuda"])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _check_resumable(path: Path, saved: Mapping[str, Any], config: TrainConfig) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {saved.get('format')!r} but this version of balance "
            f"writes format {CHECKPOINT_FORMAT}: it is from an incompatible version. "
            "Delete it to restart the run from scratch."
        )
    old = saved.get("config", {})
    new = config_to_dict(config)
    diffs = [
        f"{key}: {old.get(key)!r} (checkpoint) vs {new.get(key)!r} (now)"
        for key in sorted(set(old) | set(new))
        if key not in RESUMABLE_FIELDS and old.get(key) != new.get(key)
    ]
    if diffs:
        raise ConfigMismatchError(
            f"checkpoint {path} was written with a different TrainConfig: " + "; ".join(diffs)
            + f". Only {sorted(RESUMABLE_FIELDS)} may change on resume; use another run folder "
            "or delete the checkpoint to start over."
        )


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the checkpointed history (drops lines of lost epochs)."""
    write_text(path, "".join(_dumps(record) + "\n" for record in history))


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(to_jsonable(record))


def _to_float(value: Any, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            value = value.detach().float().mean()
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a number or a Tensor, got {type(value).__name__}") from exc


def _bad_samples(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> str:
    """A note naming the samples of a batch (``index`` into the data) that hold NaN/inf, or ''."""
    notes = []
    for i, t in enumerate(tensors):
        if not (t.is_floating_point() or t.is_complex()):
            continue
        rows = ~torch.isfinite(t.index_select(0, index).reshape(index.numel(), -1)).all(dim=1)
        if bool(rows.any()):
            samples = index[rows].tolist()
            shown = samples[:10] + (["..."] if len(samples) > 10 else [])
            notes.append(f"data tensor {i} holds NaN/inf in sample(s) {shown} of this batch")
    if not notes:
        return _range_note(tensors[0])
    return "The data themselves are not finite: " + "; ".join(notes) + ". Clean the data."


def _range_note(x: torch.Tensor) -> str:
    """A hint when the (finite) data lie far outside [0, 1], the range of image models: a
    forgotten division by 255 looks like a diverging learning rate otherwise."""
    if not x.is_floating_point():
        return ""
    lo, hi = float(x.min()), float(x.max())
    if hi > 2.0 or lo < -2.0:
        return (f"The data lie in [{lo:.4g}, {hi:.4g}]: images in [0, 255] need dividing by "
                "255 (the package's image models expect [0, 1]); otherwise: a learning rate "
                "too high, a variance collapsing to 0, or the log of 0.")
    return ""


class _StepLog:
    """Per-step values of the loss and every log term, kept on the device until read.

    Row ``s`` of ``buffer`` ([steps, K_device], on the training device) holds step
    ``s``'s tensor-valued terms; terms given as Python numbers are written straight into the host
    table ``values`` ([steps, K], float64, columns in ``keys`` order), which :meth:`read` fills
    with the device rows (one synchronisation per call).
    """

    def __init__(
        self,
        keys: list[str],
        on_device: list[bool],
        steps: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.keys = keys
        self.device_cols = [i for i, d in enumerate(on_device) if d]
        self.host_cols = [i for i, d in enumerate(on_device) if not d]
        self.device_keys = frozenset(keys[i] for i in self.device_cols)
        # The values' own precision (float32 for a float32 model): exact, and a stack without a
        # dtype conversion is ~3x cheaper per step. Epoch means are taken in float64 on the host.
        self.buffer = torch.empty(steps, len(self.device_cols), dtype=dtype, device=device)
        self.values = np.full((steps, len(keys)), np.nan)
        self.read_upto = 0  # rows [0, read_upto) are in ``values``

    def set_host(self, step: int, row: list[float]) -> None:
        self.values[step, self.host_cols] = row

    def read(self, upto: int) -> tuple[int, np.ndarray]:
        """Copy device rows [read_upto, upto) to the host; return (start, rows [start, upto))."""
        start = self.read_upto
        block = self.buffer[start:upto].cpu().numpy()
        self.values[start:upto, self.device_cols] = block
        self.read_upto = upto
        return start, self.values[start:upto]

    def first_non_finite(self, start: int, upto: int) -> int | None:
        """0-based step of the first row in [start, upto) holding a NaN/inf, or None."""
        bad = ~np.isfinite(self.values[start:upto]).all(axis=1)
        return start + int(np.argmax(bad)) if bad.any() else None

    def error(
        self, step: int, epoch: int, epochs: int, steps: int, global_step: int, data_note: str
    ) -> NonFiniteLossError:
        """The error for step ``step`` (0-based); ``global_step`` counts steps read so far."""
        values = {k: float(v) for k, v in zip(self.keys, self.values[step], strict=True)}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        shown = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        at = global_step - (self.read_upto - step) + 1
        if data_note:
            advice = data_note
        else:
            advice = (
                "Usual causes: a learning rate too high, a variance (e.g. a decoder's gamma) "
                "collapsing to 0, the log of 0; try a lower lr, grad_clip, or a floor on the "
                "variance."
            )
        return NonFiniteLossError(
            f"non-finite {bad} at epoch {epoch + 1}/{epochs}, step {step + 1}/{steps} (global "
            f"step {at}); values at that step: {shown}. The checkpoint keeps the last good "
            f"epoch. {advice}",
            epoch=epoch + 1,
            step=step + 1,
            logs=values,
        )


def _place_data(tensors: tuple[torch.Tensor, ...], device: torch.device,
                placement: str) -> tuple[tuple[torch.Tensor, ...], str]:
    """The data tensors where they are held (``TrainConfig.data_placement``), and which."""
    if placement == "auto":
        placement = "device"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if sum(t.numel() * t.element_size() for t in tensors) > 0.8 * free:
                placement = "host"
    if placement == "device" or device.type == "cpu":
        return tuple(t.to(device) for t in tensors), "device"
    pin = torch.cuda.is_available()
    return tuple(t.cpu().pin_memory() if pin else t.cpu() for t in tensors), "host"


def _to_batch(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the training device; uint8 image bytes become float32 ``byte / 255`` (the
    loaders' own conversion, so the values are bit-identical)."""
    if batch.device != device:
        batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = batch.to(torch.float32).div_(255.0)
    return batch


def _optimizer(model: torch.nn.Module, config: TrainConfig, optimizer_fn):
    """``(trainable params, optimizer, lr scheduler or None)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if optimizer_fn is not None:
        optimizer = optimizer_fn(params)
    else:
        optimizer = _make_adam(parameter_groups(model), config)
    scheduler = None
    if config.warmup_epochs:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(lr_factor, config))
    elif config.lr_milestones:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(config.lr_milestones), gamma=config.lr_decay)
    return params, optimizer, scheduler


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch`` over ``config.lr``: the warm-up's rate, then
    ``lr_decay`` once per milestone passed (milestones counted from the warm-up's end)."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr / config.lr
    after = epoch - config.warmup_epochs
    return config.lr_decay ** sum(after >= m for m in config.lr_milestones)


def _steps_and_weights(n: int, config: TrainConfig, world: int = 1) -> tuple[int, np.ndarray]:
    """Optimizer steps per epoch and the samples of each step's global batch (``batch_size``
    per rank times ``world`` ranks; for per-sample means). Under data parallelism a last batch
    smaller than the number of ranks is dropped (a rank would get no sample)."""
    batch_size = config.batch_size * world
    steps = n // batch_size if config.drop_last else math.ceil(n / batch_size)
    if world > 1 and steps * batch_size > n and n - (steps - 1) * batch_size < world:
        steps -= 1
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"{n} samples make no batch of {batch_size} with drop_last=True")
    weights = np.array([min(batch_size, n - s * batch_size) for s in range(steps)],
                       dtype=np.float64)
    return steps, weights


def _shard(global_sizes: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Samples of this rank in each global batch (``torch.tensor_split``'s chunk sizes)."""
    sizes = global_sizes.astype(np.int64)
    return (sizes // world + (rank < sizes % world)).astype(np.float64)


def _to_float32(value: Any) -> Any:
    """``value`` with every low-precision floating tensor in it (also inside tuples, lists,
    dicts and dataclasses such as ``ModelOutput``) cast to float32."""
    import dataclasses

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, tuple | list):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _to_float32(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


class _Autocast:
    """The model as a loss function sees it with ``precision="bf16"``: its forward runs
    under ``torch.autocast`` (bfloat16), and the outputs of its top-level submodules (encoder,
    decoder) and of the model come back as float32 (forward hooks, removed by :meth:`close`).
    So the code between them (the reparameterisation) and every loss term run in float32 on the
    very tensors the graph holds (a loss may hook the gradient of ``z``); attributes come from
    the model itself."""

    def __init__(self, call: Any, model: torch.nn.Module, device: torch.device) -> None:
        self._call = call  # the model, or its DistributedDataParallel wrapper
        self._model = model
        self._device_type = device.type
        self._hooks = [child.register_forward_hook(lambda m, i, out: _to_float32(out))
                       for child in model.children()]

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self._device_type, dtype=torch.bfloat16):
            out = self._call(*args, **kwargs)
        return _to_float32(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _Replica:
    """The model as a loss function sees it under data parallelism: calls go through
    ``DistributedDataParallel`` (whose backward hooks all-reduce the gradients), attributes
    and methods (``decoder``, ``gamma``...) come from the model itself, so loss functions
    written for one process work unchanged."""

    def __init__(self, ddp: torch.nn.Module) -> None:
        self._ddp = ddp

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddp.module, name)


class _RunFolder:
    """The checkpoint and metrics log of one training run (or nothing, without a folder)."""

    def __init__(self, run_dir: str | Path | None, config: TrainConfig,
                 fingerprint: dict[str, Any] | None = None):
        self.dir = Path(run_dir) if run_dir is not None else None
        self.config = config
        self.fingerprint = fingerprint
        self.checkpoint = self.dir / CHECKPOINT_FILE if self.dir is not None else None
        self.metrics = self.dir / METRICS_FILE if self.dir is not None else None
        self.run_config = None
        if self.dir is not None and (self.dir / CONFIG_FILE).is_file():
            self.run_config = read_json(self.dir / CONFIG_FILE)

    def save(self, done: int, global_step: int, model, optimizer, scheduler,
             history: list[dict[str, Any]]) -> None:
        save_checkpoint(self.checkpoint, {
            "format": CHECKPOINT_FORMAT,
            "epoch": done,
            "global_step": global_step,
            "finished": done >= self.config.epochs,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None,
            "rng": _rng_state(),
            "config": config_to_dict(self.config),
            "run_config": self.run_config,
            "fingerprint": self.fingerprint,
            "history": history,
        })

    def resume(self, model, optimizer, scheduler) -> tuple[list[dict[str, Any]], int, int]:
        """``(history, epochs done, global step)`` from the folder's checkpoint, its states
        loaded into ``model``, ``optimizer``, ``scheduler`` and the RNGs; a fresh start
        (seeded, an empty metrics log) when there is none."""
        if self.checkpoint is None or not self.checkpoint.exists():
            seed_everything(self.config.seed)
            if self.dir is not None:
                self.dir.mkdir(parents=True, exist_ok=True)
                _write_metrics(self.metrics, [])  # a fresh start: no lines from an older attempt
            return [], 0, 0
        saved = load_checkpoint(self.checkpoint, map_location="cpu")
        _check_resumable(self.checkpoint, saved, self.config)
        self._check_fingerprint(saved)
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None and saved.get("scheduler") is not None:
                scheduler.load_state_dict(saved["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} does not fit this model or optimizer ({exc}); "
                "delete it to restart the run from scratch."
            ) from exc
        _set_rng_state(saved["rng"])
        history = list(saved["history"])
        start, step = int(saved["epoch"]), int(saved["global_step"])
        _write_metrics(self.metrics, history)
        from balance.distributed import is_writer

        if start < self.config.epochs and is_writer():
            print(f"resuming {self.dir} from epoch {start}/{self.config.epochs} (step {step})",
                  file=sys.stderr, flush=True)
        return history, start, step

    def _check_fingerprint(self, saved: Mapping[str, Any]) -> None:
        """Refuse a checkpoint of another model, loss or data (checkpoints written before
        fingerprints existed are resumed with a warning in the log)."""
        from balance.fingerprint import differences

        old = saved.get("fingerprint")
        if old is None or self.fingerprint is None:
            log.warning("checkpoint %s has no run fingerprint: resuming without checking the "
                        "model, loss and data", self.checkpoint)
            return
        diffs = differences(old, self.fingerprint)
        if diffs:
            raise ConfigMismatchError(
                f"checkpoint {self.checkpoint} belongs to another run: " + "; ".join(diffs)
                + f". Delete {self.checkpoint} (or the folder) to start this run fresh, or "
                "pass another run_dir / --run-dir.")


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor | Sequence[torch.Tensor],
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    eval_fn: Callable[[torch.nn.Module], Mapping[str, Any]] | None = None,
    optimizer_fn: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``data`` by minimising ``loss_fn``; return the per-epoch history.

    Args:
        model: any module; moved to the training device (``config.device``). It is in train mode
            during the epochs and in eval mode for ``eval_fn``; its original mode is restored at
            the end.
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``. ``batch`` is a Tensor (when ``data``
            is one) or a tuple of Tensors, on the device, with ``batch_size`` samples. ``loss`` is
            a scalar Tensor (nats per image, say). ``logs`` maps names to scalar Tensors (a
            non-scalar is averaged), numbers, or zero-argument callables returning either;
            callables are called after ``loss.backward()`` (and before clipping and the optimizer
            step), so a term can read a gradient captured by a tensor hook during backward.
        data: a Tensor or a tuple of Tensors, sample dimension first; moved once to the device.
        config: a :class:`TrainConfig`.
        run_dir: folder for ``metrics.jsonl`` (one line per epoch) and ``checkpoint.pt``; if it
            holds a checkpoint, training resumes from it (returns at once if it had finished).
            ``None``: nothing is written and nothing resumed.
        eval_fn: ``eval_fn(model) -> dict`` called after every epoch (eval mode, under
            ``torch.no_grad()``; use ``torch.enable_grad()`` inside if gradients are needed); its
            values are logged as ``"eval/<name>"``.
        optimizer_fn: builds the optimizer from the trainable parameters; default Adam (fused
            kernel where supported) with ``config.lr``, ``betas``, ``weight_decay`` over
            :func:`parameter_groups` (submodules may give parameters their own lr). The lr
            schedule and clipping apply to it too.

    Returns:
        History: one dict per completed epoch with ``epoch`` (1-based), ``step`` (optimizer steps
        so far), ``steps``, ``samples``, ``lr``, ``time_s``, ``loss`` and every log term (means
        over the epoch's samples), ``grad_norm`` when clipping or ``log_grad_norm``, and the
        ``eval/`` values with ``eval_time_s``.

    Raises:
        NonFiniteLossError: a NaN/inf loss, log term, gradient norm, or parameter; the checkpoint
            on disk is left at the last good epoch.
        CheckpointError, ConfigMismatchError: the existing checkpoint cannot be resumed.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    from balance import distributed

    device = distributed.init(pick_device(config.device))
    world, rank = distributed.world_size(), distributed.rank()
    tensors, single = _as_tensors(data)
    n = tensors[0].shape[0]
    was_training = model.training
    model.to(device)
    tensors, placement = _place_data(tensors, device, config.data_placement)
    params, optimizer, scheduler = _optimizer(model, config, optimizer_fn)
    clip = config.grad_clip
    log_grad_norm = clip is not None or config.log_grad_norm
    steps, weights = _steps_and_weights(n, config, world)
    from balance.fingerprint import run_fingerprint

    fingerprint = None
    if run_dir is not None:
        from balance.runs import lock_run_dir

        lock_run_dir(run_dir)  # a second process on this folder is refused, not interleaved
        fingerprint = run_fingerprint(model, loss_fn, tensors)
    folder = _RunFolder(run_dir, config, fingerprint)
    history, start_epoch, global_step = folder.resume(model, optimizer, scheduler)
    fresh = start_epoch == 0 and not (folder.checkpoint and folder.checkpoint.exists())

    def checkpoint(done: int) -> None:
        folder.save(done, global_step, model, optimizer, scheduler, history)

    if fresh and folder.dir is not None and config.epochs > 0:
        # Epoch 0: a run killed during its first epoch restarts from these very weights and
        # RNG states, even if the caller rebuilds the model differently.
        checkpoint(0)
    metrics_path = folder.metrics
    if folder.dir is not None:
        write_json(folder.dir / "data.json", {
            "placement": placement, "device": str(device),
            "tensors": [{"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                         "bytes": t.numel() * t.element_size()} for t in tensors]})
    if config.compile:  # each top-level submodule in place: state keys and tensor hooks kept
        for child in list(model.children()) or [model]:
            child.compile()
    if config.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if start_epoch >= config.epochs:
        model.train(was_training)
        return history
    stepped: Any = model  # what the loss function calls
    if world > 1:  # every rank now holds the same (fresh or resumed) state
        from torch.nn.parallel import DistributedDataParallel

        # static_graph: the parameters a model uses are the same every step (some, e.g. a
        # frozen feature extractor's, never get a gradient), which DDP then handles cheaply
        stepped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            static_graph=True)
    if config.precision == "bf16":
        stepped = _Autocast(stepped, model, device)
    elif world > 1:
        stepped = _Replica(stepped)

    try:
        with tqdm(
            total=config.epochs,
            initial=start_epoch,
            desc="train",
            unit="epoch",
            disable=not config.progress or rank != 0,
            dynamic_ncols=True,
        ) as epoch_bar:
            for epoch in range(start_epoch, config.epochs):
                record, global_step = _run_epoch(
                    model, loss_fn, tensors, single, optimizer, params, config, epoch, steps,
                    weights, global_step, clip, log_grad_norm, n, stepped,
                )
                if eval_fn is not None and rank == 0:
                    record.update(_evaluate(model, eval_fn))
                history.append(record)
                if scheduler is not None:
                    scheduler.step()
                _check_parameters(model, epoch, config.epochs)
                done = epoch + 1
                if folder.checkpoint is not None and (
                    done % config.checkpoint_every == 0 or done == config.epochs
                ):
                    checkpoint(done)
                if metrics_path is not None and rank == 0:
                    with open(metrics_path, "a", encoding="utf-8") as handle:
                        handle.write(_dumps(record) + "\n")
                epoch_bar.update(1)
                epoch_bar.set_postfix(loss=f"{record['loss']:.5g}", refresh=False)
    finally:
        model.train(was_training)
        if isinstance(stepped, _Autocast):
            stepped.close()
    return history


def _run_epoch(
    model: torch.nn.Module,
    loss_fn: LossFn,
    tensors: tuple[torch.Tensor, ...],
    single: bool,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    config: TrainConfig,
    epoch: int,
    steps: int,
    weights: np.ndarray,
    global_step: int,
    clip: float | None,
    log_grad_norm: bool,
    n: int,
    stepped: Any,
) -> tuple[dict[str, Any], int]:
    """One pass over the data; returns the epoch's record and the new global step.
    ``stepped``: what the loss function is called with (``model``, or its data-parallel or
    autocast view)."""
    from balance import distributed

    device = tensors[0].device
    world, rank = distributed.world_size(), distributed.rank()
    batch_size = config.batch_size * world  # the global batch
    if world > 1:  # each rank's own noise stream, a function of (seed, epoch, rank): resumable
        seed_everything(_epoch_seed(config.seed, epoch * world + rank) % 2**32)
    model.train()
    perm = _epoch_permutation(config.seed, epoch, n, tensors[0].device)
    local = _shard(weights, rank, world) if world > 1 else weights
    lr = float(optimizer.param_groups[0]["lr"])
    step_log: _StepLog | None = None
    log_keys: list[str] = []
    started = last_sync = time.perf_counter()
    first_data = tensors[0]
    with tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="step",
        leave=False,
        disable=not config.progress,
        dynamic_ncols=True,
    ) as bar:
        for step in range(steps):
            index = perm[step * batch_size : (step + 1) * batch_size]
            if world > 1:
                index = index.tensor_split(world)[rank]
            if single:
                batch = _to_batch(first_data.index_select(0, index), device)
            else:
                batch = tuple(_to_batch(t.index_select(0, index), device) for t in tensors)
            optimizer.zero_grad(set_to_none=True)
            loss, logs = loss_fn(stepped, batch)
            if step_log is None:
                _check_loss(loss, logs)
            if world > 1 and local[step] * world != weights[step]:
                # shards of unequal size: weight each rank's mean so that the average over
                # ranks (DDP) is the global batch's mean
                (loss * float(local[step] * world / weights[step])).backward()
            else:
                loss.backward()
            values = [loss.detach()]
            host_values: list[float] = []
            if step_log is None:
                log_keys = list(logs)
                log_key_set = set(logs)
                kinds: list[bool] = [True]
            elif logs.keys() != log_key_set:
                raise ValueError(
                    f"loss_fn returned log keys {sorted(logs)} at epoch {epoch + 1}, step "
                    f"{step + 1}, but {sorted(log_keys)} before: keep the set of keys fixed"
                )
            kinds += _split_log_values(logs, log_keys, step_log, device, values, host_values)
            if log_grad_norm:
                if clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, clip)
                else:
                    grads = [p.grad for p in params if p.grad is not None]
                    norm = torch.nn.utils.get_total_norm(grads)
                values.append(norm.detach())
            if step_log is None:
                keys = ["loss", *log_keys] + (["grad_norm"] if log_grad_norm else [])
                kinds = kinds + [True] * log_grad_norm
                dtype = functools.reduce(torch.promote_types, [v.dtype for v in values])
                dtype = torch.promote_types(dtype, torch.float32)  # integer or half terms
                step_log = _StepLog(keys, kinds, steps, device, dtype)
            torch.stack(values, out=step_log.buffer[step])
            if host_values:
                step_log.set_host(step, host_values)
            optimizer.step()
            global_step += 1
            now = time.perf_counter()
            if now - last_sync > SYNC_SECONDS:
                last_sync = now
                start, block = step_log.read(step + 1)
                bad = step_log.first_non_finite(start, step + 1)
                if bad is not None:
                    note = _bad_samples(tensors, perm[bad * batch_size : (bad + 1) * batch_size])
                    raise step_log.error(bad, epoch, config.epochs, steps, global_step, note)
                bar.update(step + 1 - bar.n)
                bar.set_postfix(loss=f"{float(block[:, 0].mean()):.5g}", refresh=False)
        assert step_log is not None
        start, _ = step_log.read(steps)
        bad = step_log.first_non_finite(start, steps)
        if bad is not None:
            note = _bad_samples(tensors, perm[bad * batch_size : (bad + 1) * batch_size])
            raise step_log.error(bad, epoch, config.epochs, steps, global_step, note)
        bar.update(steps - bar.n)
    elapsed = time.perf_counter() - started
    sums, total = local @ step_log.values, local.sum()
    if world > 1:  # the global batch's means: sums over every rank's samples
        reduced = distributed.all_reduce_sum(torch.from_numpy(np.append(sums, total)))
        sums, total = reduced[:-1].numpy(), float(reduced[-1])
    means = sums / total
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": global_step,
        "steps": steps,
        "samples": int(weights.sum()),
        "lr": lr,
        "time_s": elapsed,
    }
    record.update({k: float(v) for k, v in zip(step_log.keys, means, strict=True)})
    return record, global_step


def _split_log_values(logs: Mapping[str, Any], log_keys: list[str], step_log: _StepLog | None,
                      device: torch.device, values: list[torch.Tensor],
                      host_values: list[float]) -> list[bool]:
    """Append each log term's value of this step to ``values`` (a detached scalar on the
    device, for tensor terms) or ``host_values`` (a float, for numbers); callables are called
    now (after backward). Returns, on the first step only (``step_log`` None), whether each
    term is a tensor: the layout of the step log."""
    kinds: list[bool] = []
    for key in log_keys:
        value = logs[key]
        if callable(value):
            value = value()
        if step_log is None:
            kinds.append(isinstance(value, torch.Tensor))
            on_device = kinds[-1]
        else:
            on_device = key in step_log.device_keys
        if not on_device:
            host_values.append(_to_float(value, f"log term {key!r}"))
            continue
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.ndim:
                value = value.mean()
            if value.device != device:
                value = value.to(device)
        else:
            value = torch.as_tensor(float(value), device=device)
        values.append(value)
    return kinds


def _check_loss(loss: Any, logs: Any) -> None:
    """Validate the first step's ``loss_fn`` output (once per epoch: no cost per step)."""
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn must return (scalar loss Tensor, logs dict); got a loss of shape {shape}: "
            "reduce per-sample terms with .mean()"
        )
    if not loss.requires_grad:
        raise ValueError("the loss does not require grad: is it computed from the model's output?")
    if not isinstance(logs, Mapping):
        raise TypeError(f"loss_fn must return (loss, logs dict); got logs of type {type(logs)}")
    reserved = sorted(RESERVED_KEYS & set(logs))
    if reserved:
        raise ValueError(f"log keys {reserved} are reserved for the trainer's own columns")


def _evaluate(model: torch.nn.Module, eval_fn: Callable) -> dict[str, float]:
    model.eval()
    started = time.perf_counter()
    try:
        with torch.no_grad():
            result = eval_fn(model)
    finally:
        model.train()
    if not isinstance(result, Mapping):
        raise TypeError(f"eval_fn must return a dict of numbers, got {type(result).__name__}")
    out = {f"eval/{k}": _to_float(v, f"eval_fn value {k!r}") for k, v in result.items()}
    out["eval_time_s"] = time.perf_counter() - started
    return out


def _check_parameters(model: torch.nn.Module, epoch: int, epochs: int) -> None:
    """Refuse to checkpoint non-finite parameters (e.g. from a NaN gradient at the last step)."""
    flags = torch.stack([torch.isfinite(p).all() for p in model.parameters()])
    if bool(flags.all()):
        return
    names = [
        name for (name, _), ok in zip(model.named_parameters(), flags.tolist(), strict=True)
        if not ok
    ]
    raise NonFiniteLossError(
        f"parameters {names} became non-finite during epoch {epoch + 1}/{epochs} (a NaN or "
        "infinite gradient); the checkpoint keeps the last good epoch.",
        epoch=epoch + 1,
        step=None,
        logs={},
    )


