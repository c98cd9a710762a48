"""balance.tracing: the per-step trace of one log term, kept across resumes."""

from __future__ import annotations

import torch

from balance.tracing import StepTrace, trace_summary


def test_step_trace_drops_epochs_after_the_checkpoint(tmp_path):
    from balance.runs import save_checkpoint

    path = tmp_path / "trace.jsonl"
    path.write_text('{"epoch": 1, "values": [1.0, 2.0]}\n{"epoch": 2, "values": [3.0]}\n')
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    trace = StepTrace(path, "g", tmp_path / "checkpoint.pt")
    assert trace.read() == [1.0, 2.0] and trace.epoch == 1
    # The repeated epoch 2 is recorded afresh.
    loss_fn = trace.wrap(lambda model, batch: (torch.zeros(()), {"g": lambda: torch.tensor(5.0)}))
    _, logs = loss_fn(None, None)
    assert float(logs["g"]()) == 5.0
    trace.flush()
    assert trace.read() == [1.0, 2.0, 5.0]




def test_trace_summary_means_and_log_spaced_subsample():
    values = [float(v) for v in range(1, 101)]
    summary = trace_summary(values, summary_steps=10, trace_points=20)
    assert summary["steps"] == 100 and summary["first"] == 1.0 and summary["max"] == 100.0
    assert summary["early_mean"] == 5.5 and summary["late_mean"] == 95.5
    steps = summary["trace_step"]
    assert steps[0] == 1 and steps[-1] == 100 and steps == sorted(set(steps))
    assert summary["trace_value"] == [values[i - 1] for i in steps]
    assert trace_summary([]) == {"steps": 0}
