"""Browser: a real demo training run writes to a temporary log directory while the page is open;
new points must arrive in the browser without a reload."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser

pytestmark = pytest.mark.browser
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def training(tmp_path):
    """The demo, slowed down so it runs for several seconds, writing to tmp_path/live."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "demos", "train_digits.py"),
                             "--run", str(tmp_path / "live"), "--steps", "400",
                             "--delay", "0.04"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    until(lambda: os.path.exists(tmp_path / "live" / "avionics.db") or proc.poll() is not None,
          timeout=60)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def test_live001_points_arrive_while_training(dash_duo, tmp_path, training):
    app = create_app(str(tmp_path), poll_interval_ms=500)
    dash_duo.start_server(app)
    dash_duo.wait_for_element("#panel-scalars .js-plotly-plot", timeout=20)
    until(lambda: browser.live_points(dash_duo, "scalars", "loss") > 0, timeout=30,
          msg="the loss never appeared")
    first = browser.live_points(dash_duo, "scalars", "loss")
    assert training.poll() is None, "the demo finished before the test could watch it"
    until(lambda: browser.live_points(dash_duo, "scalars", "loss") >= first + 20, timeout=30,
          msg="no new loss points arrived while the demo trained")
    # appended steps are increasing and unique: no lost or doubled batch
    fig = browser.graph(dash_duo, "scalars")
    xs = next(t["x"] for t in fig["data"] if (t["meta"] or {}).get("live", {}).get("key") == "loss")
    assert xs == sorted(set(xs)), "duplicated or unordered steps in the live loss line"
    assert xs == list(range(xs[0], xs[0] + len(xs))), "a step is missing from the live line"
    header = browser.text(dash_duo, browser.element_id("panel-extra", "header"))
    assert "running" in header
    assert dash_duo.get_logs() == [], "browser console should contain no error"
