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
LOSS_NOT_CAPTURED = "loss_not_captured"
"""Without ``loss_fn``, a step's captured losses held no cross-entropy/NLL call (once a run)."""
STEPS_NOT_COUNTED = "steps_not_counted"
"""No optimizer was given and ``monitor.step()`` never came: every forward is one step."""
OPTIMIZER_CHANGED = "optimizer_changed"
"""The optimizer's parameter groups changed (``add_param_group``): what the statistics follow."""


# ---- the series-key registry ------------------------------------------------------------------
# Every series name avionics writes is declared here, once, with its kind. The writer side
# (instruments, rules) and the reader side (dashboard panels) both name series through these
# declarations; what a key *is* (a user metric, a built-in scalar, a per-layer series or an
# internal diagnosis fact) is looked up here, never guessed from a hand-kept prefix list.

USER = "user"
"""A scalar the user passes to ``monitor.log()`` (only ``loss`` is declared: the rules read it)."""
BUILTIN = "builtin"
"""A scalar avionics records itself and the dashboard draws (``grad_norm/total``, ``lr/0``...)."""
PER_LAYER = "per_layer"
"""One value per named parameter or leaf module (``grad_norm``, ``act/mean``...)."""
FACT = "fact"
"""An internal fact recorded for the diagnosis rules (input fingerprints, criterion targets...)."""
KINDS = (USER, BUILTIN, PER_LAYER, FACT)


class KeySpec:
    """One declared series name.

    ``layered``: stored as a layer series (one column per parameter/module/rank/bin) rather than
    as a column of the scalars series. ``namespace``: the declaration covers every
    ``name/<suffix>`` (per-group scalars ``lr/0``, ``rank/*``...); the bare ``name`` is a series
    of its own only if ``itself`` (a user may ``log(lr=...)``: ``lr`` alone is not recorded).
    """

    __slots__ = ("name", "kind", "layered", "namespace", "itself", "doc")

    def __init__(self, name: str, kind: str, layered: bool, namespace: bool, itself: bool,
                 doc: str):
        self.name, self.kind, self.layered = name, kind, layered
        self.namespace, self.itself, self.doc = namespace, itself, doc

    def __repr__(self) -> str:
        return (f"KeySpec({self.name!r}, {self.kind}, layered={self.layered}, "
                f"namespace={self.namespace})")


REGISTRY: dict = {}
"""``name -> KeySpec`` of every declared series (filled by :func:`declare` at import)."""


def declare(name: str, kind: str, *, layered: bool = False, namespace: bool = False,
            itself: bool | None = None, doc: str = "") -> str:
    """Declare a series name once; returns the name (so ``X = declare("x", ...)``).

    ``itself`` defaults to ``not namespace`` (see :class:`KeySpec`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}; one of {KINDS}")
    if name in REGISTRY:
        raise ValueError(f"series key {name!r} is declared twice")
    REGISTRY[name] = KeySpec(name, kind, layered, namespace,
                             (not namespace) if itself is None else itself, doc)
    return name


def specs_of(key: str) -> list:
    """The declarations covering ``key``: its own, then every namespace above it."""
    own = REGISTRY.get(key)
    found = [own] if own is not None and own.itself else []
    head = key
    while "/" in head:
        head = head.rsplit("/", 1)[0]
        spec = REGISTRY.get(head)
        if spec is not None and spec.namespace:
            found.append(spec)
    return found


def is_reserved_scalar(key: str) -> bool:
    """True for scalar names avionics writes itself: ``monitor.log()`` must not reuse them (a
    user value there would be silently overwritten, or would overwrite avionics' own)."""
    return any(s.kind != USER and not s.layered for s in specs_of(key))


def is_user_scalar(key: str) -> bool:
    """True for scalar columns that come from ``monitor.log()`` (``loss`` included)."""
    return not is_reserved_scalar(key)


def is_diagnosis_fact(key: str) -> bool:
    """True for avionics' internal facts for the rules (not metrics a user looks for)."""
    return any(s.kind == FACT for s in specs_of(key))


def declared(kind: str | None = None) -> list:
    """Every declaration (of one kind), in declaration order."""
    return [s for s in REGISTRY.values() if kind is None or s.kind == kind]


class Keys:
    """Names of the built-in series. Panels and rules refer to these, never to string literals.

    Scalar series hold one value per step; layer series one value per parameter (``PARAM_*``)
    or per leaf module (``ACT_*``). ``per_group(key, i)`` names a per-param-group scalar.
    """

    LOSS = declare("loss", USER, doc="the loss the loop passes to monitor.log(loss=...)")

    # scalars, per optimizer param group: f"{LR}/{group index}"
    LR = declare("lr", BUILTIN, namespace=True, doc="learning rate per param group")
    MOMENTUM = declare("momentum", BUILTIN, namespace=True, doc="SGD momentum per group")
    BETA1 = declare("beta1", BUILTIN, namespace=True, doc="Adam beta1 per group")
    BETA2 = declare("beta2", BUILTIN, namespace=True, doc="Adam beta2 per group")
    WEIGHT_DECAY = declare("weight_decay", BUILTIN, namespace=True, doc="per group")

    # global scalars
    GRAD_NORM_TOTAL = declare("grad_norm/total", BUILTIN,
                              doc="global L2 norm of the gradient the optimizer step used")
    GRAD_NORM_TOTAL_BEFORE_CLIP = declare(
        "grad_norm/total_before_clip", BUILTIN,
        doc="global L2 norm of the gradient when backward finished (what clip_grad_norm_ "
            "returns); recorded only on steps where the step's gradient differs from it")
    WEIGHT_NORM_TOTAL = declare("weight_norm/total", BUILTIN)
    UPDATE_NORM_TOTAL = declare("update_norm/total", BUILTIN)
    UPDATE_RATIO_TOTAL = declare("update_ratio/total", BUILTIN)

    # per parameter (layer = parameter name)
    GRAD_NORM = declare("grad_norm", PER_LAYER, layered=True)
    WEIGHT_NORM = declare("weight_norm", PER_LAYER, layered=True)
    UPDATE_NORM = declare("update_norm", PER_LAYER, layered=True)
    UPDATE_RATIO = declare("update_ratio", PER_LAYER, layered=True)
    EFFECTIVE_LR = declare("effective_lr", PER_LAYER, layered=True)
    ADAPTIVE_LR_P10 = declare("adaptive_lr/p10", PER_LAYER, layered=True)
    ADAPTIVE_LR_MEDIAN = declare("adaptive_lr/median", PER_LAYER, layered=True)
    ADAPTIVE_LR_P90 = declare("adaptive_lr/p90", PER_LAYER, layered=True)

    # per leaf module (layer = module name)
    ACT_MEAN = declare("act/mean", PER_LAYER, layered=True)
    ACT_STD = declare("act/std", PER_LAYER, layered=True)
    ACT_MIN = declare("act/min", PER_LAYER, layered=True)
    ACT_MAX = declare("act/max", PER_LAYER, layered=True)
    ACT_ZERO_FRAC = declare("act/zero_frac", PER_LAYER, layered=True)
    ACT_DEAD_FRAC = declare("act/dead_frac", PER_LAYER, layered=True)
    ACT_UNIT_OBSERVATIONS = declare("act/unit_observations", PER_LAYER, layered=True,
                                    doc="values per unit behind act/dead_frac")
    ACT_SATURATION_FRAC = declare("act/saturation_frac", PER_LAYER, layered=True)
    ACT_NONFINITE = declare("act/nonfinite", PER_LAYER, layered=True)

    # torch.distributed (instrument/distributed/rankview.py): per rank, layer = rank ("0", ...)
    RANK_PREFIX = "rank/"
    _RANK = declare("rank", BUILTIN, namespace=True, doc="torch.distributed per-rank series")
    RANK_STEP_TIME = declare("rank/step_time", PER_LAYER, layered=True)
    RANK_COMPUTE_TIME = declare("rank/compute_time", PER_LAYER, layered=True)
    RANK_BETWEEN_TIME = declare("rank/between_time", PER_LAYER, layered=True)
    RANK_SYNC_TIME = declare("rank/sync_time", PER_LAYER, layered=True)
    RANK_LOSS = declare("rank/loss", PER_LAYER, layered=True)
    RANK_NONFINITE = declare("rank/nonfinite_modules", PER_LAYER, layered=True)
    RANK_STEP_TIME_SPREAD = declare("rank/step_time_spread", BUILTIN,
                                    doc="slowest minus fastest rank")

    PER_GROUP = (LR, MOMENTUM, BETA1, BETA2, WEIGHT_DECAY)

    @staticmethod
    def per_group(key: str, group: int) -> str:
        """Name of the per-param-group scalar ``key`` for param group ``group``."""
        return f"{key}/{group}"

    @classmethod
    def is_builtin_scalar(cls, key: str) -> bool:
        """True for scalar names that the instruments write and ``log()`` must not reuse."""
        return is_reserved_scalar(key)


class DKeys:
    """Facts recorded for the diagnosis rules (see ``instrument/instruments/``)."""

    # zero_grad instrument, per parameter: 1 = this step's first backward accumulated into the
    # gradient left over from the previous optimizer step, 0 = into a cleared one, NaN = no
    # accumulation observed.
    GRAD_STALE = declare("grad_stale", FACT, layered=True)

    # train_mode instrument, per module ("(model)" first, then dropout / batch-norm modules):
    # 1 = training mode, 0 = eval mode, at the optimizer step.
    TRAIN_MODE = declare("train_mode", FACT, layered=True)

    # forward_order instrument, per leaf module: rank in the forward pass (0 = called first)
    FORWARD_ORDER = declare("forward_order", FACT, layered=True)

    # inputs / input_stats instruments (first tensor argument of the model's grad-enabled
    # forward calls); INPUT_BATCH counts the samples of the step (all micro-batches, all
    # data-parallel ranks)
    _INPUT = declare("input", FACT, namespace=True, doc="the model's input batch")
    INPUT_MEAN = declare("input/mean", FACT)
    INPUT_STD = declare("input/std", FACT)
    INPUT_MIN = declare("input/min", FACT)
    INPUT_MAX = declare("input/max", FACT)
    INPUT_BATCH = declare("input/batch", FACT)
    INPUT_FP0 = declare("input/fingerprint0", FACT)
    INPUT_FP1 = declare("input/fingerprint1", FACT)

    # criterion instrument (the loss the loop computes: its inputs and targets)
    _CRITERION = declare("criterion", FACT, namespace=True, doc="the criterion's inputs")
    CRIT_LOSS = declare("criterion/loss", FACT)
    CRIT_CLASSES = declare("criterion/classes", FACT)
    CRIT_TARGETS = declare("criterion/targets", FACT)
    CRIT_TARGET_MIN = declare("criterion/target_min", FACT)
    CRIT_TARGET_MAX = declare("criterion/target_max", FACT)
    CRIT_NLL = declare("criterion/nll", FACT)  # captured losses: 1 if the step's classifier
    # calls (those recorded) were F.nll_loss, 0 if F.cross_entropy

    # logits instrument (the criterion's first argument, class dimension = 1)
    _LOGITS = declare("logits", FACT, namespace=True, doc="the criterion's logits")
    LOGIT_MIN = declare("logits/min", FACT)
    LOGIT_MAX = declare("logits/max", FACT)
    LOGIT_SUM_DEV = declare("logits/rowsum_dev", FACT)
    LOGIT_LSE_DEV = declare("logits/logsumexp_dev", FACT)
    BCE_INPUT_MIN = declare("logits/bce_min", FACT)  # captured F.binary_cross_entropy_with_logits
    BCE_INPUT_MAX = declare("logits/bce_max", FACT)  # calls: the range of their input

    MODEL_LAYER = "(model)"
    """Layer name of the model itself in :attr:`TRAIN_MODE`."""


class CockpitKeys:
    """Series of the Cockpit instruments (``instrument/cockpit``), all under ``cockpit/``.

    Per-parameter layer series use the bare key (layer = parameter name) and their global value
    is the scalar ``<key>/total``. Cockpit's GradNorm and UpdateSize are the core series
    ``Keys.GRAD_NORM`` and ``Keys.UPDATE_NORM``; its Loss is the user's ``loss`` scalar.
    Histograms are layer-like series whose "layers" are bins (see :class:`HistogramBins`).
    """

    PREFIX = "cockpit/"
    _ALL = declare("cockpit", BUILTIN, namespace=True,
                   doc="Cockpit's instruments; per-layer keys have a <key>/total scalar")
    ALPHA = declare("cockpit/alpha", PER_LAYER, layered=True)
    """Alpha, stored under the step where the update started. It is only known one step later,
    when that step's scalar row is already written, so it is a one-column layer-like series
    (column :attr:`ALPHA_COLUMN`) whose rows arrive one step late."""
    ALPHA_COLUMN = "alpha"
    DISTANCE = declare("cockpit/distance", PER_LAYER, layered=True)
    NORM_TEST = declare("cockpit/norm_test", PER_LAYER, layered=True)
    INNER_TEST = declare("cockpit/inner_test", PER_LAYER, layered=True)
    ORTHO_TEST = declare("cockpit/ortho_test", PER_LAYER, layered=True)
    HESS_TRACE = declare("cockpit/hess_trace", PER_LAYER, layered=True)
    TIC_DIAG = declare("cockpit/tic_diag", PER_LAYER, layered=True)
    TIC_TRACE = declare("cockpit/tic_trace", PER_LAYER, layered=True)
    MEAN_GSNR = declare("cockpit/mean_gsnr", PER_LAYER, layered=True)
    CABS = declare("cockpit/cabs", PER_LAYER, layered=True)
    EARLY_STOPPING = declare("cockpit/early_stopping", PER_LAYER, layered=True)
    HESS_MAX_EV = declare("cockpit/hess_max_ev", BUILTIN)
    HESS_MAX_EV_RESIDUAL = declare("cockpit/hess_max_ev/residual", BUILTIN,
                                   doc="||Hv - lv|| / |l|")
    HESS_MAX_EV_ITERATIONS = declare("cockpit/hess_max_ev/iterations", BUILTIN,
                                     doc="Hessian-vector products used")
    HESS_MAX_EV_BOUND = declare("cockpit/hess_max_ev/bound", BUILTIN,
                                doc="how far the top eigenvalue may lie above it, / |l|")
    GRAD_HIST_1D = declare("cockpit/grad_hist_1d", PER_LAYER, layered=True, namespace=True,
                           itself=True, doc="all parameters; layers = 1-D bins; per parameter below it")
    GRAD_HIST_2D = declare("cockpit/grad_hist_2d", PER_LAYER, layered=True,
                           doc="layers = 2-D bins (gradient x parameter value)")

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
