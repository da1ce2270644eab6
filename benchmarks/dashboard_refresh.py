"""Dashboard refresh latency and payload on a synthetic run of 10^6 steps x 200 layers.

    python benchmarks/dashboard_refresh.py [--steps 1000000] [--layers 200] [--repeat 5]

The run is written once through the real store writer (minutes) and cached under
``$AVIONICS_BENCH_DIR`` (default: the temp directory). Every refresh kind is timed through the
Flask test client exactly as the browser posts it: the poll, each panel's full render, a move
of the replay step, and a live append of new steps. Budget: each refresh <= 300 ms
of server time and <= 1 MB sent; reported as the median over ``--repeat`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.dashboard.probe import BUDGET_BYTES, BUDGET_SECONDS, measure  # noqa: E402
from tests.dashboard.synthetic import cached  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--layers", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out",
                                                 "dashboard_refresh.json"))
    args = p.parse_args(argv)
    run_dir = cached(args.steps, args.layers)
    rows = measure(run_dir, repeat=args.repeat)
    print(f"{'refresh':34s} {'median ms':>10s} {'max ms':>8s} {'KB':>8s}")
    for r in rows:
        flag = "" if r["ok"] else "  OVER BUDGET"
        print(f"{r['name']:34s} {r['median_s'] * 1e3:10.1f} {r['max_s'] * 1e3:8.1f} "
              f"{r['bytes'] / 1e3:8.1f}{flag}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"steps": args.steps, "layers": args.layers, "budget_s": BUDGET_SECONDS,
                   "budget_bytes": BUDGET_BYTES, "refreshes": rows}, fh, indent=1)
    print(f"wrote {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
