"""Browser: the layer-group picker on a real run of a GPT-shaped model (repeated blocks
``h.0``, ``h.1``, ...): picking ``h.1`` leaves exactly h.1's rows in the per-layer heatmaps,
of both compared runs; clearing it brings every layer back."""

from __future__ import annotations

import pytest
import torch
from dash.testing.wait import until

import instrument
from benchmarks.models import GPT
from dashboard import create_app
from instrument.store.reader import load

pytestmark = pytest.mark.browser

HEAT_JS = """
const el = document.getElementById(JSON.stringify({panel: arguments[0], type: 'panel-graph'}));
const gd = el && el.querySelector('.js-plotly-plot');
if (!gd || !gd.data) { return null; }
return gd.data.filter(t => t.type === 'heatmap' && t.name !== 'zero').map(t => t.y);
"""


def train_gpt(run_dir: str, steps: int = 4, blocks: int = 3, seed: int = 0) -> None:
    """A few steps of benchmarks' nanoGPT-shaped model (tiny) through ``instrument.watch``."""
    torch.manual_seed(seed)
    model = GPT(blocks=blocks, d=8, heads=2, vocab=16, ctx=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with instrument.watch(model, opt, run=run_dir, strict=True) as mon:
        for _ in range(steps):
            idx = torch.randint(0, 16, (2, 5))
            loss = model(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)


def rows(dash_duo, panel: str):
    return dash_duo.driver.execute_script(HEAT_JS, panel)


def test_pick_block_h1_leaves_only_its_rows(dash_duo, tmp_path):
    train_gpt(str(tmp_path / "gpt_a"), seed=0)
    train_gpt(str(tmp_path / "gpt_b"), seed=1, blocks=2)
    names = load(str(tmp_path / "gpt_a")).layer_names("grad_norm")
    h1 = [n for n in names if n.startswith("h.1.")]  # brute force: by name
    assert len(h1) >= 8 and len(h1) < len(names)
    dash_duo.start_server(create_app(str(tmp_path)))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=gpt_a&run=gpt_b")
    until(lambda: (rows(dash_duo, "grad_norm") or []) and len(rows(dash_duo, "grad_norm")) == 2,
          timeout=60, msg="the grad-norm heatmaps of both runs are not drawn")
    assert sorted(rows(dash_duo, "grad_norm")[0]) == sorted(names)

    dash_duo.find_element("#layer-group").click()
    dash_duo.find_element(".dash-dropdown-search").send_keys("path h.1 (")
    option = dash_duo.find_element(".dash-dropdown-option")
    assert option.text.startswith("path h.1 ("), option.text
    option.click()
    until(lambda: [sorted(y) for y in rows(dash_duo, "grad_norm") or []] == [sorted(h1)] * 2,
          timeout=60, msg="picking h.1 must leave exactly h.1's layers in both heatmaps")
    box = dash_duo.find_element('[id=\'{"panel":"grad_norm","type":"panel-filter"}\']')
    assert box.get_attribute("value") == r"^h\.1(\.|$)"
    # the activation heatmaps are named by module: h.1's modules only
    until(lambda: all(y and all(n.startswith("h.1.") for n in y)
                      for y in rows(dash_duo, "activations") or [[]]), timeout=60)

    dash_duo.find_element("#layer-group .dash-dropdown-clear").click()
    until(lambda: [sorted(y) for y in rows(dash_duo, "grad_norm") or []][:1] == [sorted(names)],
          timeout=60, msg="clearing the picker must bring every layer back")
    assert dash_duo.get_logs() == [], "browser console should contain no error"
