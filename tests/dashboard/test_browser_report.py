"""Browser: `avionics report RUN -o run.html` writes one self-contained file that opens from disk
(file://, no server) and shows the run's findings and its main panels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dash.testing.wait import until

from instrument.store.records import Event
from tests.dashboard import stores

pytestmark = pytest.mark.browser
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRAWN_JS = """
return [...document.querySelectorAll('.js-report-graph')].map(g => [g.closest('section').id,
  (g.data || []).length]);
"""


def test_report001_opens_from_disk_and_shows_the_findings(dash_duo, tmp_path):
    events = [Event("dead_units", "warning", f"units of {m} never fire", step=10 + i, layer=m)
              for i, m in enumerate(["0", "1", "2"])]
    events.append(stores.nonfinite_event(30))
    stores.write_run(str(tmp_path / "sick"), steps=40, events=events)
    out = tmp_path / "sick.html"
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "instrument.cli", "report",
                           str(tmp_path / "sick"), "-o", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert "<script src=" not in text and "http://" not in text.split("<body>")[1][:2000]
    dash_duo.driver.get(out.as_uri())
    until(lambda: dash_duo.driver.execute_script(DRAWN_JS), timeout=30, msg="nothing drawn")
    codes = dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('#findings > .finding')].map(e => "
        "[e.dataset.code, e.querySelector('.finding-code').textContent]);")
    assert codes == [["nonfinite", "nonfinite (1)"], ["dead_units", "dead_units: 3 layers"]]
    banner = dash_duo.driver.execute_script(
        "return document.querySelector('.banner-nonfinite').textContent")
    assert "NaN/Inf from step 30" in banner
    drawn = dict(dash_duo.driver.execute_script(DRAWN_JS))
    for panel in ("panel-scalars", "panel-grad_norm", "panel-update_ratio",
                  "panel-activations"):
        assert drawn.get(panel, 0) > 0, (panel, drawn)
    assert "panel-ranks" not in drawn  # not recorded: left out
    errors = [e for e in dash_duo.driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
