"""The model-agnostic training loop (balance.train): optimisation, logging, resume, failures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from balance import train as train_module
from balance.runs import CheckpointError, ConfigMismatchError, load_checkpoint
from balance.train import NonFiniteLossError, TrainConfig, train

N, D = 256, 4


class Killed(Exception):
    """Stands for the process being killed in the middle of an epoch."""


def _regression_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(D, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(N, 1, generator=g)
    return x, y, w


class NoisyRegressor(torch.nn.Module):
    """A linear model whose training forward adds noise from the global RNG (like a VAE's
    reparameterisation or dropout), so that resuming must restore RNG states too."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(D, 8)
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.hidden(x))
        if self.training:
            h = h + 0.01 * torch.randn_like(h)
        return self.out(h)


def _mse(model, batch):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": loss.detach()}


# Loss functions that stand in for _mse (to kill or count a run) declare the same run
# fingerprint (balance.fingerprint), so that the run they stand in for resumes.
_mse.fingerprint = "mse"


def _config(**kw) -> TrainConfig:
    defaults = dict(epochs=3, batch_size=32, lr=1e-2, progress=False, seed=7)
    defaults.update(kw)
    return TrainConfig(**defaults)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _without_times(history):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in history]


# ----------------------------------------------------------------------------- optimisation


def test_loss_decreases_on_a_tiny_regression():
    x, y, w = _regression_data()
    model = torch.nn.Linear(D, 1)
    history = train(model, _mse, (x, y), _config(epochs=30, lr=3e-2))
    losses = [r["loss"] for r in history]
    assert losses[-1] < 0.05 * losses[0]
    # Optimisation tolerance: the noise variance is 0.01, Adam gets within a few times that.
    assert losses[-1] < 0.05
    assert torch.allclose(model.weight.detach().T, w, atol=0.05)


def test_history_records_every_term_and_per_sample_means():
    x, y, _ = _regression_data()
    model = torch.nn.Linear(D, 1)
    seen = []

    def loss_fn(model, batch):
        loss, logs = _mse(model, batch)
        seen.append((batch[0].shape[0], float(loss.detach())))
        return loss, {**logs, "per_sample": (model(batch[0]) - batch[1]).abs()[:, 0], "c": 2}

    history = train(model, loss_fn, (x, y), _config(epochs=1, batch_size=100))
    (record,) = history
    assert record["steps"] == 3 and record["samples"] == N and record["step"] == 3
    assert [b for b, _ in seen] == [100, 100, 56]  # the last, smaller batch is kept
    expected = sum(b * v for b, v in seen) / N  # weighted by samples, not by steps
    assert record["loss"] == pytest.approx(expected, rel=1e-6)  # float32 losses, float64 sums
    assert record["mse"] == pytest.approx(record["loss"], rel=1e-6)
    assert record["c"] == 2.0 and record["per_sample"] > 0
    assert record["lr"] == 1e-2 and record["time_s"] > 0


def test_max_steps_per_epoch_and_drop_last():
    x, y, _ = _regression_data()
    history = train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=2, max_steps_per_epoch=2))
    assert [r["steps"] for r in history] == [2, 2] and history[-1]["step"] == 4
    history = train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=1, batch_size=100,
                                                                  drop_last=True))
    assert history[0]["steps"] == 2 and history[0]["samples"] == 200


def test_each_epoch_sees_every_sample_once_in_a_seeded_order():
    x = torch.arange(50.0)[:, None]
    orders = []

    def loss_fn(model, batch):
        orders.append(batch[:, 0].tolist())
        return model(batch).mean() * 0, {}

    config = _config(epochs=2, batch_size=16)
    train(torch.nn.Linear(1, 1), loss_fn, x, config)
    first = [v for batch in orders for v in batch]
    orders.clear()
    train(torch.nn.Linear(1, 1), loss_fn, x, config)
    again = [v for batch in orders for v in batch]
    assert first == again
    epoch1, epoch2 = first[:50], first[50:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(50))
    assert epoch1 != epoch2 and epoch1 != list(range(50))


def test_lr_schedule_changes_lr_at_milestones():
    x, y, _ = _regression_data()
    optimizers = []

    def adam(params):
        optimizers.append(torch.optim.Adam(params, lr=1e-2))
        return optimizers[-1]

    config = _config(epochs=5, lr_milestones=(2, 4), lr_decay=0.1)
    history = train(torch.nn.Linear(D, 1), _mse, (x, y), config, optimizer_fn=adam)
    lrs = [r["lr"] for r in history]
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4], rel=1e-12)
    assert optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-12)


def test_grad_clip_bounds_the_update():
    # Plain SGD with lr=1 makes the update equal to the (clipped) gradient.
    x, y, _ = _regression_data()
    y = 1000 * y  # a huge gradient
    model = torch.nn.Linear(D, 1)
    before = _params(model)
    loss = ((model(x) - y) ** 2).mean()
    raw = torch.cat([g.flatten() for g in torch.autograd.grad(loss, model.parameters())])
    assert raw.norm() > 100
    config = _config(epochs=1, batch_size=N, grad_clip=0.5)
    history = train(model, _mse, (x, y), config, optimizer_fn=lambda p: torch.optim.SGD(p, lr=1))
    update = torch.cat([(b - a.detach()).flatten() for b, a in zip(before, model.parameters(),
                                                                   strict=True)])
    assert update.norm().item() == pytest.approx(0.5, rel=1e-5)  # float32 rounding
    assert torch.allclose(update / update.norm(), raw / raw.norm(), atol=1e-5)
    assert history[0]["grad_norm"] == pytest.approx(raw.norm().item(), rel=1e-5)


def test_callables_in_logs_see_the_gradients_of_this_step():
    x, y, _ = _regression_data()
    model = torch.nn.Linear(D, 1)
    checks = []

    def loss_fn(model, batch):
        xb, yb = batch
        z = model(xb)
        captured = {}
        z.register_hook(lambda grad: captured.__setitem__("dz", grad))
        loss = ((z - yb) ** 2).mean()
        expected = 2 * (z.detach() - yb) / xb.shape[0]  # dL/dz in closed form

        def dz_norm():
            checks.append(torch.allclose(captured["dz"], expected, rtol=1e-5, atol=1e-7))
            checks.append(model.weight.grad is not None)
            return captured["dz"].norm()

        return loss, {"dz_norm": dz_norm, "w_grad": lambda: float(model.weight.grad.norm())}

    history = train(model, loss_fn, (x, y), _config(epochs=2))
    assert checks and all(checks)
    assert history[0]["dz_norm"] > 0 and history[0]["w_grad"] > 0


def test_eval_fn_runs_in_eval_mode_without_grad_and_is_logged():
    x, y, _ = _regression_data()
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    model.eval()
    modes = []

    def loss_fn(model, batch):
        modes.append(model.training)
        return _mse(model, batch)

    def eval_fn(m):
        modes.append((m.training, torch.is_grad_enabled()))
        return {"val": torch.tensor(1.5), "n": 3}

    history = train(model, loss_fn, (x, y), _config(epochs=2), eval_fn=eval_fn)
    assert set(modes) == {True, (False, False)}
    assert modes[-1] == (False, False) and modes[-2] is True
    assert history[1]["eval/val"] == 1.5 and history[1]["eval/n"] == 3.0
    assert model.training is False  # the caller's mode is restored


def test_default_optimizer_is_fused_adam_with_a_clean_fallback(monkeypatch):
    params = [torch.nn.Parameter(torch.randn(3))]
    config = _config()
    assert train_module._make_adam(params, config).defaults.get("fused") is True
    real_adam = torch.optim.Adam

    def no_fused(params, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real_adam(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    assert not train_module._make_adam(params, config).defaults.get("fused")


# ----------------------------------------------------------------------------- files and resume


def test_metrics_jsonl_has_one_line_per_epoch_with_each_log_key(tmp_path):
    x, y, _ = _regression_data()

    def loss_fn(model, batch):
        loss, logs = _mse(model, batch)
        return loss, {**logs, "k": 1.0, "g": lambda: model.weight.grad.norm()}

    config = _config(epochs=3, grad_clip=100.0)
    history = train(torch.nn.Linear(D, 1), loss_fn, (x, y), config, tmp_path,
                    eval_fn=lambda m: {"w": m.weight.norm()})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and records == history
    for epoch, record in enumerate(records, start=1):
        assert record["epoch"] == epoch
        for key in ("loss", "mse", "k", "g", "grad_norm", "eval/w", "lr", "time_s", "steps"):
            assert math.isfinite(record[key]), key
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["finished"] is True
    assert checkpoint["config"]["grad_clip"] == 100.0 and checkpoint["history"] == history


@pytest.mark.parametrize("kill_epoch, epochs, checkpoint_every", [(2, 3, 1), (3, 4, 2), (1, 2, 1)])
def test_resume_after_a_kill_is_bit_identical(tmp_path, kill_epoch, epochs, checkpoint_every):
    x, y, _ = _regression_data()
    config = _config(epochs=epochs, checkpoint_every=checkpoint_every, lr_milestones=(2,))

    torch.manual_seed(1)
    reference = NoisyRegressor()
    expected = train(reference, _mse, (x, y), config, tmp_path / "uninterrupted")

    calls = {"n": 0}
    steps_per_epoch = math.ceil(N / config.batch_size)

    def dying_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == (kill_epoch - 1) * steps_per_epoch + 3:  # step 3 of epoch kill_epoch
            raise Killed
        return _mse(model, batch)

    dying_loss.fingerprint = _mse.fingerprint
    torch.manual_seed(1)
    with pytest.raises(Killed):
        train(NoisyRegressor(), dying_loss, (x, y), config, tmp_path / "killed")
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == kill_epoch - 1

    torch.manual_seed(999)  # the resumed process starts from other random state and weights
    resumed_model = NoisyRegressor()
    resumed = train(resumed_model, _mse, (x, y), config, tmp_path / "killed")
    for a, b in zip(reference.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert _without_times(resumed) == _without_times(expected)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 1))


def test_finished_run_is_skipped_and_loads_the_trained_weights(tmp_path):
    x, y, _ = _regression_data()
    model = torch.nn.Linear(D, 1)
    history = train(model, _mse, (x, y), _config(epochs=2), tmp_path)
    calls = []

    def counting(model, batch):
        calls.append(1)
        return _mse(model, batch)

    counting.fingerprint = _mse.fingerprint
    fresh = torch.nn.Linear(D, 1)
    again = train(fresh, counting, (x, y), _config(epochs=2), tmp_path)
    assert calls == [] and again == history
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    # More epochs continue the same run.
    longer = train(fresh, counting, (x, y), _config(epochs=3), tmp_path)
    assert len(longer) == 3 and longer[:2] == history and calls


def test_keyboard_interrupt_leaves_the_last_completed_epoch(tmp_path):
    x, y, _ = _regression_data()
    calls = {"n": 0}

    def interrupted(model, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 8 + 5:  # epoch 3, step 5
            raise KeyboardInterrupt
        return _mse(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(torch.nn.Linear(D, 1), interrupted, (x, y), _config(epochs=4), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    # no temporary file left behind (the .lock file marks the folder as in use)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "checkpoint.pt", "data.json", "metrics.jsonl"]


def test_config_mismatch_on_resume_raises(tmp_path):
    x, y, _ = _regression_data()
    train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=1), tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"lr: 0\.01 \(checkpoint\) vs 0\.001"):
        train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=2, lr=1e-3), tmp_path)
    with pytest.raises(ConfigMismatchError, match="another run: model"):
        train(torch.nn.Linear(D, 2), _mse, (x, y), _config(epochs=2), tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_gives_checkpoint_error(tmp_path, damage):
    x, y, _ = _regression_data()
    train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=1), tmp_path)
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*Delete it to restart"):
        train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=2), tmp_path)


def test_checkpoint_from_another_format_is_refused(tmp_path):
    x, y, _ = _regression_data()
    train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=1), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["format"] = 0
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="incompatible version"):
        train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=2), tmp_path)


# ----------------------------------------------------------------------------- failures


def _good_state(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y, _ = _regression_data()
    calls = {"n": 0}
    after_epoch = []

    def loss_fn(model, batch):
        calls["n"] += 1
        loss, logs = _mse(model, batch)
        if calls["n"] == 8 + 4:  # epoch 2, step 4
            loss = loss * float("nan")
        return loss, {**logs, "gamma": torch.tensor(0.5)}

    def remember(model):
        after_epoch.append({k: v.clone() for k, v in model.state_dict().items()})
        return {}

    with pytest.raises(NonFiniteLossError) as info:
        train(torch.nn.Linear(D, 1), loss_fn, (x, y), _config(epochs=3), tmp_path,
              eval_fn=remember)
    error = info.value
    assert (error.epoch, error.step) == (2, 4)
    assert "epoch 2/3, step 4/8" in str(error) and "gamma=0.5" in str(error)
    assert math.isnan(error.logs["loss"]) and error.logs["gamma"] == 0.5
    state = _good_state(tmp_path)
    assert state["epoch"] == 1 and len(after_epoch) == 1
    for key, value in after_epoch[0].items():
        assert torch.equal(state["model"][key], value)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_gradient_with_a_finite_loss_is_caught(tmp_path):
    x, y, _ = _regression_data()
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss, logs = _mse(model, batch)
        if calls["n"] == 8 + 8:  # last step of epoch 2: d/dw sqrt(0 * w) is 0 * inf = nan
            loss = loss + torch.sqrt(model.weight.sum() * 0).sum()
        return loss, logs

    with pytest.raises(NonFiniteLossError, match=r"parameters \['weight'\].*epoch 2/3") as info:
        train(torch.nn.Linear(D, 1), loss_fn, (x, y), _config(epochs=3), tmp_path)
    assert info.value.epoch == 2 and info.value.step is None
    assert _good_state(tmp_path)["epoch"] == 1

    calls["n"] = 0  # with the gradient norm logged, the exact step is named
    with pytest.raises(NonFiniteLossError, match=r"\['grad_norm'\] at epoch 2/3, step 8/8"):
        train(torch.nn.Linear(D, 1), loss_fn, (x, y), _config(epochs=3, log_grad_norm=True))


def test_bad_inputs_get_clear_errors():
    x, y, _ = _regression_data()
    x_bad = x.clone()
    x_bad[17, 2] = float("nan")
    message = r"data tensor 0 holds NaN/inf in sample\(s\) \[17\] of this batch\. Clean the data"
    with pytest.raises(NonFiniteLossError, match=message):
        train(torch.nn.Linear(D, 1), _mse, (x_bad, y), _config(epochs=1))
    with pytest.raises(ValueError, match="same number of samples"):
        train(torch.nn.Linear(D, 1), _mse, (x, y[:10]), _config(epochs=1))
    with pytest.raises(ValueError, match="scalar loss"):
        train(torch.nn.Linear(D, 1), lambda m, b: (m(b[0]), {}), (x, y), _config(epochs=1))
    with pytest.raises(ValueError, match="reserved"):
        train(torch.nn.Linear(D, 1), lambda m, b: (_mse(m, b)[0], {"lr": 1.0}), (x, y),
              _config(epochs=1))
    with pytest.raises(ValueError, match="batch_size must be >= 1.*lr must be > 0"):
        TrainConfig(lr=0, batch_size=0)


def test_progress_bar_writes_to_stderr_only(capsys):
    x, y, _ = _regression_data()
    train(torch.nn.Linear(D, 1), _mse, (x, y), _config(epochs=2, progress=True))
    out, err = capsys.readouterr()
    assert out == "" and "epoch" in err


@pytest.mark.slow
# torch.compile's tracer reads .grad of non-leaf tensors while inspecting them (a torch
# internal, not this package's code)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compiled_step_trains_like_eager_and_keeps_state_keys(tmp_path):
    from balance.models.registry import MLPVAESpec, build
    from balance.objectives import loss

    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
    spec = MLPVAESpec(latent_dim=2, width=8, encoder_depth=1, decoder_blocks=1)
    runs = {}
    for compiled in (False, True):
        model = build(spec, (6,), 0)
        cfg = TrainConfig(epochs=2, batch_size=16, progress=False, compile=compiled)
        runs[compiled] = (train(model, loss("elbo"), x, cfg, run_dir=tmp_path / str(compiled)),
                          model)
    eager, compiled = runs[False][0], runs[True][0]
    # the same computation, fused by the compiler: float32 round-off over 8 steps
    for a, b in zip(eager, compiled, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert math.isfinite(b["grad_z_norm"])  # the hook on z still fires
    assert list(runs[True][1].state_dict()) == list(runs[False][1].state_dict())
    saved = load_checkpoint(tmp_path / "True" / "checkpoint.pt")["model"]
    assert set(saved) == set(runs[False][1].state_dict())


@pytest.mark.parametrize("placement", ["device", "host"])
def test_uint8_images_train_bit_identically_to_the_loaders_float_images(tmp_path, placement):
    from balance.models.registry import MLPVAESpec, build
    from balance.objectives import loss

    raw = torch.randint(0, 256, (48, 1, 4, 4), generator=torch.Generator().manual_seed(0),
                        dtype=torch.uint8)
    as_float = raw.to(torch.float32).div_(255.0)  # what the loaders return
    spec = MLPVAESpec(latent_dim=2, width=8, encoder_depth=1, decoder_blocks=1)
    runs = {}
    for name, data in (("float", as_float), ("uint8", raw)):
        model = build(spec, (1, 4, 4), 0)
        cfg = TrainConfig(epochs=2, batch_size=16, progress=False, data_placement=placement)
        runs[name] = (train(model, loss("elbo"), data, cfg, run_dir=tmp_path / name), model)
    for a, b in zip(runs["float"][0], runs["uint8"][0], strict=True):
        assert a["loss"] == b["loss"] and a["latent"] == b["latent"]  # bit for bit
    for (k, va), vb in zip(runs["float"][1].state_dict().items(),
                           runs["uint8"][1].state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    held = json.loads((tmp_path / "uint8" / "data.json").read_text())
    assert held["placement"] == "device"  # on a CPU the host is the device
    assert held["tensors"][0]["dtype"] == "uint8"
    assert held["tensors"][0]["bytes"] * 4 == as_float.numel() * as_float.element_size()
