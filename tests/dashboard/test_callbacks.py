"""The app's callbacks over HTTP (Flask test client, the same JSON the browser posts):
navigation and the URL, live polling, pause, and bad stores that must never give a 500."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest

from dashboard import create_app
from dashboard.panels import PANELS, events
from instrument.store import reader
from tests.dashboard import dashcall, stores

pytestmark = pytest.mark.slow  # servers and stores in subprocesses: in make test, not in make test-fast


@pytest.fixture
def logdir(tmp_path):
    stores.write_run(str(tmp_path / "a"), steps=30)
    stores.write_run(str(tmp_path / "b"), steps=12, events=[stores.nonfinite_event(4, "1")])
    os.utime(tmp_path / "b" / "avionics.db")  # b is the newest
    return tmp_path


@pytest.fixture
def client(logdir):
    return create_app(str(logdir)).server.test_client()


def test_page_and_layout_load(client):
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200


def test_url_sets_the_view_and_back(client):
    out = dashcall.navigate(client, search="?run=a&run=b&step=7&layer=0.weight")
    assert out["view.data"] == {"runs": ["a", "b"], "step": 7, "layer": "0.weight",
                                 "follow": False}
    assert out["run-select.selected_row_ids"] == ["a", "b"]
    assert (out["step-slider.min"], out["step-slider.max"], out["step-slider.value"]) == (0, 29, 7)
    assert "url.search" not in out  # already the URL
    # the slider moves the step and the URL follows
    view = out["view.data"]
    moved = dashcall.navigate(client, search="?run=a&run=b&step=7&layer=0.weight", slider=11,
                              selected=["a", "b"], view=view, changed=["step-slider.value"])
    assert moved["view.data"]["step"] == 11
    assert moved["url.search"] == "?run=a&run=b&step=11&layer=0.weight"
    # the right end of the slider means "follow the last step": no step in the URL
    end = dashcall.navigate(client, slider=29, selected=["a", "b"], view=moved["view.data"],
                            changed=["step-slider.value"])
    assert end["view.data"]["step"] is None and "step=" not in end["url.search"]


def test_no_run_in_the_url_opens_the_newest(client):
    out = dashcall.navigate(client, search="")
    assert out["view.data"]["runs"] == ["b"] and out["url.search"] == "?run=b"


def test_no_url_update_while_playing(client):
    view = {"runs": ["a"], "step": 3, "layer": None}
    out = dashcall.navigate(client, search="?run=a&step=3", slider=5, selected=["a"],
                            view=view, playing=True, changed=["step-slider.value"])
    assert out["view.data"]["step"] == 5 and "url.search" not in out


def test_event_row_click_moves_step_and_highlights_layer(client):
    view = {"runs": ["b"], "step": None, "layer": None}
    row = {"id": {"type": events.ROW_TYPE, "index": json.dumps(["b", 1, 4, "1"])},
           "n_clicks": 1}
    out = dashcall.navigate(client, search="?run=b", selected=["b"], view=view, rows=[row],
                            changed=[json.dumps(row["id"], separators=(",", ":"),
                                                sort_keys=True) + ".n_clicks"])
    assert out["view.data"] == {"runs": ["b"], "step": 4, "layer": "1"}
    assert out["step-slider.value"] == 4 and out["url.search"] == "?run=b&step=4&layer=1"


def test_path_traversal_in_the_url_is_refused_with_a_message(client, logdir):
    secret = logdir.parent / "secret"
    stores.write_run(str(secret), steps=3)
    search = "?run=../secret&run=%2Fetc%2Fpasswd&run=a%2F..%2F..%2Fsecret"
    out = dashcall.navigate(client, search=search)
    view = out["view.data"]
    assert out["run-select.selected_row_ids"] == []  # never offered as a run
    heads = dashcall.poll(client, view)
    assert all("no run named" in h["error"] for h in heads.values())
    _, extra, _, _, _ = dashcall.panel(client, "header", view, heads)
    text = json.dumps(extra)
    assert text.count("no run named") == 3 and "unreadable" in text
    for panel in PANELS:  # every panel answers 200 with a message, none reads the store
        fig, _, _, _, _ = dashcall.panel(client, panel.NAME, view, heads)
        assert fig is None or "data" in fig


def test_poll_reports_heads_and_new_runs(client, logdir):
    view = {"runs": ["a"], "step": None, "layer": None}
    heads = dashcall.poll(client, view)
    assert heads == {"a": {"first": 0, "last": 29, "series": heads["a"]["series"],
                           "events": 0, "status": "finished"}}
    stores.write_run(str(logdir / "c"), steps=2)
    payload = {"output": ("..heads.data...run-select.data...run-select.selected_rows"
                          "...names.data...newest.data.."),
               "outputs": [{"id": "heads", "property": "data"},
                           {"id": "run-select", "property": "data"},
                           {"id": "run-select", "property": "selected_rows"},
                           {"id": "names", "property": "data"},
                           {"id": "newest", "property": "data"}],
               "inputs": [{"id": "tick", "property": "n_intervals", "value": 2}],
               "state": [{"id": "view", "property": "data", "value": view},
                         {"id": "heads", "property": "data", "value": heads},
                         {"id": "run-select", "property": "data", "value": []},
                         {"id": "names", "property": "data", "value": ["a", "b"]}],
               "changedPropIds": ["tick.n_intervals"]}
    import time
    time.sleep(2.1)  # the run list is re-scanned every RUN_LIST_TTL_S
    _, body, _, _ = dashcall.post(client, payload)
    rows = body["response"]["run-select"]["data"]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [r["steps"] for r in rows] == [30, 12, 2] and rows[2]["status"] == "finished"
    assert (rows[1]["critical"], rows[1]["warning"]) == (1, 0)  # b: one NaN/Inf event
    assert body["response"]["names"]["data"] == ["a", "b", "c"]
    assert body["response"]["newest"]["data"] == "c"  # the run that appeared
    assert "heads" not in body["response"]  # unchanged heads are not sent


def test_pause_sets_max_intervals(logdir):
    app = create_app(str(logdir))
    assert app._avionics_pause(1) == (0, "Resume live", "button paused")
    assert app._avionics_pause(2) == (-1, "Pause live", "button")


def _damage(logdir, kind):
    run = logdir / "bad"
    db = run / "avionics.db"
    if kind == "missing":
        shutil.rmtree(run)
        run.mkdir()
        return None, "no avionics run at"
    if kind == "empty":
        db.write_bytes(b"")
        return None, "is empty"
    if kind == "corrupt":
        db.write_bytes(os.urandom(8192))
        return None, "not an SQLite database"
    if kind == "damaged":
        with open(db, "r+b") as fh:  # a valid header, a destroyed page further on
            fh.seek(4096)
            fh.write(b"\xff" * 4096 * 3)
        return None, "corrupt"
    if kind == "truncated":
        with open(db, "r+b") as fh:
            fh.truncate(os.path.getsize(db) // 2)
        return None, "corrupt or truncated"
    if kind == "newer-schema":
        conn = sqlite3.connect(db)
        conn.execute("UPDATE schema SET version = 99")
        conn.commit()
        conn.close()
        return None, "Upgrade avionics"
    if kind == "locked":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('x', '1')")
        return conn, "locked by another process"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "damaged", "truncated",
                                  "newer-schema", "locked"])
def test_bad_stores_give_a_message_never_a_500(logdir, kind, monkeypatch):
    monkeypatch.setattr(reader, "READ_BUSY_TIMEOUT_MS", 100)
    stores.write_run(str(logdir / "bad"), steps=300)
    app = create_app(str(logdir))
    client = app.server.test_client()
    app.catalog.ttl = 600  # keep the listing from before the damage, however slow the test
    assert "bad" in app.catalog.names()  # listed while it was still healthy
    hold, message = _damage(logdir, kind)
    try:
        view = {"runs": ["bad", "a"], "step": None, "layer": None}
        heads = dashcall.poll(client, view)
        assert message in heads["bad"]["error"] and "error" not in heads["a"]
        nav = dashcall.navigate(client, search="?run=bad&run=a")
        assert nav["step-slider.max"] == 29  # the healthy run still drives the slider
        _, extra, _, _, _ = dashcall.panel(client, "header", view, heads)
        assert message in json.dumps(extra)
        for panel in PANELS[1:]:
            fig, extra, state, _, _ = dashcall.panel(client, panel.NAME, view, heads)
            if getattr(panel, "GRAPH", True):  # GRAPH = False panels draw in their extra
                assert "data" in fig  # the healthy run is drawn, the bad one is skipped
        fig, extra, _, _, _ = dashcall.panel(client, "scalars", {**view, "runs": ["bad"]}, heads)
        assert "cannot be read" in fig["layout"]["meta"]["placeholder"]
        assert message in json.dumps(extra)
    finally:
        if hold is not None:
            hold.close()


def test_a_tick_with_nothing_new_sends_nothing(client):
    """The slider is not re-sent every tick, so a drag in progress is not disturbed."""
    view = {"runs": ["a"], "step": None, "layer": None}
    heads = dashcall.poll(client, view)
    out = dashcall.navigate(client, search="?run=a", selected=["a"], slider=29, heads=heads,
                            view=view, span=(0, 29), label="step 29 (latest)",
                            changed=["heads.data"])
    assert out == {}
    heads["a"]["last"] = 35  # the run advanced: the slider grows and, following, moves along
    out = dashcall.navigate(client, search="?run=a", selected=["a"], slider=29, heads=heads,
                            view=view, span=(0, 29), label="step 29 (latest)",
                            changed=["heads.data"])
    assert (out["step-slider.max"], out["step-slider.value"]) == (35, 35)
    assert "view.data" not in out and "url.search" not in out


def test_clicking_a_heatmap_row_selects_its_layer_and_keeps_the_step(client):
    view = {"runs": ["b"], "step": 6, "layer": None}
    gid = {"type": "panel-graph", "panel": "grad_norm"}
    click = {"points": [{"x": 3, "y": "2.weight", "z": 0.4, "curveNumber": 1}]}
    out = dashcall.navigate(client, search="?run=b&step=6", selected=["b"], view=view,
                            clicks=[("grad_norm", click)],
                            changed=[json.dumps(gid, separators=(",", ":"), sort_keys=True)
                                     + ".clickData"])
    assert out["view.data"]["layer"] == "2.weight" and out["view.data"]["step"] == 6
    assert out["url.search"] == "?run=b&step=6&layer=2.weight"
    line = {"points": [{"x": 3, "y": 0.5, "curveNumber": 0}]}  # a line: not a layer
    out = dashcall.navigate(client, search="?run=b&step=6", selected=["b"], view=view,
                            clicks=[("grad_norm", line)],
                            changed=[json.dumps(gid, separators=(",", ":"), sort_keys=True)
                                     + ".clickData"])
    assert "view.data" not in out or out["view.data"]["layer"] is None
