"""missing_zero_grad: gradients accumulate across optimizer steps without being cleared.

Reads the ``zero_grad`` instrument's per-parameter flags (gradient identity and version
counters, no values): a parameter whose optimizer step used a gradient accumulated into the
previous step's, never cleared in between. Intentional accumulation over micro-batches followed
by one step and ``zero_grad()`` never sets the flag, nor does a backward that fills gradients
after a step which are cleared before the next one uses them (the discriminator of a GAN).
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    if not h.has(DKeys.GRAD_STALE):
        return []
    steps, mat, names = h.layer(DKeys.GRAD_STALE, th.zero_grad_window)
    stale = mat == 1
    per_step = stale.any(axis=1)
    if not per_step[-1] or per_step.sum() < th.zero_grad_steps:
        return []
    now = np.flatnonzero(stale[-1])
    params = [names[i] for i in now]
    stale_steps = [int(s) for s in steps[per_step]]
    return [Finding(
        f"Gradients were not cleared between optimizer steps: at step {h.step} the backward "
        f"pass accumulated into the gradient left over from the previous step in "
        f"{len(params)} parameter(s), first '{params[0]}' (also at steps {stale_steps}).",
        params[0], {"parameters": params[:20], "count": len(params), "steps": stale_steps})]


RULE = Rule(
    code="missing_zero_grad", severity=schema.CRITICAL,
    summary="gradients accumulate across optimizer steps without being cleared",
    suggestion=("Call optimizer.zero_grad() (or model.zero_grad()) once per optimizer step, "
                "before the backward pass of the next step. To accumulate over micro-batches, "
                "call it right after optimizer.step()."),
    check=check, needs=("zero_grad",), keys=(DKeys.GRAD_STALE,), after_nonfinite=True,
    per_layer=False, windows=lambda th: {DKeys.GRAD_STALE: th.zero_grad_window})
