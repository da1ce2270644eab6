"""Shared, pure figure builders: a subplot grid, line/band/heatmap/bar traces, cursor shapes.

Figures are plain plotly dicts (no ``go.Figure`` validation, which costs more than the data on
large panels). Traces that a live run may append to are built from Python lists and tagged in
``meta["live"]`` with where their values come from; bars that follow the replay step are tagged
in ``meta["at_step"]``. :mod:`dashboard.refresh` reads these tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dashboard import settings
from dashboard.downsample import int_list, round_sig, typed_array

FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        "size": settings.FONT_SIZE, "color": "#222"}
MARGIN = settings.MARGIN_PX
GAP_PX = settings.ROW_GAP_PX
COL_GAP = settings.COLUMN_GAP


@dataclass
class Cell:
    """One subplot of a :class:`Grid`: its axis references and domains."""

    xref: str
    yref: str
    x: tuple
    y: tuple


@dataclass
class Grid:
    """Rows of subplots; each row has a pixel height and relative column widths.

    Example: ``Grid([(240, [1]), (300, [3, 1, 3, 1])])`` gives one full-width cell above four.
    """

    rows: Sequence[tuple]
    cells: list = field(default_factory=list)
    layout: dict = field(default_factory=dict)

    def __post_init__(self):
        heights = [h for h, _ in self.rows]
        total = sum(heights) + GAP_PX * (len(heights) - 1)
        self.layout = {"height": total + MARGIN["t"] + MARGIN["b"]}
        top, n = 1.0, 0
        for height, widths in self.rows:
            bottom = top - height / total
            span = 1.0 - COL_GAP * (len(widths) - 1)
            left, row = 0.0, []
            for w in widths:
                n += 1
                right = left + span * w / sum(widths)
                suffix = "" if n == 1 else str(n)
                cell = Cell(f"x{suffix}", f"y{suffix}", (left, min(right, 1.0)),
                            (max(bottom, 0.0), top))
                self.layout[f"xaxis{suffix}"] = {"domain": list(cell.x), "anchor": cell.yref,
                                                 **AXIS}
                self.layout[f"yaxis{suffix}"] = {"domain": list(cell.y), "anchor": cell.xref,
                                                 **AXIS}
                row.append(cell)
                left = right + COL_GAP
            self.cells.append(row)
            top = bottom - GAP_PX / total

    def axis(self, cell: Cell, letter: str) -> dict:
        """The layout dict of ``cell``'s ``"x"`` or ``"y"`` axis, to set titles and types."""
        ref = cell.xref if letter == "x" else cell.yref
        return self.layout[f"{letter}axis{ref[1:]}"]


AXIS = {"gridcolor": "#e6e6e6", "zeroline": False, "linecolor": "#bbb", "ticks": "outside",
        "tickcolor": "#bbb", "automargin": True, "exponentformat": "power"}


def base_layout(grid: Grid, **extra) -> dict:
    """Common layout: fonts, margins, hover, and ``uirevision`` so zoom survives live updates."""
    return {"font": FONT, "margin": MARGIN, "paper_bgcolor": "white", "plot_bgcolor": "white",
            "hovermode": "closest", "uirevision": "keep", "showlegend": True,
            "legend": {"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1.0,
                       "yanchor": "top", "font": {"size": 10}, "tracegroupgap": 0},
            "shapes": [], "annotations": [], **grid.layout, **extra}


def figure(data: list, layout: dict) -> dict:
    """A figure dict."""
    return {"data": data, "layout": layout}


def placeholder(message: str, height: int = settings.ROW_HEIGHT_PX) -> dict:
    """An empty figure that says why there is nothing to draw."""
    hidden = {"visible": False}
    return {"data": [], "layout": {
        "height": height, "font": FONT, "margin": MARGIN, "paper_bgcolor": "white",
        "plot_bgcolor": "white", "xaxis": hidden, "yaxis": hidden,
        "annotations": [{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                         "x": 0.5, "y": 0.5, "font": {"size": 13, "color": "#666"}}],
        "meta": {"placeholder": message}}}


def fit(text: str, width: float) -> str:
    """``text`` cut to what a title over a cell ``width`` (fraction of the figure) holds, so
    titles of side-by-side plots never run into each other (the full text is in the hover)."""
    limit = max(8, int(width * settings.FIGURE_WIDTH_PX / settings.TITLE_CHAR_PX))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def title(grid: Grid, cell: Cell, text: str) -> dict:
    """A small title annotation above ``cell``, cut to the cell's width."""
    short = fit(text, cell.x[1] - cell.x[0])
    extra = {} if short == text else {"hovertext": text}
    return {**extra, "text": short, "showarrow": False, "xref": "paper", "yref": "paper",
            "x": cell.x[0], "y": cell.y[1], "xanchor": "left", "yanchor": "bottom",
            "font": {"size": 12, "color": "#444"}}


def live_tag(run: str, key: str, kind: str, stat: str = "mean", layer: str | None = None,
             size: int = 1, cursor: int | None = None, ema: list | None = None) -> dict:
    """``meta["live"]`` of an appendable trace: its source series, bucket width and cursor.

    ``ema`` is the smoothing state (see :func:`dashboard.downsample.ema`) for an EMA line,
    None for a line of plain values."""
    return {"run": run, "key": key, "kind": kind, "stat": stat, "layer": layer, "size": size,
            "cursor": cursor, "ema": ema}


def line(cell: Cell, x, y, name: str, colour: str, *, live: dict | None = None,
         width: float = 1.6, opacity: float = 1.0, group: str | None = None,
         showlegend: bool = True, hover: str | None = None) -> dict:
    """A line trace from lists (so a live run can extend it)."""
    trace = {"type": "scatter", "mode": "lines", "x": int_list(x), "y": round_sig(y),
             "name": name, "xaxis": cell.xref, "yaxis": cell.yref, "opacity": opacity,
             "line": {"color": colour, "width": width}, "legendgroup": group or name,
             "showlegend": showlegend, "connectgaps": False}
    if hover:
        trace["hovertemplate"] = hover
    if live is not None:
        trace["meta"] = {"live": live}
    return trace


def band(cell: Cell, x, lo, hi, colour: str, *, group: str, live_lo: dict | None = None,
         live_hi: dict | None = None) -> list:
    """Two traces shading ``lo..hi`` (the min..max of downsampled buckets) under a line."""
    fill = _rgba(colour, settings.RANGE_FILL_OPACITY)
    low = line(cell, x, lo, "min", colour, live=live_lo, width=0, group=group, showlegend=False,
               hover="min %{y}<extra></extra>")
    high = line(cell, x, hi, "max", colour, live=live_hi, width=0, group=group,
                showlegend=False, hover="max %{y}<extra></extra>")
    high.update({"fill": "tonexty", "fillcolor": fill})
    return [low, high]


def heatmap(cell: Cell, x, layers: Sequence[str], z: np.ndarray, *, colourscale: str,
            zmin: float | None = None, zmax: float | None = None,
            colorbar: dict | None = None, hover: str = "", zmid: float | None = None
            ) -> dict:
    """A layer x step heatmap; ``z`` is ``[layers, steps]`` and travels as float32 base64."""
    trace = {"type": "heatmap", "x": typed_array(np.asarray(x), "i4" if _fits_i4(x) else "f8"),
             "y": list(layers), "z": typed_array(z, "f4"), "xaxis": cell.xref,
             "yaxis": cell.yref, "colorscale": colourscale, "zsmooth": False,
             "hoverongaps": False, "showscale": True,
             "colorbar": {"thickness": 10, "len": cell.y[1] - cell.y[0], "y": sum(cell.y) / 2,
                          "yanchor": "middle", "x": cell.x[1] + 0.005, "xpad": 2,
                          "outlinewidth": 0, **(colorbar or {})},
             "hovertemplate": hover or "%{y} @ step %{x}: %{z}<extra></extra>"}
    for k, v in (("zmin", zmin), ("zmax", zmax), ("zmid", zmid)):
        if v is not None:
            trace[k] = v
    return trace


def bars(cell: Cell, layers: Sequence[str], values, colour: str, *, at_step: dict,
         highlight: str | None = None, hover: str = "%{y}: %{x}<extra></extra>") -> dict:
    """Horizontal bars, one per layer (same order as the heatmap rows beside them)."""
    return {"type": "bar", "orientation": "h", "x": round_sig(values), "y": list(layers),
            "xaxis": cell.xref, "yaxis": cell.yref, "name": f"step {at_step.get('step')}",
            "marker": {"color": bar_colours(layers, colour, highlight)}, "showlegend": False,
            "hovertemplate": hover, "meta": {"at_step": at_step}}


def bar_colours(layers: Sequence[str], colour: str, highlight: str | None) -> list:
    """Bar colours: ``colour``, and the highlight colour for the highlighted layer."""
    return [settings.HIGHLIGHT_COLOUR if name == highlight else colour for name in layers]


def cursor(cell: Cell, step: int | None) -> dict:
    """The replay cursor: a vertical line at ``step`` across ``cell`` (hidden when None)."""
    return {"type": "line", "xref": cell.xref, "yref": f"{cell.yref} domain", "x0": step or 0,
            "x1": step or 0, "y0": 0, "y1": 1, "visible": step is not None,
            "line": {"color": settings.CURSOR_COLOUR, "width": 1.5, "dash": "dot"},
            "name": "cursor"}


def row_highlight(cell: Cell, layer: str) -> dict:
    """An outline across ``cell`` at the row of ``layer`` (a categorical y value)."""
    return {"type": "line", "xref": f"{cell.xref} domain", "yref": cell.yref, "x0": 0, "x1": 1,
            "y0": layer, "y1": layer, "line": {"color": settings.HIGHLIGHT_COLOUR, "width": 2},
            "name": "highlight"}


def hband(cell: Cell, lo: float, hi: float, colour: str = settings.BAND_COLOUR) -> dict:
    """A horizontal reference band ``lo..hi`` across ``cell``."""
    return {"type": "rect", "xref": f"{cell.xref} domain", "yref": cell.yref, "x0": 0, "x1": 1,
            "y0": lo, "y1": hi, "fillcolor": colour, "line": {"width": 0}, "layer": "below",
            "name": "band"}


def hline(cell: Cell, y: float, colour: str, dash: str = "dash") -> dict:
    """A horizontal reference line at ``y`` across ``cell``."""
    return {"type": "line", "xref": f"{cell.xref} domain", "yref": cell.yref, "x0": 0, "x1": 1,
            "y0": y, "y1": y, "line": {"color": colour, "width": 1, "dash": dash},
            "name": "reference"}


def log_axis(axis: dict) -> dict:
    """Make ``axis`` logarithmic with ticks at decades only (readable on narrow plots)."""
    axis.update({"type": "log", "dtick": 1, "minor": {"showgrid": False}})
    return axis


def heatmap_height(n_layers: int) -> int:
    """Pixel height of a heatmap row with ``n_layers`` layers."""
    return int(min(settings.HEATMAP_MAX_PX,
                   max(settings.HEATMAP_MIN_PX, settings.LAYER_ROW_PX * n_layers)))


def run_colour(index: int) -> str:
    """Colour of the ``index``-th compared run."""
    return settings.RUN_COLOURS[index % len(settings.RUN_COLOURS)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    if len(h) == 3:  # "#abc" is "#aabbcc"
        h = "".join(c * 2 for c in h)
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _fits_i4(x) -> bool:
    x = np.asarray(x)
    return x.size == 0 or (np.issubdtype(x.dtype, np.integer) and x.max() < 2**31
                           and x.min() >= -2**31)
