"""The command line every experiment script shares, config overrides, and runs over seeds.

A script in ``experiments/`` is a module with::

    NAME                          "kappa_sweep"
    PRESETS                       preset names, the first the default ("quick", "paper", ...)
    preset(name) -> Config        a frozen dataclass config
    main(config, run_dir=None, *, progress=True) -> dict      run or resume; the results
    report(results) -> str        what is printed at the end (tables, direction checks)
    default_run_dir(config) -> Path (optional; default runs/<NAME>/<preset>)
    SEED_FIELDS (optional)        dotted config fields set to the seed by --seeds
                                  (default ("train.seed",))
    DATA_ROOT_FIELD (optional)    the field --data-root sets (default "data.root")
    recheck(results) (optional)   the direction checks on results over seeds (means with
                                  standard errors), replacing the per-seed counts
    SAVES_MODELS (optional)       False for scripts whose fits are not kept as run folders
    FLAGS (optional)              top-level config fields that get their own option, e.g.
                                  ("arms", "kappas") gives --arms A B and --kappas 50 100
    add_arguments(parser), apply_arguments(config, args)   (optional) script-only flags

and ends with ``if __name__ == "__main__": balance.experiment.run_script(module, argv)``.
:func:`cli` gives every script the same options::

    --preset NAME            the starting config (default: the first of PRESETS)
    --config FILE            a JSON or TOML file merged over the preset (e.g. the
                             resolved_config.json of an earlier run; partial files are fine)
    --set a.b=VALUE          override any field (repeatable); VALUE is JSON (numbers, true,
                             null, [1, 2]) or a bare string; list items by index (models.0.lr)
    --seeds 0 1 2            run once per seed (run_dir/seed<s>/), then print and save the
                             mean ± standard error of every number (balance.seeds)
    --run-dir, --data-root, --device, --threads, --progress/--no-progress
    --engine local|ray       where independent cells run (scripts whose config has an
    --address HOST:PORT      ``engine`` field, a :class:`balance.engine.EngineConfig`): this
    --cpus-per-run N         process, or Ray tasks on the cluster at --address (else a Ray
    --gpus-per-run F         instance started here); per-task resources, fractions allowed
    --precision bf16         every training run's forward under bfloat16 autocast (GPU)

The run folder gets ``resolved_config.json``: the full config after presets, file and
overrides, loadable with ``--config``. Problems the user can fix (missing data or weights, a
corrupt checkpoint, a changed config on resume, a diverged run, a bad override) end with their
message and exit status 2 instead of a traceback; Ctrl-C says how to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from balance.runs import config_from_dict, config_to_dict, read_json, write_json

__all__ = ["OverrideError", "apply_overrides", "cli", "load_config_file", "run_script",
           "set_field"]

RESOLVED_CONFIG_FILE = "resolved_config.json"
EPILOG = """examples:
  --set train.epochs=50 --set net.width=512     override config fields
  --config runs/x/resolved_config.json          start from an earlier run's config
  --seeds 0 1 2                                 three seeds, mean ± standard error
"""


class OverrideError(ValueError):
    """A ``--set`` or ``--config`` that does not fit the experiment's config."""


def _parse_value(text: str) -> Any:
    if text in ("None", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _rebuild(config: Any, data: dict, what: str) -> Any:
    try:
        return config_from_dict(type(config), data)
    except (TypeError, ValueError) as exc:
        raise OverrideError(f"{what}: {exc}") from exc


def set_field(config: Any, path: str, value: Any) -> Any:
    """``config`` with the (dotted) field ``path`` set to ``value``, converted to the field's
    annotated type; list items by index (``models.0.lr``). Unknown fields raise
    :class:`OverrideError` naming the fields that exist there."""
    data = config_to_dict(config)
    node: Any = data
    keys = path.split(".")
    for i, key in enumerate(keys):
        where = ".".join(keys[: i + 1])
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise OverrideError(f"{where}: {key!r} is not an index of a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict) or key not in node:
            known = sorted(node) if isinstance(node, dict) else []
            raise OverrideError(f"unknown config field {where!r}; fields here: {known}")
        if last:
            node[key] = value
        else:
            node = node[key]
    return _rebuild(config, data, f"--set {path}")


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """``config`` with every ``"a.b=VALUE"`` of ``assignments`` applied in order."""
    for item in assignments:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise OverrideError(f"--set needs FIELD=VALUE (e.g. train.epochs=50), got {item!r}")
        config = set_field(config, path.strip(), _parse_value(text.strip()))
    return config


def _merge(base: Any, update: Any, where: str) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        unknown = sorted(set(update) - set(base))
        if unknown:
            raise OverrideError(f"{where or 'config'}: unknown field(s) {unknown}; "
                                f"fields here: {sorted(base)}")
        return {k: _merge(v, update[k], f"{where}.{k}" if where else k) if k in update else v
                for k, v in base.items()}
    return update


def load_config_file(config: Any, path: str | Path) -> Any:
    """``config`` with the values of a JSON or TOML file merged over it (fields the file leaves
    out keep ``config``'s values)."""
    path = Path(path)
    if not path.is_file():
        raise OverrideError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as exc:  # Python 3.10
            raise OverrideError("TOML config files need Python >= 3.11; use JSON") from exc
        with open(path, "rb") as handle:
            try:
                update = tomllib.load(handle)
            except tomllib.TOMLDecodeError as exc:
                raise OverrideError(f"{path}: not valid TOML ({exc})") from exc
    else:
        try:
            update = read_json(path)
        except ValueError as exc:
            raise OverrideError(f"{path}: {exc}") from exc
    if not isinstance(update, dict):
        raise OverrideError(f"{path} must hold a JSON/TOML table of config fields")
    merged = _merge(config_to_dict(config), update, "")
    return _rebuild(config, merged, str(path))


def _parser(script: ModuleType) -> argparse.ArgumentParser:
    doc = (script.__doc__ or "").strip()
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = list(script.PRESETS)
    p.add_argument("--preset", choices=presets, default=presets[0],
                   help=f"starting config (default: {presets[0]})")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON or TOML file merged over the preset (e.g. an earlier run's "
                        f"{RESOLVED_CONFIG_FILE})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=50 (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run once per seed and report mean ± standard error")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run folder (default: runs/<experiment>/<preset>...); re-running the "
                        "same command resumes it and skips what is finished")
    p.add_argument("--data-root", default=None,
                   help="data root (default: $BALANCE_DATA, else the user cache)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda... (default: the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and the BLAS/OpenMP pools (default: the preset's)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show progress bars (default: on)")
    if "engine" in {f.name for f in dataclasses.fields(script.preset(presets[0]))}:
        from balance.engine import ENGINES

        p.add_argument("--engine", choices=ENGINES, default=None,
                       help="where independent cells run (default: the preset's, local)")
        p.add_argument("--address", default=None,
                       help="Ray cluster address host:port (default: start Ray here)")
        p.add_argument("--cpus-per-run", type=float, default=None, help="CPUs per Ray task")
        p.add_argument("--gpus-per-run", type=float, default=None,
                       help="GPUs per Ray task; fractions share a GPU, e.g. 0.25")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16: every training run's forward under bfloat16 autocast (GPU conv "
                        "models; losses and metrics stay float32); sets each train.precision")
    _add_flags(p, script)
    add = getattr(script, "add_arguments", None)
    if add is not None:
        add(p)
    return p


def _add_flags(parser: argparse.ArgumentParser, script: ModuleType) -> None:
    """``--<field>`` for each name of ``script.FLAGS``: several values for a tuple field."""
    import typing

    flags = getattr(script, "FLAGS", ())
    if not flags:
        return
    hints = typing.get_type_hints(type(script.preset(script.PRESETS[0])))
    for name in flags:
        hint = hints[name]
        args = typing.get_args(hint)
        many = typing.get_origin(hint) is tuple
        kind = args[0] if many and args else hint
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"flag_{name}",
                            nargs="+" if many else None, default=None,
                            type=kind if kind in (int, float, str) else str,
                            help=f"the config's {name} (default: the preset's)")


def resolve(script: ModuleType, args: argparse.Namespace) -> Any:
    """The config of a parsed command line: preset, then file, then script flags, then the
    common flags, then ``--set``."""
    config = script.preset(args.preset)
    if args.config is not None:
        config = load_config_file(config, args.config)
    apply = getattr(script, "apply_arguments", None)
    if apply is not None:
        config = apply(config, args)
    for name in getattr(script, "FLAGS", ()):
        value = getattr(args, f"flag_{name}")
        if value is not None:
            config = set_field(config, name, value)
    names = {f.name for f in dataclasses.fields(config)}
    if args.device is not None and "device" in names:
        config = dataclasses.replace(config, device=args.device)
    if args.threads is not None and "threads" in names:
        config = dataclasses.replace(config, threads=args.threads)
    if "engine" in names:
        given = {"name": getattr(args, "engine", None), "address": getattr(args, "address", None),
                 "cpus_per_run": getattr(args, "cpus_per_run", None),
                 "gpus_per_run": getattr(args, "gpus_per_run", None)}
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            config = dataclasses.replace(config,
                                         engine=dataclasses.replace(config.engine, **given))
    if args.data_root is not None:
        config = set_field(config, getattr(script, "DATA_ROOT_FIELD", "data.root"),
                           args.data_root)
    if args.precision is not None:
        from balance.train import TrainConfig

        config = _replace_every(config, TrainConfig, precision=args.precision)
    return apply_overrides(config, args.overrides)


def _replace_every(value: Any, cls: type, **changes: Any) -> Any:
    """``value`` with ``changes`` applied to every ``cls`` instance in it (nested dataclasses
    and tuples included)."""
    if isinstance(value, cls):
        return dataclasses.replace(value, **changes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        updated = {f.name: _replace_every(getattr(value, f.name), cls, **changes)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **updated)
    if isinstance(value, tuple):
        return tuple(_replace_every(v, cls, **changes) for v in value)
    return value


def default_run_dir(script: ModuleType, config: Any) -> Path:
    """``script.default_run_dir(config)`` where the script has one, else
    ``runs/<NAME>/<preset>``."""
    own = getattr(script, "default_run_dir", None)
    return own(config) if own is not None else Path("runs") / script.NAME / config.preset


def run_seeds(script: ModuleType, config: Any, seeds: Sequence[int], run_dir: Path, *,
              progress: bool = True) -> dict:
    """``script.main`` once per seed in ``run_dir/seed<s>`` (each resumable), then the
    aggregate (:func:`balance.seeds.aggregate`) saved as ``run_dir/results.json``."""
    from balance.seeds import aggregate

    fields = getattr(script, "SEED_FIELDS", ("train.seed",))
    per_seed = []
    for seed in seeds:
        seeded = config
        for field in fields:
            seeded = set_field(seeded, field, int(seed))
        per_seed.append(script.main(seeded, Path(run_dir) / f"seed{seed}", progress=progress))
    results = aggregate(per_seed)
    recheck = getattr(script, "recheck", None)
    if recheck is not None:  # checks on the means, with the seed spread
        results["checks_per_seed"] = results.pop("checks", None)
        results["checks"] = recheck(results)
    results["seeds"] = [int(s) for s in seeds]
    results["seed_fields"] = list(fields)
    write_json(Path(run_dir) / "results.json", results)
    return results


def cli(script: ModuleType, argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, run (or resume) the experiment, print its report; returns the results."""
    args = _parser(script).parse_args(argv)
    config = resolve(script, args)
    from balance import distributed

    if distributed.world_size() > 1:  # under torchrun: join the job before any stage
        from balance.runs import pick_device

        distributed.init(pick_device(getattr(config, "device", "auto")))
    run_dir = Path(args.run_dir) if args.run_dir is not None else default_run_dir(script, config)
    finished = run_dir / "results.json"
    if finished.is_file() and not os.access(run_dir, os.W_OK):  # e.g. a shared, read-only copy
        from balance.seeds import revive

        results = revive(read_json(finished))
        print(script.report(results))
        return results
    if args.seeds:
        if args.run_dir is None:
            run_dir = run_dir.with_name(run_dir.name + "_seeds")
        write_json(run_dir / RESOLVED_CONFIG_FILE, config)
        results = run_seeds(script, config, args.seeds, run_dir, progress=args.progress)
    else:
        write_json(run_dir / RESOLVED_CONFIG_FILE, config)
        results = script.main(config, run_dir, progress=args.progress)
    from balance.distributed import is_writer

    if is_writer():  # under torchrun: rank 0 reports
        print(script.report(results))
    return results


def _importable(script: ModuleType) -> ModuleType:
    """A script run as a file (``__main__``) re-imported as ``<package>.<name>`` (e.g.
    ``experiments.kappa_sweep``), so that its functions and configs pickle by reference to
    other processes (Ray workers); the script itself when it is not in a package."""
    if script.__name__ != "__main__" or not getattr(script, "__file__", None):
        return script
    import importlib

    path = Path(script.__file__).resolve()
    if not (path.parent / "__init__.py").is_file():
        return script
    try:
        return importlib.import_module(f"{path.parent.name}.{path.stem}")
    except ImportError:
        return script


def run_script(script: ModuleType, argv: Sequence[str]) -> None:
    """:func:`cli` with user-fixable problems as ``error: ...`` and exit status 2."""
    from balance.data.errors import DataError
    from balance.engine import EngineError
    from balance.metrics.fid import FIDWeightsMissing
    from balance.runs import (
        CheckpointError,
        ConfigMismatchError,
        CorruptFileError,
        RunLockedError,
        UsageError,
    )
    from balance.train import NonFiniteLossError

    try:
        cli(_importable(script), argv)
    except (DataError, FIDWeightsMissing, CheckpointError, ConfigMismatchError,
            NonFiniteLossError, OverrideError, RunLockedError, UsageError,
            CorruptFileError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        import errno

        if err.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT,
                             errno.EPERM):
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot write{where}: {err.strerror}. Free some disk space, or pass a "
              "writable --run-dir (the last checkpoint is kept; the same command resumes)",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(130)
