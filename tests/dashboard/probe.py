"""Calling the app's callbacks over HTTP as the browser does (no browser), and measuring the
refresh budget of the issue: each refresh <= 300 ms of server time and <= 1 MB sent.

Used by the tests and by ``benchmarks/dashboard_refresh.py``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time

from dashboard.layout import BODY, EXTRA, FILTER, GRAPH, OPTIONS, STATE, VISIBLE, pid

BUDGET_SECONDS = 0.3
"""Most server time one refresh may take (median over repeated calls)."""

BUDGET_BYTES = 1_000_000
"""Most bytes one refresh may send."""

LIVE_STEPS = 1000
"""Steps a simulated live poll finds new (one second of a run doing 1,000 steps/s)."""

PANEL_OUTPUT = ('..{"panel":["MATCH"],"type":"panel-graph"}.figure'
                '...{"panel":["MATCH"],"type":"panel-extra"}.children'
                '...{"panel":["MATCH"],"type":"panel-state"}.data'
                '...{"panel":["MATCH"],"type":"panel-graph"}.style'
                '...{"panel":["MATCH"],"type":"panel-body"}.className..')


def post(client, payload: dict) -> tuple:
    """POST one callback request; returns ``(status, response dict or None, bytes, seconds)``."""
    t = time.perf_counter()
    r = client.post("/_dash-update-component", json=payload)
    elapsed = time.perf_counter() - t
    body = r.get_json() if r.status_code == 200 else None
    return r.status_code, body, len(r.data), elapsed


def panel(client, name: str, view: dict, heads=None, options=(), state=None,
          changed=("view.data",), search: str = "") -> tuple:
    """Refresh panel ``name``; returns ``(figure, extra, state, bytes, seconds)``.

    ``figure`` is a dict, ``{"__patch__": operations}`` for a Patch, or None if unchanged.
    """
    payload = {
        "output": PANEL_OUTPUT,
        "outputs": [{"id": pid(k, name), "property": p}
                    for k, p in ((GRAPH, "figure"), (EXTRA, "children"), (STATE, "data"),
                                 (GRAPH, "style"), (BODY, "className"))],
        "inputs": [{"id": "view", "property": "data", "value": view},
                   {"id": "heads", "property": "data", "value": heads},
                   {"id": pid(OPTIONS, name), "property": "value", "value": list(options)},
                   {"id": pid(FILTER, name), "property": "value", "value": search},
                   {"id": pid(VISIBLE, name), "property": "data", "value": True}],
        "state": [{"id": pid(STATE, name), "property": "data", "value": state}],
        "changedPropIds": list(changed),
    }
    status, body, size, elapsed = post(client, payload)
    if status not in (200, 204):
        raise AssertionError(f"panel {name}: HTTP {status}")
    if status == 204:
        return None, None, state, size, elapsed
    resp = body["response"]

    def get(kind, prop):
        return resp.get(json.dumps(pid(kind, name), separators=(",", ":"), sort_keys=True),
                        {}).get(prop)

    fig = get(GRAPH, "figure")
    if isinstance(fig, dict) and fig.get("__dash_patch_update"):
        fig = {"__patch__": fig["operations"]}
    return fig, get(EXTRA, "children"), get(STATE, "data") or state, size, elapsed


def poll(client, view: dict, heads=None, options=None, timed: bool = False, names=None):
    """One live tick; returns the new heads (the old ones when unchanged), and with ``timed``
    also ``(bytes, seconds)``."""
    payload = {
        "output": ("..heads.data...run-select.data...run-select.selected_rows...names.data"
                   "...newest.data.."),
        "outputs": [{"id": "heads", "property": "data"},
                    {"id": "run-select", "property": "data"},
                    {"id": "run-select", "property": "selected_rows"},
                    {"id": "names", "property": "data"}, {"id": "newest", "property": "data"}],
        "inputs": [{"id": "tick", "property": "n_intervals", "value": 1}],
        "state": [{"id": "view", "property": "data", "value": view},
                  {"id": "heads", "property": "data", "value": heads},
                  {"id": "run-select", "property": "data", "value": options},
                  {"id": "names", "property": "data", "value": names}],
        "changedPropIds": ["tick.n_intervals"],
    }
    status, body, size, elapsed = post(client, payload)
    if status not in (200, 204):
        raise AssertionError(f"poll: HTTP {status}")
    new = heads if status == 204 else body["response"].get("heads", {}).get("data", heads)
    return (new, size, elapsed) if timed else new


def rewind(state: dict, steps: int = LIVE_STEPS) -> dict:
    """A panel state as if the browser had last seen the run ``steps`` steps ago (whole
    buckets), so that the next poll appends them: a live refresh on a finished run."""
    state = copy.deepcopy(state)
    for entry in state.get("live", []):
        tag = entry[1]
        if tag["cursor"] is None:
            continue
        buckets = max(1, -(-steps // tag["size"]))
        tag["cursor"] -= buckets * tag["size"]
        entry[2] = max(0, entry[2] - buckets)
    for head in (state.get("heads") or {}).values():
        if head.get("last") is not None:
            head["last"] -= steps  # the header then sees the run advance, as in a live tick
    return state


def measure(run_dir: str, repeat: int = 5) -> list:
    """Time every refresh kind of every panel on the run in ``run_dir``.

    Returns:
        One dict per refresh: ``name``, ``median_s``, ``max_s``, ``bytes`` (the largest
        response), ``ok`` (within both budgets).
    """
    from dashboard import create_app
    from dashboard.panels import PANELS

    client = create_app(os.path.dirname(os.path.abspath(run_dir))).server.test_client()
    view = {"runs": [os.path.basename(os.path.normpath(run_dir))], "step": None, "layer": None}
    rows = []

    def record(name, calls):
        seconds = [c[1] for c in calls]
        size = max(c[0] for c in calls)
        med = statistics.median(seconds)
        rows.append({"name": name, "median_s": med, "max_s": max(seconds), "bytes": size,
                     "ok": med <= BUDGET_SECONDS and size <= BUDGET_BYTES})

    heads = poll(client, view)
    record("poll", [poll(client, view, timed=True)[1:] for _ in range(repeat)])
    last = max(h["last"] for h in heads.values())
    for p in PANELS:
        renders = [panel(client, p.NAME, view, heads) for _ in range(repeat)]
        record(f"{p.NAME}: full render", [r[3:] for r in renders])
        state = renders[-1][2]
        moved = {**view, "step": last // 2}
        record(f"{p.NAME}: move replay step", [
            panel(client, p.NAME, moved, heads, state=state)[3:] for _ in range(repeat)])
        record(f"{p.NAME}: live append", [
            panel(client, p.NAME, view, heads, state=rewind(state),
                  changed=("heads.data",))[3:] for _ in range(repeat)])
    return rows
