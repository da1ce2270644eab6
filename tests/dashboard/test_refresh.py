"""Panel refresh on real, growing stores: full render, live appends, step moves, re-renders."""

from __future__ import annotations

import numpy as np
import pytest
from dash import no_update

from dashboard import downsample, refresh, settings
from dashboard.panels import events, grad_norm, header, scalars
from dashboard.panels.base import View
from dashboard.runs import RunCatalog
from instrument.store import schema
from tests.dashboard import stores

Keys = schema.Keys


@pytest.fixture
def live(tmp_path):
    """A running run with 20 steps; the writer stays open so the test can add steps."""
    writer = stores.write_run(str(tmp_path / "r"), steps=20, close=False)
    yield writer, RunCatalog(str(tmp_path))
    writer.close()


def _grow(writer, start, stop):
    for s in range(start, stop):
        writer.submit(stores.step_data(s))
    writer.flush()


def _ops(patch) -> list:
    return patch.to_plotly_json()["operations"]


def _extended(patch, index: int, field: str) -> list:
    out = []
    for op in _ops(patch):
        if op["operation"] == "Extend" and op["location"] == ["data", index, field]:
            out += op["params"]["value"]
    return out


def _trace_index(fig, key, stat="mean", ema=False):
    for i, t in enumerate(fig["data"]):
        tag = (t.get("meta") or {}).get("live")
        if tag and tag["key"] == key and tag["stat"] == stat and bool(tag["ema"]) == ema:
            return i
    raise KeyError(key)


def test_appends_exactly_the_new_rows(live):
    writer, cat = live
    view = View(["r"])
    heads = {"r": cat.head("r")}
    first = refresh.render(scalars, cat, view, heads)
    i = _trace_index(first.figure, "loss")
    assert first.figure["data"][i]["x"] == list(range(20))
    _grow(writer, 20, 35)
    heads = {"r": cat.head("r", heads["r"])}
    out = refresh.refresh(scalars, cat, {"heads"}, view, heads, first.state)
    assert out.extra is no_update and isinstance(out.state, dict)
    assert _extended(out.figure, i, "x") == list(range(20, 35))
    np.testing.assert_allclose(_extended(out.figure, i, "y"), stores.loss(np.arange(20, 35)),
                               rtol=1e-5)
    entry = next(e for e in out.state["live"] if e[0] == i)
    assert entry[1]["cursor"] == 34 and entry[2] == 35
    # nothing new: nothing sent
    again = refresh.refresh(scalars, cat, {"heads"}, view, heads, out.state)
    assert again.figure is no_update and again.state is no_update


def test_ema_line_continues_as_if_computed_at_once(live):
    writer, cat = live
    view = View(["r"], options=(scalars.EMA,))
    heads = {"r": cat.head("r")}
    first = refresh.render(scalars, cat, view, heads)
    i = _trace_index(first.figure, "loss", ema=True)
    _grow(writer, 20, 31)
    out = refresh.refresh(scalars, cat, {"heads"}, view, {"r": cat.head("r")}, first.state)
    y = first.figure["data"][i]["y"] + _extended(out.figure, i, "y")
    whole, _ = downsample.ema(stores.loss(np.arange(31)))
    np.testing.assert_allclose(y, whole, rtol=1e-5)


def _assigned(patch, index: int, field: str) -> dict:
    return {op["location"][3]: op["params"]["value"] for op in _ops(patch)
            if op["operation"] == "Assign" and op["location"][:3] == ["data", index, field]}


def test_bucketed_lines_append_buckets_and_replace_the_open_one(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_TRACE_POINTS", 70)  # renders ask for 64: room to append
    monkeypatch.setattr(settings, "MAX_FIGURE_POINTS", 60)
    writer = stores.write_run(str(tmp_path / "r"), steps=203, close=False)
    try:
        cat, view = RunCatalog(str(tmp_path)), View(["r"])
        first = refresh.render(scalars, cat, view, {"r": cat.head("r")})
        i, lo = _trace_index(first.figure, "loss"), _trace_index(first.figure, "loss", "min")
        assert first.figure["data"][i]["meta"]["live"]["size"] == 4
        assert first.figure["data"][i]["x"][-1] == 202  # the whole run, tail included
        n = len(first.figure["data"][i]["x"])
        _grow(writer, 203, 230)
        out = refresh.refresh(scalars, cat, {"heads"}, view, {"r": cat.head("r")}, first.state)
        # step 203 ends bucket 50; buckets 51..56 are whole; 228..229 is still filling
        groups = [[203]] + [list(range(b * 4, b * 4 + 4)) for b in range(51, 57)] + [[228, 229]]
        assert _extended(out.figure, i, "x") == [g[-1] for g in groups]
        np.testing.assert_allclose(_extended(out.figure, i, "y"),
                                   [stores.loss(np.array(g)).mean() for g in groups], rtol=1e-5)
        np.testing.assert_allclose(_extended(out.figure, lo, "y"),
                                   [stores.loss(np.array(g)).min() for g in groups], rtol=1e-5)
        tag = out.state["live"][i][1]
        assert (tag["cursor"], tag["open"], out.state["live"][i][2]) == (227, True, n + 8)
        # next poll: the open point is replaced by the now whole bucket, then one more follows
        _grow(writer, 230, 233)
        nxt = refresh.refresh(scalars, cat, {"heads"}, view, {"r": cat.head("r")}, out.state)
        assert _assigned(nxt.figure, i, "x") == {n + 7: 231}
        assert _assigned(nxt.figure, i, "y")[n + 7] == pytest.approx(
            stores.loss(np.arange(228, 232)).mean(), rel=1e-5)
        assert _extended(nxt.figure, i, "x") == [232]
        assert nxt.state["live"][i][2] == n + 9 and nxt.state["live"][i][1]["cursor"] == 231
        # past MAX_TRACE_POINTS the panel is drawn again, coarser, instead of appended to
        _grow(writer, 233, 600)
        again = refresh.refresh(scalars, cat, {"heads"}, view, {"r": cat.head("r")}, nxt.state)
        assert isinstance(again.figure, dict)
        j = _trace_index(again.figure, "loss")
        assert again.figure["data"][j]["meta"]["live"]["size"] == 16
        assert len(again.figure["data"][j]["x"]) <= settings.MAX_TRACE_POINTS
    finally:
        writer.close()


def test_ema_of_an_open_bucket_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_TRACE_POINTS", 60)
    monkeypatch.setattr(settings, "MAX_FIGURE_POINTS", 60)
    writer = stores.write_run(str(tmp_path / "r"), steps=203, close=False)
    try:
        cat, view = RunCatalog(str(tmp_path)), View(["r"], options=(scalars.EMA,))
        first = refresh.render(scalars, cat, view, {"r": cat.head("r")})
        i = _trace_index(first.figure, "loss", ema=True)
        state0 = first.state["live"][i][1]["ema"]
        _grow(writer, 203, 210)  # 203 | 204..207 | 208..209 (open)
        out = refresh.refresh(scalars, cat, {"heads"}, view, {"r": cat.head("r")}, first.state)
        means = [stores.loss(np.array(g)).mean() for g in ([203], range(204, 208), [208, 209])]
        expect, kept = downsample.ema(means[:2], counts=[4, 4], state=state0)
        tail, _ = downsample.ema(means[2:], counts=[4], state=kept)
        np.testing.assert_allclose(_extended(out.figure, i, "y"), np.r_[expect, tail], rtol=1e-5)
        np.testing.assert_allclose(out.state["live"][i][1]["ema"], kept)
    finally:
        writer.close()


def test_moving_the_step_patches_cursors_and_bars(live):
    _, cat = live
    heads = {"r": cat.head("r")}
    first = refresh.render(grad_norm, cat, View(["r"]), heads)
    out = refresh.refresh(grad_norm, cat, {"view"}, View(["r"], step=7), heads, first.state)
    ops = _ops(out.figure)
    moved = {tuple(op["location"]): op["params"]["value"] for op in ops
             if op["operation"] == "Assign"}
    for j in first.state["cursors"]:
        assert moved[("layout", "shapes", j, "x0")] == 7
        assert moved[("layout", "shapes", j, "visible")] is True
    (bar, tag), = first.state["bars"]
    np.testing.assert_allclose(moved[("data", bar, "x")],
                               [stores.grad_norm(7, j) for j in range(len(stores.PARAMS))],
                               rtol=1e-5)
    assert moved[("data", bar, "meta", "at_step", "step")] == 7
    assert out.state["step"] == 7 and out.state["bars"][0][1]["step"] == 7
    # back to following the last step: cursors hide, bars show the last step
    back = refresh.refresh(grad_norm, cat, {"view"}, View(["r"]), heads, out.state)
    moved = {tuple(op["location"]): op["params"]["value"] for op in _ops(back.figure)}
    assert moved[("layout", "shapes", first.state["cursors"][0], "visible")] is False
    assert moved[("data", bar, "meta", "at_step", "step")] == 19


def test_what_forces_a_full_render(live):
    writer, cat = live
    view, heads = View(["r"]), {"r": cat.head("r")}
    first = refresh.render(grad_norm, cat, view, heads)
    assert first.state["static"] is True  # it holds a heatmap
    # options, runs or the highlighted layer changed
    for trigger, new_view in (({"options"}, View(["r"], options=(grad_norm.LOG_Y,))),
                              ({"view"}, View(["r"], layer="0.weight"))):
        out = refresh.refresh(grad_norm, cat, trigger, new_view, heads, first.state)
        assert isinstance(out.figure, dict)
    _grow(writer, 20, 22)
    newer = {"r": cat.head("r", heads["r"])}
    # heatmaps are redrawn once HEATMAP_REFRESH_S has passed, appended to before
    soon = refresh.refresh(grad_norm, cat, {"heads"}, view, newer, first.state,
                           now=first.state["at"] + 0.1)
    assert not isinstance(soon.figure, dict)
    late = refresh.refresh(grad_norm, cat, {"heads"}, view, newer, first.state,
                           now=first.state["at"] + settings.HEATMAP_REFRESH_S)
    assert isinstance(late.figure, dict)
    # a new series in the run
    writer.submit(stores.step_data(22).__class__(22, scalars={"brand_new": 1.0}))
    writer.flush()
    grown = {"r": cat.head("r", newer["r"])}
    assert grown["r"]["series"] == newer["r"]["series"] + 1
    out = refresh.refresh(scalars, cat, {"heads"}, view, grown,
                          refresh.render(scalars, cat, view, newer).state)
    assert isinstance(out.figure, dict) and "brand_new" in str(out.figure["layout"]["annotations"])


def test_header_and_events_rerender_on_their_fields(live):
    writer, cat = live
    view, heads = View(["r"]), {"r": cat.head("r")}
    h = refresh.render(header, cat, view, heads)
    assert h.figure is no_update and "running" in str(h.extra)
    e = refresh.render(events, cat, view, heads)
    assert e.figure["layout"]["meta"]["placeholder"] == events.MISSING
    writer.submit(stores.nonfinite_event(20))
    _grow(writer, 20, 21)
    newer = {"r": cat.head("r", heads["r"])}
    assert newer["r"]["events"] == 1
    out = refresh.refresh(events, cat, {"heads"}, view, newer, e.state)
    assert out.figure["data"][0]["x"] == [20]
    out = refresh.refresh(header, cat, {"heads"}, view, newer, h.state)
    assert "steps 0..20" in str(out.extra)
    moved = refresh.refresh(header, cat, {"view"}, View(["r"], step=3), newer, out.state)
    assert "viewing step 3" in str(moved.extra)


def test_no_runs_and_unreadable_runs_render_messages(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "avionics.db").write_bytes(b"garbage" * 100)
    cat = RunCatalog(str(tmp_path))
    out = refresh.render(scalars, cat, View([]))
    assert out.figure["layout"]["meta"]["placeholder"] == refresh.NO_RUNS
    out = refresh.render(scalars, cat, View(["bad"]))
    assert "cannot be read" in out.figure["layout"]["meta"]["placeholder"]
    assert "not an SQLite database" in str(out.extra)


def test_an_unreadable_run_is_not_redrawn_every_tick(tmp_path):
    stores.write_run(str(tmp_path / "a"), steps=5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "avionics.db").write_bytes(b"")
    cat = RunCatalog(str(tmp_path))
    view = View(["a", "bad"])
    heads = {r: cat.head(r) for r in view.runs}
    assert "error" in heads["bad"]
    first = refresh.render(scalars, cat, view, heads)
    again = refresh.refresh(scalars, cat, {"heads"}, view, dict(heads), first.state)
    assert again.figure is no_update
    stores.write_run(str(tmp_path / "bad2"), steps=3)  # the store becomes readable
    import shutil
    (tmp_path / "bad" / "avionics.db").unlink()
    shutil.copy(tmp_path / "bad2" / "avionics.db", tmp_path / "bad" / "avionics.db")
    fixed = {r: cat.head(r) for r in view.runs}
    out = refresh.refresh(scalars, cat, {"heads"}, view, fixed, first.state)
    assert isinstance(out.figure, dict)
    assert {t["meta"]["live"]["run"] for t in out.figure["data"]} == {"a", "bad"}


def test_a_panel_drawn_before_the_first_poll_is_not_drawn_again_by_it(live):
    """The first screen renders before the page's first poll brought the runs' heads; that
    poll must not redraw it (it did, for every panel that re-renders on events or status)."""
    writer, cat = live
    view = View(["r"])
    for panel in (scalars, events, header, grad_norm):
        first = refresh.render(panel, cat, view, None)
        polled = refresh.refresh(panel, cat, {"heads"}, view, {"r": cat.head("r")}, first.state)
        assert polled.figure is no_update and polled.extra is no_update, panel.NAME
    # a change after the render still shows at the next poll
    before = refresh.render(events, cat, view, None)
    writer.submit(stores.nonfinite_event(20))
    _grow(writer, 20, 21)
    out = refresh.refresh(events, cat, {"heads"}, view, {"r": cat.head("r")}, before.state)
    assert out.figure["data"][0]["x"] == [20]
