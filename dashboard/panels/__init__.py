"""The dashboard's panels, one module each, in page order (see :mod:`dashboard.panels.base`)."""

from dashboard.panels import (activations, events, grad_norm, header, learning_rate, ranks,
                              scalars, update_ratio)

PANELS = (header, scalars, events, grad_norm, update_ratio, learning_rate, activations, ranks)
"""Every panel, top to bottom."""

BY_NAME = {panel.NAME: panel for panel in PANELS}
"""Panel modules by ``NAME`` (the ``panel`` key of their component ids)."""
