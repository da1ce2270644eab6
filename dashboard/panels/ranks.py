"""Ranks panel (torch.distributed runs): step time per rank over steps with the spread between
the slowest and the fastest rank, and each rank's mean time split into compute and the time
between steps, with stragglers named.

Pure figure functions: numpy arrays in (as read from the ``rank/*`` layer series, one column
per rank), a plotly figure dict out. No torch, no store access.

Reading it: under synchronous data parallelism every rank waits for the slowest (inside
backward, or in avionics' collective: ``rank/sync_time``), so step times agree; a straggler is
the rank whose compute time or *between-steps* time (data loading, evaluation, logging:
``rank/between_time``) is longer, while the others' compute or sync time holds the wait.
"""

from __future__ import annotations

import numpy as np

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import LINE, LINES, Need, View
from dashboard.panels.traces import layer_lines, scalar_lines
from instrument.store import schema
from instrument.store.schema import Keys

NAME = "ranks"
TITLE = "Ranks"
REQUIRES = (Keys.RANK_STEP_TIME, Keys.RANK_STEP_TIME_SPREAD, Keys.RANK_COMPUTE_TIME,
            Keys.RANK_BETWEEN_TIME,
            Keys.RANK_LOSS, Keys.RANK_SYNC_TIME)
MISSING = ("No per-rank series: the run was not recorded under torch.distributed with two or "
           "more ranks (see docs/distributed.md).")

LOSS_OPTION = "loss"
OPTIONS = ((LOSS_OPTION, "loss per rank"),)

STRAGGLER_RATIO = 1.25
"""A rank is named a straggler when its mean compute or between-steps time exceeds the median
over ranks by this factor..."""

STRAGGLER_MIN_S = 1e-3
"""...and by at least this many seconds (timer noise on millisecond steps is not a straggler)."""

RANK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")
COMPUTE_COLOUR = "#4c78a8"
BETWEEN_COLOUR = "#f58518"
STRAGGLER_COLOUR = "#d62728"
MS = 1e3


def needs(keys: dict, options) -> list:
    """Step time per rank and its spread as lines; compute and between-steps time per rank
    for the means; the loss per rank when asked for."""
    out = [Need(Keys.RANK_STEP_TIME, schema.LAYER, LINES),
           Need(Keys.RANK_STEP_TIME_SPREAD, schema.SCALAR, LINE),
           Need(Keys.RANK_COMPUTE_TIME, schema.LAYER, LINES),
           Need(Keys.RANK_BETWEEN_TIME, schema.LAYER, LINES)]
    if LOSS_OPTION in options:
        out.append(Need(Keys.RANK_LOSS, schema.LAYER, LINES))
    return out


def figure(runs: list, view: View) -> dict:
    """The first selected run with per-rank series: step time per rank (live lines), the
    slowest-fastest spread, and mean compute / between-steps time per rank as stacked bars with
    stragglers named; the loss per rank as an option."""
    item = next((r for r in runs if Keys.RANK_STEP_TIME in r.series), None)
    if item is None:
        return figures.placeholder(MISSING)
    ds = item.series[Keys.RANK_STEP_TIME]
    names = list(ds.layers)
    loss = LOSS_OPTION in view.options and Keys.RANK_LOSS in item.series
    rows = [(settings.ROW_HEIGHT_PX, [1]), (settings.SMALL_ROW_HEIGHT_PX, [1, 1])]
    if loss:
        rows.append((settings.SMALL_ROW_HEIGHT_PX, [1]))
    grid = Grid(rows)
    times, spread_cell, bars_cell = grid.cells[0][0], grid.cells[1][0], grid.cells[1][1]
    colours = [RANK_COLOURS[j % len(RANK_COLOURS)] for j in range(len(names))]
    data = layer_lines(times, item, Keys.RANK_STEP_TIME, colours=colours)
    data += scalar_lines(spread_cell, item, Keys.RANK_STEP_TIME_SPREAD, name="spread",
                         colour=STRAGGLER_COLOUR, legend=False)
    stats = _window_stats(item, names)
    slow_compute, slow_between = stragglers(stats["compute"]), stragglers(stats["between"])
    slow = set(slow_compute) | set(slow_between)
    labels = [f"rank {r}" for r in names]
    data.append(_bar(bars_cell, labels, stats["compute"], "compute", [COMPUTE_COLOUR] * len(names)))
    data.append(_bar(bars_cell, labels, stats["between"], "between steps",
                     [STRAGGLER_COLOUR if j in slow else BETWEEN_COLOUR
                      for j in range(len(names))]))
    others = "" if len(runs) == 1 else f" ({item.label}; one run at a time)"
    notes = [figures.title(grid, times, f"step time per rank (s){others}"),
             figures.title(grid, spread_cell, "spread: slowest - fastest rank (s)"),
             figures.title(grid, bars_cell, "mean per rank (ms): " + verdict_text(
                 slow_compute, slow_between, [], stats))]
    shapes = [figures.cursor(times, view.step), figures.cursor(spread_cell, view.step)]
    grid.axis(times, "x")["title"] = {"text": "step", "standoff": 2}
    if loss:
        cell = grid.cells[2][0]
        data += layer_lines(cell, item, Keys.RANK_LOSS, colours=colours, legend=False)
        notes.append(figures.title(grid, cell, "loss per rank (each rank's own data)"))
        shapes.append(figures.cursor(cell, view.step))
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes, barmode="stack")
    return figures.figure(data, layout)


def _window_stats(item, names: list) -> dict:
    """Per-rank means over the loaded window, weighted by the steps each row stands for."""
    def matrix(key):
        ds = item.series.get(key)
        if ds is None or list(ds.layers) != names:
            return None, None
        return ds.mean, ds.count

    step, count = matrix(Keys.RANK_STEP_TIME)
    compute, ccount = matrix(Keys.RANK_COMPUTE_TIME)
    between, _ = matrix(Keys.RANK_BETWEEN_TIME)
    if compute is not None and (compute.shape != step.shape or between is None
                                or between.shape != step.shape):
        compute = between = None  # read at another resolution: no per-row pairing
    return rank_stats(step, compute, between, weights=count)


def _bar(cell, labels, values, name, colours) -> dict:
    return {"type": "bar", "x": labels, "y": _list(np.asarray(values) * MS), "name": name,
            "marker": {"color": colours}, "xaxis": cell.xref, "yaxis": cell.yref,
            "hovertemplate": f"%{{x}}: {name} %{{y:.3g}} ms<extra></extra>", "showlegend": True}


def rank_stats(step_time: np.ndarray, compute_time: np.ndarray | None = None,
               between_time: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> dict:
    """Per-rank means over steps (NaN-aware) of step, compute and between-steps time, seconds.

    Args:
        step_time: ``[rows, ranks]``.
        compute_time: ``[rows, ranks]`` or None.
        between_time: ``[rows, ranks]``, or None for ``step_time - compute_time`` (which then
            includes time spent waiting for other ranks).
        weights: ``[rows]`` steps per row (downsampled buckets), or None for 1 each.
    """
    step_time = np.asarray(step_time, dtype=float)
    step = _mean(step_time, weights)
    out = {"step": step, "compute": np.full_like(step, np.nan),
           "between": np.full_like(step, np.nan)}
    if compute_time is not None:
        compute_time = np.asarray(compute_time, dtype=float)
        out["compute"] = _mean(compute_time, weights)
        out["between"] = _mean(step_time - compute_time, weights)
    if between_time is not None:
        out["between"] = _mean(np.asarray(between_time, dtype=float), weights)
    return out


def _mean(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Column means over the finite rows, weighted; NaN for a column without any."""
    w = np.ones(values.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    w = np.where(np.isfinite(values), w[:, None], 0.0)
    total = np.nansum(values * w, axis=0) if values.size else np.zeros(values.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(axis=0) > 0, total / w.sum(axis=0), np.nan)


def stragglers(values: np.ndarray, ratio: float = STRAGGLER_RATIO,
               min_excess: float = STRAGGLER_MIN_S) -> list:
    """Ranks whose value exceeds the median over ranks by ``ratio`` and ``min_excess``."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return []
    median = float(np.median(finite))
    return [int(r) for r in np.flatnonzero(np.isfinite(values) & (values > median * ratio)
                                           & (values - median >= min_excess))]


def verdict_text(slow_compute, slow_between, slow_step, stats) -> str:
    """One line naming the slowest straggler of each kind, or "no straggler"."""
    parts = []
    for label, slow, values in (("compute", slow_compute, stats["compute"]),
                                ("between steps", slow_between, stats["between"]),
                                ("step", slow_step, stats["step"])):
        if slow:
            median = float(np.nanmedian(values))
            worst = max(slow, key=lambda r: values[r])
            parts.append(f"rank {worst} slow in {label} ({values[worst] * MS:.3g} ms vs median "
                         f"{median * MS:.3g} ms)")
    return "; ".join(parts) if parts else "no straggler"


def _list(values) -> list:
    """JSON-safe floats: NaN becomes None (a gap)."""
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]
