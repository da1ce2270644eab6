"""The app factory: ``create_app(logdir)`` builds a Dash app for the runs under ``logdir``.

    app = create_app("runs/")
    app.run()                      # development; `avionics dashboard runs/` serves it properly

Each call builds an independent app (callbacks are registered on it, never globally).
"""

from __future__ import annotations

import functools
import os

from dash import Dash

from dashboard import callbacks, layout, runs_table, settings
from dashboard.runs import RunCatalog


def create_app(logdir: str, *, poll_interval_ms: int = settings.POLL_INTERVAL_MS,
               title: str = "avionics") -> Dash:
    """A Dash app showing the runs under ``logdir`` (a run directory itself works too).

    Args:
        logdir: directory searched for run directories (new ones appear while it serves).
        poll_interval_ms: how often the page asks for new steps.
        title: browser tab title.

    Raises:
        ValueError: ``logdir`` is not a directory.
    """
    if not os.path.isdir(logdir):
        raise ValueError(f"{logdir!r} is not a directory; pass the directory that holds your "
                         "runs (the parent of instrument.watch(run=...)) or a run directory")
    catalog = RunCatalog(logdir)
    app = Dash(__name__, title=title, update_title=None,
               assets_folder=os.path.join(os.path.dirname(__file__), "assets"))
    # a function: evaluated on every page load, so a reload lists the runs that exist now
    rows = runs_table.RunRows(catalog)
    app.layout = functools.partial(layout.page, catalog, poll_interval_ms, rows)
    callbacks.register(app, catalog, rows)
    app.catalog = catalog
    return app
