"""The runs table (it replaces a run dropdown): one row per run under the log directory with
its status, steps, last loss, findings by severity, start time, duration, optimizer and learning
rate. Sort, filter and search run in the browser (Dash's DataTable, paged), so a log directory
of hundreds of runs stays usable; ticking several rows compares them.

A row is read from its store once and then again only when the store's files changed (their
modification times), so the poll that refreshes the table each second opens only the runs that
are being written.
"""

from __future__ import annotations

import os
import threading
import time

from dash import dash_table

from dashboard import findings, settings
from dashboard.panels import events as events_panel
from dashboard.panels.header import duration
from instrument.store import schema
from instrument.store.errors import StoreError
from instrument.store.schema import STORE_FILE

COLUMNS = (("name", "run", "text"), ("status", "status", "text"), ("steps", "steps", "numeric"),
           ("loss", "last loss", "numeric"), ("critical", "critical", "numeric"),
           ("warning", "warning", "numeric"), ("info", "info", "numeric"),
           ("start", "started", "text"), ("duration", "duration", "text"),
           ("optimizer", "optimizer", "text"), ("lr", "lr", "numeric"))
"""``(field, header, type)`` of every column, left to right."""

LOSS_TAIL_STEPS = 64
"""The last loss is looked for among the run's last this many steps."""


def table(rows: list) -> dash_table.DataTable:
    """The table component (``id="run-select"``: its ticked rows are the selected runs)."""
    return dash_table.DataTable(
        id="run-select", data=rows, columns=[{"id": f, "name": n, "type": t}
                                             for f, n, t in COLUMNS],
        row_selectable="multi", selected_row_ids=[], selected_rows=[],
        sort_action="native", filter_action="native", page_action="native",
        page_size=settings.RUNS_PAGE_SIZE, sort_by=[{"column_id": "start",
                                                     "direction": "desc"}],
        style_table={"overflowX": "auto"}, style_as_list_view=True,
        style_cell={"fontFamily": "inherit", "fontSize": "12px", "padding": "2px 8px",
                    "textAlign": "left", "maxWidth": "280px", "overflow": "hidden",
                    "textOverflow": "ellipsis"},
        style_header={"fontWeight": "600", "background": "#f6f8fa"},
        style_data_conditional=[
            {"if": {"filter_query": "{critical} > 0", "column_id": "critical"},
             "color": settings.SEVERITY_COLOURS["critical"], "fontWeight": "600"},
            {"if": {"filter_query": "{warning} > 0", "column_id": "warning"},
             "color": "#9a6700", "fontWeight": "600"},
            {"if": {"filter_query": '{status} = "crashed"', "column_id": "status"},
             "color": settings.SEVERITY_COLOURS["critical"]},
            {"if": {"filter_query": '{status} = "running"', "column_id": "status"},
             "color": "#1a7f37"}])


class RunRows:
    """Table rows of a :class:`~dashboard.runs.RunCatalog`'s runs, cached by store mtime."""

    def __init__(self, catalog):
        self.catalog = catalog
        self._cache: dict = {}
        self._lock = threading.Lock()

    def rows(self, names: list | None = None) -> list:
        """One row per run (sorted by name, as the catalogue lists them)."""
        names = self.catalog.names() if names is None else names
        out = []
        with self._lock:
            for name in names:
                stamp = self._stamp(name)
                hit = self._cache.get(name)
                if hit is None or hit[0] != stamp or _live(hit[1]):
                    hit = self._cache[name] = (stamp, self._row(name))
                out.append(hit[1])
            for gone in set(self._cache) - set(names):
                del self._cache[gone]
        return out

    def _stamp(self, name: str) -> tuple:
        try:
            store = os.path.join(self.catalog.path(name), STORE_FILE)
        except StoreError:
            return ()
        return tuple(os.path.getmtime(p) if os.path.exists(p) else None
                     for p in (store, store + "-wal"))

    def _row(self, name: str) -> dict:
        row = {"id": name, "name": self.catalog.display_name(name)}
        with self.catalog.reading(name) as (run, error):
            if run is None:
                return {**row, "status": "unreadable", "error": error}
            try:
                return {**row, **summary(run)}
            except (StoreError, OSError, ValueError, KeyError) as exc:
                return {**row, "status": "unreadable", "error": str(exc)}


def _live(row: dict) -> bool:
    """A running row is re-read every time: its status can turn "crashed" (a stopped heartbeat)
    without the store changing."""
    return row.get("status") == schema.RUNNING


def summary(run) -> dict:
    """The table's fields of one open run."""
    meta = run.meta
    first, last = run.step_range()
    loss = None
    if last is not None and schema.Keys.LOSS in run.keys(schema.SCALAR):
        tail = run.scalars(keys=[schema.Keys.LOSS], start=max(first, last - LOSS_TAIL_STEPS),
                           stop=last)
        loss = float(tail["value"].iloc[-1]) if len(tail) else None
    df = run.events()
    counts = findings.counts(events_panel.frame_of(df, run.name)) if len(df) else dict.fromkeys(
        schema.SEVERITIES, 0)
    start, end = meta.get("start_time"), meta.get("end_time")
    status = meta.get("status", "unknown")
    if status == schema.RUNNING or end is None:
        end = meta.get("heartbeat") or time.time()
    opt = meta.get("optimizer") or {}
    group = (opt.get("param_groups") or [{}])[0]
    lr = group.get("lr")
    return {"status": status, "steps": None if last is None else last + 1,
            "loss": None if loss is None else float(f"{loss:.4g}"),
            **{s: int(counts.get(s, 0)) for s in schema.SEVERITIES},
            "start": "" if start is None else time.strftime("%Y-%m-%d %H:%M:%S",
                                                            time.localtime(start)),
            "duration": "" if start is None else duration(max(0.0, end - start)),
            "optimizer": opt.get("class") or "",
            "lr": float(f"{lr:.3g}") if isinstance(lr, (int, float)) else None}


def selected_rows(rows: list, runs: list) -> list:
    """Indices in ``rows`` of the runs ``runs`` (what the table ticks)."""
    where = {row["id"]: i for i, row in enumerate(rows)}
    return [where[r] for r in runs if r in where]
