"""What defines a training run, as a small JSON dict that a resumed run must match.

``run_fingerprint(model, loss_fn, tensors)``:

- ``model``: the module's class, a hash of its structure (``repr``: layers, their sizes and
  options) and of the names, shapes and dtypes of its state;
- ``loss``: the loss function's qualified name and its settings: default arguments,
  ``functools.partial`` arguments, and the plain values (numbers, strings, dataclass configs)
  and functions it closes over, recursively (e.g. the ``AEObjectiveConfig`` inside
  ``balance.objectives.autoencoders.make_loss_fn``'s closure); a function may also carry its
  own ``fingerprint`` attribute;
- ``data``: shape, dtype and a BLAKE2 hash of the bytes of every data tensor.

``differences(saved, now)`` lists what differs, for the message that refuses a resume.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["differences", "run_fingerprint", "tensor_digest"]

_PLAIN = (bool, int, float, str, type(None))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """BLAKE2 (64-bit) of a tensor's shape, dtype and bytes (copied to the CPU)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    data = t.detach().cpu().contiguous()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
        data = data.view(torch.int16)
    h.update(data.numpy().tobytes())
    return h.hexdigest()


def _value(v: Any, depth: int) -> Any:
    """A JSON-able description of a setting, or None for values that are not settings
    (generators, buffers, mutable caches)."""
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, enum.Enum):
        return repr(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return repr(v)
    if isinstance(v, (tuple, list)) and all(isinstance(x, _PLAIN) for x in v):
        return list(v)
    if callable(v) and depth < 3:
        return _function(v, depth + 1)
    return None


def _function(fn: Callable, depth: int = 0) -> dict[str, Any]:
    own = getattr(fn, "fingerprint", None)
    if own is not None and not callable(own):
        return {"fingerprint": own}
    if isinstance(fn, functools.partial):
        return {"partial": _function(fn.func, depth + 1),
                "args": [_value(a, depth) for a in fn.args],
                "keywords": {k: _value(v, depth) for k, v in sorted(fn.keywords.items())}}
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    out: dict[str, Any] = {"name": name}
    code = getattr(fn, "__code__", None)
    if getattr(fn, "__defaults__", None):
        out["defaults"] = [_value(v, depth) for v in fn.__defaults__]
    if getattr(fn, "__kwdefaults__", None):
        out["kwdefaults"] = {k: _value(v, depth) for k, v in sorted(fn.__kwdefaults__.items())}
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None and cells:
        closed = {}
        for var, cell in zip(code.co_freevars, cells, strict=True):
            try:
                value = _value(cell.cell_contents, depth)
            except ValueError:  # an empty cell
                continue
            if value is not None:
                closed[var] = value
        if closed:
            out["closure"] = closed
    return out


def run_fingerprint(model: torch.nn.Module, loss_fn: Callable,
                    tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The fingerprint of the module docstring."""
    state = [f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items()]
    return {
        "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "structure": _digest(repr(model)), "state": _digest("|".join(state))},
        "loss": _function(loss_fn),
        "data": [tensor_digest(t) for t in tensors],
    }


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The top-level parts (model, loss, data) that differ, each with both values."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            out.append(f"{key}: {saved.get(key)!r} (checkpoint) vs {now.get(key)!r} (now)")
    return out
