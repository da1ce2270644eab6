"""Traces that several panels draw from a :class:`~dashboard.panels.base.RunInput`: a scalar
line with its min..max band and EMA, one line per layer, a layer x step heatmap, bars at a step.

Pure functions; the appendable ones carry ``meta["live"]`` (see :func:`dashboard.figures.live_tag`).
"""

from __future__ import annotations

import numpy as np

from dashboard import downsample, figures, layer_groups, settings
from dashboard.figures import Cell, band, bars, heatmap, line, live_tag
from dashboard.panels.base import RunInput, View, cursor_of
from instrument.store import schema


def scalar_lines(cell: Cell, item: RunInput, key: str, *, name: str, colour: str,
                 smooth: bool = False, legend: bool = True) -> list:
    """A scalar series: its mean line, the min..max band when downsampled, EMA if ``smooth``."""
    ds = item.series.get(key)
    if ds is None:
        return []
    size, cur = item.bucket(key), cursor_of(item, key)
    tag = dict(run=item.id, key=key, kind=schema.SCALAR, size=size, cursor=cur)
    group = f"{item.id}:{key}"
    out = []
    if size > 1:
        out += band(cell, ds.step, ds.min, ds.max, colour, group=group,
                    live_lo=live_tag(stat="min", **tag), live_hi=live_tag(stat="max", **tag))
    raw = line(cell, ds.step, ds.mean, name, colour, live=live_tag(**tag), group=group,
               showlegend=legend and not smooth, opacity=0.3 if smooth else 1.0,
               hover=f"{name} %{{y}} @ step %{{x}}<extra></extra>")
    out.append(raw)
    if smooth:
        values, state = downsample.ema(ds.mean, counts=ds.count)
        out.append(line(cell, ds.step, values, f"{name} (EMA)", colour,
                        live=live_tag(ema=state, **tag), group=group, showlegend=legend,
                        width=2.2, hover=f"{name} EMA %{{y}} @ step %{{x}}<extra></extra>"))
    return out


def layer_lines(cell: Cell, item: RunInput, key: str, *, colours: list,
                legend: bool = True) -> list:
    """One line per layer of layer series ``key`` (mean per bucket)."""
    ds = item.series.get(key)
    if ds is None:
        return []
    size, cur = item.bucket(key), cursor_of(item, key)
    legend = legend and len(ds.layers) <= settings.MAX_LEGEND_LAYERS
    out = []
    for j, layer in enumerate(ds.layers):
        values = ds.mean[:, j]
        if not np.isfinite(values).any():
            continue  # never recorded for this layer (e.g. no gradient)
        tag = live_tag(run=item.id, key=key, kind=schema.LAYER, layer=layer, size=size,
                       cursor=cur)
        out.append(line(cell, ds.step, values, layer, colours[j % len(colours)], live=tag,
                        group=f"{item.id}:{layer}", showlegend=legend, width=1.2,
                        hover=f"{layer} %{{y}} @ step %{{x}}<extra>{item.label}</extra>"))
    return out


def layer_heatmap(cell: Cell, item: RunInput, key: str, *, log: bool, colourscale: str,
                  label: str, zrange: tuple | None = None, zmid: float | None = None,
                  shared: tuple | None = None, showscale: bool = True) -> dict | None:
    """Layer x step heatmap of ``key`` (bucket means), log10 colours when ``log``.

    ``shared`` is the colour range (in the heatmap's units: log10 when ``log``) all compared
    runs use, so one colour means one value across them; only one of them then shows the
    colour bar (``showscale``)."""
    ds = item.series.get(key)
    if ds is None or ds.step.size == 0:
        return None
    z = ds.mean.T
    size = item.bucket(key)
    span = "" if size == 1 else f" (mean of {size} steps)"
    if log:
        z = downsample.log10_positive(z)
        lo, hi = shared if shared else z_range(z)
        vals, text = downsample.decade_ticks(lo, hi)
        bar = {"tickvals": vals, "ticktext": text, "title": {"text": "", "side": "right"}}
        hover = f"%{{y}} @ step %{{x}}{span}<br>log10 {label} = %{{z:.3f}}<extra></extra>"
        trace = heatmap(cell, ds.step, ds.layers, z, colourscale=colourscale, colorbar=bar,
                        hover=hover, zmin=lo if shared else None, zmax=hi if shared else None)
    else:
        hover = f"%{{y}} @ step %{{x}}{span}<br>{label} = %{{z:.4g}}<extra></extra>"
        lo, hi = zrange if zrange else (shared if shared and zmid is None else (None, None))
        trace = heatmap(cell, ds.step, ds.layers, z, colourscale=colourscale, zmin=lo,
                        zmax=hi, zmid=zmid, hover=hover)
    trace["showscale"] = showscale
    return trace


def zero_cells(cell: Cell, item: RunInput, key: str) -> dict | None:
    """The cells of ``key`` that are exactly 0, as a dark overlay: on a log scale a zero has no
    colour, and must not look like "not recorded" (no cell at all, the white background)."""
    ds = item.series.get(key)
    if ds is None or ds.step.size == 0:
        return None
    z = np.where(ds.mean.T == 0, 1.0, np.nan)
    if not np.isfinite(z).any():
        return None
    trace = heatmap(cell, ds.step, ds.layers, z, colourscale=[[0, settings.ZERO_COLOUR],
                                                               [1, settings.ZERO_COLOUR]],
                    hover="%{y} @ step %{x}: exactly 0<extra></extra>")
    trace.update(showscale=False, name="zero")
    return trace


def layer_labels(layers: list, meta: dict) -> list:
    """``"0.weight (Linear)"``: each layer with the class of the module it belongs to (from
    the run's model summary), the name alone when the summary does not say."""
    types = layer_groups.module_types(meta)
    out = []
    for name in layers:
        kind = layer_groups.module_type(name, types)
        out.append(f"{name} ({kind})" if kind else name)
    return out


def z_range(z: np.ndarray) -> tuple:
    """``(min, max)`` of the finite values of ``z`` (NaN, NaN without any)."""
    finite = np.asarray(z)[np.isfinite(z)]
    return (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)


def shared_range(runs: list, key: str, log: bool) -> tuple | None:
    """The colour range over every run's heatmap of ``key`` (None for fewer than two runs)."""
    parts = [item.series[key].mean for item in runs if key in item.series]
    if len(parts) < 2:
        return None
    flat = np.concatenate([np.ravel(p) for p in parts])
    lo, hi = z_range(downsample.log10_positive(flat) if log else flat)
    return None if not np.isfinite(lo) else (lo, hi)


def layer_bars(cell: Cell, item: RunInput, key: str, view: View, colour: str,
               label: str) -> dict | None:
    """Bars of ``key`` per layer at the view's step (the last recorded step at or before it)."""
    found = item.bars.get(key)
    if found is None:
        return None
    step, layers, values = found
    layers, values = layers[:settings.MAX_BAR_LAYERS], values[:settings.MAX_BAR_LAYERS]
    tag = {"run": item.id, "key": key, "step": int(step)}
    if item.layer_filter:  # a step move redraws the same layers
        tag["filter"] = item.layer_filter
    return bars(cell, layers, values, colour, at_step=tag, highlight=view.layer,
                hover=f"%{{y}}: {label} %{{x:.4g}}<extra>step {step}</extra>")


def layer_colours(n: int) -> list:
    """``n`` distinguishable colours for per-layer lines (a perceptual ramp, input order)."""
    ramp = settings.LAYER_COLOURS
    if n <= len(ramp):
        return list(ramp[:max(n, 1)])
    return [ramp[int(i * (len(ramp) - 1) / max(n - 1, 1))] for i in range(n)]


def heatmap_rows(grid, runs: list, key: str, row: int, view: View, *, label: str, log: bool,
                 colourscale: str, bar_colour: str, zrange: tuple | None = None,
                 zmid: float | None = None) -> tuple:
    """Fill grid row ``row`` (cells ``[heatmap, bars] * runs``) with ``key`` for every run.

    The bars share the heatmap's layer axis (same rows, first layer on top), the heatmap gets
    the replay cursor, and the highlighted layer is outlined in both.

    Returns:
        ``(traces, shapes, annotations)``.
    """
    data, shapes, notes = [], [], []
    cells = grid.cells[row]
    shared = shared_range(runs, key, log)
    for i, item in enumerate(runs):
        heat_cell, bar_cell = cells[2 * i], cells[2 * i + 1]
        grid.axis(heat_cell, "y")["autorange"] = "reversed"
        grid.axis(heat_cell, "y")["type"] = "category"
        grid.axis(heat_cell, "x")["title"] = {"text": "step", "standoff": 2}
        grid.axis(bar_cell, "y").update({"matches": heat_cell.yref, "showticklabels": False,
                                         "type": "category"})
        if log:
            figures.log_axis(grid.axis(bar_cell, "x"))
        if i:  # layer names once, at the left of the row
            grid.axis(heat_cell, "y")["showticklabels"] = False
        prefix = f"{item.label}: " if len(runs) > 1 else ""
        notes.append(figures.title(grid, heat_cell, f"{prefix}{label}"))
        notes.append(figures.title(grid, bar_cell, "at the selected step"))
        shapes.append(figures.cursor(heat_cell, view.step))
        trace = layer_heatmap(heat_cell, item, key, log=log, colourscale=colourscale,
                              label=label, zrange=zrange, zmid=zmid, shared=shared,
                              showscale=shared is None or i == len(runs) - 1)
        if trace is not None:
            data.append(trace)
            names = list(item.layers(key))
            labels = layer_labels(names, item.meta)
            if labels != names:  # ticks name the module class; the values stay layer names
                grid.axis(heat_cell, "y").update(tickvals=names, ticktext=labels)
        if log:
            zeros = zero_cells(heat_cell, item, key)
            if zeros is not None:
                data.append(zeros)
        bar = layer_bars(bar_cell, item, key, view, bar_colour, label)
        if bar is not None:
            data.append(bar)
        if view.layer is not None and view.layer in item.layers(key):
            shapes.append(figures.row_highlight(heat_cell, view.layer))
    return data, shapes, notes
