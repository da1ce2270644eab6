"""Serve an app: waitress (a production WSGI server) by default, Flask's debug server on request."""

from __future__ import annotations

import logging

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: the dashboard has no authentication. Use ``ssh -L`` to reach a remote box."""

DEFAULT_PORT = 8050
WSGI_THREADS = 8
"""Request threads: a page sends one request per panel per update, and several tabs may be open."""

log = logging.getLogger("avionics")


def url(host: str, port: int) -> str:
    """The address a browser opens for ``host:port``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}/"


def serve(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, debug: bool = False) -> None:
    """Serve ``app`` until interrupted."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("avionics: the dashboard listens on %s; anyone who can reach this address "
                    "sees your runs (there is no login)", host)
    if debug:
        app.run(host=host, port=port, debug=True)
        return
    import waitress

    waitress.serve(app.server, host=host, port=port, threads=WSGI_THREADS, ident="avionics")
