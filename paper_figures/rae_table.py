"""Tables (and a summary chart) of the RAE table (E4) and the DAE sweep (E5), drawn only from
the saved ``results.json`` of ``experiments/rae_table.py`` and ``experiments/dae_sweep.py``.

For the RAE table: ``rae_table_fid.md`` (FID of REC / N(0, I) / GMM / Interp., ours beside
Ghosh et al.'s Table 1), ``rae_table_metrics.md`` / ``.csv`` (the FID-free metrics: test
reconstruction error, MMD^2(q(z), N(0, I)), NDB/K and pixel MMD^2 per column) and
``rae_table.png`` (pixel MMD^2 per model and column). For the DAE sweep: ``dae_sweep.md`` /
``.csv`` (per model and sampler N(0, I) / MVG / GMM, with Daly et al.'s CIFAR-10 numbers) and
``dae_sweep.png``. Both list the direction checks recorded by the experiment.

Usage::

    python -m paper_figures.rae_table runs/rae_table/quick --out runs/figures
    python -m paper_figures.rae_table results --out runs/figures   # results/{rae_table,dae_sweep}
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

NA = "n/a"
RAE_COLUMNS = ("rec", "normal", "gmm", "interp")
DAE_SAMPLERS = ("normal", "mvg", "gmm")
COLUMN_LABELS = {"rec": "REC", "normal": "N(0,I)", "gmm": "GMM", "interp": "Interp.",
                 "mvg": "MVG"}
# Okabe-Ito colour-blind-safe palette (one colour per column / sampler), plus hatches.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")
HATCHES = ("", "//", "..", "xx", "\\\\")


def find_results(results_dir: Path) -> list[Path]:
    """``results_dir/results.json``, or the ``rae_table`` / ``dae_sweep`` sub-folders' ones."""
    results_dir = Path(results_dir)
    if (results_dir / "results.json").is_file():
        return [results_dir / "results.json"]
    found = [results_dir / n / "results.json" for n in ("rae_table", "dae_sweep")
             if (results_dir / n / "results.json").is_file()]
    if not found:
        raise FileNotFoundError(
            f"no results.json in {results_dir} (or its rae_table/ and dae_sweep/ folders): run "
            "experiments/rae_table.py or experiments/dae_sweep.py first"
        )
    return found


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return NA if value.startswith("n/a") else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(float(value)):
        return str(value)
    return f"{float(value):.{digits}g}"


def markdown(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(headers, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[fmt(c, 6) for c in row] for row in rows])
    return buffer.getvalue()


def _fid_note(results: dict) -> str:
    fids = [c.get("fid") for m in results["models"].values() for c in m["columns"].values()]
    if any(isinstance(f, str) for f in fids):
        return ("FID: n/a (no Inception weights): pytorch-fid's weights file was not found; the "
                "FID-free metrics below are computed instead.\n")
    return ""


def _directions(results: dict) -> str:
    lines = ["Direction checks (lower is better for NDB/K and MMD_x):", ""]
    lines += [f"- {k}: {fmt(v)}" for k, v in results.get("directions", {}).items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- RAE table


def rae_tables(results: dict) -> tuple[str, str, list, list]:
    paper = results.get("paper", {})
    fid_headers = ["model"]
    for c in RAE_COLUMNS:
        fid_headers += [f"{COLUMN_LABELS[c]} ours", f"{COLUMN_LABELS[c]} paper"]
    fid_rows = []
    for name, m in results["models"].items():
        row = [m["label"]]
        for c in RAE_COLUMNS:
            row += [m["columns"].get(c, {}).get("fid"), paper.get(name, {}).get(c)]
        fid_rows.append(row)
    headers = ["model", "rec. err.", "MMD(q,N)"]
    headers += [f"NDB/K {COLUMN_LABELS[c]}" for c in RAE_COLUMNS]
    headers += [f"MMD_x {COLUMN_LABELS[c]}" for c in RAE_COLUMNS]
    rows = []
    ref = results.get("reference")
    if ref:  # held-out real images: the floor of each metric at this sample size
        n = len(RAE_COLUMNS)
        rows.append(["held-out test images", None, None, ref["ndb_over_k"], *[None] * (n - 1),
                     ref["mmd_x"], *[None] * (n - 1)])
    for m in results["models"].values():
        cols = m["columns"]
        rows.append([m["label"], m["rec_error"], m["mmd_q_prior"],
                     *[cols.get(c, {}).get("ndb_over_k") for c in RAE_COLUMNS],
                     *[cols.get(c, {}).get("mmd_x") for c in RAE_COLUMNS]])
    source = results.get("paper_source", "paper")
    fid_md = (f"# RAE table, {results.get('dataset', '?')} ({results.get('preset', '?')} preset)"
              f"\n\nFID; paper: {source}.\n\n" + _fid_note(results)
              + "\n" + markdown(fid_headers, fid_rows))
    metrics_md = ("# RAE table: FID-free metrics\n\n"
                  "rec. err.: squared error per test image; MMD(q,N): unbiased IMQ MMD^2 of the "
                  "training codes against N(0, I); NDB/K: fraction of statistically different "
                  "bins; MMD_x: pixel-space MMD^2 to test images. The first row scores "
                  "held-out real test images (each metric's floor at this sample size).\n\n"
                  + markdown(headers, rows) + "\n" + _directions(results))
    return fid_md, metrics_md, headers, rows


def _bar_chart(path: Path, labels: list[str], groups: dict[str, list[float]], ylabel: str,
               title: str) -> Path:
    from matplotlib.figure import Figure  # lazy; no GUI backend needed

    fig = Figure(figsize=(max(6.0, 0.75 * len(labels) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(groups), 1)
    for i, (name, values) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(labels))]
        vals = [v if v is not None and math.isfinite(v) else float("nan") for v in values]
        ax.bar(xs, vals, width, label=name, color=COLOURS[i % len(COLOURS)],
               hatch=HATCHES[i % len(HATCHES)], edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=150)
    return path


def make_rae(results: dict, out_dir: Path) -> list[Path]:
    fid_md, metrics_md, headers, rows = rae_tables(results)
    paths = [out_dir / "rae_table_fid.md", out_dir / "rae_table_metrics.md",
             out_dir / "rae_table_metrics.csv"]
    paths[0].write_text(fid_md)
    paths[1].write_text(metrics_md)
    paths[2].write_text(csv_text(headers, rows))
    labels = [m["label"] for m in results["models"].values()]
    groups = {COLUMN_LABELS[c]: [m["columns"].get(c, {}).get("mmd_x")
                                 for m in results["models"].values()] for c in RAE_COLUMNS}
    paths.append(_bar_chart(out_dir / "rae_table.png", labels, groups,
                            "pixel MMD$^2$ (lower is better)",
                            f"RAE table, {results.get('dataset')} "
                            f"({results.get('preset')} preset)"))
    return paths


# ------------------------------------------------------------------------------- DAE sweep


def dae_tables(results: dict) -> tuple[str, list, list]:
    headers = ["model", "params", "rec. err.", "MMD(q,N)"]
    for metric in ("FID", "NDB/K", "MMD_x"):
        headers += [f"{metric} {COLUMN_LABELS[s]}" for s in DAE_SAMPLERS]
    rows = []
    ref = results.get("reference")
    if ref:  # held-out real images: the floor of each metric at this sample size
        rows.append(["held-out test images", None, None, None, ref["fid"], None, None,
                     ref["ndb_over_k"], None, None, ref["mmd_x"], None, None])
    for m in results["models"].values():
        c = m["columns"]
        rows.append([m["label"], m["n_params"], m["rec_error"], m["mmd_q_prior"],
                     *[c[s]["fid"] for s in DAE_SAMPLERS],
                     *[c[s]["ndb_over_k"] for s in DAE_SAMPLERS],
                     *[c[s]["mmd_x"] for s in DAE_SAMPLERS]])
    paper = results.get("paper", {})
    paper_rows = [[label, paper.get(key, {}).get("mvg"), paper.get(key, {}).get("gmm")]
                  for key, label in (("dae", "DAE (128 latents, 128 filters)"), ("vae", "VAE"),
                                     ("best_dae", "best DAE (96 latents, depths 3-3-2-1)"))]
    text = (f"# DAE sweep, {results.get('dataset', '?')} ({results.get('preset', '?')} preset)\n\n"
            + _fid_note(results) + "\n" + markdown(headers, rows) + "\n"
            + f"Paper: {results.get('paper_source', '')}\n\n"
            + markdown(["paper", "FID MVG", "FID GMM"], paper_rows) + "\n"
            + _directions(results))
    return text, headers, rows


def make_dae(results: dict, out_dir: Path) -> list[Path]:
    text, headers, rows = dae_tables(results)
    paths = [out_dir / "dae_sweep.md", out_dir / "dae_sweep.csv"]
    paths[0].write_text(text)
    paths[1].write_text(csv_text(headers, rows))
    labels = [m["label"] for m in results["models"].values()]
    groups = {COLUMN_LABELS[s]: [m["columns"][s]["mmd_x"] for m in results["models"].values()]
              for s in DAE_SAMPLERS}
    paths.append(_bar_chart(out_dir / "dae_sweep.png", labels, groups,
                            "pixel MMD$^2$ (lower is better)",
                            f"DAE sweep, {results.get('dataset')} "
                            f"({results.get('preset')} preset)"))
    return paths


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write the tables and charts of every results.json found under ``results_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for path in find_results(results_dir):
        results = json.loads(path.read_text())
        kind = results.get("experiment")
        if kind == "rae_table":
            paths += make_rae(results, out_dir)
        elif kind == "dae_sweep":
            paths += make_dae(results, out_dir)
        else:
            raise ValueError(f"{path}: not a rae_table or dae_sweep result ({kind!r})")
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs") / "figures")
    args = p.parse_args(argv)
    paths = make(args.results_dir, args.out)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
