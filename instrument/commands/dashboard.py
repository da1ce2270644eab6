"""Serve the browser dashboard for the runs under a log directory (imports no torch)."""

from __future__ import annotations

import os

HELP = "serve the browser dashboard for the runs under a log directory"


def add_arguments(parser) -> None:
    from dashboard.serve import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument("logdir", help="directory holding run directories (or one run directory)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; "
                             "the dashboard has no login)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--debug", action="store_true",
                        help="Flask's development server with Dash dev tools (not for sharing)")


def run(args) -> int:
    from dashboard import create_app
    from dashboard.serve import serve, url

    if not os.path.isdir(args.logdir):
        print(f"avionics: {args.logdir} is not a directory; pass the directory that holds your "
              "runs, e.g. `avionics dashboard runs/`")
        return 2
    app = create_app(args.logdir)
    print(f"avionics dashboard for {os.path.abspath(args.logdir)} at {url(args.host, args.port)}"
          " (Ctrl+C stops it)", flush=True)
    try:
        serve(app, args.host, args.port, debug=args.debug)
    except OSError as exc:  # port in use, address not available
        print(f"avionics: cannot listen on {args.host}:{args.port}: {exc}. Pick another --port.")
        return 1
    except KeyboardInterrupt:
        pass
    return 0
