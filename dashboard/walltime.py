"""The wall-time x axis of the line panels: seconds since the run's start instead of steps.

Compared runs overlaid by step hide that one of them is slower per step; by wall time they show
which reaches a loss first. Every x a line panel draws is a step (a raw row, or a downsampled
bucket drawn at its last step, as on the step axis); a run's :class:`Clock` maps steps to
seconds by linear interpolation on the store's ``steps`` table (``step, wall_time`` per logged
step), of which it holds only the rows bracketing the steps drawn
(:meth:`instrument.store.reader.Run.step_walls`), so the cost does not grow with the run.

The start is the run's ``start_time`` (when ``watch()`` began, as the run header counts it),
else the wall time of its first logged step. The replay cursor of a run sits at its selected
step's wall time: in a comparison each run has its own cursor, in its colour.

Pure functions apart from :func:`read_clock` and :func:`cursor_x`, which read a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dashboard import downsample, figures

WALL = "wall"
"""The option value (in a panel's ``OPTIONS``) that puts the line plots on wall time."""
OPTION = (WALL, "x: wall time (s since start)")
"""The toggle as a panel declares it."""
AXIS_TITLE = "wall time (s since start)"
DIGITS = 3
"""Seconds are sent rounded to milliseconds."""


def interpolate(query, steps, walls) -> np.ndarray:
    """Wall times at ``query`` steps, linear between the known ``(steps, walls)`` (increasing),
    the first/last known value outside them; NaN without any known row."""
    q = np.asarray(query, dtype=np.float64)
    if len(steps) == 0:
        return np.full(q.shape, np.nan)
    return np.interp(q, np.asarray(steps, dtype=np.float64), np.asarray(walls, np.float64))


@dataclass
class Clock:
    """A run's step -> seconds-since-start mapping over the steps it was built for."""

    steps: np.ndarray
    walls: np.ndarray
    t0: float

    def seconds(self, steps) -> np.ndarray:
        return interpolate(steps, self.steps, self.walls) - self.t0


def seconds_list(values) -> list:
    """Seconds as a JSON-ready list, rounded to :data:`DIGITS` decimals (NaN -> None)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return [round(float(v), DIGITS) if np.isfinite(v) else None for v in x]


def wanted_steps(item, view) -> set:
    """Every step a line panel of ``item`` may put on the x axis: its series' points, its
    events' steps (finding and NaN/Inf markers), the selected step and its first/last step."""
    out = set()
    for ds in item.series.values():
        out.update(int(s) for s in np.asarray(ds.step).tolist())
    events = (item.extra or {}).get("events")
    if events is not None and len(events):
        out.update(int(s) for s in events["step"].dropna())
    out.update(s for s in (view.step, item.first_step, item.last_step) if s is not None)
    return out


def read_clock(run, item, view) -> Clock | None:
    """``item``'s clock, read from ``run`` (None for a run without logged steps)."""
    steps, walls = run.step_walls(wanted_steps(item, view))
    if not len(steps):
        return None
    start = (item.meta or {}).get("start_time")
    if not isinstance(start, (int, float)):
        start = float(interpolate([item.first_step], steps, walls)[0])
    return Clock(steps, walls, float(start))


def convert(traces: list, clock: Clock | None) -> list:
    """``traces`` (drawn by step) moved onto ``clock``'s seconds, in place: x, step hovers, and
    the live tags (so live appends convert their new points too)."""
    if clock is None:
        return traces
    for trace in traces:
        if isinstance(trace.get("x"), list):
            trace["x"] = seconds_list(clock.seconds(trace["x"]))
        hover = trace.get("hovertemplate")
        if hover:
            trace["hovertemplate"] = hover.replace("step %{x}", "%{x:.2f} s")
        live = (trace.get("meta") or {}).get("live")
        if live is not None:
            live["t0"] = clock.t0
    return traces


def shape_x(shape: dict, clock: Clock | None) -> dict:
    """A shape spanning steps ``x0..x1`` moved onto ``clock``'s seconds, in place."""
    if clock is not None:
        x0, x1 = seconds_list(clock.seconds([shape["x0"], shape["x1"]]))
        shape.update(x0=x0, x1=x1)
    return shape


def cursors(cell, runs: list, view) -> list:
    """The replay cursor of each run at its selected step's wall time (hidden when following
    the last step), in the run's colour: ``[(shape, run id)]``."""
    out = []
    for item in runs:
        clock = getattr(item, "clock", None)
        if clock is None:
            continue
        x = None if view.step is None else seconds_list(clock.seconds([view.step]))[0]
        shape = figures.cursor(cell, x)
        shape["visible"] = view.step is not None
        shape["line"] = {**shape["line"], "color": item.colour}
        out.append((shape, item.id))
    return out


def line_cursors(grid, cell, runs: list, view, placed: list) -> list:
    """The replay cursor shapes of a line plot, its x axis titled to match: one at the step on
    a step axis; on wall time one per run, also added to ``placed`` (for :func:`mark`)."""
    grid.axis(cell, "x")["title"] = {"text": axis_title(view), "standoff": 2}
    if not on(view):
        return [figures.cursor(cell, view.step)]
    own = cursors(cell, runs, view)
    placed += own
    return [shape for shape, _ in own]


def placeable(runs: list, view) -> list:
    """The runs a line plot can draw: all on a step axis, those with a clock on wall time (a
    run without logged steps has nothing to place its points by)."""
    return [item for item in runs if not on(view) or getattr(item, "clock", None) is not None]


def mark(layout: dict, placed: list, runs: list) -> dict:
    """Record in ``layout.meta["wall"]`` which cursor shapes belong to which run, and each run's
    start, so that a move of the replay step (:func:`cursor_x`) lands each one at its run's wall
    time without a redraw."""
    shapes = layout.get("shapes") or []
    index = {id(s): j for j, s in enumerate(shapes)}
    own = {str(index[id(shape)]): run for shape, run in placed if id(shape) in index}
    starts = {item.id: item.clock.t0 for item in runs if getattr(item, "clock", None)}
    layout["meta"] = {**(layout.get("meta") or {}), "wall": {"cursors": own, "t0": starts}}
    return layout


def state_of(fig) -> dict | None:
    """What a panel's refresh state keeps of a figure's wall-time axis (None: by step)."""
    if not isinstance(fig, dict):
        return None
    return ((fig.get("layout") or {}).get("meta") or {}).get("wall")


def cursor_x(wall: dict | None, index: int, step: int | None, open_run):
    """x of cursor shape ``index`` at ``step``: the step itself on a step axis, else the wall
    time of ``step`` in the cursor's run (``open_run(name)``: the open run, or None)."""
    run_id = (wall or {}).get("cursors", {}).get(str(index))
    if run_id is None or step is None:
        return step or 0
    run = open_run(run_id)
    if run is None:
        return 0
    steps, walls = run.step_walls([step])
    value = interpolate([step], steps, walls)[0] - wall["t0"][run_id]
    return seconds_list([value])[0]


def live_found(run, tag: dict, found: tuple) -> tuple:
    """A live append's new buckets (see :func:`dashboard.downsample.tail_buckets`) with their x
    as a JSON-ready list: steps, or their seconds when the line is on wall time (its tag
    carries the run's start ``t0``)."""
    steps = found[0]
    if tag.get("t0") is None:
        return (downsample.int_list(steps), *found[1:])
    known, walls = run.step_walls(np.asarray(steps).tolist())
    return (seconds_list(interpolate(steps, known, walls) - tag["t0"]), *found[1:])


def axis_title(view) -> str:
    """The line plots' x axis title."""
    return AXIS_TITLE if on(view) else "step"


def on(view) -> bool:
    """True when the line plots are on wall time."""
    return WALL in view.options

