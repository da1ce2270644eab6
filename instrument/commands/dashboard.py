"""Serve the browser dashboard for the runs under a log directory (imports no torch).

    avionics dashboard runs/ [--host 127.0.0.1] [--port 8050] [--debug]

:class:`DashboardProcess` runs the same command in a child process for
``instrument.watch(..., dashboard=True)``.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import quote

HELP = "serve the browser dashboard for the runs under a log directory"

PORT_SEARCH = 50
"""watch(dashboard=True) tries this many ports from the default upward for a free one."""


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
    parser.add_argument("--stop-with-parent", action="store_true",
                        help="stop when standard input closes, i.e. when the process that "
                             "started this one ends (used by instrument.watch(dashboard=True))")


def run(args) -> int:
    from dashboard import create_app
    from dashboard.serve import serve, url

    if not os.path.isdir(args.logdir):
        print(f"avionics: {args.logdir} is not a directory; pass the directory that holds your "
              "runs, e.g. `avionics dashboard runs/`")
        return 2
    if args.stop_with_parent:
        threading.Thread(target=_exit_at_eof, name="avionics-parent-watch", daemon=True).start()
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


def _exit_at_eof() -> None:
    """The parent holds our stdin open for its whole life; EOF means it has ended (even if it
    was killed), so the server must not outlive it. Portable, unlike polling a pid."""
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def free_port(host: str, first: int, tries: int = PORT_SEARCH) -> int:
    """The first port from ``first`` on which nothing listens on ``host``."""
    for port in range(first, first + tries):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {first}..{first + tries - 1} on {host}")


class DashboardProcess:
    """The dashboard served from a child process while this (training) process lives.

    It keeps serving after ``monitor.close()``, so the finished run can still be looked at, and
    stops when this process exits (atexit, with a message; if this process is killed, the child
    notices its closed stdin and stops too). Nothing is left running behind the script.

    Args:
        logdir: directory to serve (watch() passes the run directory's parent).
        run: run name to open in the printed URL (relative to ``logdir``).
        port: port to listen on; None picks the first free one from 8050.
        host: address to listen on.
    """

    def __init__(self, logdir: str, run: str | None = None, port: int | None = None,
                 host: str | None = None):
        from dashboard.serve import DEFAULT_HOST, DEFAULT_PORT, url

        self.logdir = os.path.abspath(logdir)
        host = host or DEFAULT_HOST
        self.port = port or free_port(host, DEFAULT_PORT)
        self.url = url(host, self.port) + (f"?run={quote(run)}" if run else "")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instrument.cli", "dashboard", self.logdir, "--host", host,
             "--port", str(self.port), "--stop-with-parent"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        atexit.register(self._at_exit)
        print(f"avionics: dashboard at {self.url}", flush=True)

    @property
    def alive(self) -> bool:
        """True while the server process runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        atexit.unregister(self._at_exit)
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()

    def wait(self) -> None:
        """Keep serving until Ctrl+C (for scripts that end right after training)."""
        if not self.alive:
            return
        print(f"avionics: the dashboard keeps serving at {self.url}; press Ctrl+C to stop it",
              flush=True)
        try:
            self.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _at_exit(self) -> None:
        if self.alive:
            print(f"avionics: stopping the dashboard at {self.url} (the script ended); serve the "
                  f"runs again with: avionics dashboard {self.logdir}", flush=True)
        self.stop()
