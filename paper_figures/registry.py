"""What the figure modules declare, and their discovery: each ``paper_figures/<name>.py``
that draws something has ``make(results_dir, out_dir) -> list[Path]`` and ``ENTRY``, an
:class:`Entry` naming the results folders it reads, the commands that make them and the files
it writes. :func:`discover` finds every such module; nothing lists them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RESULTS = Path("results")
#: Modules of the package that are not figure modules.
NOT_FIGURES = frozenset({"__main__", "style", "registry", "make_all"})


@dataclass(frozen=True)
class Source:
    """One results folder an entry reads: ``<results root>/<folder>``.

    ``needs``: the files that must be there for the figure module to run. ``commands``: how to
    make them, run from the repository root (``{preset}`` stands for the preset, "quick" for
    the committed results); they write ``run_dir`` (also a template), from which ``copy`` (the
    small files worth committing) go to ``results/<folder>/``. ``outputs``: glob patterns, in
    the entry's output folder (``out/<entry>[/<out_subdir>]``), that must each match a
    non-empty file after ``make``.
    """

    folder: str
    commands: tuple[str, ...]
    run_dir: str
    needs: tuple[str, ...] = ("results.json",)
    copy: tuple[str, ...] = ("results.json",)
    outputs: tuple[str, ...] = ()
    out_subdir: str = ""  # when two sources of one entry write the same file names

    def run_folder(self, preset: str = "quick") -> Path:
        return Path(self.run_dir.format(preset=preset))

    def commands_for(self, preset: str = "quick") -> list[str]:
        return [c.format(preset=preset) for c in self.commands]

    def copy_command(self, results_root: Path = DEFAULT_RESULTS) -> str:
        target = (Path(results_root) / self.folder).as_posix()
        run_dir = self.run_folder().as_posix()
        files = " ".join(f"{run_dir}/{name}" for name in self.copy)
        return f"mkdir -p {target} && cp {files} {target}/"


@dataclass(frozen=True)
class Entry:
    """A figure module ``paper_figures/<name>.py`` (or ``module``) and the results it reads."""

    name: str
    produces: str
    sources: tuple[Source, ...]
    module: str | None = None

    @property
    def module_name(self) -> str:
        return self.module or f"paper_figures.{self.name}"

    @property
    def module_file(self) -> str:
        return self.module_name.replace(".", "/") + ".py"


def output_dir(out_root: Path, entry: Entry, source: Source) -> Path:
    """Where ``entry`` writes what it draws from ``source``: ``out/<entry>[/<out_subdir>]``."""
    folder = Path(out_root) / entry.name
    return folder / source.out_subdir if source.out_subdir else folder


def command(experiment: str, *extra: str) -> str:
    return " ".join(["python", f"experiments/{experiment}.py", "--preset", "{preset}", *extra])


def both(*stems: str, formats: tuple[str, ...]) -> tuple[str, ...]:
    """``stem.<format>`` for every stem and format, e.g. a figure's PNG and PDF."""
    return tuple(f"{stem}.{ext}" for stem in stems for ext in formats)


FIGURE = ("png", "pdf")
TABLE = ("md", "tex")
TABLE_CSV = ("md", "tex", "csv")


GRIDS = dict(needs=("results.json", "samples.npz"), copy=("results.json", "samples.npz"))
RAE_TABLE_OUTPUTS = (both("rae_table_fid", formats=TABLE)
                     + both("rae_table_metrics", formats=TABLE_CSV)
                     + both("rae_table", formats=FIGURE))
RAE_GRID_OUTPUTS = both("rae_table_summary", "rae_table_rec", "rae_table_interp_path",
                         formats=FIGURE)

#: The run folders of the RAE table (MNIST, CelebA-64), read by two entries.
RAE = dict(folder="rae_table", commands=(command("rae_table"),),
           run_dir="runs/rae_table/{preset}")
#: The RAE table on CelebA-64: presets ``quick_celeba`` / ``paper_celeba``, drawn beside the
#: MNIST table (same file names, so into ``celeba/`` below each entry's folder).
RAE_CELEBA = dict(folder="rae_table_celeba",
                  commands=("python experiments/rae_table.py --preset {preset}_celeba",),
                  run_dir="runs/rae_table/{preset}_celeba", out_subdir="celeba")


def discover() -> tuple[Entry, ...]:
    """The ``ENTRY`` of every figure module of this package, in module-name order."""
    import paper_figures

    entries = []
    for info in sorted(pkgutil.iter_modules(paper_figures.__path__), key=lambda m: m.name):
        if info.name in NOT_FIGURES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"paper_figures.{info.name}")
        entry = getattr(module, "ENTRY", None)
        if isinstance(entry, Entry):
            entries.append(entry)
    return tuple(entries)
