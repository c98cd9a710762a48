"""Every table and figure of the project, rebuilt from saved results only (never by training).

    python -m paper_figures                      # all, from results/ into paper_figures/out/
    python -m paper_figures --only kappa_sweep   # one entry (repeatable)
    python -m paper_figures --list               # the registry: modules, results, commands
    python paper_figures/make_all.py             # the same command as a script

``paper_figures/__main__.py`` holds the registry: for each entry its figure module
(``paper_figures/<name>.py``, exposing ``make(results_dir: Path, out_dir: Path) -> list[Path]``),
the results folders it reads and the commands that produce them. ``paper_figures/style.py`` is
the shared publication style (rcParams, Okabe-Ito palette, ``save_figure``, ``write_table``).

Importing this package imports nothing else (no matplotlib): figure modules load it lazily.
"""
