"""Browser: the runs table with 500 runs: every run listed (paged), filtered by name, findings
by severity per run, and ticking two rows compares them."""

from __future__ import annotations

import shutil

import pytest
from dash.testing.wait import until

from dashboard import create_app
from instrument.store.records import Event
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser
RUNS = 500

PAGES_JS = """
const p = document.querySelector('#run-select .page-number .last-page');
return p ? p.textContent : null;
"""

CELLS_JS = """
const tr = [...document.querySelectorAll('#run-select tbody tr')]
  .find(r => (r.querySelector('td[data-dash-column="name"]') || {}).textContent === arguments[0]);
if (!tr) { return null; }
const out = {};
for (const td of tr.querySelectorAll('td[data-dash-column]')) {
  out[td.dataset.dashColumn] = td.textContent;
}
return out;
"""


@pytest.mark.timeout(1200)  # writes 500 real stores first: minutes on a busy 2-core machine
def test_table001_five_hundred_runs(dash_duo, tmp_path):
    logdir = tmp_path / "logs"
    sick = [Event("dead_units", "warning", "dead", step=3, layer="1"),
            stores.nonfinite_event(5)]
    stores.write_run(str(tmp_path / "plain"), steps=12)
    stores.write_run(str(tmp_path / "sick"), steps=7, events=sick)
    for i in range(RUNS):  # real stores, copied (writing 500 through the writer takes minutes)
        source = tmp_path / ("sick" if i % 50 == 7 else "plain")
        shutil.copytree(source, logdir / f"run-{i:04d}")
    app = create_app(str(logdir))
    dash_duo.start_server(app)
    dash_duo.wait_for_element("#runs-summary", timeout=60)
    browser.open_runs(dash_duo)
    until(lambda: dash_duo.driver.execute_script(PAGES_JS), timeout=60, msg="no table pages")
    per_page = len(browser.table_rows(dash_duo))
    pages = int(dash_duo.driver.execute_script(PAGES_JS))
    assert per_page > 0 and pages == -(-RUNS // per_page)
    # filter by name, read a row: steps, findings by severity
    browser.filter_runs(dash_duo, "run-0007")
    until(lambda: browser.table_rows(dash_duo) == ["run-0007"], timeout=20,
          msg="the name filter did not narrow the table to one run")
    cells = dash_duo.driver.execute_script(CELLS_JS, "run-0007")
    assert (cells["steps"], cells["critical"], cells["warning"], cells["info"]) == (
        "7", "1", "1", "0"), cells
    assert cells["status"] == "finished" and cells["optimizer"] == "SGD" and cells["lr"] == "0.1"
    # tick two runs: both are shown, compared
    browser.tick_run(dash_duo, "run-0007")
    browser.tick_run(dash_duo, "run-0123")
    until(lambda: {"run-0007", "run-0123"} <= set(
        (dash_duo.driver.current_url.split("?", 1) + [""])[1].replace("run=", "").split("&")),
        timeout=30, msg="ticking two rows did not select both runs")
    assert dash_duo.get_logs() == [], "browser console should contain no error"
