"""Table 1 and its figure: the kappa sweep (E1), drawn only from saved results.

Reads ``results.json`` written by ``experiments/kappa_sweep.py`` (its run folder, or the copy
under ``results/kappa_sweep/``) and writes

- ``kappa_sweep.png`` / ``.pdf``: number of active dimensions, IWAE NLL and test reconstruction
  error (+- one standard error) against kappa (log axis), one line per decoder arm, the paper's
  numbers in grey (MNIST), the line ``# active = kappa`` (and ``= r`` on
  the manifold);
- ``kappa_sweep_table.md`` / ``.tex``: the same numbers, ours beside the paper's ("–" where the
  paper gives none);
- ``kappa_sweep_balance.png`` / ``.pdf``: Dai & Wipf's stochastic balance for one arm (the
  paper's residual decoder where it ran): per kappa, the dimensions sorted by
  ``E_x[s_k^2(x)]`` (near 0 on active dimensions, near 1 on idle ones) and by their KL, and the
  trajectory of gamma over training.

Usage: ``python paper_figures/kappa_sweep.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    FIGURE,
    TABLE,
    Entry,
    Source,
    both,
    command,
)

NAME = "kappa_sweep"
_OUTPUTS = (both("kappa_sweep", "kappa_sweep_balance", formats=FIGURE)
            + both("kappa_sweep_table", formats=TABLE))
ENTRY = Entry(
    NAME, "E1, Table 1: kappa sweep (rec. error, IWAE NLL, active units) per decoder arm; "
    "MNIST, and a synthetic manifold",
    (Source("kappa_sweep", commands=(command("kappa_sweep"),),
            run_dir="runs/kappa_sweep/{preset}", copy=("config.json", "results.json", "table.md"),
            outputs=_OUTPUTS),
     Source("kappa_sweep_manifold",
            commands=("python experiments/kappa_sweep.py --preset manifold_{preset}",),
            run_dir="runs/kappa_sweep/manifold_{preset}",
            copy=("config.json", "results.json", "table.md"), outputs=_OUTPUTS,
            out_subdir="manifold"),
     # the quick preset over three seeds: mean ± standard error
     Source("kappa_sweep_seeds",
            commands=("python experiments/kappa_sweep.py --preset {preset} --seeds 0 1 2",),
            run_dir="runs/kappa_sweep/{preset}_seeds",
            copy=("results.json", "resolved_config.json"), outputs=_OUTPUTS,
            out_subdir="seeds"),
     # the full preset: all of MNIST, the paper's kappa grid, on 2 CPU cores (hours)
     Source("kappa_sweep_full", commands=("python experiments/kappa_sweep.py --preset full",),
            run_dir="runs/kappa_sweep/full",
            copy=("config.json", "environment.json", "results.json", "table.md"),
            outputs=_OUTPUTS, out_subdir="full")),
)
ARMS = {"residual": "residual decoder (the paper's)", "residual_affine": "residual + affine skip",
        "affine": "affine skip only", "none": "no skip"}
PAPER_STYLE = {"color": style.GREY, "marker": "s", "linestyle": ":", "label": "paper (Table 1)"}
# key, y label (the unit is appended per dataset), panel title
PANELS = (
    ("active", "# active dimensions", "(a) active units"),
    ("nll", "IWAE NLL (nats per {unit})", "(b) negative log-likelihood"),
    ("rec", "squared error per {unit}", "(c) test reconstruction error"),
)
COLUMNS = ("arm", "kappa", "rec. err. (ours)", "rec. err. (paper)", "NLL (ours)",
           "NLL (paper)", "# active (ours)", "# active (paper)", "final gamma")


def load(results_dir: Path) -> dict:
    """The sweep's saved results; a clear error when they are missing or of another kind."""
    results = style.read_results(
        results_dir, NAME, hint="its run folder runs/kappa_sweep/<preset>_<dataset> holds "
        f"results.json; or copy it to results/{NAME}/")
    if "runs" not in results:
        raise ValueError(f"{Path(results_dir) / 'results.json'} holds no runs")
    return results


def _paper(results: dict) -> dict:
    """The paper's Table 1 (kappa -> numbers, with skips; MNIST only), {} when absent."""
    if results["data"]["dataset"] != "mnist":
        return {}
    return style.dig(results, "paper", "residual") or {}


def _kappas(runs: dict) -> list[str]:
    return sorted(runs, key=int)


def table_rows(results: dict) -> list[list]:
    paper = _paper(results)
    rows = []
    for arm in ARMS:
        for kappa in _kappas(results["runs"].get(arm, {})):
            run = results["runs"][arm][kappa]
            ref = (paper.get(kappa) or {}) if arm == "residual" else {}
            paper_active = ref.get("active")
            if arm == "none" and paper:
                paper_active = "0 (all off)"
            rows.append([arm, int(kappa), run["rec"], ref.get("rec"), run["nll"],
                         ref.get("nll"), run["active"], paper_active, run["gamma"]])
    return rows


def _one_two_five(top: float) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... up to the first value >= ``top``."""
    ticks, base = [0], 1
    while ticks[-1] < top:
        ticks += [m * base for m in (1, 2, 5) if not ticks[-1] >= top]
        base *= 10
    return ticks


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the figure and the table from ``results_dir/results.json`` into ``out_dir``;
    return the written paths."""
    results = load(results_dir)
    dataset = results["data"]["dataset"]
    unit = "image" if dataset == "mnist" else "sample"
    r = results["data"].get("r")
    paper = _paper(results)
    paper_kappas = sorted((k for k in paper if k.isdigit()), key=int)
    all_kappas = sorted({int(k) for per in results["runs"].values() for k in per}
                        | {int(k) for k in paper_kappas})
    active_max = max([1, *(run["active"] for per in results["runs"].values()
                           for run in per.values()),
                      *(v for k in paper_kappas if (v := style.dig(paper, k, "active")))])
    with style.context():
        fig, axes = style.figure((7.2, 2.9), ncols=3)
        for ax, (key, ylabel, title) in zip(axes, PANELS, strict=True):
            for i, (arm, label) in enumerate(ARMS.items()):
                runs = results["runs"].get(arm, {})
                kappas = _kappas(runs)
                if not kappas:
                    continue
                xs, ys = [int(k) for k in kappas], [runs[k][key] for k in kappas]
                kw = style.series_style(i)
                ax.plot(xs, ys, label=label, **kw)
                se = [getattr(runs[k][key], "se", None) or runs[k].get(f"{key}_se")
                      for k in kappas]
                if all(s is not None for s in se):
                    ax.errorbar(xs, ys, yerr=se, fmt="none", ecolor=kw["color"], capsize=2,
                                linewidth=1.0)
            points = [(int(k), style.dig(paper, k, key)) for k in paper_kappas]
            points = [(k, v) for k, v in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), **PAPER_STYLE)
            if key == "active":
                ax.plot(all_kappas, all_kappas, color="#BBBBBB", linewidth=0.8,
                        label=r"$\kappa$ (all active)")
                if r is not None:
                    ax.axhline(r, color=style.OKABE_ITO["bluish_green"], linewidth=0.8,
                               linestyle="-.", label=f"true dimension r = {r}")
                ticks = _one_two_five(2 * active_max)
                style.log_axis(ax, "y", ticks, symlog=True)
                ax.set_ylim(-0.3, ticks[-1])  # the kappa line may leave the top
            # label our kappas and the largest one (the paper's go up to 784 on MNIST)
            ours = {int(k) for per in results["runs"].values() for k in per}
            style.log_axis(ax, "x", sorted(ours | {all_kappas[-1]}))
            ax.set_xlabel(r"latent size $\kappa$")
            ax.set_ylabel(ylabel.format(unit=unit))
            ax.set_title(title)
        data = style.dataset_name(dataset) if dataset == "mnist" else \
            f"synthetic {dataset} (d = {results['data'].get('d')}, r = {r})"
        fig.suptitle(f"Kappa sweep (Table 1) on {data}: {style.run_label(results)}")
        style.legend_below(fig)
        written = style.save_figure(fig, out_dir, NAME)
    notes = [
        f"Preset {results['preset']}, data {dataset}; NLL: IWAE with k samples (nats per {unit}, "
        "continuous data in [0, 1], so it can be negative); rec. err.: squared error per "
        f"{unit} from the posterior mean; # active: Var_x(E_q[z_k]) >= 0.01 (Burda et al.).",
        "A quick run cannot match the paper's numbers, only the direction of each effect.",
    ]
    checks = {k: v for k, v in results.get("checks", {}).items() if k != "thresholds"}
    if checks:
        notes.append("Direction checks: " + ", ".join(
            f"{k}: {style.format_number(v)}" for k, v in checks.items()))
    written += make_balance(results, out_dir)
    written += style.write_table(COLUMNS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Kappa sweep (Table 1): ours beside the paper's",
                                 notes=notes)
    return written


def _balance_arm(results: dict) -> str | None:
    for arm in ("residual", "residual_affine", *ARMS):
        if results["runs"].get(arm):
            return arm
    return None


def make_balance(results: dict, out_dir: Path) -> list[Path]:
    """The stochastic-balance figure (module docstring) of one arm."""
    arm = _balance_arm(results)
    runs = results["runs"].get(arm, {}) if arm else {}
    panels = (("posterior_variance_per_dim", r"$E_x[s_k^2(x)]$", "(a) posterior variance"),
              ("kl_per_dim", "KL per dimension (nats)", "(b) KL to the prior"))
    with style.context():
        fig, axes = style.figure((7.2, 2.9), ncols=3)
        for ax, (key, ylabel, title) in zip(axes, panels, strict=False):
            for i, kappa in enumerate(_kappas(runs)):
                values = runs[kappa].get(key)
                if not values:
                    continue
                ordered = sorted((float(v) for v in values), reverse=key == "kl_per_dim")
                kw = style.series_style(i)
                kw.pop("marker")
                ax.plot(range(1, len(ordered) + 1), ordered, label=f"kappa = {kappa}", **kw)
            if not ax.lines:
                ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_xscale("log")
            ax.set_xlabel("dimension (sorted)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        ax = axes[2]
        for i, kappa in enumerate(_kappas(runs)):
            epochs = [e for e in runs[kappa].get("epochs", []) if e.get("gamma") is not None]
            if epochs:
                kw = style.series_style(i)
                kw.pop("marker")
                ax.plot([e["epoch"] for e in epochs], [float(e["gamma"]) for e in epochs],
                        label=f"kappa = {kappa}", **kw)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"decoder variance $\gamma$")
        ax.set_title(r"(c) $\gamma$ over training")
        fig.suptitle(f"Stochastic balance, arm {arm}: {style.run_label(results)}")
        style.legend_below(fig)
        return style.save_figure(fig, out_dir, f"{NAME}_balance")


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
