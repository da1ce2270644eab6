"""Loss and user scalars (everything passed to ``monitor.log()``) as small multiples.

Every user key is drawn: none is dropped for a slot count. A search box (a case-insensitive
regular expression over the keys, like TensorBoard's tag filter) narrows them; above
``MAX_SCALAR_PLOTS`` matching keys the panel says how many more match and asks to narrow the
filter. avionics' own diagnosis facts (``criterion/*``, ``input/*``, ...) are never among them.

Compared runs overlay in each plot, one colour per run. A downsampled line shows the bucket
mean with a shaded min..max band, so a one-step spike stays visible at any zoom. The loss plot
carries the findings as markers at their steps; NaN/Inf values are drawn as red crosses at their
steps (a NaN has no height: the cross sits at the last finite value before it), and the span
after the first NaN/Inf is shaded when the series holds no finite value any more. A series whose
positive values span more than ``AUTO_LOG_DECADES`` decades gets a log y axis.
"""

from __future__ import annotations

import numpy as np

from dashboard import figures, findings, settings, walltime
from dashboard.figures import Grid
from dashboard.panels.base import LINE, Need, View, select, user_scalars
from dashboard.panels.traces import scalar_lines
from instrument.store import schema

NAME = "scalars"
TITLE = "Loss and scalars"
REQUIRES = (schema.Keys.LOSS, "<any key passed to monitor.log()>")
MISSING = ("No loss or other scalar was logged yet. Call monitor.log(loss=loss) in the training "
           "loop (any keyword becomes a scalar here).")
EMA, LOG_Y, ROBUST = "ema", "logy", "robust"
OPTIONS = ((EMA, "EMA smoothing"), (LOG_Y, "log y"), (ROBUST, "robust y range"), walltime.OPTION)
ALWAYS_SHOWN = True
"""Shown even when the runs recorded nothing it draws (it says how to record it)."""
FILTER = "filter metrics (regex)"
"""Placeholder of the panel's search box: it filters the keys drawn."""
RERENDER_ON = ("events",)
"""A new finding re-renders the panel (its marker on the loss plot)."""


def needs(keys: dict, options) -> list:
    """The loss and every user scalar."""
    return [Need(k, schema.SCALAR, LINE) for k in user_scalars(keys[schema.SCALAR])]


def load_extra(run, view: View) -> dict:
    """The run's events: findings become markers on the loss plot, NaN/Inf ones crosses."""
    return {"events": run.events()}


def figure(runs: list, view: View) -> dict:
    """One plot per scalar key (loss first and full width), every run overlaid."""
    keys = []
    for item in runs:
        for key in item.series:
            if key not in keys:
                keys.append(key)
    keys = sorted(keys, key=lambda k: (k != schema.Keys.LOSS, k))
    if not keys:
        return figures.placeholder(MISSING)
    matching = select(keys, view.filter)
    if not matching:
        return figures.placeholder(f"No metric matches {view.filter!r} (of {len(keys)}: "
                                   f"{', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}).")
    shown = matching[:settings.MAX_SCALAR_PLOTS]
    grid = _grid(len(shown))
    cells = [c for row in grid.cells for c in row]
    data, shapes, notes, placed = [], [], [], []
    for key, cell in zip(shown, cells):
        d, s, a, c = _cell(grid, cell, key, runs, view, first=key == shown[0])
        data, shapes, notes, placed = data + d, shapes + s, notes + a, placed + c
    more = len(matching) - len(shown)
    meta = {"keys": shown, "more": more}
    if more > 0:
        notes.append({"text": f"{more} more metrics match: narrow the filter to see them",
                      "showarrow": False, "xref": "paper", "yref": "paper", "x": 1, "y": 0,
                      "xanchor": "right", "yanchor": "top", "font": {"color": "#9a6700"}})
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes,
                                 showlegend=len(runs) > 1, meta=meta)
    if walltime.on(view):
        walltime.mark(layout, placed, runs)
    return figures.figure(data, layout)


def _grid(n: int) -> Grid:
    """The loss full width, the rest in rows of two (three when there are many)."""
    per_row = 2 if n - 1 <= settings.SCALARS_TWO_COLUMNS else 3
    rest = n - 1
    small = settings.SMALL_ROW_HEIGHT_PX
    rows = [(settings.ROW_HEIGHT_PX, [1])]
    rows += [(small, [1] * per_row)] * (rest // per_row)
    rows += [(small, [1] * (rest % per_row))] if rest % per_row else []
    return Grid(rows)


def _cell(grid: Grid, cell, key: str, runs: list, view: View, first: bool) -> tuple:
    """Traces, shapes and annotations of the plot of ``key``, and its wall-time cursors
    ``[(shape, run)]`` (see :func:`dashboard.walltime.mark`)."""
    placed = []
    data, shapes = [], walltime.line_cursors(grid, cell, runs, view, placed)
    smooth = EMA in view.options
    bad_note = ""
    for item in walltime.placeable(runs, view):
        own = scalar_lines(cell, item, key, name=item.label, colour=item.colour,
                           smooth=smooth, legend=first and len(runs) > 1)
        marks, span = nonfinite_marks(item, key)
        if marks is not None:
            own.append(marks)
        if span is not None:
            shapes.append(walltime.shape_x(_shade(cell, *span), item.clock))
            bad_note = f"  ·  NaN/Inf from step {span[0]:,}"
        if key == schema.Keys.LOSS:
            own += finding_marks(cell, item)
        if marks is not None:
            marks.update({"xaxis": cell.xref, "yaxis": cell.yref})
        data += walltime.convert(own, item.clock)
    notes = [figures.title(grid, cell, key + _bucket_note(runs, key) + bad_note)]
    axis = grid.axis(cell, "y")
    values = _finite(runs, key)
    if LOG_Y in view.options or spans_decades(values):
        axis["type"] = "log"
    if ROBUST in view.options:
        lo, hi = robust_range(values, log=axis.get("type") == "log")
        if lo is not None:
            axis["range"] = [lo, hi]
    return data, shapes, notes, placed


def _finite(runs: list, key: str) -> np.ndarray:
    parts = [np.asarray(item.series[key].mean, dtype=float) for item in runs
             if key in item.series]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return values[np.isfinite(values)]


def spans_decades(values: np.ndarray, decades: float = settings.AUTO_LOG_DECADES) -> bool:
    """True if every value is positive and they span more than ``decades`` decades."""
    if values.size < 2 or (values <= 0).any():
        return False
    return float(np.log10(values.max() / values.min())) > decades


def robust_range(values: np.ndarray, log: bool = False) -> tuple:
    """A y range from the ``ROBUST_QUANTILES`` of ``values`` (padded), ignoring outliers;
    in log10 units for a log axis. ``(None, None)`` without values."""
    if log:
        values = np.log10(values[values > 0])
    if values.size < 2:
        return None, None
    lo, hi = np.quantile(values, settings.ROBUST_QUANTILES)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return float(lo - pad), float(hi + pad)


def nonfinite_marks(item, key: str) -> tuple:
    """``(trace, span)`` for the NaN/Inf of ``key`` in run ``item``: red crosses at the steps
    where a value was ±Inf or where a NaN/Inf event was recorded, at the height of the last
    finite value before them; ``span`` ``(first bad step, last step)`` when no finite value
    follows the first NaN/Inf event (else None)."""
    ds = item.series.get(key)
    df = item.extra.get("events")
    bad = set(findings.nonfinite_steps(df.assign(run=item.id, run_label=item.label))
              if df is not None and len(df) else [])
    steps = np.asarray(ds.step) if ds is not None else np.zeros(0, dtype=int)
    mean = np.asarray(ds.mean, dtype=float) if ds is not None else np.zeros(0)
    inf = set(int(s) for s in steps[np.isinf(mean)]) if ds is not None else set()
    marks = sorted(bad | inf)
    if not marks:
        return None, None
    finite = np.isfinite(mean)
    ys = []
    for s in marks:
        before = finite & (steps <= s)
        ys.append(float(mean[before][-1]) if before.any() else
                  (float(mean[finite][0]) if finite.any() else 0.0))
    after = finite & (steps >= marks[0])
    span = None
    if bad and not after.any() and item.last_step is not None and item.last_step >= marks[0]:
        span = (marks[0], int(item.last_step))
    trace = {"type": "scatter", "mode": "markers", "x": marks, "y": ys,
             "name": "NaN/Inf", "showlegend": False,
             "marker": {"symbol": "x", "size": 11, "color": settings.SEVERITY_COLOURS["critical"],
                        "line": {"width": 1}},
             "hovertemplate": f"{key} is NaN/Inf at step %{{x}}<extra>{item.label}</extra>",
             "meta": {"nonfinite": key}}
    return trace, span


def finding_marks(cell, item) -> list:
    """The run's findings (other than NaN/Inf) as markers on its loss line, by severity."""
    df = item.extra.get("events")
    ds = item.series.get(schema.Keys.LOSS)
    if df is None or not len(df) or ds is None or not len(ds.step):
        return []
    sel = df[(df["code"] != schema.NONFINITE) & df["step"].notna()]
    out = []
    steps, mean = np.asarray(ds.step), np.asarray(ds.mean, dtype=float)
    for severity in schema.SEVERITIES:
        part = sel[sel["severity"] == severity]
        if not len(part):
            continue
        xs = [int(s) for s in part["step"]]
        idx = np.clip(np.searchsorted(steps, xs), 0, len(steps) - 1)
        ys = [float(mean[i]) if np.isfinite(mean[i]) else None for i in idx]
        out.append({"type": "scatter", "mode": "markers", "x": xs, "y": ys,
                    "xaxis": cell.xref, "yaxis": cell.yref, "name": f"{severity} findings",
                    "showlegend": False, "customdata": list(part["code"]),
                    "text": list(part["message"]),
                    "marker": {"symbol": "diamond", "size": 9,
                               "color": settings.SEVERITY_COLOURS[severity],
                               "line": {"width": 1, "color": "white"}},
                    "hovertemplate": "step %{x}: %{customdata}<br>%{text}<extra></extra>",
                    "meta": {"findings": severity}})
    return out


def _shade(cell, start: int, stop: int) -> dict:
    return {"type": "rect", "xref": cell.xref, "yref": f"{cell.yref} domain", "x0": start,
            "x1": max(stop, start + 1), "y0": 0, "y1": 1, "layer": "below",
            "fillcolor": "rgba(207, 34, 46, 0.10)", "line": {"width": 0}, "name": "nonfinite"}


def _bucket_note(runs: list, key: str) -> str:
    sizes = {item.bucket(key) for item in runs if key in item.series}
    size = max(sizes, default=1)
    return "" if size == 1 else f"  ·  1 point = {size} steps (band: min..max)"
