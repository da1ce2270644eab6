"""The dashboard and its command never import torch (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.dashboard import stores

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import dashboard
from dashboard import create_app
from dashboard.panels import PANELS
from instrument.commands import dashboard as command
from instrument import cli
from tests.dashboard import dashcall
app = create_app(sys.argv[2])
client = app.server.test_client()
view = {"runs": ["r"], "step": 3, "layer": None}
heads = dashcall.poll(client, view)
for panel in PANELS:
    dashcall.panel(client, panel.NAME, view, heads)
try:
    cli.main(["dashboard", "--help"])
except SystemExit:
    pass
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print("no torch")
"""


def test_dashboard_never_imports_torch(tmp_path):
    stores.write_run(str(tmp_path / "r"), steps=10)
    out = subprocess.run([sys.executable, "-c", SCRIPT, ROOT, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch")
