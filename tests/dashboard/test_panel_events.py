"""Events panel: a timeline for any event code, and a clickable table, newest first."""

from __future__ import annotations

import json

import pandas as pd
from dash import html

from dashboard import settings
from dashboard.panels import events
from dashboard.panels.base import View
from tests.dashboard.panel_inputs import cursors, run_input

COLUMNS = ["id", "step", "wall_time", "code", "severity", "layer", "message", "evidence",
           "suggestion", "rank"]


def _events(rows):
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["step"] = df["step"].astype("Int64")
    return df


def _run(run_id="r", rows=None):
    rows = rows if rows is not None else [
        (1, 5, 10.0, "nonfinite", "critical", "fc1", "NaN in fc1", None, "lower the lr", None),
        (2, 9, 11.0, "lr_too_high", "warning", "fc2.weight", "update ratio 0.1", None, None, 1),
        (3, None, 12.0, "instrument_error", "warning", None, "activations failed", None, None,
         None)]
    return run_input(run_id, extra={"events": _events(rows)})


def row_ids(component) -> list:
    """ids of the table rows in ``component``."""
    found = []

    def walk(c):
        if isinstance(c, html.Tr) and getattr(c, "id", None):
            found.append(c.id)
        children = getattr(c, "children", None)
        for child in children if isinstance(children, list) else [children]:
            if child is not None and not isinstance(child, str):
                walk(child)
    walk(component)
    return found


def test_timeline_one_row_per_code_coloured_by_severity():
    fig = events.figure([_run()], View(["r"], step=9))
    codes = fig["layout"]["yaxis"]["categoryarray"]
    assert codes == ["lr_too_high", "nonfinite"]  # the event without a step is table-only
    by_name = {t["name"]: t for t in fig["data"]}
    crit, warn = by_name["critical"], by_name["warning"]
    assert crit["x"] == [5] and crit["y"] == ["nonfinite"] and crit["text"] == ["fc1"]
    assert crit["marker"]["color"] == settings.SEVERITY_COLOURS["critical"]
    assert warn["x"] == [9] and warn["customdata"] == ["update ratio 0.1"]
    assert [c["x0"] for c in cursors(fig)] == [9]
    assert crit["mode"] == "markers"  # no drawn labels: they would overlap
    assert fig["layout"]["yaxis"]["ticktext"] == ["lr_too_high (1)", "nonfinite (1)"]
    item = _run()
    item.first_step, item.last_step = 0, 100
    lo, hi = events.figure([item], View(["r"]))["layout"]["xaxis"]["range"]
    assert lo < 0 and hi > 100  # the whole run, not only the stretch with events


def test_table_newest_first_with_parsable_row_ids():
    ids = row_ids(events.extra([_run()], View(["r"])))
    parsed = [events.parse_row_id(i["index"]) for i in ids]
    assert [p[1] for p in parsed] == [3, 2, 1]
    assert parsed[1] == ("r", 2, 9, "fc2.weight") and parsed[0] == ("r", 3, None, None)
    assert all(i["type"] == events.ROW_TYPE for i in ids)


def test_table_is_capped_and_says_so():
    rows = [(i, i, float(i), "x", "info", None, f"m{i}", None, None, None)
            for i in range(1, settings.MAX_EVENT_ROWS + 6)]
    table = events.extra([_run(rows=rows)], View(["r"]))
    assert len(row_ids(table)) == settings.MAX_EVENT_ROWS
    assert "5 older events not shown" in json.dumps(table.to_plotly_json(), default=str)


def test_compare_marks_runs():
    fig = events.figure([_run("a"), _run("b")], View(["a", "b"]))
    symbols = {t["name"]: t["marker"]["symbol"] for t in fig["data"]}
    assert symbols["a critical"] != symbols["b critical"]
    ids = row_ids(events.extra([_run("a"), _run("b")], View(["a", "b"])))
    assert {events.parse_row_id(i["index"])[0] for i in ids} == {"a", "b"}


def test_no_events():
    fig = events.figure([_run(rows=[])], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == events.MISSING
    assert events.extra([_run(rows=[])], View(["r"])) is None
    assert events.needs({}, ()) == []
