"""The README's extension example runs as written (on real MNIST, in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def example(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no python block after '<!-- example: {marker} -->'"
    return match.group(1)


def test_extension_example_trains_and_samples(shared_data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BALANCE_DATA", str(shared_data_root))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example("extension"), "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (64, 1, 28, 28)
    assert "torch.Size([64, 1, 28, 28])" in capsys.readouterr().out
    metrics = (tmp_path / "runs" / "l1_rae" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and '"l1"' in metrics[0] and '"reconstruction"' in metrics[0]


def test_table_row_example_adds_a_model_to_the_rae_table(shared_data_root, tmp_path,
                                                         monkeypatch, capsys):
    import math

    monkeypatch.setenv("BALANCE_DATA", str(shared_data_root))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example("table-row"), "README.md", "exec"), namespace)
    model = namespace["results"]["models"]["rae_bn"]
    assert model["spec"]["latent_norm"] == "bn" and model["label"] == "RAE + latent BN"
    assert (tmp_path / "runs" / "rae_bn" / "rae_bn" / "checkpoint.pt").is_file()
    printed = float(capsys.readouterr().out.split()[-1])
    assert math.isfinite(printed) and printed == model["columns"]["gmm"]["mmd_x"]
