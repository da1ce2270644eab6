"""Display constants of the dashboard, in one place: budgets, timings, reference bands, colours.

Panels and callbacks import these names; no number that shapes what the user sees or what the
server sends is written inline anywhere else.
"""

from __future__ import annotations

# ---- payload budgets (the issue: <= ~2,000 points per trace / columns per heatmap) -------------
MAX_TRACE_POINTS = 2000
"""Most points one line trace ever holds in the browser, live appends included. Rendering asks
the store's pyramid for at most this many rows; a live append that would go past it triggers a
fresh, coarser render instead."""

MAX_FIGURE_POINTS = 24_000
"""Most line points one figure holds in total. A figure with one line per layer (200 layers)
gets ``MAX_FIGURE_POINTS // layers`` points per line, so its payload stays near 0.5 MB."""

MIN_TRACE_POINTS = 64
"""Floor of the per-line budget, so very wide models still show a shape per layer."""

MAX_HEATMAP_COLUMNS = 2000
"""Most step columns of one heatmap."""

MAX_FIGURE_CELLS = 150_000
"""Most heatmap cells (layers x columns, all heatmaps of a figure together). Cells travel as
base64 float32, so this bounds a figure's heatmaps to about 0.8 MB (budget: 1 MB per refresh)."""

HEATMAP_BAR_WIDTHS = (4, 1)
"""Relative widths of a run's layer x step heatmap and the bars at the selected step beside it."""

MAX_BAR_LAYERS = 2000
"""Bars at the selected step show at most this many layers (one value each)."""

SIGNIFICANT_DIGITS = 6
"""Line values are rounded to this many significant digits before they are sent as JSON:
plenty for a plot and hover, and about half the bytes of full float64 text."""

# ---- live updates -------------------------------------------------------------------------------
POLL_INTERVAL_MS = 1000
"""How often the browser asks for new rows. With the writer's default 0.5 s flush interval this
keeps log()-to-browser latency under the issue's 2 s."""

HEATMAP_REFRESH_S = 5.0
"""Heatmaps cannot be appended to (they travel as typed arrays); during a live run a panel with
heatmaps re-renders them at most this often, and appends to its lines in between."""

LIVE_APPEND_ROWS = 20_000
"""Most raw rows one poll reads per series; a run further ahead than this is re-rendered."""

RUNS_PAGE_SIZE = 12
"""Rows per page of the runs table (sorting and filtering cover every run, not one page)."""

RUN_LIST_TTL_S = 2.0
"""The list of runs under the log directory is re-scanned at most this often."""

MAX_URL_RUNS = 16
"""Runs read from one URL (more are ignored), so a URL cannot make the server open many stores."""

MAX_RUN_DEPTH = 4
"""Run directories are looked for at most this many levels below the log directory."""

# ---- replay -------------------------------------------------------------------------------------
PLAY_INTERVAL_MS = 500
"""Replay advances the step slider at most this often while playing (slower speeds tick once
per step); each tick costs one request per panel."""

PLAY_SPEEDS = (1, 10, 100, 1000, 10_000)
"""Replay speeds offered, in steps per second."""

DEFAULT_PLAY_SPEED = 10
"""Replay speed selected when the page opens."""

SLIDER_MARKS = 6
"""Labelled marks under the step slider (Dash warns above 500)."""

# ---- smoothing and reference bands ---------------------------------------------------------------
EMA_WEIGHT = 0.9
"""Weight of the past in the EMA smoothing toggle (TensorBoard's "smoothing" 0.9), debiased.
On downsampled lines a bucket of ``n`` steps counts as ``n`` steps: weight ``EMA_WEIGHT ** n``."""

UPDATE_RATIO_REFERENCE = 1e-3
"""The update/weight ratio rule of thumb: about 1e-3 per step is a healthy learning rate
(much lower: learning slowly; much higher: unstable)."""

UPDATE_RATIO_BAND = (10 ** -3.5, 10 ** -2.5)
"""Shaded band around :data:`UPDATE_RATIO_REFERENCE`: half a decade either side."""

DEAD_FRACTION_RANGE = (0.0, 1.0)
"""Colour range of the dead-unit and saturation fraction heatmaps (fractions)."""

MAX_SCALAR_PLOTS = 60
"""The loss panel draws at most this many of the keys its search box matches (every user key
when none is typed); above it, it says how many more match and asks to narrow the filter."""

MAX_GENERIC_KEYS = 3
"""The "other per-layer series" panel draws this many series (the search box picks others)."""

SCALARS_TWO_COLUMNS = 8
"""Up to this many scalars under the loss sit two to a row; more sit three to a row."""

AUTO_LOG_DECADES = 3.0
"""A scalar whose positive values span more than this many decades gets a log y axis."""

ROBUST_QUANTILES = (0.01, 0.99)
"""The *robust y range* toggle fits the y axis to these quantiles (outliers drawn off-scale)."""

MAX_LEGEND_LAYERS = 12
"""Per-layer line plots show a legend only up to this many layers (hover names them all)."""

MAX_EVENT_ROWS = 200
"""Most rows of the events table (newest first); the timeline shows every event."""

# ---- figure geometry and colours -----------------------------------------------------------------
ROW_HEIGHT_PX = 240
"""Height of one row of plots in a panel."""

PLACEHOLDER_SMALL_PX = 110
"""Height of the "nothing to show" note of panels that are often empty (events)."""

SMALL_ROW_HEIGHT_PX = 180
"""Height of a row of small multiples (the user scalars under the loss)."""

LAYER_ROW_PX = 14
"""Height per layer of a layer x step heatmap, between the two bounds below."""

HEATMAP_MIN_PX = 160
HEATMAP_MAX_PX = 520

ROW_GAP_PX = 56
"""Vertical space between rows of plots in a panel (tick labels and titles live there)."""

COLUMN_GAP = 0.06
"""Horizontal space between plots of a row, as a fraction of the panel's width."""

MARGIN_PX = {"l": 64, "r": 24, "t": 28, "b": 36}
"""Figure margins (plotly grows them further for tick labels, legends and colour bars)."""

FIGURE_WIDTH_PX = 1400
"""The width figures are laid out for (the page's panel width at 1600 px): titles of side-by-
side plots are cut to what their share of it holds."""

TITLE_CHAR_PX = 7.0
"""Average width of a character of a plot title (12 px system font)."""

FONT_SIZE = 12
"""Base font size of figures, in px."""

COLOURBAR_TICKS = 8
"""Most labelled decades on a log colour bar."""

EVENT_ROW_PX = 42
"""Height per event code (row) of the events timeline."""

EVENT_MARKER_PX = 10
"""Marker size on the events timeline."""

RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
               "#e377c2")
"""One colour per compared run (cycled)."""

LAYER_COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#c8b400", "#f89540", "#cc4778",
                 "#7e03a8")
"""Ramp for one-line-per-layer plots: first layer dark blue, last magenta (input order)."""

BAR_COLOUR = "#3b528b"
"""Bars at the selected step."""

REFERENCE_COLOUR = "#222222"
"""Reference lines and whole-model totals drawn among per-layer lines."""

SEVERITY_COLOURS = {"info": "#1f77b4", "warning": "#ff7f0e", "critical": "#d62728"}
"""Event marker colours by severity."""

CURSOR_COLOUR = "rgba(214, 39, 40, 0.85)"
"""The replay cursor line on time series."""

HIGHLIGHT_COLOUR = "#ff7f0e"
"""Outline of the highlighted layer (clicked event) in heatmaps and bars."""

THRESHOLD_COLOUR = "#cf222e"
"""Dashed threshold lines (the gradient tests' 1)."""

ZERO_COLOUR = "#3d3d3d"
"""Cells that are exactly 0 on a log-coloured heatmap (not recorded: no cell, white)."""

BAND_COLOUR = "rgba(44, 160, 44, 0.12)"
"""Fill of reference bands."""

RANGE_FILL_OPACITY = 0.15
"""Opacity of the min..max band drawn under a downsampled line."""

LOG_COLOURSCALE = "Viridis"
"""Heatmaps of log10 values (gradient norms, activation std). Names must be plotly.js built-ins
(figures are plain dicts, so plotly.py's extra scales such as "Magma" are not expanded)."""

FRACTION_COLOURSCALE = [[0.0, "#fff7ec"], [0.25, "#fdd49e"], [0.5, "#fc8d59"],
                        [0.75, "#d7301f"], [1.0, "#7f0000"]]
"""Fractions in 0..1 (dead units, saturation): white at 0, dark red at 1."""

DIVERGING_COLOURSCALE = "RdBu"
"""Signed values centred on 0 (activation mean): blue negative, red positive."""

# ---- health strip ---------------------------------------------------------------------------------
HEALTH_FINDINGS = 8
"""Finding groups listed open in the health strip (the rest fold under "N more findings"), so
the strip fits the first screen at 1600 x 1000."""
