"""``python -m paper_figures``: every registered figure and table is rebuilt from the committed
results (every figure as PNG and vector PDF, every table as Markdown and LaTeX), missing results
are listed with the command that makes them, a failing figure module makes the command fail;
numbers the paper does not give (null in the saved results) read "–"; and the shared style's
table writer, figure saver, legend, log-axis and image-grid helpers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from balance.reporting import MISSING
from paper_figures import style
from paper_figures.__main__ import _module_exists, main
from paper_figures.registry import Entry, Source, discover, output_dir

REGISTRY = discover()

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _present(source: Source) -> bool:
    return all((RESULTS / source.folder / n).is_file() for n in source.needs)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The real command, on the committed results, into a temporary folder."""
    out = tmp_path_factory.mktemp("figures")
    proc = subprocess.run(
        [sys.executable, "-m", "paper_figures", "--results", str(RESULTS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    return out, proc


def _assert_valid(path: Path) -> None:
    from PIL import Image

    assert path.stat().st_size > 0, path
    if path.suffix == ".png":
        with Image.open(path) as image:
            image.verify()  # raises on a truncated or corrupt file
            assert image.format == "PNG"
    elif path.suffix == ".pdf":
        data = path.read_bytes()
        assert data.startswith(b"%PDF"), path
        # pdf.fonttype 42: TrueType text, no Type 3 (bitmap-like) fonts in any figure
        assert b"/Type3" not in data, f"{path} embeds Type 3 fonts"


def test_command_renders_every_committed_entry(rendered):
    out, proc = rendered
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = 0
    for entry in REGISTRY:
        if not _module_exists(entry.module_name):
            assert entry.module_file in proc.stdout  # reported as missing code, not a crash
            continue
        for source in entry.sources:
            if not _present(source):
                assert f"results/{source.folder}" in proc.stdout
                assert source.commands_for()[0] in proc.stdout
                continue
            assert f"results/{source.folder} -> {entry.name}" in proc.stdout
            for pattern in source.outputs:
                files = sorted(output_dir(out, entry, source).glob(pattern))
                assert files, f"{entry.name}: {pattern} not written\n{proc.stdout}"
                for path in files:
                    _assert_valid(path)
                    assert str(path) in proc.stdout  # listed among the files written
                checked += 1
        for path in (out / entry.name).rglob("*"):
            if path.suffix in (".png", ".pdf"):
                _assert_valid(path)
            if path.suffix == ".png":  # every figure also as vector PDF, written by its module
                assert path.with_suffix(".pdf").is_file(), path
            if path.suffix == ".md":
                tex = path.with_suffix(".tex")
                assert tex.is_file() and r"\toprule" in tex.read_text(), tex
    # results/affine_landscape is committed, so at least its figure must have been checked
    assert checked >= 2
    assert "Style notes" not in proc.stdout  # no figure without PDF, no table without LaTeX
    assert (out / "index.md").is_file()


def _fake_module(monkeypatch, name: str, make) -> str:
    module = types.ModuleType(name)
    module.make = make
    monkeypatch.setitem(sys.modules, name, module)
    return name


def _results_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        '{"preset": "quick", "device_name": "Test CPU", "wall_time_s": 12.5,'
        ' "git": {"commit": "0123456789abcdef", "dirty": true}}'
    )
    return folder


def _table_maker(stem: str):
    def make(results_dir: Path, out_dir: Path) -> list[Path]:
        return style.write_table(["model", "value"], [["ok_run", 1.25]], out_dir, stem)

    return make


def test_missing_results_are_listed_with_their_command(monkeypatch, tmp_path, capsys):
    name = _fake_module(monkeypatch, "fake_figure_ok", _table_maker("t"))
    source = Source("exp_a", commands=("python experiments/exp_a.py --preset quick",),
                    run_dir="runs/exp_a/quick", outputs=("t.md",))
    registry = (Entry("ok", "a table", (source,), module=name),)
    args = ["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]
    assert main(args, registry=registry) == 0
    text = capsys.readouterr().out
    assert "Missing results" in text
    assert "exp_a (lacks results.json; for ok)" in text
    assert "python experiments/exp_a.py --preset quick" in text
    assert "cp runs/exp_a/quick/results.json" in text
    assert not (tmp_path / "out" / "ok").exists()  # nothing rendered, nothing trained
    assert main([*args, "--strict"], registry=registry) == 1


def test_present_results_are_used_and_described(monkeypatch, tmp_path, capsys):
    name = _fake_module(monkeypatch, "fake_figure_ok", _table_maker("t"))
    _results_folder(tmp_path / "results", "exp_a")
    registry = (Entry("ok", "a table", (Source("exp_a", ("cmd",), "runs/x", outputs=("t.md",)),),
                      module=name),)
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path / "results"), "--out", str(out)],
                registry=registry) == 0
    text = capsys.readouterr().out
    assert "preset quick; device Test CPU; wall time 12 s; commit 0123456789 (dirty)" in text
    assert (out / "ok" / "t.md").is_file() and (out / "ok" / "t.tex").is_file()
    assert str(out / "ok" / "t.tex") in text


def test_failing_module_gives_nonzero_exit_and_others_still_render(monkeypatch, tmp_path,
                                                                     capsys):
    def boom(results_dir, out_dir):
        raise RuntimeError("boom from a broken figure module")

    def forgetful(results_dir, out_dir):
        return []  # declares an output it never writes

    bad = _fake_module(monkeypatch, "fake_figure_bad", boom)
    lazy = _fake_module(monkeypatch, "fake_figure_lazy", forgetful)
    good = _fake_module(monkeypatch, "fake_figure_good", _table_maker("good"))
    _results_folder(tmp_path / "results", "exp")
    src = Source("exp", ("cmd",), "runs/exp/quick")
    registry = (
        Entry("bad", "raises", (src,), module=bad),
        Entry("lazy", "writes nothing", (Source("exp", ("cmd",), "runs/exp/quick",
                                                outputs=("figure.png",)),), module=lazy),
        Entry("good", "a table", (src,), module=good),
        Entry("later", "not written yet", (src,), module="paper_figures.not_written_yet"),
    )
    args = ["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]
    assert main(args, registry=registry) == 1
    text = capsys.readouterr().out
    assert "FAILED (2)" in text
    assert "RuntimeError: boom from a broken figure module" in text
    assert "declared output 'figure.png' was not written" in text
    assert (tmp_path / "out" / "good" / "good.md").is_file()
    assert "paper_figures/not_written_yet.py" in text  # missing code: reported, not a failure
    assert main([*args, "--only", "good", "--only", "later"], registry=registry) == 0


def test_files_without_their_twin_are_reported(monkeypatch, tmp_path, capsys):
    def make(results_dir, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        md, png = out_dir / "lonely.md", out_dir / "raster.png"
        md.write_text("| a |\n| --- |\n| 1 |\n")
        png.write_bytes(b"not read")
        return [md, png, *style.write_table(["a"], [[1]], out_dir, "twinned")]

    name = _fake_module(monkeypatch, "fake_figure_md", make)
    _results_folder(tmp_path / "results", "exp")
    registry = (Entry("md", "tables", (Source("exp", ("cmd",), "runs/exp"),), module=name),)
    assert main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")],
                registry=registry) == 0
    notes = capsys.readouterr().out.split("Style notes:")[1].split("Files written")[0]
    assert "lonely.md without lonely.tex" in notes and "raster.png without raster.pdf" in notes
    assert "twinned" not in notes


def test_write_table_round_trip(tmp_path):
    columns = ["model_name", "rec. err. (%)", "NLL (nats)"]
    rows = [["RAE_L2", 12.345678, None], ["VAE & co", -315.0, 1.5e-5], ["AE", 123456.7, 7]]
    md_path, tex_path, csv_path = style.write_table(columns, rows, tmp_path, "t1",
                                                    caption="E1: 100%_x", notes="quick preset",
                                                    csv=True)
    assert (md_path.name, tex_path.name, csv_path.name) == ("t1.md", "t1.tex", "t1.csv")
    md = md_path.read_text()
    assert md.startswith("**E1: 100%_x**\n\n| model_name | rec. err. (%) | NLL (nats) |\n")
    assert "| --- | ---: | ---: |" in md  # numeric columns right-aligned
    assert f"| RAE_L2 | 12.35 | {MISSING} |" in md  # a missing value reads as an en dash
    assert "| VAE & co | -315 | 1.500e-05 |" in md
    assert "| AE | 123457 | 7 |" in md  # large values not in e-notation
    assert md.rstrip().endswith("quick preset")
    assert csv_path.read_text().splitlines() == [
        "model_name,rec. err. (%),NLL (nats)", "RAE_L2,12.3457,", "VAE & co,-315,1.50000e-05",
        "AE,123457,7"]

    tex = tex_path.read_text()
    assert r"\begin{tabular}{lrr}" in tex
    assert r"model\_name & rec. err. (\%) & NLL (nats) \\" in tex
    assert r"RAE\_L2 & 12.35 & -- \\" in tex  # the en dash typed the LaTeX way
    assert r"VAE \& co & $-315$ & $1.500 \times 10^{-5}$ \\" in tex
    assert r"\caption{E1: 100\%\_x}" in tex and r"\label{tab:t1}" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    body = [ln for ln in tex.splitlines() if not ln.startswith("%")]  # drop the comment line
    for line in body:
        assert not re.search(r"(?<!\\)[%&_#]", line.replace(" & ", " ")), line
    with pytest.raises(ValueError, match="row 0 has 2 cells"):
        style.write_table(["a"], [[1, 2]], tmp_path, "bad")


def test_style_formats_like_reporting_and_digs_through_nulls():
    from balance import reporting

    assert style.format_number is reporting.format_number  # one formatter for every table
    assert style.dig({"a": {"1": {"x": 2.5}}}, "a", 1, "x") == 2.5
    assert style.dig({"a": {"1": None}}, "a", 1, "x") is None
    assert style.dig({"a": None}, "a", "b") is None
    assert style.dig(None, "a") is None


# ------------------------------------------------------------ null paper numbers read "–"


def _copy_results(tmp_path: Path, folder: str, edit) -> Path:
    """``results/<folder>/results.json`` into ``tmp_path/<folder>``, changed by ``edit``."""
    target = tmp_path / folder
    target.mkdir()
    results = json.loads((RESULTS / folder / "results.json").read_text())
    edit(results)
    (target / "results.json").write_text(json.dumps(results))
    return target


def _table_line(md: str, first_cell: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.mark.skipif(not (RESULTS / "rae_table" / "results.json").is_file(),
                    reason="results/rae_table not committed")
def test_null_paper_numbers_render_as_a_dash_rae(tmp_path):
    from paper_figures import rae_table

    def null_rae(r):
        r["paper"]["vae"] = None  # a whole model the source does not report
        r["paper"]["wae"]["gmm"] = None

    rae = _copy_results(tmp_path, "rae_table", null_rae)
    paths = rae_table.make(rae, tmp_path / "out")
    md = (tmp_path / "out" / "rae_table_fid.md").read_text()
    assert _table_line(md, "VAE")[1:] == [f"n/a ({MISSING})"] * 4
    assert _table_line(md, "WAE")[3] == f"n/a ({MISSING})"
    assert _table_line(md, "RAE-L2")[3] == "n/a (8.69)"  # untouched numbers stay
    assert "n/a (--)" in (tmp_path / "out" / "rae_table_fid.tex").read_text()
    assert {p.suffix for p in paths} == {".md", ".tex", ".csv", ".png", ".pdf"}


@pytest.mark.skipif(not (RESULTS / "kappa_sweep" / "results.json").is_file(),
                    reason="results/kappa_sweep not committed")
def test_null_paper_numbers_render_as_a_dash_kappa(tmp_path):
    from paper_figures import kappa_sweep

    def edit(r):  # the paper's numbers stand beside the residual arm
        r["runs"].setdefault("residual", r["runs"].get("residual_affine"))
        r["paper"]["residual"]["50"]["nll"] = None
        r["paper"]["residual"]["100"] = None

    folder = _copy_results(tmp_path, "kappa_sweep", edit)
    kappa_sweep.make(folder, tmp_path / "out")
    lines = [ln for ln in (tmp_path / "out" / "kappa_sweep_table.md").read_text().splitlines()
             if ln.startswith("| residual | 50 |") or ln.startswith("| residual | 100 |")]
    k50, k100 = ([c.strip() for c in ln.strip("|").split(" | ")] for ln in lines)
    assert k50[3] == "4.98" and k50[5] == MISSING  # rec. given, NLL null
    assert k100[3] == k100[5] == k100[7] == MISSING


@pytest.mark.skipif(not (RESULTS / "celeba_fid_ndb" / "results.json").is_file()
                    or not (RESULTS / "gamma_fixed_vs_learned" / "results.json").is_file(),
                    reason="CelebA results not committed")
def test_null_paper_numbers_render_as_a_dash_celeba(tmp_path):
    from paper_figures import celeba_fid_ndb, gamma_fixed_vs_learned

    def null_gamma(r):
        r["paper"]["64"]["fixed"] = None
        r["paper"]["128"]["learned"]["rec"] = None

    folder = _copy_results(tmp_path, "gamma_fixed_vs_learned", null_gamma)
    gamma_fixed_vs_learned.make(folder, tmp_path / "g")
    md = (tmp_path / "g" / "table2.md").read_text()
    fixed64 = _table_line(md, "CelebA-64 | fixed gamma = gamma*")
    assert fixed64[3] == fixed64[5] == MISSING  # rec. and MMD of a null block
    learned128 = _table_line(md, "CelebA-128 | learnable gamma")
    assert learned128[3] == MISSING and learned128[5] == "93.3"
    assert "CelebA-64: rec. differs" in md and f"(paper: {MISSING})" in md  # no paper ratio

    def null_celeba(r):
        r["paper"]["vae"] = None
        r["paper"]["wae_mmd"]["ndb_over_k"]["200"] = None

    folder = _copy_results(tmp_path, "celeba_fid_ndb", null_celeba)
    celeba_fid_ndb.make(folder, tmp_path / "c")  # no grids copied: tables and metrics only
    vae = _table_line((tmp_path / "c" / "table3.md").read_text(), "VAE")
    assert vae[2] == vae[4] == MISSING
    wae = _table_line((tmp_path / "c" / "table4.md").read_text(), "WAE-MMD")
    assert wae[4] == MISSING and wae[2] == "0.64"


def test_save_figure_writes_png_and_vector_pdf(tmp_path):
    from matplotlib.figure import Figure
    from PIL import Image

    with style.context():
        fig = Figure(figsize=(3.0, 2.0))
        ax = fig.subplots()
        ax.plot([0, 1, 2], [1.0, 0.5, 0.25], label="series")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (nats per image)")
        paths = style.save_figure(fig, tmp_path / "sub", "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    for path in paths:
        _assert_valid(path)
    with Image.open(paths[0]) as image:
        # 3 x 2 inches at 200 dpi, give or take the tight bounding box
        assert 400 <= image.size[0] <= 700 and 250 <= image.size[1] <= 500
    assert b"/CIDFontType2" in paths[1].read_bytes() or b"/TrueType" in paths[1].read_bytes()
    assert len(set(style.PALETTE)) == len(style.PALETTE) == 8


def test_importing_the_package_does_not_import_matplotlib():
    code = ("import sys, paper_figures, paper_figures.style, paper_figures.__main__; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_list_shows_every_entry(capsys):
    assert main(["--list"]) == 0
    text = capsys.readouterr().out
    for entry in REGISTRY:
        assert f"{entry.name}: " in text and entry.module_file in text


def test_runs_mode_reads_the_run_folders_of_a_preset(monkeypatch, tmp_path, capsys):
    name = _fake_module(monkeypatch, "fake_figure_ok", _table_maker("t"))
    _results_folder(tmp_path / "runs" / "exp", "paper")
    run_dir = (tmp_path / "runs" / "exp").as_posix() + "/{preset}"
    source = Source("exp", ("python experiments/exp.py --preset {preset}",), run_dir,
                    outputs=("t.md",))
    registry = (Entry("ok", "a table", (source,), module=name),)
    out = tmp_path / "out"
    # The results root has nothing; the paper run folder has the results.
    assert main(["--results", str(tmp_path / "empty"), "--out", str(out), "--runs", "paper"],
                registry=registry) == 0
    assert (out / "ok" / "t.md").is_file()
    assert main(["--out", str(out), "--runs", "quick"], registry=registry) == 0
    text = capsys.readouterr().out
    assert "python experiments/exp.py --preset quick" in text  # the command of that preset


def test_legend_below_stays_off_the_data():
    with style.context():
        fig, axes = style.figure((6.0, 2.5), ncols=2)
        for i, ax in enumerate(axes):
            ax.plot([1, 2, 3], [3, 1, 2], label="series a", **style.series_style(0))
            ax.plot([1, 2, 3], [1, 2, 3], label=f"only in panel {i}", **style.series_style(1))
        legend = style.legend_below(fig)
        fig.draw_without_rendering()
        box = legend.get_window_extent()
        assert [t.get_text() for t in legend.get_texts()] == [
            "series a", "only in panel 0", "only in panel 1"]  # shared entries appear once
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent())
            assert box.y1 <= ax.get_window_extent().y0


def test_log_axis_labels_plain_numbers():
    with style.context():
        fig, (ax, ay) = style.figure((6.0, 2.5), ncols=2)
        ax.plot([5, 784], [0, 22])
        style.log_axis(ax, "x", [5, 10, 100, 784])
        style.log_axis(ax, "y", [0, 1, 10, 20], symlog=True)
        ay.plot([1, 2], [0.03, 0.7])
        style.log_axis(ay, "y")  # less than two decades: 1-2-5 steps
        fig.draw_without_rendering()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10", "100", "784"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "10", "20"]
        shown = [t.get_text() for t in ay.get_yticklabels()
                 if ay.get_ylim()[0] <= t.get_position()[1] <= ay.get_ylim()[1]]
        assert shown == ["0.05", "0.1", "0.2", "0.5"]
        assert not any(t.get_text() for t in ay.get_yticklabels(minor=True))


def test_mosaic_places_blocks_and_blanks():
    a = np.arange(2 * 1 * 2 * 2, dtype=np.uint8).reshape(2, 1, 2, 2)
    b = np.full((3, 1, 2, 2), 7, dtype=np.uint8)
    picture, rows, blocks = style.mosaic([[a, None], [a[:1], b]], pad=1, gap=3)
    # block widths: 2 images -> 2 * (2 + 1) - 1 = 5 px, 3 images -> 8 px, 3 px gap between
    assert picture.shape == (5, 16) and picture.dtype == np.uint8
    assert rows == [1.0, 4.0] and blocks == [2.5, 12.0]
    assert (picture[0:2, 0:2] == a[0, 0]).all() and (picture[0:2, 3:5] == a[1, 0]).all()
    assert (picture[0:2, 8:] == 255).all()  # row 0 has no second block: left blank
    assert (picture[3:5, 14:16] == 7).all()
    colour, _, _ = style.mosaic([[np.zeros((1, 3, 2, 2), np.uint8)]])
    assert colour.shape == (2, 2, 3)


def test_a_figure_module_runs_as_a_script(tmp_path):
    if not (RESULTS / "affine_landscape" / "results.json").is_file():
        pytest.skip("results/affine_landscape not committed")
    proc = subprocess.run(
        [sys.executable, "paper_figures/affine_barrier.py", str(RESULTS / "affine_landscape"),
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["affine_barrier.pdf",
                                                          "affine_barrier.png"]
