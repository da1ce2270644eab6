"""Cockpit's configurations as presets, and the options of the Cockpit instruments.

``watch(..., preset="economy" | "business" | "full")`` enables the instruments of Cockpit's
configuration of that name (``cockpit.utils.configuration``); ``preset=Preset("full",
lanczos_iterations=20)`` also changes options. Every instrument can instead be enabled and
scheduled alone with ``watch(schedules={"norm_test": 10})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from instrument.cockpit import constants as C

ECONOMY = ("alpha", "distance", "grad_hist_1d", "grad_norm", "inner_test", "norm_test",
           "ortho_test", "update")
"""Cockpit's "economy": Alpha, Distance, GradHist1d, GradNorm, InnerTest, Loss (the user's
``log(loss=...)``), NormTest, OrthoTest, UpdateSize (the core ``update`` instrument)."""

BUSINESS = ECONOMY + ("tic_diag", "hess_trace")
FULL = BUSINESS + ("hess_max_ev", "grad_hist_2d")
SECONDARY = ("tic_trace", "mean_gsnr", "cabs", "early_stopping")
"""In no Cockpit configuration (its "secondary screen"); enable them by name."""

PRESETS = {"economy": ECONOMY, "business": BUSINESS, "full": FULL}

CURVATURE_ENGINES = ("ggn", "diag_h")


@dataclass(frozen=True)
class Preset:
    """A Cockpit configuration plus options of its instruments.

    Args:
        name: ``"economy"``, ``"business"``, ``"full"``, or None (options only; instruments
            are enabled through ``schedules``).
        extra: further instrument names to enable (e.g. ``("mean_gsnr", "cabs")``).
        curvature: diagonal curvature for HessTrace and TIC. ``"ggn"``: the exact diagonal of
            the generalized Gauss-Newton matrix, computed by avionics' own engine (equal to the
            Hessian diagonal for piecewise-linear networks such as ReLU CNNs); ``"diag_h"``: the
            exact Hessian diagonal from BackPACK's ``DiagHessian`` (needs a model that BackPACK
            supports completely; otherwise falls back to ``"ggn"`` with a note).
        hist_1d_bins, hist_1d_range: GradHist1d bins and range.
        hist_2d_bins, hist_2d_range: GradHist2d bins and ranges (gradient, parameter).
        lanczos_iterations: Hessian-vector products per HessMaxEV step.
    """

    name: str | None = None
    extra: tuple = ()
    curvature: str = "ggn"
    hist_1d_bins: int = C.HIST_1D_BINS
    hist_1d_range: tuple = C.HIST_1D_RANGE
    hist_2d_bins: tuple = C.HIST_2D_BINS
    hist_2d_range: tuple = C.HIST_2D_RANGE
    lanczos_iterations: int = C.LANCZOS_ITERATIONS
    instruments: tuple = field(init=False, default=())

    def __post_init__(self):
        if self.name is not None and self.name not in PRESETS:
            raise ValueError(f"unknown preset {self.name!r}; choose one of {list(PRESETS)} "
                             "(Cockpit's configurations) or None")
        if self.curvature not in CURVATURE_ENGINES:
            raise ValueError(f"Preset(curvature=...) must be one of {CURVATURE_ENGINES}, got "
                             f"{self.curvature!r}")
        if not isinstance(self.lanczos_iterations, int) or self.lanczos_iterations < 1:
            raise ValueError("Preset(lanczos_iterations=...) must be an int >= 1")
        _check_bins("hist_1d", self.hist_1d_bins, self.hist_1d_range)
        for bins, rng in zip(self.hist_2d_bins, self.hist_2d_range):
            _check_bins("hist_2d", bins, rng)
        known = set(FULL) | set(SECONDARY)
        unknown = sorted(set(self.extra) - known)
        if unknown:
            raise ValueError(f"Preset(extra=...) names unknown instruments {unknown}; known: "
                             f"{sorted(known)}")
        names = PRESETS.get(self.name, ()) + tuple(self.extra)
        object.__setattr__(self, "instruments", tuple(dict.fromkeys(names)))

    def describe(self) -> dict:
        """JSON-ready summary for the run's metadata."""
        d = asdict(self)
        d["instruments"] = list(self.instruments)
        return d


def _check_bins(what, bins, rng):
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"Preset: {what} bins must be a positive int, got {bins!r}")
    lo, hi = rng
    if not lo < hi:
        raise ValueError(f"Preset: {what} range must be (low, high) with low < high, got {rng!r}")


@dataclass
class Resolved:
    """What ``watch()`` needs: the optional instruments to build and their options."""

    enabled: frozenset
    options: Preset

    def install(self, ctx) -> None:
        """Make the options visible to the instruments (``ctx.services``)."""
        ctx.services["cockpit.options"] = self.options

    def describe(self) -> dict | None:
        return self.options.describe() if self.enabled else None


def resolve(preset: str | Preset | None, schedules: Mapping, loss_fn,
            optional_names) -> Resolved:
    """Validate ``preset`` and the schedules that name optional instruments.

    Raises:
        ValueError, TypeError: unknown preset. (Instruments that need the loss read the
            criterion module given as ``loss_fn`` or, without one, the captured functional
            losses; where neither reaches a layer, it gets a note in the run.)
    """
    if preset is None:
        options = Preset()
    elif isinstance(preset, str):
        options = Preset(preset)
    elif isinstance(preset, Preset):
        options = preset
    else:
        raise TypeError(f"preset must be one of {list(PRESETS)}, an instrument.cockpit.Preset, "
                        f"or None; got {type(preset).__name__}")
    enabled = set(options.instruments)
    for name, spec in schedules.items():
        if name in optional_names:
            if spec is None or spec is False:  # switched off: do not even build it
                enabled.discard(name)
            else:
                enabled.add(name)
    enabled &= set(optional_names) | {"grad_norm", "update"}
    return Resolved(frozenset(n for n in enabled if n in optional_names), options)
