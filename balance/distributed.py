"""Data-parallel training under ``torchrun``: which process this is, and the few collective
operations the package needs (``torch.distributed``).

``torchrun --nproc_per_node N script.py ...`` starts N copies of a script with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`balance.train.train` then joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA), trains one model per rank in lockstep and has rank 0
alone write files: :func:`is_writer` is the rule every writer of :mod:`balance.runs` follows,
so an experiment script run under ``torchrun`` unchanged writes each file once. Without those
variables (or with ``WORLD_SIZE=1``) everything here is a no-op for a single process.
"""

from __future__ import annotations

import atexit
import os

import torch

__all__ = ["all_reduce_sum", "barrier", "init", "is_writer", "rank", "world_size"]


def world_size() -> int:
    """Processes of this ``torchrun`` job (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0"))


def is_writer() -> bool:
    """Whether this process writes files: always, except on ranks > 0 of a ``torchrun`` job."""
    return rank() == 0


def _active() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def init(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group (once per process) and return the device this rank
    trains on: ``cuda:LOCAL_RANK`` for a CUDA device, else ``device``."""
    if world_size() <= 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    return device


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op for a single process)."""
    if _active():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over the ranks (``values`` itself for a single process)."""
    if not _active():
        return values
    import torch.distributed as dist

    out = values.clone()
    dist.all_reduce(out)
    return out
