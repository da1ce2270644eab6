"""Write a static HTML report of one run (imports no torch; the dashboard only when run).

    avionics report runs/exp1 -o exp1.html

One self-contained file (plotly inlined, no server): the run's status, its findings ranked and
grouped, and the dashboard's panels at the last step.
"""

from __future__ import annotations

import os

HELP = "write one self-contained HTML report of a run (findings and the main panels)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="the run directory (the one instrument.watch(run=...) wrote)")
    parser.add_argument("-o", "--output", default=None,
                        help="the HTML file to write (default: <run name>.html here)")


def run(args) -> int:
    from dashboard.report import write_report  # the dashboard (Dash, plotly) only when used
    from instrument.store.errors import StoreError

    out = args.output or f"{os.path.basename(os.path.normpath(args.run)) or 'run'}.html"
    try:
        write_report(args.run, out)
    except StoreError as exc:
        print(f"avionics report: {exc}")
        return 2
    print(f"avionics: report of {args.run} written to {out} "
          f"({os.path.getsize(out) / 1e6:.1f} MB; open it in a browser, no server needed)")
    return 0
