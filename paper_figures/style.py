"""The shared publication style and helpers of every table and figure in ``paper_figures``.

Figures: :func:`apply` / :func:`context` set matplotlib's rcParams (TrueType fonts embedded in
PDF and PS, so the text stays text; sizes that read at one column width; the Okabe-Ito colour
cycle); :func:`save_figure` writes the same figure as PNG (200 dpi) and vector PDF. Label every
axis with its quantity and unit, e.g. ``"NLL (nats per image)"``, and say in the title which
preset produced the figure (:func:`run_label`). Helpers for what several figures draw: one
legend below all panels (:func:`legend_below`, never over the data), log axes with plain tick
labels (:func:`log_axis`), grouped bars with a reference line (:func:`grouped_bars`), labelled
image grids (:func:`mosaic`, :func:`image_panel`).

Tables: :func:`write_table` writes one table as Markdown (``.md``, for the README), LaTeX
(``.tex``, booktabs rules, special characters escaped, for the paper) and optionally CSV, with
every cell formatted once by :func:`balance.reporting.format_number`, so that all agree; a
missing value (``None``, e.g. a number the paper does not give) reads "–".

Colours: :data:`OKABE_ITO` (Okabe & Ito 2008, "Color Universal Design"), distinguishable with
the common colour-vision deficiencies and in greyscale by lightness; :data:`PALETTE` is its
order for series (black last). Colour is always paired with a line style, marker or hatch
(:func:`series_style`, :data:`HATCHES`), so figures survive black-and-white printing.

Importing this module does not import matplotlib or numpy; the helpers that need them do.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from balance.reporting import MISSING, NA, csv_table, format_number, is_missing

__all__ = [
    "GREY",
    "HATCHES",
    "MISSING",
    "NA",
    "OKABE_ITO",
    "PALETTE",
    "RC_PARAMS",
    "apply",
    "cli",
    "context",
    "dataset_name",
    "dig",
    "figure",
    "find_results",
    "format_number",
    "grouped_bars",
    "image_panel",
    "latex_escape",
    "latex_table",
    "latex_text",
    "legend_below",
    "log_axis",
    "markdown_table",
    "mosaic",
    "read_results",
    "run_label",
    "save_figure",
    "series_style",
    "write_table",
]

# Okabe-Ito palette (hex from Okabe & Ito 2008, as used by Wong 2011, Nature Methods 8:441).
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
# Series order: strong, well-separated hues first; yellow (weak on white) late, black last.
PALETTE = (
    OKABE_ITO["blue"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["orange"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["yellow"],
    OKABE_ITO["black"],
)
GREY = "#777777"  # reference values (the paper's numbers, closed forms)
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")
DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "celeba": "CelebA"}  # how titles name them

FIGURE_DPI = 200  # PNG resolution; PDF is vector
RC_PARAMS: dict[str, Any] = {
    # Type 42 (TrueType) instead of Type 3 fonts: text in PDF/PS stays selectable, searchable
    # and editable, and journals' checks for Type 3 fonts pass; SVG keeps text as text.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "hatch.linewidth": 0.6,
    "image.cmap": "viridis",  # perceptually uniform and colour-blind safe
    "savefig.dpi": FIGURE_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
}


def _cycler():
    from cycler import cycler  # ships with matplotlib

    return cycler(color=list(PALETTE))


def apply(backend: str | None = "Agg") -> None:
    """Set the house rcParams globally (and the Agg backend unless ``backend`` is None).

    Figures made afterwards, through ``pyplot`` or ``matplotlib.figure.Figure``, use them.
    """
    import matplotlib

    if backend is not None:
        matplotlib.use(backend, force=True)
    matplotlib.rcParams.update(RC_PARAMS)
    matplotlib.rcParams["axes.prop_cycle"] = _cycler()


def context():
    """The house rcParams for a ``with`` block only: ``with style.context(): ...``."""
    import matplotlib

    return matplotlib.rc_context({**RC_PARAMS, "axes.prop_cycle": _cycler()})


# ----------------------------------------------------------------------------------- figures


def figure(figsize: tuple[float, float], **subplots: Any):
    """``(fig, axes)``: a ``matplotlib.figure.Figure`` (no pyplot, no GUI backend) with
    constrained layout and ``fig.subplots(**subplots)``; call it inside :func:`context`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(**subplots)


def save_figure(fig, out_dir: str | Path, stem: str, *, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = FIGURE_DPI, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.png`` (``dpi``) and ``out_dir/stem.pdf``; return the paths.

    The PDF carries no creation date, so regenerating an unchanged figure gives the same file.
    ``close`` releases a figure created through ``pyplot`` (a plain ``Figure`` needs nothing).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{stem}.{ext}"
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(path, dpi=dpi, metadata=metadata)
        paths.append(path)
    if close and "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths


def series_style(i: int) -> dict[str, Any]:
    """Colour, line style and marker of the ``i``-th series (distinct in colour and in shape)."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def dataset_name(key: str | None) -> str:
    """How a figure or table writes a dataset key: "mnist" -> "MNIST" (others unchanged)."""
    return DATASETS.get(str(key).lower(), str(key)) if key else "?"


def run_label(results: Mapping[str, Any], *extra: str) -> str:
    """"<preset> preset[, extra...]" for a title: which saved run a figure shows."""
    return ", ".join([f"{results.get('preset', '?')} preset", *[e for e in extra if e]])


def legend_below(fig, axes: Sequence[Any] | None = None, *, ncols: int | None = None,
                 **kwargs: Any):
    """One legend for all panels, centred below them (outside every axes, so it never covers
    data); entries with the same label appear once. Returns the legend (None when empty)."""
    axes = list(fig.axes if axes is None else axes)
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                entries.setdefault(label, handle)
    if not entries:
        return None
    ncols = ncols or min(len(entries), 4)
    return fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                      ncols=ncols, **kwargs)


def _tick_label(value: float, _pos: Any = None) -> str:
    return format_number(value, 3)


def log_axis(ax, axis: str = "x", ticks: Sequence[float] | None = None, *,
             symlog: bool = False) -> None:
    """A log axis with plain-number tick labels ("10", "0.05", "784", never "2x10^0").

    ``ticks``: where to label (e.g. the swept values); default: 1-2-5 steps when the data span
    less than two decades, else the decades. Minor ticks stay unlabelled (their labels collide
    on short ranges). ``symlog``: linear within [-1, 1], for counts that can be 0. Call after
    plotting, so that the default ticks follow the data.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)(
        "symlog" if symlog else "log", **({"linthresh": 1.0} if symlog else {}))
    if ticks is None:
        lo, hi = sorted(abs(v) for v in (ax.get_xlim() if axis == "x" else ax.get_ylim()))
        decades = math.log10(hi / lo) if lo > 0 else math.inf
        locator = LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,))
    else:
        locator = FixedLocator([float(t) for t in ticks])
    target.set_major_locator(locator)
    target.set_major_formatter(FuncFormatter(_tick_label))
    target.set_minor_formatter(NullFormatter())


def grouped_bars(ax, categories: Sequence[str], groups: Mapping[str, Sequence[Any]], *,
                 reference: float | None = None, reference_label: str | None = None,
                 log: bool = False) -> None:
    """Horizontal grouped bars: one row per category (top to bottom in the given order, labels
    on the y axis, so long names need no rotation), one bar per group, each group with its own
    colour and hatch; missing values (None, NaN, strings) draw no bar. ``reference``: a dashed
    vertical line (e.g. the metric on held-out real data). ``log``: log value axis."""
    n = max(len(groups), 1)
    height = 0.8 / n
    for i, (name, values) in enumerate(groups.items()):
        ys = [j - 0.4 + (i + 0.5) * height for j in range(len(categories))]
        vals = [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
                for v in values]
        ax.barh(ys, vals, height, label=name, color=PALETTE[i % len(PALETTE)],
                hatch=HATCHES[i % len(HATCHES)], edgecolor="black", linewidth=0.4)
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=0.9,
                   label=reference_label)
    ax.set_yticks(range(len(categories)), list(categories))
    ax.set_ylim(len(categories) - 0.5, -0.5)  # first category on top
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)
    if log:
        log_axis(ax, "x")


def mosaic(grid: Sequence[Sequence[Any]], *, pad: int = 2, gap: int = 10):
    """Tile blocks of images into one uint8 picture with white gaps.

    ``grid[i][j]``: uint8 images ``[n, C, H, W]`` (all of one size) shown as row ``i``, block
    ``j``, or None (left blank); a block is as wide as its longest entry. Returns ``(picture,
    row_centres, block_centres)``: ``[H', W']`` (grey) or ``[H', W', 3]`` (colour) and the
    pixel centres of each row and block, for :func:`image_panel`'s labels.
    """
    import numpy as np

    first = next((b for row in grid for b in row if b is not None), None)
    if first is None:
        raise ValueError("mosaic needs at least one block of images")
    _, c, h, w = first.shape
    n_blocks = max(len(row) for row in grid)
    widths = [max((row[j].shape[0] for row in grid if j < len(row) and row[j] is not None),
                  default=0) for j in range(n_blocks)]
    lefts, x = [], 0
    for n in widths:
        lefts.append(x)
        x += n * (w + pad) - pad + gap
    picture = np.full((len(grid) * (h + pad) - pad, x - gap, c), 255, dtype=np.uint8)
    for i, row in enumerate(grid):
        top = i * (h + pad)
        for j, block in enumerate(row):
            for k, image in enumerate([] if block is None else block):
                left = lefts[j] + k * (w + pad)
                picture[top:top + h, left:left + w] = image.transpose(1, 2, 0)
    rows = [i * (h + pad) + h / 2 for i in range(len(grid))]
    blocks = [lefts[j] + (widths[j] * (w + pad) - pad) / 2 for j in range(n_blocks)]
    return (picture[..., 0] if c == 1 else picture), rows, blocks


def image_panel(ax, picture, row_centres: Sequence[float], row_labels: Sequence[str],
                block_centres: Sequence[float] = (), block_labels: Sequence[str] = ()) -> None:
    """Show ``picture`` (uint8, grey or RGB) without frame or tick marks, with a label left of
    each row and, when given, a header above each block of columns."""
    grey = picture.ndim == 2
    ax.imshow(picture, cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks(list(row_centres), list(row_labels))
    if any(block_labels):
        ax.set_xticks(list(block_centres), list(block_labels))
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_anchor("N")  # panels of different heights line up at the top
    for spine in ax.spines.values():
        spine.set_visible(False)


# ----------------------------------------------------------------------------------- results


def read_results(results_dir: str | Path, experiment: str | Sequence[str], *,
                 hint: str = "") -> dict:
    """``results_dir/results.json`` of ``experiments/<experiment>.py`` (or of one of several).

    Raises ``FileNotFoundError`` naming the script that makes the file (and ``hint``, e.g. its
    run folder) when it is missing, ``ValueError`` when it holds another experiment's results.
    """
    names = (experiment,) if isinstance(experiment, str) else tuple(experiment)
    path = Path(results_dir) / "results.json"
    scripts = " or ".join(f"experiments/{n}.py" for n in names)
    if not path.is_file():
        where = hint or f"its run folder holds results.json; or copy it to results/{names[0]}/"
        raise FileNotFoundError(f"{path} not found: run {scripts} first ({where})")
    from balance.seeds import revive  # means over seeds back to MeanSE (mean ± s.e.)

    results = revive(json.loads(path.read_text(encoding="utf-8")))
    if not isinstance(results, dict) or results.get("experiment") not in names:
        raise ValueError(f"{path} is not the results of {scripts}")
    return results


def find_results(results_dir: str | Path, names: Sequence[str],
                 needs: str = "results.json") -> list[Path]:
    """``results_dir`` itself when it holds ``needs``, else its sub-folders ``names`` that do
    (a results root such as ``results/``); ``FileNotFoundError`` when there is none."""
    results_dir = Path(results_dir)
    if (results_dir / needs).is_file():
        return [results_dir]
    found = [results_dir / n for n in names if (results_dir / n / needs).is_file()]
    if not found:
        scripts = " or ".join(f"experiments/{n}.py" for n in names)
        raise FileNotFoundError(f"no {needs} in {results_dir} (or its {', '.join(names)} "
                                f"folders): run {scripts} first")
    return found


def dig(mapping: Any, *keys: Any) -> Any:
    """``mapping[k1][k2]...``, or None as soon as a level is missing or null (saved results may
    set a number the paper does not give, or a whole block of them, to null)."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(str(key) if not isinstance(key, str) else key)
    return mapping


# ------------------------------------------------------------------------------------ tables

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    MISSING: "--",  # an en dash, typed the LaTeX way
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))
_SCIENTIFIC = re.compile(r"^(-?)(\d+(?:\.\d+)?)e([+-])0*(\d+)$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$")


def latex_escape(text: str) -> str:
    """Escape the ten characters that are special in LaTeX text mode (and type "–" as --)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def latex_text(text: str) -> str:
    """Escape prose for LaTeX, keeping Markdown's inline code (``\texttt``) and bold."""
    parts = []
    for i, chunk in enumerate(_CODE.split(text)):
        if i % 2:
            parts.append(r"\texttt{" + latex_escape(chunk) + "}")
        else:
            parts.append(_BOLD.sub(lambda m: r"\textbf{" + m.group(1) + "}",
                                   latex_escape(chunk)))
    return "".join(parts)


def _latex_cell(text: str) -> str:
    """A formatted cell for LaTeX: numbers typeset as numbers (a true minus sign, x 10^n),
    anything else escaped."""
    m = _SCIENTIFIC.match(text)
    if m:
        sign, mantissa, exp_sign, exponent = m.groups()
        exp = f"{'-' if exp_sign == '-' else ''}{exponent}"
        return f"${'-' if sign else ''}{mantissa} \\times 10^{{{exp}}}$"
    if _NUMBER.match(text) and text.startswith("-"):
        return f"${text}$"
    if text in ("-inf", "inf"):
        return r"$-\infty$" if text.startswith("-") else r"$\infty$"
    return latex_escape(text)


def _numeric_columns(n_columns: int, rows: Sequence[Sequence[Any]]) -> list[bool]:
    """A column is numeric (right-aligned) when every cell that is not missing
    (:func:`balance.reporting.is_missing`) is a real number or a string that reads as one."""

    def numeric(v: Any) -> bool | None:
        if is_missing(v):
            return None  # a missing value says nothing about the column
        if isinstance(v, int | float) and not isinstance(v, bool):
            return True
        return isinstance(v, str) and bool(_NUMBER.match(v) or v in ("nan", "inf", "-inf"))

    flags = []
    for j in range(n_columns):
        kinds = [k for k in (numeric(row[j]) for row in rows) if k is not None]
        flags.append(all(kinds))  # a column of missing values only stands for numbers
    return flags


def _notes_list(notes: str | Sequence[str] | None) -> list[str]:
    if notes is None:
        return []
    return [notes] if isinstance(notes, str) else [str(n) for n in notes]


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                   caption: str | None = None, notes: str | Sequence[str] | None = None,
                   digits: int = 4) -> str:
    """:func:`balance.reporting.markdown_table` (bold caption above, notes below, "–" for
    missing values) with numeric columns right-aligned."""
    from balance import reporting

    rows = [list(r) for r in rows]
    text = reporting.markdown_table(columns, rows, digits=digits, caption=caption,
                                    notes=_notes_list(notes) or None)
    lines = text.split("\n")
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    aligned = "| " + " | ".join("---:" if n else "---"
                                for n in _numeric_columns(len(columns), rows)) + " |"
    lines[lines.index(rule)] = aligned
    return "\n".join(lines)


def latex_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                caption: str | None = None, notes: str | Sequence[str] | None = None,
                label: str | None = None, digits: int = 4) -> str:
    """A booktabs ``table`` (``\\toprule``/``\\midrule``/``\\bottomrule``; needs
    ``\\usepackage{booktabs}``) with escaped text, numeric columns right-aligned, the caption
    (and ``\\label``) above and the notes in small type below."""
    rows = [list(r) for r in rows]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells, the table has {len(columns)} "
                             "columns")
    cells = [[format_number(v, digits) for v in row] for row in rows]
    align = "".join("r" if n else "l" for n in _numeric_columns(len(columns), rows))
    out = [
        "% Generated by `python -m paper_figures` from saved results; edits are overwritten.",
        r"\begin{table}[t]",
        r"  \centering",
    ]
    if caption:
        out.append(f"  \\caption{{{latex_text(caption)}}}")
    if label:
        out.append(f"  \\label{{{label}}}")
    out += [
        f"  \\begin{{tabular}}{{{align}}}",
        r"    \toprule",
        "    " + " & ".join(latex_escape(str(c)) for c in columns) + r" \\",
        r"    \midrule",
    ]
    out += ["    " + " & ".join(_latex_cell(c) for c in row) + r" \\" for row in cells]
    out += [r"    \bottomrule", r"  \end{tabular}"]
    notes = _notes_list(notes)
    if notes:
        out.append(r"  \par\smallskip")
        out.append(r"  {\footnotesize " + r" \par ".join(latex_text(n) for n in notes) + "}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out_dir: str | Path,
                stem: str, *, caption: str | None = None,
                notes: str | Sequence[str] | None = None, digits: int = 4,
                csv: bool = False) -> list[Path]:
    """Write one table as ``out_dir/stem.md`` and ``out_dir/stem.tex`` (and ``stem.csv`` when
    ``csv``: the header and rows only, 6 significant digits, missing cells empty); return the
    paths.

    ``rows`` hold raw values (numbers, strings, None, booleans), formatted by
    :func:`balance.reporting.format_number` (``digits`` significant digits, None -> "–").
    The LaTeX table gets ``\\label{tab:<stem>}``.
    """
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}.md"
    tex = out_dir / f"{stem}.tex"
    md.write_text(markdown_table(columns, rows, caption=caption, notes=notes, digits=digits),
                  encoding="utf-8")
    tex.write_text(latex_table(columns, rows, caption=caption, notes=notes,
                               label=f"tab:{stem}", digits=digits), encoding="utf-8")
    paths = [md, tex]
    if csv:
        paths.append(out_dir / f"{stem}.csv")
        paths[-1].write_text(csv_table(columns, rows), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------ command line


def cli(make: Callable[[Path, Path], list[Path]], doc: str | None, name: str,
        default_results: Path | None = None, argv: Sequence[str] | None = None) -> list[Path]:
    """The command line of a figure module run on its own: ``[RESULTS_DIR] [--out OUT]``
    (default ``results/<name>`` into ``paper_figures/out/<name>``); prints the files written."""
    default_results = default_results or Path("results") / name
    default_out = Path("paper_figures") / "out" / name
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", type=Path, default=default_results,
                        help=f"folder holding results.json (default: {default_results})")
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"output folder (default: {default_out})")
    args = parser.parse_args(argv)
    paths = make(args.results_dir, args.out)
    for path in paths:
        print(path)
    return paths
