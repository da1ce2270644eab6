"""Run header panel: status, steps, wall time, model and optimizer; unreadable runs say why."""

from __future__ import annotations

import json

from dashboard.panels import header
from dashboard.panels.base import RunInput, View


def _text(component) -> str:
    return json.dumps(component.to_plotly_json(), default=lambda o: o.to_plotly_json()
                      if hasattr(o, "to_plotly_json") else str(o))


def _item(**meta):
    base = {"status": "finished", "start_time": 100.0, "end_time": 3825.0,
            "model": {"class": "Net", "parameters": 1234567, "layers": [{}, {}, {}]},
            "optimizer": {"class": "AdamW", "param_groups": [
                {"lr": 0.0003, "betas": [0.9, 0.999], "weight_decay": 0.01},
                {"lr": 0.001}]}}
    base.update(meta)
    item = RunInput("r", "exp1", "#123456", meta=base, extra={"wall_at_step": 160.0})
    item.first_step, item.last_step = 0, 999
    return item


def test_card_facts():
    text = _text(header.extra([_item()], View(["r"], step=10)))
    for fact in ("exp1", "finished", "steps 0..999 (1,000 logged)", "wall time 1h 02m 05s",
                 "viewing step 10 (at 1m 00s)", "model Net, 1,234,567 parameters, 3 layers",
                 "optimizer AdamW(lr=0.0003, betas=(0.9, 0.999), weight_decay=0.01) "
                 "(2 param groups)"):
        assert fact in text, fact
    assert "viewing step" not in _text(header.extra([_item()], View(["r"])))


def test_crashed_run_shows_its_error():
    text = _text(header.card(_item(status="crashed", error="RuntimeError: boom"), View(["r"])))
    assert "status-crashed" in text and "RuntimeError: boom" in text


def test_unreadable_run_card():
    bad = RunInput("x", "x", "#000", error="the store is corrupt; restore it")
    text = _text(header.card(bad, View(["x"])))
    assert "unreadable" in text and "the store is corrupt; restore it" in text


def test_no_runs_and_no_graph():
    assert header.MISSING in _text(header.extra([], View([])))
    assert header.figure([], View([])) is None and header.GRAPH is False


def test_duration():
    assert header.duration(4.21) == "4.2s"
    assert header.duration(123) == "2m 03s"
    assert header.duration(3725) == "1h 02m 05s"
