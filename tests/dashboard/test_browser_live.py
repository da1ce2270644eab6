"""Browser: the page is open before a real demo training run starts; the new run appears in
the runs table without a restart, and once selected its new points keep arriving."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start_demo(run_dir: str) -> subprocess.Popen:
    """The demo, slowed down so that it trains for several seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "demos", "train_digits.py"),
                             "--run", run_dir, "--steps", "800", "--delay", "0.04"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _options(dash_duo) -> list:
    """Runs the runs table lists under the name filter "live"."""
    browser.filter_runs(dash_duo, "live")
    return browser.table_rows(dash_duo)


def _live_x(dash_duo, run: str) -> list:
    fig = browser.graph(dash_duo, "scalars") or {"data": []}
    for t in fig["data"]:
        live = (t.get("meta") or {}).get("live") or {}
        if live.get("run") == run and live.get("key") == "loss" and not live.get("ema"):
            return t["x"]
    return []


def assert_points_keep_arriving(dash_duo, demo, run: str) -> None:
    """While ``demo`` trains, the drawn loss of ``run`` gains 20 points, with no step missing
    or doubled."""
    first = len(_live_x(dash_duo, run))
    assert demo.poll() is None, "the demo finished before the test could watch it"
    until(lambda: len(_live_x(dash_duo, run)) >= first + 20, timeout=60,
          msg="no new loss points arrived while the demo trained")
    xs = _live_x(dash_duo, run)
    assert xs == list(range(xs[0], xs[0] + len(xs))), "a step is missing or doubled"


def test_live001_new_run_appears_and_points_arrive(dash_duo, tmp_path):
    stores.write_run(str(tmp_path / "old"), steps=10)
    dash_duo.start_server(create_app(str(tmp_path), poll_interval_ms=500))
    # the URL names the run, so the page does not follow new runs by itself (that is
    # test_browser_follow's case): here the new run must be listed and picked
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/?run=old", timeout=30)
    dash_duo.wait_for_element("#panel-scalars .js-plotly-plot", timeout=30)
    until(lambda: _live_x(dash_duo, "old"), timeout=30, msg="the old run was not drawn")
    demo = _start_demo(str(tmp_path / "live"))
    try:
        until(lambda: "live" in _options(dash_duo), timeout=90, poll=1,
              msg="the new run never appeared in the run list")
        browser.tick_run(dash_duo, "live")
        until(lambda: len(_live_x(dash_duo, "live")) > 0, timeout=60,
              msg="the live run's loss never appeared")
        assert_points_keep_arriving(dash_duo, demo, "live")
        header = browser.text(dash_duo, browser.element_id("panel-extra", "header"))
        assert "running" in header
    finally:
        demo.terminate()
        demo.wait(timeout=30)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
