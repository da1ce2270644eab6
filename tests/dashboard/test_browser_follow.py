"""Browser: a page opened before training starts shows the new run at once, live, without a
reload or a click (a page whose URL names no run follows the newest run)."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser
from tests.dashboard.test_browser_live import _live_x, _start_demo, assert_points_keep_arriving

pytestmark = pytest.mark.browser


def test_follow001_page_opened_before_training_shows_the_new_run_live(dash_duo, tmp_path):
    dash_duo.start_server(create_app(str(tmp_path), poll_interval_ms=500))
    dash_duo.wait_for_element("#panel-health", timeout=30)
    until(lambda: "No run selected" in browser.text(
        dash_duo, browser.element_id("panel-extra", "health")), timeout=30,
        msg="the empty page did not say that no run exists yet")
    demo = _start_demo(str(tmp_path / "live"))
    try:
        until(lambda: len(_live_x(dash_duo, "live")) > 0, timeout=90, poll=1,
              msg="the new run was not shown without a click")
        assert_points_keep_arriving(dash_duo, demo, "live")
    finally:
        demo.terminate()
        demo.wait(timeout=30)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
