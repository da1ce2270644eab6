"""Browser: a corrupt store and a path-traversal attempt give a clear message in the page,
never a traceback, a 500 or a console error; healthy runs beside them still draw."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser


def _header(dash_duo):
    return browser.text(dash_duo, browser.element_id("panel-extra", "header"))


def test_badstore001_corrupt_store_and_traversal(dash_duo, tmp_path):
    logdir = tmp_path / "logs"
    stores.write_run(str(logdir / "good"), steps=20)
    (logdir / "broken").mkdir(parents=True)
    (logdir / "broken" / "avionics.db").write_bytes(b"\x00garbage, not a database" * 500)
    stores.write_run(str(tmp_path / "secret"), steps=5)  # beside the log directory
    dash_duo.start_server(create_app(str(logdir)))

    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=broken&run=good")
    until(lambda: "not an SQLite database" in _header(dash_duo), timeout=30,
          msg="no clear message for the corrupt store")
    assert "unreadable" in _header(dash_duo) and "Traceback" not in _header(dash_duo)
    until(lambda: (browser.graph(dash_duo, "scalars") or {"data": []})["data"], timeout=30)
    runs = {(t.get("meta") or {}).get("live", {}).get("run")
            for t in browser.graph(dash_duo, "scalars")["data"]}
    assert runs == {"good"}, "the healthy run must still be drawn"

    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=..%2Fsecret")
    until(lambda: "no run named '../secret'" in _header(dash_duo), timeout=30,
          msg="no clear message for a run outside the log directory")
    until(lambda: "cannot be read" in " ".join(
        (browser.graph(dash_duo, "scalars") or {"annotations": []})["annotations"]), timeout=30)
    assert not browser.graph(dash_duo, "scalars")["data"]
    assert dash_duo.get_logs() == [], "browser console should contain no error"
