"""The dashboard's panels, one module each, in page order (see :mod:`dashboard.panels.base`)."""

from dashboard.panels import (
                              activations,
                              cockpit_alpha,
                              cockpit_curvature,
                              cockpit_distance,
                              cockpit_gradient_tests,
                              cockpit_hist_1d,
                              cockpit_hist_2d,
                              cockpit_noise,
                              cockpit_tic,
                              events,
                              grad_norm,
                              header,
                              health,
                              layers,
                              learning_rate,
                              ranks,
                              scalars,
                              update_ratio,
)
from instrument.registries import unique

COCKPIT = (cockpit_alpha, cockpit_distance, cockpit_gradient_tests, cockpit_hist_1d,
           cockpit_hist_2d, cockpit_curvature, cockpit_tic, cockpit_noise)
"""Cockpit's instruments (docs/cockpit.md), grouped as Cockpit does: step size, gradients,
curvature, then its secondary screen."""

PANELS = unique((health, header, scalars, events, grad_norm, update_ratio, learning_rate,
                 activations, layers, ranks) + COCKPIT, lambda panel: panel.NAME, "panels")
"""Every panel, top to bottom."""

BY_NAME = {panel.NAME: panel for panel in PANELS}
"""Panel modules by ``NAME`` (the ``panel`` key of their component ids)."""


def recorded(panel, keys: dict) -> bool:
    """True if a run with series ``keys`` (``{kind: [key, ...]}``) has something ``panel`` draws
    (with every option on, so an optional series counts too)."""
    options = tuple(value for value, _ in panel.OPTIONS)
    return any(n.key in keys.get(n.kind, ()) for n in panel.needs(keys, options))
