"""frozen_parameters: trainable parameters never receive a gradient, or never change.

Over the last ``frozen_window`` recorded steps, for every parameter with ``requires_grad``:

* *no gradient*: its gradient was never present (or always exactly zero) while other
  parameters had gradients: it is not used in the forward pass, or the graph is cut (a
  ``.detach()``, ``.data``, ``torch.no_grad()`` or an integer cast on the way);
* *no change*: it had non-zero gradients but its weight norm never changed: it is not held by
  the optimizer (e.g. a layer added or replaced after the optimizer was created), or its param
  group's learning rate is zero. Gradients below ``frozen_grad_ratio`` times the weight norm
  are rounding noise (the bias of a layer followed by batch norm has a mathematically zero
  gradient) and do not count.

Parameters with ``requires_grad=False`` are frozen on purpose and never reported.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import nanmedian
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import Keys

EVERY = 10
"""Checked every this many records (the window is long; saves time on the writer thread)."""


def check(h, th, facts, state):
    n = th.frozen_window
    count = h.count(Keys.GRAD_NORM)
    if not h.has(Keys.GRAD_NORM) or count < n or count % EVERY:
        return []
    gsteps, g, names = h.layer(Keys.GRAD_NORM, n)
    wsteps, w, wnames = h.layer(Keys.WEIGHT_NORM, n)
    trainable = {p["name"]: p for p in facts.params if p["trainable"]}
    has = np.isfinite(g) & (g > 0)
    count = has.sum(axis=1)
    # steps where nothing else had a gradient say nothing about a parameter
    informative = ((count[:, None] - has) > 0).all(axis=0)
    no_grad = ~has.any(axis=0)
    out = []
    for j in np.flatnonzero(informative):
        name = names[j]
        p = trainable.get(name)
        if p is None and facts.params:
            continue
        if no_grad[j]:
            what = "no gradient" if np.isnan(g[:, j]).all() else "only zero gradients"
            if what == "only zero gradients" and "dead_units" in h.found:
                continue  # dead ReLUs downstream block the gradient: dead_units said so
            if p is not None and p.get("in_model") is False:
                why = ("it is held by the optimizer but is not a parameter of the model "
                       "(replaced after the optimizer was created?)")
            else:
                why = "although it requires grad and other parameters had gradients"
            out.append(Finding(
                f"Parameter '{name}' received {what} at any of the last {n} recorded steps "
                f"(steps {gsteps[0]}..{gsteps[-1]}): {why}.", name,
                {"window": [int(gsteps[0]), int(gsteps[-1])], "problem": what,
                 "in_optimizer": None if p is None else p["in_optimizer"]},
                kind=f"{what}: {why}"))
            continue
        if len(wsteps) < n or name not in wnames:
            continue
        wc = w[:, wnames.index(name)]
        if not (np.all(wc == wc[0]) and np.isfinite(wc[0])):
            continue
        held = None if p is None else p["in_optimizer"]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = nanmedian(g[:, j] / np.abs(wc))
        if held is not False and not rel > th.frozen_grad_ratio:
            # rounding noise, e.g. the bias of a layer followed by batch norm (mathematically
            # zero gradient): the weights cannot change visibly, and that is harmless
            continue
        why = ("it is not held by the optimizer" if held is False
               else "its updates are zero (learning rate 0?)")
        out.append(Finding(
            f"Parameter '{name}' receives gradients but never changed over the last {n} "
            f"recorded steps (steps {wsteps[0]}..{wsteps[-1]}): {why}.", name,
            {"window": [int(wsteps[0]), int(wsteps[-1])], "problem": "no change",
             "in_optimizer": held, "weight_norm": float(wc[0])}, kind=f"no change: {why}"))
    return out


RULE = Rule(
    code="frozen_parameters", severity=schema.WARNING,
    summary="trainable parameters never receive a gradient, or never change",
    suggestion=("Make sure the layer is used in forward() without a detach()/.data/no_grad on the "
                "way, create the optimizer after the model is complete (or add new layers with "
                "optimizer.add_param_group), and check the learning rate of each param group. "
                "Set requires_grad=False on parameters you freeze on purpose."),
    check=check, needs=("grad_norm", "weight_norm"), keys=(Keys.GRAD_NORM, Keys.WEIGHT_NORM),
    windows=lambda th: {Keys.GRAD_NORM: th.frozen_window, Keys.WEIGHT_NORM: th.frozen_window})
