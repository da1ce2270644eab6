"""Loss and user scalars panel."""

from __future__ import annotations

import numpy as np

from dashboard import downsample, settings
from dashboard.panels import scalars
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import cursors, decode, run_input, series, traces


def _run(run_id="r", colour="#111111", level=0):
    steps = np.arange(0, 40, 4 ** level)
    return run_input(run_id, colour=colour, series_list=[
        series("acc", steps, 0.5 + steps / 100, level=level),
        series("loss", steps, 2.0 / (1 + steps), level=level, lo=1.0 / (1 + steps),
               hi=3.0 / (1 + steps)),
        series("val/acc", steps[::2], 0.4 + steps[::2] / 100, level=level)])


def test_needs_user_scalars_only():
    keys = {schema.SCALAR: ["lr/0", "acc", "loss", "grad_norm/total"], schema.LAYER: []}
    assert [n.key for n in scalars.needs(keys, ())] == ["loss", "acc"]
    many = {schema.SCALAR: [f"k{i}" for i in range(50)] + ["criterion/loss", "input/batch"],
            schema.LAYER: []}
    assert [n.key for n in scalars.needs(many, ())] == sorted(f"k{i}" for i in range(50))


def test_loss_first_one_plot_per_key_values_as_given():
    fig = scalars.figure([_run()], View(["r"], step=12))
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["loss", "acc", "val/acc"]
    loss, = traces(fig, key="loss", stat="mean")
    assert loss["xaxis"] == "x" and loss["x"] == list(range(40))
    np.testing.assert_allclose(decode(loss["y"]), 2.0 / (1 + np.arange(40)), rtol=1e-5)
    assert loss["meta"]["live"]["cursor"] == 39 and loss["meta"]["live"]["size"] == 1
    assert {t["xaxis"] for t in fig["data"]} == {"x", "x2", "x3"}
    assert [c["x0"] for c in cursors(fig)] == [12, 12, 12]
    assert not traces(fig, stat="min")  # raw rows: no min..max band


def test_downsampled_lines_get_a_band_and_note():
    fig = scalars.figure([_run(level=1)], View(["r"]))
    lo, = traces(fig, key="loss", stat="min")
    hi, = traces(fig, key="loss", stat="max")
    steps = np.arange(0, 40, 4)
    np.testing.assert_allclose(decode(lo["y"]), 1.0 / (1 + steps), rtol=1e-5)
    np.testing.assert_allclose(decode(hi["y"]), 3.0 / (1 + steps), rtol=1e-5)
    assert hi["fill"] == "tonexty"
    assert "1 point = 4 steps" in fig["layout"]["annotations"][0]["text"]
    assert all(c["visible"] is False for c in cursors(fig))  # follow mode: no cursor


def test_ema_toggle_adds_the_smoothed_line():
    fig = scalars.figure([_run()], View(["r"], options=(scalars.EMA,)))
    raw = [t for t in traces(fig, key="loss", stat="mean") if t["meta"]["live"]["ema"] is None]
    ema = [t for t in traces(fig, key="loss", stat="mean") if t["meta"]["live"]["ema"]]
    assert len(raw) == len(ema) == 1 and raw[0]["opacity"] < 1
    x = 2.0 / (1 + np.arange(40))
    num = den = 0.0
    expected = []
    for v in x:  # debiased EMA, by hand
        num = settings.EMA_WEIGHT * num + (1 - settings.EMA_WEIGHT) * v
        den = settings.EMA_WEIGHT * den + (1 - settings.EMA_WEIGHT)
        expected.append(num / den)
    np.testing.assert_allclose(decode(ema[0]["y"]), expected, rtol=1e-5)
    np.testing.assert_allclose(ema[0]["meta"]["live"]["ema"], [num, den])


def test_log_y_applies_to_every_plot():
    fig = scalars.figure([_run()], View(["r"], options=(scalars.LOG_Y,)))
    assert all(fig["layout"][f"yaxis{s}"]["type"] == "log" for s in ("", "2", "3"))
    plain = scalars.figure([_run()], View(["r"]))
    assert "type" not in plain["layout"]["yaxis"]


def test_compared_runs_overlay_with_their_colours():
    fig = scalars.figure([_run("a", "#aa0000"), _run("b", "#00bb00")], View(["a", "b"]))
    losses = traces(fig, key="loss", stat="mean")
    assert {t["meta"]["live"]["run"] for t in losses} == {"a", "b"}
    assert {t["xaxis"] for t in losses} == {"x"}  # same plot
    assert {t["line"]["color"] for t in losses} == {"#aa0000", "#00bb00"}
    assert fig["layout"]["showlegend"] is True
    assert [t["name"] for t in losses if t["showlegend"]] == ["a", "b"]


def test_placeholder_without_scalars():
    fig = scalars.figure([run_input("r")], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == scalars.MISSING


def test_round_trip_of_sent_values_is_short():
    fig = scalars.figure([_run()], View(["r"]))
    loss, = traces(fig, key="loss", stat="mean")
    assert loss["y"][3] == downsample.round_sig([2.0 / 4])[0] == 0.5


def test_search_box_filters_keys_as_a_regex_and_as_text():
    assert scalars.select(["loss", "acc", "val/acc", "val_loss"], "^val") == ["val/acc",
                                                                           "val_loss"]
    assert scalars.select(["a(b", "ab"], "a(") == ["a(b"]  # not a regex: plain text
    fig = scalars.figure([_run()], View(["r"], filter="acc"))
    assert [a["text"] for a in fig["layout"]["annotations"]] == ["acc", "val/acc"]


def test_log_y_when_a_series_spans_more_than_three_decades():
    steps = np.arange(10)
    spike = run_input("r", series_list=[series("loss", steps, [1.0] * 9 + [4e8])])
    fig = scalars.figure([spike], View(["r"]))
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert scalars.spans_decades(np.array([1.0, 999.0])) is False
    lo, hi = scalars.robust_range(np.r_[np.ones(200), 4e8])
    assert hi < 2  # the spike is outside the robust range


def test_nonfinite_values_are_crosses_and_the_dead_span_is_shaded():
    import pandas as pd
    steps = np.arange(12)
    item = run_input("r", series_list=[series("loss", steps, [1.0] * 11 + [np.inf])], last=29)
    item.extra["events"] = pd.DataFrame({"id": [1], "step": [11], "code": ["nonfinite"],
                                         "severity": ["critical"], "layer": ["0"],
                                         "message": ["loss is inf"], "evidence": [None],
                                         "suggestion": [None], "wall_time": [0.0]})
    fig = scalars.figure([item], View(["r"]))
    cross, = [t for t in fig["data"] if (t.get("meta") or {}).get("nonfinite") == "loss"]
    assert cross["x"] == [11] and cross["y"] == [1.0]
    shade, = [s for s in fig["layout"]["shapes"] if s["name"] == "nonfinite"]
    assert (shade["x0"], shade["x1"]) == (11, 29)
    assert "NaN/Inf from step 11" in fig["layout"]["annotations"][0]["text"]
