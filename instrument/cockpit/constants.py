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

LANCZOS_ITERATIONS = 4
"""HessMaxEV: Hessian-vector products per tracked step (the first tracked step, which has no
warm start, uses twice as many). Lanczos with full reorthogonalization, warm-started from the
previous tracked step's top Ritz vector. Each product is a double backward pass (about 1.5x a
training step on the benchmark CNN), so this count sets HessMaxEV's cost. Measured there
(docs/cockpit.md): after the first few tracked steps the eigenvalue is within about 0.01-3 %
of a 30-iteration reference with 4 products (0.1 % with 6). Cockpit runs power iteration for
up to 100 products."""

HESS_MAX_EV_TOLERANCE = 0.1
"""HessMaxEV: the estimate counts as converged when ||Hv - lv|| <= this * |l|. Some eigenvalue
always lies within the residual of the estimate, and the error of the top one is typically of
order tolerance**2 * |l| / gap; above it a ``cockpit_not_converged`` event is stored (once per
run of unconverged steps); raise ``Preset(lanczos_iterations=...)`` if it fires often."""

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
