"""The store's contract: file name, schema version, tables and the names of recorded series.

This module is the only thing `instrument/` (the writer) and `dashboard/` (a reader) share.
It imports neither torch nor numpy.

A run is a directory holding one SQLite database, :data:`STORE_FILE`. The tables are:

``schema``   one row, the schema version the file was written with.
``meta``     ``key -> JSON value``: name, status, heartbeat, model/optimizer summary, settings.
``series``   one row per stored series with ``layers``, the JSON list of its column names.
             ``kind`` ``"layer"``: one column per named layer (parameter or module) of one key.
             All scalars share ONE series, :data:`SCALARS_SERIES` (kind ``"scalars"``), whose
             columns are the scalar keys, so a step's scalars are one row.
``steps``    the wall time of every logged step.
``points``   raw values: one row per (series, step); ``value`` is a little-endian array
             (float64 for scalars, float32 for layer series), one entry per column; NaN means
             "not recorded at this step".
``buckets``  the downsampling pyramid: level ``L`` aggregates the steps
             ``[b * BASE**L, (b + 1) * BASE**L)`` into count, mean, min and max per column;
             only closed buckets are stored (a reader covers the open tail with finer levels).
``events``   NaN/Inf events, instrument errors and diagnosis warnings.
"""

from __future__ import annotations

STORE_FILE = "avionics.db"
"""File name of a run's database inside its run directory."""

SCHEMA_VERSION = 2
"""Bumped whenever a reader of the previous version could misread a file.
v2: all scalars in one wide series; closed-bucket pyramid with per-column counts."""

OLDEST_READABLE_VERSION = 2
"""Older stores (pre-release layouts) are refused with a clear message, not misread."""

PYRAMID_BASE = 4
"""Each pyramid level aggregates this many buckets of the level below."""

PYRAMID_LEVELS = 12
"""Levels 1..PYRAMID_LEVELS are kept: the coarsest bucket spans 4**12 (about 1.7e7) steps."""

SCALAR = "scalar"
LAYER = "layer"
SCALARS_SERIES = "__scalars__"
"""Key of the one stored series (kind ``"scalars"``) that holds every scalar as a column."""
SCALARS_KIND = "scalars"

SCALAR_DTYPE = "<f8"
LAYER_DTYPE = "<f4"

DDL = (
    "CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        layers TEXT,
        UNIQUE (key, kind))""",
    "CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, wall_time REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS points (
        series INTEGER NOT NULL,
        step INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (series, step)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS buckets (
        series INTEGER NOT NULL,
        level INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL,
        first_step INTEGER NOT NULL,
        last_step INTEGER NOT NULL,
        count BLOB NOT NULL,
        mean BLOB NOT NULL,
        min BLOB NOT NULL,
        max BLOB NOT NULL,
        PRIMARY KEY (series, level, bucket)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        step INTEGER,
        wall_time REAL NOT NULL,
        code TEXT NOT NULL,
        severity TEXT NOT NULL,
        layer TEXT,
        message TEXT NOT NULL,
        evidence TEXT,
        suggestion TEXT,
        rank INTEGER)""",
    "CREATE INDEX IF NOT EXISTS events_step ON events (step)",
)

# ---- run status (meta "status") -------------------------------------------------------------
RUNNING = "running"
FINISHED = "finished"
CRASHED = "crashed"

HEARTBEAT_INTERVAL_S = 1.0
"""The writer thread refreshes meta "heartbeat" this often while the process lives."""

HEARTBEAT_STALE_S = 15.0
"""A "running" run whose heartbeat is older than this reads as crashed."""

# ---- event severities -----------------------------------------------------------------------
INFO = "info"
WARNING = "warning"
CRITICAL = "critical"
SEVERITIES = (INFO, WARNING, CRITICAL)

# ---- event codes written by instrument/ itself (diagnosis rules add their own) --------------
NONFINITE = "nonfinite"
INSTRUMENT_ERROR = "instrument_error"
DISTRIBUTED = "distributed"
"""torch.distributed facts: notes on what is (not) combined, ranks out of step."""
COCKPIT_UNSUPPORTED = "cockpit_unsupported"
"""A Cockpit quantity cannot be computed for a layer (or at all); the note says why."""
COCKPIT_NOT_CONVERGED = "cockpit_not_converged"
"""The Hessian max-eigenvalue iteration stopped above its residual tolerance."""


class Keys:
    """Names of the built-in series. Panels and rules refer to these, never to string literals.

    Scalar series hold one value per step; layer series one value per parameter (``PARAM_*``)
    or per leaf module (``ACT_*``). ``per_group(key, i)`` names a per-param-group scalar.
    """

    LOSS = "loss"

    # scalars, per optimizer param group: f"{LR}/{group index}"
    LR = "lr"
    MOMENTUM = "momentum"
    BETA1 = "beta1"
    BETA2 = "beta2"
    WEIGHT_DECAY = "weight_decay"

    # global scalars
    GRAD_NORM_TOTAL = "grad_norm/total"
    WEIGHT_NORM_TOTAL = "weight_norm/total"
    UPDATE_NORM_TOTAL = "update_norm/total"
    UPDATE_RATIO_TOTAL = "update_ratio/total"

    # per parameter (layer = parameter name)
    GRAD_NORM = "grad_norm"
    WEIGHT_NORM = "weight_norm"
    UPDATE_NORM = "update_norm"
    UPDATE_RATIO = "update_ratio"
    EFFECTIVE_LR = "effective_lr"
    ADAPTIVE_LR_P10 = "adaptive_lr/p10"
    ADAPTIVE_LR_MEDIAN = "adaptive_lr/median"
    ADAPTIVE_LR_P90 = "adaptive_lr/p90"

    # per leaf module (layer = module name)
    ACT_MEAN = "act/mean"
    ACT_STD = "act/std"
    ACT_MIN = "act/min"
    ACT_MAX = "act/max"
    ACT_ZERO_FRAC = "act/zero_frac"
    ACT_DEAD_FRAC = "act/dead_frac"
    ACT_UNIT_OBSERVATIONS = "act/unit_observations"  # values per unit behind act/dead_frac
    ACT_SATURATION_FRAC = "act/saturation_frac"
    ACT_NONFINITE = "act/nonfinite"

    # torch.distributed (instrument/distributed/rankview.py): per rank, layer = rank ("0", ...)
    RANK_STEP_TIME = "rank/step_time"
    RANK_COMPUTE_TIME = "rank/compute_time"
    RANK_BETWEEN_TIME = "rank/between_time"
    RANK_SYNC_TIME = "rank/sync_time"
    RANK_LOSS = "rank/loss"
    RANK_NONFINITE = "rank/nonfinite_modules"
    RANK_STEP_TIME_SPREAD = "rank/step_time_spread"  # scalar: slowest minus fastest rank
    RANK_PREFIX = "rank/"

    PER_GROUP = (LR, MOMENTUM, BETA1, BETA2, WEIGHT_DECAY)

    @staticmethod
    def per_group(key: str, group: int) -> str:
        """Name of the per-param-group scalar ``key`` for param group ``group``."""
        return f"{key}/{group}"

    @classmethod
    def is_builtin_scalar(cls, key: str) -> bool:
        """True for scalar names that the instruments write and ``log()`` must not reuse."""
        head = key.split("/", 1)[0]
        totals = (cls.GRAD_NORM_TOTAL, cls.WEIGHT_NORM_TOTAL, cls.UPDATE_NORM_TOTAL,
                  cls.UPDATE_RATIO_TOTAL)
        return (key in totals or (head in cls.PER_GROUP and key != head)
                or key.startswith(cls.RANK_PREFIX) or key.startswith(CockpitKeys.PREFIX))


class CockpitKeys:
    """Series of the Cockpit instruments (``instrument/cockpit``), all under ``cockpit/``.

    Per-parameter layer series use the bare key (layer = parameter name) and their global value
    is the scalar ``<key>/total``. Cockpit's GradNorm and UpdateSize are the core series
    ``Keys.GRAD_NORM`` and ``Keys.UPDATE_NORM``; its Loss is the user's ``loss`` scalar.
    Histograms are layer-like series whose "layers" are bins (see :class:`HistogramBins`).
    """

    PREFIX = "cockpit/"
    ALPHA = "cockpit/alpha"
    """Alpha, stored under the step where the update started. It is only known one step later,
    when that step's scalar row is already written, so it is a one-column layer-like series
    (column :attr:`ALPHA_COLUMN`) whose rows arrive one step late."""
    ALPHA_COLUMN = "alpha"
    DISTANCE = "cockpit/distance"
    NORM_TEST = "cockpit/norm_test"
    INNER_TEST = "cockpit/inner_test"
    ORTHO_TEST = "cockpit/ortho_test"
    HESS_TRACE = "cockpit/hess_trace"
    TIC_DIAG = "cockpit/tic_diag"
    TIC_TRACE = "cockpit/tic_trace"
    MEAN_GSNR = "cockpit/mean_gsnr"
    CABS = "cockpit/cabs"
    EARLY_STOPPING = "cockpit/early_stopping"
    HESS_MAX_EV = "cockpit/hess_max_ev"  # scalar
    HESS_MAX_EV_RESIDUAL = "cockpit/hess_max_ev/residual"  # scalar: ||Hv - lv|| / |l|
    HESS_MAX_EV_ITERATIONS = "cockpit/hess_max_ev/iterations"  # scalar: HVPs used
    HESS_MAX_EV_BOUND = "cockpit/hess_max_ev/bound"  # scalar: error bound / |l| (lanczos.ritz)
    GRAD_HIST_1D = "cockpit/grad_hist_1d"  # all parameters; layers = 1-D bins
    GRAD_HIST_2D = "cockpit/grad_hist_2d"  # layers = 2-D bins (gradient x parameter value)

    PER_LAYER = (DISTANCE, NORM_TEST, INNER_TEST, ORTHO_TEST, HESS_TRACE, TIC_DIAG, TIC_TRACE,
                 MEAN_GSNR, CABS, EARLY_STOPPING)

    @staticmethod
    def total(key: str) -> str:
        """The scalar holding the global value of per-layer series ``key``."""
        return f"{key}/total"

    @staticmethod
    def hist_1d_of(param: str) -> str:
        """The 1-D histogram series of one parameter's individual gradients."""
        return f"{CockpitKeys.GRAD_HIST_1D}/{param}"


class HistogramBins:
    """Bin labels of histogram series: uniform bins, labelled by their left edges.

    A 1-D bin is labelled ``"<left edge>"``; a 2-D bin ``"<x left edge>|<y left edge>"`` in
    x-major order (x = individual gradient element, y = parameter value). Values outside the
    range are counted in the first or last bin, as Cockpit does.
    """

    SEP = "|"

    @staticmethod
    def edges(lo: float, hi: float, bins: int) -> list:
        """The ``bins + 1`` bin edges of ``[lo, hi]``."""
        return [lo + (hi - lo) * j / bins for j in range(bins + 1)]

    @classmethod
    def labels_1d(cls, lo: float, hi: float, bins: int) -> list:
        return [f"{e:.6g}" for e in cls.edges(lo, hi, bins)[:-1]]

    @classmethod
    def labels_2d(cls, x: tuple, y: tuple) -> list:
        """Labels for ``x = (lo, hi, bins)`` by ``y = (lo, hi, bins)``, x-major."""
        return [f"{a}{cls.SEP}{b}" for a in cls.labels_1d(*x) for b in cls.labels_1d(*y)]

    @classmethod
    def parse_1d(cls, labels) -> list:
        """Left edges from 1-D labels (floats)."""
        return [float(s) for s in labels]

    @classmethod
    def parse_2d(cls, labels) -> tuple:
        """``(x_left_edges, y_left_edges)`` (sorted unique floats) from 2-D labels."""
        xs, ys = set(), set()
        for s in labels:
            a, b = s.split(cls.SEP)
            xs.add(float(a))
            ys.add(float(b))
        return sorted(xs), sorted(ys)
