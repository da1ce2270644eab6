"""Browser: the health strip names a run's findings on the first screen (1600 x 1000), ranked
(cause before consequence) and grouped (one code across layers); *show* moves the replay step to
the finding, highlights its layer and scrolls to the panel with its evidence."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from instrument.store.records import Event
from tests.dashboard import stores

pytestmark = pytest.mark.browser

FINDINGS_JS = """
return [...document.querySelectorAll('#findings > .finding')].map(e => {
  const r = e.getBoundingClientRect();
  return {code: e.dataset.code, text: e.querySelector('.finding-code').textContent,
          bottom: r.bottom + window.scrollY};
});
"""


def _events() -> list:
    dead = [Event("dead_units", "warning", f"units of {m} never fire", step=20 + i, layer=m)
            for i, m in enumerate(["1"] + [f"m{i}" for i in range(36)])]
    cause = Event("vanishing_gradients", "warning", "gradients vanish below layer 2", step=30,
                  evidence={"explains": ["dead_units@20:1"]})
    note = Event("clipping_saturated", "info", "clipping at every step", step=5)
    return dead + [cause, note]


def test_health001_findings_on_the_first_screen_ranked_grouped_and_shown(dash_duo, tmp_path):
    stores.write_run(str(tmp_path / "sick"), steps=40, events=_events())
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.start_server(create_app(str(tmp_path)))
    until(lambda: dash_duo.driver.execute_script(FINDINGS_JS), timeout=30,
          msg="the health strip never listed the findings")
    rows = dash_duo.driver.execute_script(FINDINGS_JS)
    # ranked: the cause before its consequence although found later, the info last; grouped
    assert [r["code"] for r in rows] == ["vanishing_gradients", "dead_units",
                                         "clipping_saturated"]
    assert rows[1]["text"] == "dead_units: 37 layers"
    height = dash_duo.driver.execute_script("return window.innerHeight")
    assert height <= 1000 and all(r["bottom"] <= height for r in rows), rows
    counts = {e.text for e in dash_duo.find_elements(".health-run .count")}
    assert counts == {"0 critical", "2 warning", "1 info"}
    # show the dead units: slider to step 20, layer "1" highlighted, scrolled to activations
    dash_duo.find_elements("#findings > .finding .button.show")[1].click()
    until(lambda: "layer=1" in dash_duo.driver.current_url
          and "step=20" in dash_duo.driver.current_url, timeout=20,
          msg="show did not move the view to the finding")
    top = dash_duo.driver.execute_script(
        "return document.getElementById('panel-activations').getBoundingClientRect().top")
    assert 0 <= top < 200, f"activations panel not scrolled into view (top {top})"
    assert dash_duo.get_logs() == [], "browser console should contain no error"
