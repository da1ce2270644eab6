"""Dashboard speed in a real browser: time to the first viewport drawn, and slider-move redraw.

    python benchmarks/dashboard_browser.py [--steps 10000] [--layers 100] [--repeat 5]

A synthetic run (written through the real store writer, cached under ``$AVIONICS_BENCH_DIR``)
is served by waitress, as ``avionics dashboard`` does, and opened in headless Chromium at
1600 x 1000 (Debian: ``apt-get install chromium chromium-driver``; selenium from the test extra).

* **first viewport**: from navigation start to every panel graph that intersects the first
  screen drawn (no "loading…" placeholder left), and the health strip listing its findings.
* **slider move**: from the key press that moves the replay step to every visible panel's
  cursor at the new step (the bars at the step included), i.e. the whole redraw.

Medians over ``--repeat`` page loads / moves. The issue's targets, on an idle 2-core machine:
first viewport <= 2 s, slider move <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.dashboard.synthetic import cached  # noqa: E402

FIRST_VIEW_JS = """
const inView = el => { const r = el.getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight && el.offsetParent !== null; };
const graphs = [...document.querySelectorAll('.panel .dash-graph')].filter(inView);
const drawn = graphs.every(g => { const p = g.querySelector('.js-plotly-plot');
  return p && p.layout && !((p.layout.meta || {}).placeholder === 'loading…'); });
const health = document.querySelector('#panel-health .health-run');
return graphs.length > 0 && drawn && !!health;
"""

CURSORS_JS = """
const inView = el => { const r = el.getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight && el.offsetParent !== null; };
const step = arguments[0];
for (const g of [...document.querySelectorAll('.panel .dash-graph')].filter(inView)) {
  const p = g.querySelector('.js-plotly-plot');
  if (!p || !p.layout) { return false; }
  const cur = (p.layout.shapes || []).filter(s => s.name === 'cursor');
  if (cur.some(s => s.x0 !== step || s.visible === false)) { return false; }
}
return true;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(driver, js: str, *args, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if driver.execute_script(js, *args):
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"not reached in {timeout} s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--layers", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out",
                                                 "dashboard_browser.json"))
    args = p.parse_args(argv)
    run_dir = cached(args.steps, args.layers, every=10)
    from dashboard import create_app
    from dashboard.serve import serve

    port = free_port()
    app = create_app(os.path.dirname(run_dir))
    threading.Thread(target=serve, args=(app, "127.0.0.1", port), daemon=True).start()
    name = os.path.basename(run_dir)
    url = f"http://127.0.0.1:{port}/?run={name}&step={args.steps // 2}"
    driver = browser()
    first, moves = [], []
    try:
        driver.get(url)  # warm-up: the server's first page load also fills its caches
        wait(driver, FIRST_VIEW_JS)
        for _ in range(args.repeat):
            driver.get("about:blank")
            driver.get(url)
            done = wait(driver, FIRST_VIEW_JS)
            nav = driver.execute_script("return performance.timeOrigin") / 1e3
            first.append(done - time.perf_counter() + time.time() - nav)
        from selenium.webdriver.common.keys import Keys

        handle = driver.find_element("css selector", "#step-slider [role=slider]")
        step = args.steps // 2
        for _ in range(args.repeat):
            handle.send_keys(Keys.ARROW_RIGHT)
            t0 = time.perf_counter()
            step += 1
            moves.append(wait(driver, CURSORS_JS, step) - t0)
    finally:
        driver.quit()
    out = {"steps": args.steps, "layers": args.layers, "repeat": args.repeat,
           "first_viewport_s": statistics.median(first), "first_viewport_all_s": first,
           "slider_move_s": statistics.median(moves), "slider_move_all_s": moves,
           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(f"first viewport drawn: median {out['first_viewport_s']:.2f} s "
          f"(all: {', '.join(f'{v:.2f}' for v in first)})")
    print(f"slider move redrawn:  median {out['slider_move_s']:.2f} s "
          f"(all: {', '.join(f'{v:.2f}' for v in moves)})")
    print(f"machine: {out['cpus']} CPUs, load average {out['load_average'][0]:.1f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
