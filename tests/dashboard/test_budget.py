"""The issue's refresh budget on a synthetic run of 10^6 steps x 200 layers, written through the
real store writer: every refresh (poll, each panel's full render, replay step move and live
append) takes <= 300 ms of server time (median of 5 calls) and sends <= 1 MB.

Writing the run takes several minutes the first time; it is cached between sessions (see
:func:`tests.dashboard.synthetic.cached`, ``$AVIONICS_BENCH_DIR``).
"""

from __future__ import annotations

import pytest

from dashboard import settings
from instrument.store.reader import load
from tests.dashboard import probe
from tests.dashboard.synthetic import cached

STEPS, LAYERS = 1_000_000, 200


@pytest.fixture(scope="session")
def big_run():
    return cached(STEPS, LAYERS)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_refresh_budget_at_a_million_steps(big_run):
    run = load(big_run, integrity=False)
    assert run.step_range() == (0, STEPS - 1)
    assert len(run.layer_names("grad_norm")) == LAYERS
    rows = probe.measure(big_run, repeat=5)
    kinds = {r["name"].split(": ")[-1] for r in rows}
    assert kinds == {"poll", "full render", "move replay step", "live append"}
    over = [r for r in rows if not r["ok"]]
    assert not over, "over budget: " + ", ".join(
        f"{r['name']} {r['median_s'] * 1e3:.0f} ms {r['bytes'] / 1e3:.0f} KB" for r in over)
    appends = [r for r in rows if r["name"].endswith("live append")]
    assert any(r["bytes"] > 1000 for r in appends)  # something was really appended


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_trace_within_the_point_budgets(big_run):
    import os

    from dashboard import create_app
    from dashboard.panels import PANELS

    client = create_app(os.path.dirname(big_run)).server.test_client()
    view = {"runs": ["run"], "step": None, "layer": None}
    heads = probe.poll(client, view)
    for panel in PANELS:
        fig, _, _, _, _ = probe.panel(client, panel.NAME, view, heads)
        if not fig or "data" not in fig:
            continue
        cells = 0
        for trace in fig["data"]:
            if trace["type"] == "heatmap":
                rows, cols = (int(d) for d in trace["z"]["shape"].split(","))
                assert cols <= settings.MAX_HEATMAP_COLUMNS
                cells += rows * cols
            elif trace["type"] == "scatter" and "live" in (trace.get("meta") or {}):
                assert len(trace["x"]) <= settings.MAX_TRACE_POINTS
        assert cells <= settings.MAX_FIGURE_CELLS, panel.NAME
