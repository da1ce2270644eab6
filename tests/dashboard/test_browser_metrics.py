"""Browser: every metric the user passed to monitor.log() is drawn and avionics' diagnosis facts
are not; a run that went NaN shows its NaN markers and a truthful message (real runs)."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser, real_runs

pytestmark = pytest.mark.browser

# every card holds a 'loading…' placeholder until its first draw (assets/lazy.js): not a message
PLACEHOLDERS_JS = """
return [...document.querySelectorAll('.panel')].filter(p => p.offsetParent !== null)
  .map(p => [p.id, (p.querySelector('.js-plotly-plot') || {}).layout])
  .filter(([id, l]) => l && l.meta && l.meta.placeholder && l.meta.placeholder !== 'loading…')
  .map(([id, l]) => [id, l.meta.placeholder]);
"""


def _titles(dash_duo) -> list:
    fig = browser.graph(dash_duo, "scalars") or {"annotations": []}
    return [t.split("  ·  ")[0] for t in fig["annotations"]]


def test_metrics001_all_nine_user_metrics_drawn_no_diagnosis_facts(dash_duo, tmp_path):
    real_runs.train(str(tmp_path / "nine"), steps=20)
    dash_duo.start_server(create_app(str(tmp_path)))
    until(lambda: len(_titles(dash_duo)) >= 10, timeout=30, msg="the metrics were not drawn")
    titles = _titles(dash_duo)
    assert titles == ["loss"] + sorted(real_runs.METRICS), titles
    # the search box narrows them (a regex over the keys)
    box = dash_duo.find_element('[id*="panel-filter"][id*="scalars"]')
    box.send_keys("metric_[12]\n")
    until(lambda: _titles(dash_duo) == ["metric_1", "metric_2"], timeout=20,
          msg="the search box did not filter the metrics")
    assert dash_duo.get_logs() == [], "browser console should contain no error"


def test_nan001_nan_run_shows_markers_and_a_truthful_message(dash_duo, tmp_path):
    real_runs.train(str(tmp_path / "nan"), steps=20, nan_at=0)
    dash_duo.start_server(create_app(str(tmp_path)))
    banner = "const b = document.querySelector('.banner-nonfinite'); return b && b.textContent;"
    until(lambda: dash_duo.driver.execute_script(banner), timeout=30, msg="no NaN/Inf banner")
    assert "NaN/Inf from step 0" in dash_duo.driver.execute_script(banner)

    def crosses():
        fig = browser.graph(dash_duo, "scalars") or {"data": []}
        return [t for t in fig["data"] if (t.get("meta") or {}).get("nonfinite") == "loss"]

    until(crosses, timeout=30, msg="no NaN marker on the loss plot")
    assert crosses()[0]["x"] == [0]
    until(lambda: dict(dash_duo.driver.execute_script(PLACEHOLDERS_JS)).get(
        "panel-update_ratio"), timeout=30, msg="the update/weight panel drew no message")
    messages = dict(dash_duo.driver.execute_script(PLACEHOLDERS_JS))
    assert "went NaN/Inf at step 0" in messages["panel-update_ratio"]
    for panel, text in messages.items():
        assert "switched off" not in text and "must both run" not in text, (panel, text)
