"""Screenshot of the dashboard on a real seeded-bug run, for the README (headless Chromium).

    python scripts/screenshot_dashboard.py        # trains demos/buggy.py, writes docs/dashboard.png
    python scripts/screenshot_dashboard.py --logdir runs --query "?run=buggy&step=150"

Needs Chromium and chromedriver on PATH (Debian: ``apt-get install chromium chromium-driver``)
and selenium (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1600
BUGS = ("--dead-relu", "--unshuffled")
"""Seeded bugs of demos/buggy.py: the health strip then has findings to rank and group."""
READY_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_demo(logdir: str, steps: int) -> None:
    """demos/buggy.py with :data:`BUGS`; it exits 1 when a finding is critical, which is fine."""
    subprocess.run([sys.executable, os.path.join(ROOT, "demos", "buggy.py"), *BUGS, "--run",
                    os.path.join(logdir, "buggy"), "--steps", str(steps)], check=False,
                   cwd=ROOT, stdout=subprocess.DEVNULL)


def wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the dashboard did not answer at {url}")


READY_JS = """
const graphs = [...document.querySelectorAll('.panel .dash-graph')]
  .filter(g => g.offsetParent !== null);
const drawn = graphs.filter(g => {
  const p = g.querySelector('.js-plotly-plot');
  return p && p.layout && !(p.layout.annotations || []).some(a => a.text === 'loading…');
});
return graphs.length > 0 && drawn.length === graphs.length;
"""


def screenshot(url: str, out: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WIDTH},1000", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(url)
        end = time.time() + READY_TIMEOUT_S
        while not driver.execute_script(READY_JS):
            if time.time() > end:
                raise TimeoutError("the panels did not finish drawing")
            time.sleep(0.3)
        # the mode bars (zoom, pan, ...) appear on hover in a real browser; not in a picture
        driver.execute_script("const s = document.createElement('style');"
                              "s.textContent = '.modebar-container {display: none !important}';"
                              "document.head.appendChild(s);")
        time.sleep(1.5)  # let plotly finish drawing
        height = driver.execute_script("return document.documentElement.scrollHeight")
        # the DevTools protocol captures the whole page, not just the window's viewport
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}})
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))
    finally:
        driver.quit()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    p.add_argument("--logdir", help="serve this log directory instead of training the demo")
    p.add_argument("--steps", type=int, default=200, help="demo training steps")
    p.add_argument("--query", default="", help="URL query, e.g. '?run=buggy&step=150'")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or os.path.join(tmp, "runs")
        if not args.logdir:
            train_demo(logdir, args.steps)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "instrument.cli", "dashboard", logdir,
                                   "--port", str(port)], cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, READY_TIMEOUT_S)
            screenshot(url + args.query, args.out)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
