"""``python -m paper_figures``: every registered figure and table is rebuilt from the committed
results, missing results are listed with the command that makes them, a failing figure module
makes the command fail; and the shared style's table writer and figure saver."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from paper_figures import style
from paper_figures.__main__ import REGISTRY, Entry, Source, _module_exists, main, output_dir

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
            if path.suffix == ".md":
                tex = path.with_suffix(".tex")
                assert tex.is_file() and r"\toprule" in tex.read_text(), tex
    # results/affine_landscape is committed, so at least its figure must have been checked
    assert checked >= 2
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


def test_markdown_and_csv_tables_get_latex_twins(monkeypatch, tmp_path):
    def make(results_dir, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        md = out_dir / "table_md.md"
        md.write_text("# Title of it\n\n| model | rec_err |\n| --- | --- |\n| RAE_L2 | 5% |\n\n"
                      "a note\n")
        csv = out_dir / "table_csv.csv"
        csv.write_text("name,val\nx_1,-0.5\n")
        return [md, csv]

    name = _fake_module(monkeypatch, "fake_figure_md", make)
    _results_folder(tmp_path / "results", "exp")
    registry = (Entry("md", "tables", (Source("exp", ("cmd",), "runs/exp"),), module=name),)
    assert main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")],
                registry=registry) == 0
    tex_md = (tmp_path / "out" / "md" / "table_md.tex").read_text()
    assert r"\caption{Title of it}" in tex_md
    assert r"model & rec\_err \\" in tex_md and r"RAE\_L2 & 5\% \\" in tex_md
    assert "a note" in tex_md
    tex_csv = (tmp_path / "out" / "md" / "table_csv.tex").read_text()
    assert r"x\_1 & $-0.5$ \\" in tex_csv


def test_write_table_round_trip(tmp_path):
    columns = ["model_name", "rec. err. (%)", "NLL (nats)"]
    rows = [["RAE_L2", 12.345678, None], ["VAE & co", -315.0, 1.5e-5], ["AE", 123456.7, 7]]
    md_path, tex_path = style.write_table(columns, rows, tmp_path, "t1", caption="E1: 100%_x",
                                          notes="quick preset")
    assert (md_path.name, tex_path.name) == ("t1.md", "t1.tex")
    md = md_path.read_text()
    assert "| model_name | rec. err. (%) | NLL (nats) |" in md
    assert "| --- | ---: | ---: |" in md  # numeric columns right-aligned
    assert "| RAE_L2 | 12.35 | n/a |" in md
    assert "| VAE & co | -315 | 1.500e-05 |" in md
    assert "| AE | 123457 | 7 |" in md  # large values not in e-notation
    tables, other = style.parse_markdown_tables(md)
    assert tables == [(columns, [["RAE_L2", "12.35", "n/a"], ["VAE & co", "-315", "1.500e-05"],
                                 ["AE", "123457", "7"]])]
    assert other == ["E1: 100%_x", "quick preset"]

    tex = tex_path.read_text()
    assert r"\begin{tabular}{lrr}" in tex
    assert r"model\_name & rec. err. (\%) & NLL (nats) \\" in tex
    assert r"RAE\_L2 & 12.35 & n/a \\" in tex
    assert r"VAE \& co & $-315$ & $1.500 \times 10^{-5}$ \\" in tex
    assert r"\caption{E1: 100\%\_x}" in tex and r"\label{tab:t1}" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    body = [ln for ln in tex.splitlines() if not ln.startswith("%")]  # drop the comment line
    for line in body:
        assert not re.search(r"(?<!\\)[%&_#]", line.replace(" & ", " ")), line


def test_format_number():
    assert style.format_number(None) == "n/a"
    assert style.format_number(True) == "yes"
    assert style.format_number(22) == "22"
    assert style.format_number(0.0) == "0"
    assert style.format_number(-806.04) == "-806"
    assert style.format_number(2.7449) == "2.745"
    assert style.format_number(12345.6) == "12346"
    assert style.format_number(0.00012) == "1.200e-04"
    assert style.format_number(float("nan")) == "nan"
    assert style.format_number(float("-inf")) == "-inf"
    assert style.format_number("n/a (no Inception weights)") == "n/a (no Inception weights)"


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
