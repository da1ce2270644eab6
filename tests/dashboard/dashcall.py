"""Calling the app's callbacks over HTTP, as the browser does, without a browser."""

from __future__ import annotations

from tests.dashboard.probe import panel, poll, post  # noqa: F401  (re-exported for the tests)

NAV_OUTPUT = ("..view.data...run-select.selected_row_ids...run-select.selected_rows"
              "...step-slider.min...step-slider.max"
              "...step-slider.value...step-slider.marks...step-label.children...url.search..")
NAV_OUTPUTS = [("view", "data"), ("run-select", "selected_row_ids"),
               ("run-select", "selected_rows"), ("step-slider", "min"),
               ("step-slider", "max"), ("step-slider", "value"), ("step-slider", "marks"),
               ("step-label", "children"), ("url", "search")]


def navigate(client, *, search="", selected=None, slider=None, rows=(), heads=None,
             playing=False, view=None, changed=("url.search",), span=(None, None),
             label=None, newest=None, clicks=()) -> dict:
    """One call of the navigation callback; returns ``{"view.data": ..., "url.search": ...}``
    for the outputs it changed (missing keys: no_update)."""
    payload = {
        "output": NAV_OUTPUT,
        "outputs": [{"id": i, "property": p} for i, p in NAV_OUTPUTS],
        "inputs": [{"id": "url", "property": "search", "value": search},
                   {"id": "run-select", "property": "selected_row_ids", "value": selected},
                   {"id": "step-slider", "property": "value", "value": slider},
                   [{"id": r["id"], "property": "n_clicks", "value": r["n_clicks"]}
                    for r in rows],
                   {"id": "heads", "property": "data", "value": heads},
                   {"id": "playing", "property": "data", "value": playing},
                   {"id": "newest", "property": "data", "value": newest},
                   [{"id": {"type": "panel-graph", "panel": p}, "property": "clickData",
                     "value": v} for p, v in clicks]],
        "state": [{"id": "view", "property": "data", "value": view},
                  {"id": "step-slider", "property": "min", "value": span[0]},
                  {"id": "step-slider", "property": "max", "value": span[1]},
                  {"id": "step-label", "property": "children", "value": label}],
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
