"""A resumed run must be the same run: model, loss (and its settings) and data fingerprinted."""

from __future__ import annotations

import functools

import pytest
import torch

from balance.fingerprint import run_fingerprint
from balance.runs import ConfigMismatchError, load_checkpoint
from balance.train import TrainConfig, train


def l1_loss(model, x, weight=1e-2):
    out = model(x)
    return (out - x).square().mean() + weight * out.abs().mean(), {}


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 3)


CONFIG = TrainConfig(epochs=2, batch_size=8, progress=False)


def test_the_same_run_resumes(tmp_path):
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    train(_model(), l1_loss, x, CONFIG, run_dir=tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["fingerprint"]
    assert saved == run_fingerprint(_model(), l1_loss, (x,))
    history = train(_model(), l1_loss, x, TrainConfig(epochs=3, batch_size=8, progress=False),
                    run_dir=tmp_path)
    assert len(history) == 3


def test_resume_message_names_the_epoch(tmp_path, capsys):
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    train(_model(), l1_loss, x, CONFIG, run_dir=tmp_path)
    capsys.readouterr()
    train(_model(), l1_loss, x, TrainConfig(epochs=3, batch_size=8, progress=False),
          run_dir=tmp_path)
    assert f"resuming {tmp_path} from epoch 2/3" in capsys.readouterr().err


@pytest.mark.parametrize("change, named", [
    ("weight", "loss"), ("function", "loss"), ("data", "data"), ("model", "model")])
def test_another_loss_data_or_model_is_refused(tmp_path, change, named):
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    train(_model(), l1_loss, x, CONFIG, run_dir=tmp_path)
    model, loss_fn, data = _model(), l1_loss, x
    if change == "weight":
        loss_fn = functools.partial(l1_loss, weight=10.0)
    elif change == "function":
        def loss_fn(model, x):
            return (model(x) - x).abs().mean(), {}
    elif change == "data":
        data = x.clone()
        data[3, 1] += 1.0
    else:
        model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ConfigMismatchError, match=rf"another run: {named}:.*Delete"):
        train(model, loss_fn, data, TrainConfig(epochs=3, batch_size=8, progress=False),
              run_dir=tmp_path)


def test_objective_weights_inside_a_closure_count():
    from balance.objectives import loss

    a = run_fingerprint(_model(), loss("rae", beta=1.0), (torch.zeros(2, 3),))
    b = run_fingerprint(_model(), loss("rae", beta=2.0), (torch.zeros(2, 3),))
    c = run_fingerprint(_model(), loss("rae", beta=1.0), (torch.zeros(2, 3),))
    assert a["loss"] != b["loss"] and a == c
    assert "beta=2.0" in str(b["loss"])
