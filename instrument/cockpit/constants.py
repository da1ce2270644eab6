"""Named constants of the Cockpit instruments: histogram bins, stabilizers, iteration counts.

Defaults follow Cockpit (cockpit-for-pytorch 1.0.2) wherever Cockpit has one, so that values
are comparable; each can be changed per run with :class:`instrument.cockpit.Preset`.
"""

HIST_1D_BINS = 100
"""GradHist1d: number of bins (Cockpit's default)."""

HIST_1D_RANGE = (-2.0, 2.0)
"""GradHist1d: range of individual gradient elements; outliers are counted in the edge bins."""

HIST_2D_BINS = (40, 50)
"""GradHist2d: bins along (individual gradient element, parameter value), Cockpit's default."""

HIST_2D_RANGE = ((-1.0, 1.0), (-2.0, 2.0))
"""GradHist2d: ranges along (individual gradient element, parameter value)."""

TIC_EPS = 1e-7
"""TICDiag / TICTrace: added to the curvature before dividing (Cockpit's ``epsilon``)."""

GSNR_EPS = 1e-5
"""MeanGSNR: added to the gradient variance before dividing (Cockpit's ``epsilon``)."""

EARLY_STOPPING_EPS = 1e-5
"""EarlyStopping: added to the gradient variance before dividing (Cockpit's ``epsilon``)."""

ALPHA_VARIANCE_FLOOR = 1e-10
"""Alpha: a zero variance of a loss or slope observation is replaced by this (as Cockpit does),
so that the weighted least-squares fit stays defined."""

LANCZOS_ITERATIONS = 24
"""HessMaxEV: the most Hessian-vector products per tracked step (the first tracked step, which
has no warm start, may use twice as many). Lanczos with full reorthogonalization, warm-started
from the previous tracked step's top Ritz vector, stops as soon as the error bound of
:func:`instrument.cockpit.lanczos.ritz` is below ``HESS_MAX_EV_TOLERANCE``, so this cap only
matters on steps that do not converge (they are flagged). Each product is a double backward pass
(about 1.4x a training step on the benchmark CNN). Measured (docs/cockpit.md, every step
tracked): 6.4 products per warm step on the benchmark CNN, 6.9 on a narrow 3C3D, 14.9 on an MLP
whose top two eigenvalues are 0.4-14 % apart (one step in 20 reached the cap). A fixed count
cannot be right for every step: four products read up to 26 % low on such networks. Cockpit
runs power iteration for up to 100 products."""

LANCZOS_MIN_ITERATIONS = 3
"""HessMaxEV: products before the stopping rule is first checked (the bound needs a second Ritz
value, and two-dimensional Krylov spaces fool it more often)."""

HESS_MAX_EV_TOLERANCE = 1e-3
"""HessMaxEV: relative tolerance of the error bound (``bound <= this * |l|``), both to stop
Lanczos and, when the cap is reached first, to store a ``cockpit_not_converged`` event (once
per run of unconverged steps). It is ten times tighter than the accuracy HessMaxEV is meant to
deliver (1 %), because the bound can be optimistic while the second eigenvalue is unresolved
(measured on small networks: up to about 5x at some iteration counts, 2.4x where Lanczos
stopped); every converged step measured was within 0.1 % of the exact top eigenvalue."""

LANCZOS_SEED = 20210211
"""Seed of the private generator for the first Lanczos vector (the global RNG is never used)."""

LOSS_HESSIAN_MAX_OUTPUTS = 1024
"""Diagonal curvature: the loss Hessian w.r.t. one sample's model outputs is formed explicitly;
models with more outputs per sample than this report no diagonal curvature (a note says so)."""

MATERIALIZE_MAX_ELEMENTS = 1 << 24
"""Per-sample gradients of one layer are built in chunks of output channels so that at most this
many float32 values (64 MiB) exist at once."""

HIST_OUTER_MAX_ELEMENTS = 1 << 22
"""Outer-product histograms (Linear layers) expand at most this many products at once."""
