"""How a panel refreshes: a full render, live appends (``Patch``) or a move of the replay step.

Each panel owns a small state (a ``dcc.Store`` next to its graph) written at every refresh:

``sig``      what the render was for (runs, options, highlighted layer); a change re-renders.
``at``       when it was rendered (heatmaps re-render at most every ``HEATMAP_REFRESH_S``).
``heads``    each run's head (last step, event id, series count) the render or append saw.
``live``     ``[trace index, meta["live"], points]`` of every appendable trace, with its cursor:
             the last step it covers. Appends read only rows after it.
``bars``     ``[trace index, meta["at_step"]]`` of the bars that follow the replay step.
``cursors``  indices of the cursor lines in ``layout.shapes``.

Live appends reuse the pyramid's bucket width of each line (raw rows for short runs); the
bucket still filling is drawn at once and replaced at the next poll. A line that would pass
``MAX_TRACE_POINTS``, or a run too far ahead, gets a full (coarser) render instead. All of this runs on the server; the browser
only applies the returned figure or ``Patch``.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from dash import Patch, html, no_update

from dashboard import downsample, figures, settings, walltime
from dashboard.panels import base
from dashboard.panels.base import View
from instrument.store import schema

NO_RUNS = "Select a run to see this panel."


@dataclass
class Refresh:
    """What a panel callback returns: figure (dict, Patch or no_update), extra, new state."""

    figure: object
    extra: object
    state: dict | None
    empty: bool | None = None  # None: unchanged; True: none of the runs recorded its series


def signature(view: View) -> str:
    """What forces a full render when it changes."""
    return json.dumps([view.runs, view.layer, sorted(view.options), view.filter])


def render(panel, catalog, view: View, heads: dict | None = None) -> Refresh:
    """Read and draw ``panel`` from scratch."""
    heads = _with_heads(catalog, view, heads)
    items = base.load(panel, catalog, view) if view.runs else []
    good = [item for item in items if item.error is None]
    graph = base.hook(panel, "GRAPH")
    if not graph:
        fig = no_update
    elif not view.runs:
        fig = figures.placeholder(NO_RUNS)
    elif not good:
        fig = figures.placeholder("The selected run cannot be read; see the message below "
                                  "and in the run header.")
    else:
        fig = truthful(panel, panel.figure(good, view), good)
    if base.hook(panel, "extra") is not None:
        extra = panel.extra(items, view)
    else:
        extra = _errors(items)
    empty = (bool(good) and not base.hook(panel, "ALWAYS_SHOWN")
             and not any(item.present for item in good)
             and not any(base.nan_explains(panel, item) for item in good))
    return Refresh(fig, extra, _state(fig if graph else None, view, items, heads), empty)


def _with_heads(catalog, view: View, heads: dict | None) -> dict | None:
    """``heads`` plus the head of every run of ``view`` it lacks, read before the run's series.

    The first screen renders before the page's first poll has brought the heads of the runs.
    Without them the panel's state knew no newest event id or status, so the first poll found
    them "changed" and drew health strip, header, scalars and events a second time (a full
    figure each, a second or so after the first). Read first, a head is never newer than the
    series drawn: anything logged in between still shows as a change at the next poll.
    """
    missing = [r for r in view.runs if r not in (heads or {})]
    if not missing:
        return heads
    return {**{r: catalog.head(r) for r in missing}, **(heads or {})}


def truthful(panel, fig, items: list):
    """``fig``, or, when the panel drew nothing although its series exist, a placeholder that
    says so: the instruments were on, the values are NaN/Inf (not "switch it on")."""
    message = (fig.get("layout", {}).get("meta") or {}).get("placeholder") \
        if isinstance(fig, dict) else None
    present = sorted({k for item in items for k in item.present})
    bad = [item.nonfinite_step for item in items if item.nonfinite_step is not None
           and (item.present or base.nan_explains(panel, item))]
    if message is None or not (present or bad):
        return fig
    if bad:
        return figures.placeholder(
            f"Nothing finite to draw: the run's values went NaN/Inf at step {min(bad):,} (see "
            "the health strip), so these statistics are NaN/Inf or could not be formed. The "
            "instruments were on.")
    return figures.placeholder(
        f"{', '.join(present[:4])}{' ...' if len(present) > 4 else ''} "
        f"{'was' if len(present) == 1 else 'were'} recorded, but hold no finite value to "
        "draw: the values are NaN/Inf (see the health strip), or no step has been logged yet.")


def refresh(panel, catalog, trigger: set, view: View, heads: dict | None,
            state: dict | None, now: float | None = None) -> Refresh:
    """Decide between a full render, appends and a step move, and do it.

    Args:
        panel: the panel module.
        catalog: the :class:`~dashboard.runs.RunCatalog`.
        trigger: what changed: any of ``{"heads", "view", "options"}``.
        view: the current view (options included).
        heads: ``{run: {"first", "last", "events", "series", "status"}}`` from the poll.
        state: the panel's state from its last refresh (None before the first).
        now: the clock (tests pass it).
    """
    now = time.time() if now is None else now
    if state is None or state.get("sig") != signature(view) or "options" in trigger:
        return render(panel, catalog, view, heads)
    if "heads" in trigger and _needs_render(panel, state, heads, now):
        return render(panel, catalog, view, heads)
    step_moved = "view" in trigger and state.get("step") != view.step
    if not base.hook(panel, "GRAPH"):
        return render(panel, catalog, view, heads) if step_moved else Refresh(
            no_update, no_update, no_update)
    patch, new_state = Patch(), json.loads(json.dumps(state))
    changed = False
    with ExitStack() as stack:
        sessions = Sessions(catalog, stack)
        if "heads" in trigger and heads:
            appended = append(patch, new_state, sessions, heads)
            if appended is None:
                return render(panel, catalog, view, heads)
            changed |= appended
        follow = view.step is None and "heads" in trigger
        if step_moved or follow:
            changed |= move_step(patch, new_state, sessions, view, heads)
    if not changed:
        return Refresh(no_update, no_update, no_update)
    new_state["heads"] = _heads_of(heads, state)
    return Refresh(patch, no_update, new_state)


class Sessions:
    """``try_open`` of a catalogue whose runs stay in one reading session (one connection, one
    catalogue read) until ``stack`` closes: the appends and step moves of one refresh."""

    def __init__(self, catalog, stack: ExitStack):
        self.catalog, self.stack, self.opened = catalog, stack, {}

    def try_open(self, name: str) -> tuple:
        if name not in self.opened:
            self.opened[name] = self.stack.enter_context(self.catalog.reading(name))
        return self.opened[name]


def _needs_render(panel, state: dict, heads: dict | None, now: float) -> bool:
    """A full render is due: a run grew new series, or a rerender-on-change field moved, or
    the panel's heatmaps are older than ``HEATMAP_REFRESH_S`` while the run advanced."""
    old = state.get("heads") or {}
    for run, head in (heads or {}).items():
        before = old.get(run)
        if before is None or before.get("series") != head.get("series"):
            return True
        if any(before.get(f) != head.get(f) for f in base.hook(panel, "RERENDER_ON")):
            return True
        advanced = head.get("last") != before.get("last")
        if advanced and state.get("static") and now - state.get("at", 0) >= \
                settings.HEATMAP_REFRESH_S:
            return True
    return False


def append(patch: Patch, state: dict, catalog, heads: dict) -> bool | None:
    """Extend every appendable trace with the rows its run logged after the trace's cursor.

    Rows are aggregated into buckets of the trace's width (see
    :func:`dashboard.downsample.tail_buckets`). A bucket still filling is drawn as the last
    point and marked ``open``; the next poll replaces that point, then extends.

    Returns:
        True if something was sent, False if nothing was new, None if the panel must be
        re-rendered instead (a line would pass ``MAX_TRACE_POINTS``, or the run is more than
        ``LIVE_APPEND_ROWS`` rows ahead).
    """
    groups: dict = {}
    for entry in state.get("live", []):
        tag = entry[1]
        groups.setdefault((tag["run"], tag["key"], tag["kind"]), []).append(entry)
    opened: dict = {}
    changed = False
    for (run_id, key, kind), entries in groups.items():
        head = (heads.get(run_id) or {}).get("last")
        cursor, seen = entries[0][1]["cursor"], entries[0][1].get("seen")
        if head is None or (seen is not None and head <= seen):
            continue
        run = opened.get(run_id) or opened.setdefault(run_id, catalog.try_open(run_id)[0])
        if run is None:
            continue
        steps, values = run.points_after(key, kind, after_step=-1 if cursor is None else cursor,
                                         limit=settings.LIVE_APPEND_ROWS)
        if len(steps) >= settings.LIVE_APPEND_ROWS:
            return None
        size = entries[0][1]["size"]
        found = downsample.tail_buckets(steps, values, size, head)
        found = walltime.live_found(run, entries[0][1], found)  # x: steps or seconds
        columns = _columns(run, key, kind, entries)
        for entry in entries:
            sent = _extend(patch, entry, found, kind, columns, head)
            if sent is None:
                return None
            changed |= sent
    return changed


def _extend(patch: Patch, entry: list, found: tuple, kind: str, columns: dict,
            head: int) -> bool | None:
    """Send one trace's new buckets: replace its open last point, extend with the rest."""
    index, tag, points = entry
    last, mean, mn, mx, complete, consumed = found
    tag["seen"] = head
    if not len(last):
        return False
    pick = {"mean": mean, "min": mn, "max": mx}[tag["stat"]]
    y = pick if kind == schema.SCALAR else pick[:, columns[tag["layer"]]]
    if tag.get("ema") is not None:  # the open bucket must not enter the saved EMA state
        done, tag_state = downsample.ema(y[:complete], counts=np.full(complete, tag["size"]),
                                         state=tag["ema"])
        rest, _ = downsample.ema(y[complete:], counts=np.full(len(y) - complete, tag["size"]),
                                 state=tag_state)
        y, tag["ema"] = np.r_[done, rest], tag_state
    x, y = last, downsample.round_sig(y)
    start = 0
    if tag.get("open"):  # the bucket that was still filling is the first one now
        patch["data"][index]["x"][points - 1] = x[0]
        patch["data"][index]["y"][points - 1] = y[0]
        start = 1
    total = points + len(x) - start
    if total > settings.MAX_TRACE_POINTS:
        return None
    if len(x) > start:
        patch["data"][index]["x"].extend(x[start:])
        patch["data"][index]["y"].extend(y[start:])
    if consumed is not None:
        tag["cursor"] = consumed
    tag["open"] = complete < len(x)
    entry[2] = total
    return True


def _columns(run, key: str, kind: str, entries: list) -> dict:
    if kind == schema.SCALAR:
        return {}
    names = run.layer_names(key)
    pos = {n: i for i, n in enumerate(names)}
    return {e[1]["layer"]: pos[e[1]["layer"]] for e in entries}


def move_step(patch: Patch, state: dict, catalog, view: View, heads: dict | None) -> bool:
    """Move the cursor lines to ``view.step`` and redraw the bars at that step."""
    changed = False
    opened: dict = {}

    def open_run(name: str):
        if name not in opened:
            opened[name] = catalog.try_open(name)[0]
        return opened[name]

    if state.get("step") != view.step:
        for j in state.get("cursors", []):
            x = walltime.cursor_x(state.get("wall"), j, view.step, open_run)  # wall-time axis
            patch["layout"]["shapes"][j]["x0"] = x
            patch["layout"]["shapes"][j]["x1"] = x
            patch["layout"]["shapes"][j]["visible"] = view.step is not None
            changed = True
    for index, tag in state.get("bars", []):
        step = view.step
        if step is None:
            step = ((heads or {}).get(tag["run"]) or {}).get("last")
        if step is None:
            continue
        run = open_run(tag["run"])
        found = None if run is None else run.at_step(tag["key"], step)
        if found is None or found[0] == tag.get("step"):
            continue
        at, layers, values = found
        layers, values = base.keep_layers(list(layers), values, tag.get("filter", ""))
        layers = layers[:settings.MAX_BAR_LAYERS]
        patch["data"][index]["x"] = downsample.round_sig(values[:settings.MAX_BAR_LAYERS])
        patch["data"][index]["y"] = layers
        patch["data"][index]["name"] = f"step {at}"
        patch["data"][index]["hovertemplate"] = _bar_hover(at)
        patch["data"][index]["marker"]["color"] = figures.bar_colours(
            layers, tag.get("colour", settings.BAR_COLOUR), view.layer)
        patch["data"][index]["meta"]["at_step"]["step"] = int(at)
        tag["step"] = int(at)
        changed = True
    state["step"] = view.step
    return changed


def _bar_hover(step: int) -> str:
    return f"%{{y}}: %{{x:.4g}}<extra>step {step}</extra>"


def _state(fig, view: View, items: list, heads: dict | None) -> dict:
    live, bars, cursors, static = [], [], [], False
    if isinstance(fig, dict):
        for i, trace in enumerate(fig.get("data", [])):
            meta = trace.get("meta") or {}
            if "live" in meta:
                live.append([i, dict(meta["live"]), len(trace.get("x") or [])])
            if "at_step" in meta:
                bars.append([i, dict(meta["at_step"], colour=_bar_colour(trace))])
            static |= trace.get("type") == "heatmap"
        cursors = [j for j, s in enumerate(fig.get("layout", {}).get("shapes", []))
                   if s.get("name") == "cursor"]
    # what this render saw of each run; an unreadable run is remembered as such, so that it
    # is drawn again when it becomes readable, not at every tick while it is not
    own = {item.id: ({"error": item.error} if item.error else
                     {"last": item.last_step, "first": item.first_step, "series": item.n_series})
           for item in items}
    return {"sig": signature(view), "at": time.time(), "live": live, "bars": bars,
            "cursors": cursors, "static": static, "step": view.step,
            "wall": walltime.state_of(fig),
            "heads": {**own, **{r: h for r, h in (heads or {}).items() if r in own}}}


def _bar_colour(trace: dict) -> str:
    colours = (trace.get("marker") or {}).get("color") or []
    plain = [c for c in colours if c != settings.HIGHLIGHT_COLOUR]
    return plain[0] if plain else settings.BAR_COLOUR


def _heads_of(heads: dict | None, state: dict) -> dict:
    return dict(heads) if heads else dict(state.get("heads") or {})


def _errors(items: list):
    bad = [html.Div(f"{item.label}: {item.error}", className="run-error")
           for item in items if item.error]
    return html.Div(bad) if bad else None
