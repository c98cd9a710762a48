"""Run folders, seeding, devices, JSON files and checkpoints: the plumbing every experiment shares.

A run folder describes itself (STYLE.md, principle 12)::

    run_dir/
        config.json        the run's configuration (nested dataclasses -> dicts)
        command.txt        the command line that started it
        environment.json   code version (git commit, dirty flag), python/torch versions,
                           device (incl. GPU name), host, start time
        resumes.jsonl      one line per later start of the same run (time, command, host)
        metrics.jsonl      per-epoch training log (written by ``balance.train``)
        checkpoint.pt      latest training state (written by ``balance.train``)
        results.json       final results; its presence marks the run as complete

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
process killed at any moment leaves either the old or the new file, never a truncated one.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG_FILE = "config.json"
COMMAND_FILE = "command.txt"
ENVIRONMENT_FILE = "environment.json"
RESUMES_FILE = "resumes.jsonl"
RESULTS_FILE = "results.json"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, truncated, or written by an incompatible version."""


class ConfigMismatchError(ValueError):
    """A run folder (or its checkpoint) was started with a different configuration."""


class UsageError(ValueError):
    """A setting this machine or this package cannot honour (a device it does not have, a
    thread count below 1); the message says what to use instead."""


class CorruptFileError(ValueError):
    """A saved file of a run (JSON) cannot be parsed; the message names it."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder (the message names its PID and host)."""


LOCK_FILE = ".lock"
#: Folders this process holds, path -> open lock file (released when the process ends).
_HELD: dict[str, Any] = {}


def release_run_dirs() -> None:
    """Release every run-folder lock this process holds (at exit; and when a long-lived worker
    process, e.g. a Ray worker, finishes a task)."""
    for handle in _HELD.values():
        with contextlib.suppress(OSError):
            handle.close()
    _HELD.clear()


atexit.register(release_run_dirs)


def lock_run_dir(run_dir: str | os.PathLike) -> Path:
    """Take the advisory lock of ``run_dir`` for the rest of this process (a no-op when this
    process holds it already): a second process on the same folder gets
    :class:`RunLockedError` naming the holder, instead of interleaving its files. The lock is
    an ``flock`` on ``run_dir/.lock``, released by the system when the holder exits (also
    after ``kill -9``); on systems without ``fcntl`` nothing is locked. Under ``torchrun``
    rank 0 holds it for the job (the other ranks write nothing)."""
    from balance.distributed import is_writer

    run_dir = Path(run_dir)
    if not is_writer():
        return run_dir
    key = str(run_dir.resolve())
    if key in _HELD:
        return run_dir
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockedError(
            f"run folder {run_dir} is in use by {holder}: wait for that run to finish (or stop "
            "it), or pass another --run-dir / run_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"PID {os.getpid()} on host {socket.gethostname()} (since "
                 f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')})")
    handle.flush()
    _HELD[key] = handle
    _remove_stale_temporaries(run_dir)
    return run_dir


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in ``run_dir``
    (safe once this process holds the folder's lock: nobody else is writing there)."""
    for tmp in run_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# Seeds and devices
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Returns a fresh CPU ``torch.Generator`` seeded with ``seed``, to pass explicitly to library
    functions that take a ``generator`` argument (STYLE.md, principle 7).
    """
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, no CUDA init here)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """The training device: ``"auto"`` gives CUDA when available, else the CPU.

    An explicitly requested device that this machine does not have (``"cuda"`` without a GPU,
    ``"cuda:3"`` on a 1-GPU machine, ``"mps"`` off Apple silicon) raises :class:`UsageError`
    saying so, instead of failing later inside the first kernel.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        text = str(name).strip().lower()
        if text == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        try:
            device = torch.device(text)
        except RuntimeError as exc:
            raise UsageError(
                f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {str(device)!r} was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use --device auto or --device cpu (device='auto' or 'cpu' in Python)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"device {str(device)!r} was requested but this machine has {count} CUDA "
                f"device(s) (indices 0..{count - 1})"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UsageError(f"device {str(device)!r} was requested but MPS is not available")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {str(device)!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    return device


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the hardware behind ``device`` (GPU model or CPU model)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return device.type


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Handles dataclasses (recursively, by field), mappings (keys made strings), tuples/lists/sets,
    enums (their value), ``Path`` (string), NumPy scalars and arrays, and torch tensors (a
    one-element tensor becomes a number, larger ones nested lists).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        to_json = getattr(obj, "to_json", None)  # balance.seeds.MeanSE
        return to_json() if callable(to_json) else float(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (torch.device, torch.dtype)):
        return str(obj)
    raise TypeError(f"cannot convert an object of type {type(obj).__name__} to JSON: {obj!r}")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(
    path: Path, write: typing.Callable[[typing.BinaryIO], None], *, fsync: bool = True
) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``.

    A process killed at any moment leaves the old or the new file in full. With ``fsync`` the
    data also reach the disk before the rename, which covers a machine crash or power loss too.
    Under ``torchrun`` only rank 0 writes (:func:`balance.distributed.is_writer`).
    """
    from balance.distributed import is_writer

    if not is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: honour the umask like open()
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # KeyboardInterrupt included: the previous file stays, the partial one goes.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` (see :func:`to_jsonable` for the accepted types) as JSON, atomically."""
    path = Path(path)
    return write_text(path, json.dumps(to_jsonable(obj), indent=indent) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a corrupt file raises ``ValueError`` naming the file and the position."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file is corrupt or was written by another program: fix or delete it"
        ) from exc


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line (a small append; readers of JSON-lines files skip a torn last line)."""
    from balance.distributed import is_writer

    if not is_writer():
        return
    line = json.dumps(to_jsonable(record)) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Read a JSON-lines file; a torn (unterminated, unparsable) last line is ignored."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # a write interrupted mid-line
            raise CorruptFileError(f"{path}, line {number}: invalid JSON ({exc.msg}); fix or "
                                   "delete the file") from exc
    return records


# --------------------------------------------------------------------------------------------
# Configs (frozen dataclasses) <-> dicts
# --------------------------------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) dataclass config or mapping as a JSON-ready dict (tuples become lists)."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)) and not isinstance(
        config, Mapping
    ):
        raise TypeError(
            f"a config must be a dataclass instance or a mapping, got {type(config).__name__}"
        )
    return to_jsonable(config)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON value back to the annotated type ``tp`` (dataclass, tuple, enum, Path...)."""
    if tp is Any or tp is None:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list for {tp}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items for {tp}, got {value!r}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
        return tuple(value)
    if origin is list:
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or origin is Mapping:
        inner = args[1] if len(args) == 2 else Any
        return {k: _convert(inner, v, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is tuple:
        return tuple(value)
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return value if isinstance(value, tp) else tp(value)
        if issubclass(tp, Path):
            return Path(value)
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if tp is bool and not isinstance(value, bool):
            raise TypeError(f"{where}: expected a bool, got {value!r}")
        if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{where}: expected an int, got {value!r}")
        if tp in (str, float) and not isinstance(value, tp):
            raise TypeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__} "
            f"(known: {sorted(fields)})"
        )
    kwargs = {
        name: _convert(hints.get(name, Any), value, f"{where}.{name}")
        for name, value in data.items()
    }
    return cls(**kwargs)


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (frozen, possibly nested) dataclass config from :func:`config_to_dict` output.

    Lists become tuples where the field is annotated ``tuple[...]``, nested dicts become the
    annotated dataclasses, enum values their members; missing fields take their defaults and
    unknown fields raise ``ValueError``.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"config_from_dict needs a dataclass type, got {cls!r}")
    return _from_dict(cls, data, cls.__name__)


def _differences(saved: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable paths where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(saved) | set(new)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                out.append(f"{where}: absent (saved) vs {new[key]!r} (new)")
            elif key not in new:
                out.append(f"{where}: {saved[key]!r} (saved) vs absent (new)")
            else:
                out.extend(_differences(saved[key], new[key], where))
        return out
    if _json_equal(saved, new):
        return []
    return [f"{prefix or '<config>'}: {saved!r} (saved) vs {new!r} (new)"]


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def config_differences(saved: Mapping[str, Any], new: Any) -> list[str]:
    """Where a saved config dict and a new config (dataclass or mapping) differ; [] if equal."""
    return _differences(to_jsonable(saved), config_to_dict(new))


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: this package).

    ``None`` when git is missing, the folder is not a checkout, or it has no commit yet.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def environment_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Where and with what a run executes: code version, library versions, hardware, host, time."""
    device = pick_device("auto") if device is None else pick_device(device)
    from balance import __version__

    return {
        "git": git_info(),
        "balance": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "start_time": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
    }


def _command_line() -> str:
    import shlex

    return " ".join(shlex.quote(arg) for arg in [sys.executable, *sys.argv])


def prepare_run(
    run_dir: str | os.PathLike,
    config: Any,
    *,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> Path:
    """Create (or re-open) a run folder and record what the run is.

    A new folder gets ``config.json`` (``config``: a dataclass, possibly nested, or a mapping),
    ``command.txt`` (``sys.argv``) and ``environment.json`` (:func:`environment_info` for
    ``device``, by default the ``"auto"`` choice).

    Re-opening an existing run (resume) keeps those original files and appends a line to
    ``resumes.jsonl``; if the saved config differs from ``config`` it raises
    :class:`ConfigMismatchError` listing the differences, unless ``overwrite=True``, in which case
    the three files are rewritten for the new config (other files such as checkpoints are kept:
    delete the folder to start over).
    """
    run_dir = Path(run_dir)
    new_config = config_to_dict(config)
    config_path = run_dir / CONFIG_FILE
    writable = not run_dir.exists() or os.access(run_dir, os.W_OK)
    if writable:
        lock_run_dir(run_dir)
    if config_path.exists() and not overwrite:
        try:
            saved = read_json(config_path)
        except ValueError as exc:
            raise ConfigMismatchError(
                f"{exc}; delete {run_dir} to start over, or pass another --run-dir (in Python: "
                "run_dir, or overwrite=True to replace the config)"
            ) from exc
        diffs = _differences(saved, new_config)
        if diffs:
            listed = "\n  ".join(diffs)
            raise ConfigMismatchError(
                f"run folder {run_dir} was started with a different config:\n  {listed}\n"
                "Pass another --run-dir (run_dir in Python), delete this folder to start over, "
                "or, in Python, overwrite=True to keep its files and record the new config."
            )
        if not writable:  # a finished run read from a read-only folder: nothing to record
            return run_dir
        append_jsonl(
            run_dir / RESUMES_FILE,
            {
                "time": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(
                    timespec="seconds"
                ),
                "command": _command_line(),
                "hostname": socket.gethostname(),
                "git": git_info(),
            },
        )
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_path, new_config)
    write_text(run_dir / COMMAND_FILE, _command_line() + "\n")
    write_json(run_dir / ENVIRONMENT_FILE, environment_info(device))
    return run_dir


def is_complete(run_dir: str | os.PathLike) -> bool:
    """Whether the run in ``run_dir`` finished (it saved ``results.json``)."""
    return (Path(run_dir) / RESULTS_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike, state: Mapping[str, Any], *, fsync: bool = False
) -> Path:
    """``torch.save`` ``state`` atomically: a kill mid-write leaves the previous checkpoint.

    ``fsync=False`` (default) skips forcing the data to disk: a checkpoint is written every
    epoch, and on a busy disk an fsync can take seconds; a killed process is covered by the
    atomic rename alone, and a checkpoint damaged by a power loss is reported by
    :func:`load_checkpoint` (delete it and the run restarts).
    """
    path = Path(path)
    _atomic_write(path, lambda handle: torch.save(dict(state), handle), fsync=fsync)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = None,
    *,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint`.

    ``weights_only=True`` (default) restricts unpickling to tensors and plain containers, which is
    all ``balance.train`` stores. A missing file raises ``FileNotFoundError``; any failure to read
    it raises :class:`CheckpointError` naming the file and saying that deleting it restarts the run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # torch.load raises many types for a damaged zip/pickle stream
        raise CheckpointError(
            f"cannot load checkpoint {path}: the file is corrupt or truncated (e.g. the disk "
            "filled up or it was copied partially), or it was written by an incompatible "
            "version. Delete it to restart the run from scratch. "
            f"(torch.load: {type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of training state: it "
            "was not written by balance; delete it to restart the run from scratch."
        )
    return state


# --------------------------------------------------------------------------------------------
# Run identity and stages
# --------------------------------------------------------------------------------------------

#: Run-environment settings: they may change between a run and its resumption (another
#: device, no progress bars, other thread counts, another engine) without changing its results.
RUNTIME_FIELDS = frozenset({"device", "progress", "threads", "engine"})


def run_identity(config: Any, *, drop: tuple[str, ...] = ()) -> dict:
    """``config`` (a dataclass, or a dict of values and dataclasses) as a JSON dict without the
    :data:`RUNTIME_FIELDS` and the dotted paths in ``drop`` (e.g. ``"data.root"``): what
    :func:`prepare_run` compares on resume."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in RUNTIME_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    identity = strip(config_to_dict(config))
    for path in drop:
        *parents, leaf = path.split(".")
        node = identity
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return identity


def _epoch_seconds(metrics: Path) -> float:
    """Training and evaluation seconds of the epochs in a run's metrics.jsonl (0 if none)."""
    if not metrics.is_file():
        return 0.0
    try:
        return float(sum(r.get("time_s", 0.0) + r.get("eval_time_s", 0.0)
                         for r in read_jsonl(metrics)))
    except (ValueError, TypeError, AttributeError):
        return 0.0


class Stage:
    """One step of an experiment in its own folder: skip it when finished, time it, save it.

    ::

        stage = Stage(run_dir / "vae", identity, device)
        if stage.done is not None:
            return stage.done          # its results.json, from an earlier invocation
        ...                            # train (resumes from the folder's checkpoint) and score
        return stage.save(results)     # results.json, with the stage's wall time

    Opening a stage that is not finished creates or re-opens its folder with
    :func:`prepare_run` (``identity`` compared on resume: a changed config is refused).
    """

    def __init__(self, folder: str | os.PathLike, identity: Any | None = None,
                 device: str | torch.device | None = None):
        import time

        from balance.distributed import barrier

        self.folder = Path(folder)
        self._start = time.perf_counter()
        path = self.folder / RESULTS_FILE
        self.done: dict | None = read_json(path) if path.is_file() else None
        barrier()  # under torchrun: every rank has read before rank 0 may write
        self._earlier = 0.0
        if self.done is None and identity is not None:
            prepare_run(self.folder, identity, device=device)
            self._earlier = _epoch_seconds(self.folder / "metrics.jsonl")

    def elapsed(self) -> float:
        """Seconds of this stage: since it was opened, plus the epochs that earlier,
        interrupted invocations completed (their other time is not recorded anywhere)."""
        import time

        return self._earlier + time.perf_counter() - self._start

    def save(self, results: Mapping[str, Any]) -> dict:
        """Write ``results`` (plus ``wall_time_s`` unless given) as the stage's results.json."""
        from balance.distributed import barrier

        results = dict(results)
        results.setdefault("wall_time_s", self.elapsed())
        write_json(self.folder / RESULTS_FILE, results)
        barrier()  # under torchrun: every rank goes on once rank 0 has written the results
        self.done = results
        return results


def load_model(run_dir: str | os.PathLike, *, map_location: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained model of one training run folder from its ``model.json`` and
    checkpoint (:func:`balance.models.registry.load_model`)."""
    from balance.models.registry import load_model as _load

    return _load(run_dir, map_location=map_location)


def results_header(name: str, config: Any) -> dict[str, Any]:
    """The first fields of an experiment's results.json: its name, preset, the device it ran
    on (label and name) and the CPU threads of torch."""
    label = getattr(config, "device", "cpu")
    device = pick_device(label)
    return {"experiment": name, "preset": getattr(config, "preset", None),
            "device": str(device), "device_name": device_name(device),
            "torch_threads": torch.get_num_threads()}
