"""Calling the app's callbacks over HTTP, as the browser does, without a browser."""

from __future__ import annotations

import json
import time

from dashboard.layout import EXTRA, GRAPH, OPTIONS, STATE, pid

PANEL_OUTPUT = ('..{"panel":["MATCH"],"type":"panel-graph"}.figure'
                '...{"panel":["MATCH"],"type":"panel-extra"}.children'
                '...{"panel":["MATCH"],"type":"panel-state"}.data..')


def post(client, payload: dict) -> tuple:
    """POST one callback request; returns ``(status, response dict or None, bytes, seconds)``."""
    t = time.perf_counter()
    r = client.post("/_dash-update-component", json=payload)
    elapsed = time.perf_counter() - t
    body = r.get_json() if r.status_code == 200 else None
    return r.status_code, body, len(r.data), elapsed


def panel(client, name: str, view: dict, heads=None, options=(), state=None,
          changed=("view.data",)) -> tuple:
    """Refresh panel ``name``; returns ``(figure, extra, state, bytes, seconds)``.

    ``figure`` is a dict, or ``{"__patch__": operations}`` for a Patch, or None if unchanged.
    """
    payload = {
        "output": PANEL_OUTPUT,
        "outputs": [{"id": pid(k, name), "property": p}
                    for k, p in ((GRAPH, "figure"), (EXTRA, "children"), (STATE, "data"))],
        "inputs": [{"id": "view", "property": "data", "value": view},
                   {"id": "heads", "property": "data", "value": heads},
                   {"id": pid(OPTIONS, name), "property": "value", "value": list(options)}],
        "state": [{"id": pid(STATE, name), "property": "data", "value": state}],
        "changedPropIds": list(changed),
    }
    status, body, size, elapsed = post(client, payload)
    assert status in (200, 204), f"panel {name}: HTTP {status}"
    if status == 204:
        return None, None, state, size, elapsed
    resp = body["response"]
    key = json.dumps(pid(GRAPH, name), separators=(",", ":"), sort_keys=True)

    def get(kind, prop):
        k = json.dumps(pid(kind, name), separators=(",", ":"), sort_keys=True)
        return resp.get(k, {}).get(prop)

    fig = resp.get(key, {}).get("figure")
    if isinstance(fig, dict) and fig.get("__dash_patch_update"):
        fig = {"__patch__": fig["operations"]}
    return fig, get(EXTRA, "children"), get(STATE, "data"), size, elapsed


def poll(client, view: dict, heads=None, options=None) -> dict:
    """One live tick; returns the new heads (or the old ones when unchanged)."""
    payload = {
        "output": "..heads.data...run-select.options..",
        "outputs": [{"id": "heads", "property": "data"},
                    {"id": "run-select", "property": "options"}],
        "inputs": [{"id": "tick", "property": "n_intervals", "value": 1}],
        "state": [{"id": "view", "property": "data", "value": view},
                  {"id": "heads", "property": "data", "value": heads},
                  {"id": "run-select", "property": "options", "value": options}],
        "changedPropIds": ["tick.n_intervals"],
    }
    status, body, _, _ = post(client, payload)
    assert status in (200, 204)
    if status == 204:
        return heads
    return body["response"].get("heads", {}).get("data", heads)


NAV_OUTPUT = ("..view.data...run-select.value...step-slider.min...step-slider.max"
              "...step-slider.value...step-slider.marks...step-label.children...url.search..")
NAV_OUTPUTS = [("view", "data"), ("run-select", "value"), ("step-slider", "min"),
               ("step-slider", "max"), ("step-slider", "value"), ("step-slider", "marks"),
               ("step-label", "children"), ("url", "search")]


def navigate(client, *, search="", selected=None, slider=None, rows=(), heads=None,
             playing=False, view=None, changed=("url.search",)) -> dict:
    """One call of the navigation callback; returns ``{"view.data": ..., "url.search": ...}``
    for the outputs it changed (missing keys: no_update)."""
    payload = {
        "output": NAV_OUTPUT,
        "outputs": [{"id": i, "property": p} for i, p in NAV_OUTPUTS],
        "inputs": [{"id": "url", "property": "search", "value": search},
                   {"id": "run-select", "property": "value", "value": selected},
                   {"id": "step-slider", "property": "value", "value": slider},
                   [{"id": r["id"], "property": "n_clicks", "value": r["n_clicks"]}
                    for r in rows],
                   {"id": "heads", "property": "data", "value": heads},
                   {"id": "playing", "property": "data", "value": playing}],
        "state": [{"id": "view", "property": "data", "value": view}],
        "changedPropIds": list(changed),
    }
    status, body, _, _ = post(client, payload)
    assert status in (200, 204), f"navigate: HTTP {status}"
    if status == 204:
        return {}
    out = {}
    for cid, props in body["response"].items():
        for prop, value in props.items():
            out[f"{cid}.{prop}"] = value
    return out
