"""Rebuild every registered table and figure from saved results; never trains anything.

    python -m paper_figures [--results results] [--out paper_figures/out] [--only NAME ...]
                            [--runs PRESET] [--strict] [--list]

For each discovered entry (:func:`paper_figures.registry.discover`) whose results folders
exist, calls
``paper_figures.<name>.make(results_folder, out/<name>)`` once per folder (each figure module
reads only what that folder holds; nothing is trained or recomputed), checks that the
declared outputs were written (every figure as PNG and PDF, every table as Markdown and LaTeX,
both written by the module through :mod:`paper_figures.style`; a file without its twin is
reported), and prints

- the results folders it used, each with its preset and, where the saved JSON records them,
  device, wall time and code commit;
- the expected results that are missing, with the command that makes each and the copy that
  puts its small files under ``results/``; entries whose figure module does not exist yet;
- the files it wrote (also listed in ``out/index.md``).

Exit status 0 when every entry with results rendered (missing results or modules are reported,
not errors, unless ``--strict``), 1 when a figure module failed on present results, 2 on bad
arguments. ``--runs quick`` reads the experiments' own run folders (``runs/<experiment>/quick``
and the like, e.g. fresh ones on a GPU machine with ``--runs paper``) instead of the committed
copies under ``results/``.

Adding an entry: write ``paper_figures/<name>.py`` with ``make(results_dir, out_dir) ->
list[Path]`` (use :mod:`paper_figures.style` for rcParams, ``save_figure`` and ``write_table``;
end it with ``style.cli(make, __doc__, NAME)`` to run it on its own) and ``ENTRY``, a
:class:`paper_figures.registry.Entry` naming its results folders, the commands that make them
and the files it writes; :func:`paper_figures.registry.discover` finds it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from paper_figures.registry import DEFAULT_RESULTS, Entry, Source, discover, output_dir

DEFAULT_OUT = Path("paper_figures") / "out"
INDEX_FILE = "index.md"



# ------------------------------------------------------------------------------------ report


@dataclass
class Used:
    entry: str
    folder: Path
    info: dict[str, Any]
    out_dir: Path
    files: list[Path]


@dataclass
class Report:
    """What one invocation did; :meth:`exit_code` turns it into the process status."""

    used: list[Used] = field(default_factory=list)
    missing_results: list[tuple[Entry, Source, Path, list[str]]] = field(default_factory=list)
    missing_code: list[tuple[Entry, bool]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: str | None = None  # the preset whose run folders were read (None: the results root)

    def exit_code(self, strict: bool = False) -> int:
        if self.failures:
            return 1
        if strict and (self.missing_results or self.missing_code):
            return 1
        return 0


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_info(folder: Path) -> dict[str, Any]:
    """Preset, device, wall time and commit of a results folder, from its results.json, then
    config.json and environment.json (``runs.prepare_run``'s files) where present."""
    results = _read_json(folder / "results.json")
    config = _read_json(folder / "config.json")
    env = _read_json(folder / "environment.json")
    git = results.get("git") or env.get("git") or {}
    git = git if isinstance(git, dict) else {}
    info = {
        "preset": results.get("preset") or config.get("preset"),
        "device": results.get("device_name") or results.get("device") or env.get("device_name"),
        "wall_time_s": results.get("wall_time_s", results.get("wall_time")),
        "commit": results.get("commit") or git.get("commit"),
        "dirty": git.get("dirty"),
    }
    return {k: v for k, v in info.items() if v is not None}


def describe(info: dict[str, Any]) -> str:
    parts = [f"preset {info.get('preset', '?')}"]
    if "device" in info:
        parts.append(f"device {info['device']}")
    if isinstance(info.get("wall_time_s"), int | float):
        parts.append(f"wall time {info['wall_time_s']:.0f} s")
    if "commit" in info:
        parts.append(f"commit {str(info['commit'])[:10]}" + (" (dirty)" if info.get("dirty")
                                                            else ""))
    return "; ".join(parts)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


# ------------------------------------------------------------------------------------ run


def _locate(results_root: Path, source: Source, runs: str | None) -> Path:
    """``<results root>/<folder>``, or the run folder of preset ``runs`` when given."""
    return source.run_folder(runs) if runs else Path(results_root) / source.folder


def _module_exists(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _twin_notes(paths: Sequence[Path]) -> list[str]:
    """The written figures without a vector PDF twin and tables without a LaTeX twin (a
    module that saves through ``paper_figures.style`` writes both)."""
    lonely = {".png": ".pdf", ".md": ".tex"}
    return [f"{p.name} without {p.with_suffix(lonely[p.suffix]).name}" for p in paths
            if p.suffix in lonely and not p.with_suffix(lonely[p.suffix]).is_file()]


def _use_agg() -> None:
    """Select the Agg backend (files only, no display) unless pyplot already chose one."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")


def _check_outputs(out_dir: Path, source: Source) -> list[str]:
    problems = []
    for pattern in source.outputs:
        files = [p for p in out_dir.glob(pattern) if p.is_file() and p.stat().st_size > 0]
        if not files:
            problems.append(f"declared output {pattern!r} was not written (or is empty)")
    return problems


def run(entries: Sequence[Entry], results_root: Path, out_root: Path, *,
        runs: str | None = None, stream: TextIO | None = None) -> Report:
    """Render every entry whose results exist; return what was used, missing, written."""
    stream = stream or sys.stdout
    report = Report(runs=runs)
    headless = False
    for entry in entries:
        present, missing = [], []
        for source in entry.sources:
            folder = _locate(results_root, source, runs)
            lacking = [n for n in source.needs if not (folder / n).is_file()]
            (missing if lacking else present).append((source, folder, lacking))
        for source, folder, lacking in missing:
            report.missing_results.append((entry, source, folder, lacking))
        if not _module_exists(entry.module_name):
            report.missing_code.append((entry, bool(present)))
            continue
        if not present:
            continue
        print(f"[{entry.name}] {entry.produces}", file=stream, flush=True)
        try:
            module = importlib.import_module(entry.module_name)
            make = module.make
        except Exception:  # a broken module must not hide the others' figures
            report.failures.append((entry.name, f"cannot import {entry.module_name}.make:\n"
                                    + traceback.format_exc()))
            continue
        if not headless:
            _use_agg()
            headless = True
        from paper_figures import style

        for source, folder, _ in present:
            out_dir = output_dir(out_root, entry, source)
            where = f"{entry.name} on {_shown(folder)}"
            started = time.perf_counter()
            try:
                with style.context():  # the house rcParams, restored afterwards
                    returned = make(folder, out_dir)
            except Exception:
                report.failures.append((where, traceback.format_exc()))
                continue
            paths = [Path(p) for p in (returned or [])]
            problems = _check_outputs(out_dir, source)
            if problems:
                report.failures.append((where, "\n".join(problems)))
            files = [p for p in paths if p.is_file()]
            lost = [_shown(p) for p in paths if not p.is_file()]
            if lost:
                report.notes.append(f"{where} returned paths that are not files: {lost}")
            lonely = _twin_notes(files)
            if lonely:
                report.notes.append(f"{where}: {'; '.join(lonely)}")
            report.used.append(Used(entry.name, folder, run_info(folder), out_dir, files))
            report.written.extend(p for p in files if p not in report.written)
            print(f"  {_shown(folder)} -> {len(files)} files in "
                  f"{time.perf_counter() - started:.1f} s", file=stream, flush=True)
    return report


def write_index(report: Report, out_root: Path) -> Path:
    """``out/index.md``: which results made which files."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    lines = ["# Regenerated tables and figures", "",
             "Made by `python -m paper_figures` from saved results only.", ""]
    for used in report.used:
        lines.append(f"## {used.entry}: `{_shown(used.folder)}` ({describe(used.info)})")
        lines.append("")
        for p in used.files:
            try:
                link = p.relative_to(out_root).as_posix()
            except ValueError:
                link = p.as_posix()
            lines.append(f"- [{p.name}]({link})")
        lines.append("")
    if report.missing_results or report.missing_code:
        lines += ["## Missing", ""]
        for entry, source, folder, _ in report.missing_results:
            lines.append(f"- `{_shown(folder)}` ({entry.name}): "
                         + "; ".join(f"`{c}`" for c in source.commands_for(report.runs
                                                                           or "quick")))
        for entry, _ in report.missing_code:
            lines.append(f"- `{entry.module_file}` (figure module not written yet)")
        lines.append("")
    path = out_root / INDEX_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _group_missing(report: Report) -> dict[Path, list[tuple[Entry, Source, list[str]]]]:
    """The missing results by folder (two entries may read the same folder)."""
    groups: dict[Path, list[tuple[Entry, Source, list[str]]]] = {}
    for entry, source, folder, lacking in report.missing_results:
        groups.setdefault(folder, []).append((entry, source, lacking))
    return groups


def _merged_copy(group: list[tuple[Entry, Source, list[str]]]) -> Source:
    first = group[0][1]
    files = tuple(dict.fromkeys(f for _, s, _ in group for f in s.copy))
    return Source(first.folder, first.commands, first.run_dir, copy=files)


def print_report(report: Report, results_root: Path, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout

    def out(text: str = "") -> None:
        print(text, file=stream)

    out()
    out(f"Used results ({len(report.used)}):")
    for used in report.used:
        out(f"  {_shown(used.folder)} -> {used.entry} ({describe(used.info)})")
    if not report.used:
        out("  none")
    if report.missing_results:
        out()
        out("Missing results (their figures were skipped); make each with:")
        for folder, group in _group_missing(report).items():
            users = ", ".join(dict.fromkeys(e.name for e, _, _ in group))
            lacking = ", ".join(dict.fromkeys(n for _, _, lack in group for n in lack))
            out(f"  {_shown(folder)} (lacks {lacking}; for {users}):")
            preset = report.runs or "quick"
            for command in dict.fromkeys(c for _, s, _ in group for c in s.commands_for(preset)):
                out(f"      {command}")
            if not report.runs:  # the committed copies: say how to put the results there
                out(f"      {_merged_copy(group).copy_command(results_root)}")
    if report.missing_code:
        out()
        out("Missing figure modules (registered, not written yet):")
        for entry, has_results in report.missing_code:
            state = "results present" if has_results else "results missing too"
            out(f"  {entry.module_file} ({entry.name}: {entry.produces}; {state})")
    if report.failures:
        out()
        out(f"FAILED ({len(report.failures)}):")
        for what, detail in report.failures:
            out(f"  {what}:")
            out("    " + detail.rstrip().replace("\n", "\n    "))
    if report.notes:
        out()
        out("Style notes:")
        for note in report.notes:
            out(f"  {note}")
    out()
    out(f"Files written ({len(report.written)}):")
    for path in report.written:
        out(f"  {_shown(path)}")


def print_registry(entries: Sequence[Entry], results_root: Path,
                   stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    for entry in entries:
        code = "ok" if _module_exists(entry.module_name) else "missing"
        print(f"{entry.name}: {entry.produces}", file=stream)
        print(f"  module {entry.module_file} ({code})", file=stream)
        for source in entry.sources:
            folder = Path(results_root) / source.folder
            state = "present" if all((folder / n).is_file() for n in source.needs) else "missing"
            print(f"  reads {_shown(folder)} ({state}; needs {', '.join(source.needs)})",
                  file=stream)
            for command in source.commands_for():
                print(f"    {command}", file=stream)
            print(f"    {source.copy_command(results_root)}", file=stream)


def main(argv: Sequence[str] | None = None, registry: Sequence[Entry] | None = None) -> int:
    registry = tuple(discover() if registry is None else registry)
    names = [e.name for e in registry]
    parser = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help=f"results root holding one folder per experiment "
                        f"(default {DEFAULT_RESULTS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output root, one folder per entry (default {DEFAULT_OUT})")
    parser.add_argument("--only", action="append", metavar="NAME", choices=names,
                        help=f"render only this entry (repeatable); one of {names}")
    parser.add_argument("--runs", default=None, metavar="PRESET",
                        help="read the experiments' run folders of this preset (runs/<experiment>"
                        "/<PRESET>...) instead of the results root")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when results or figure modules are missing")
    parser.add_argument("--list", action="store_true",
                        help="print the registry (modules, results, commands) and exit")
    args = parser.parse_args(argv)
    entries = [e for e in registry if not args.only or e.name in args.only]
    if args.list:
        print_registry(entries, args.results)
        return 0
    source = (f"the {args.runs!r} run folders" if args.runs
              else f"results from {_shown(args.results)}/")
    print(f"paper_figures: {source}, outputs into {_shown(args.out)}/", flush=True)
    report = run(entries, args.results, args.out, runs=args.runs)
    if report.used:
        report.written.append(write_index(report, args.out))
    print_report(report, args.results)
    return report.exit_code(strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
