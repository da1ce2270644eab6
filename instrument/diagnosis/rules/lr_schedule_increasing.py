"""lr_schedule_increasing: the scheduled learning rate rises outside a warm-up.

Per param group, three ways to rise that a warm-up does not have:

* *after a decay*: once the learning rate has come down from its peak, a run of
  ``schedule_rise_steps`` consecutive increases (a cosine schedule whose ``T_max`` is shorter
  than the run climbs back up after its minimum). Warm restarts (one jump back up, then decay)
  stay quiet;
* *geometric growth*: before any decay, the learning rate is more than
  ``schedule_growth_factor`` times its first positive value and its logarithm rose over the
  second half of the rise (in steps) by at least ``schedule_log_ratio`` times what it rose over
  the first half. Warm-ups (linear, cosine, polynomial: the target is approached, so the
  logarithm rises more and more slowly) never do that; ``StepLR``/``ExponentialLR`` with
  ``gamma > 1`` multiply by the same factor again and again and do;
* *too long*: the learning rate is still rising ``schedule_warmup_max`` steps after its first
  positive value, longer than warm-ups last;

and at the end of a finished run (``close()``, ``avionics diagnose``): it rose over the last
records and never came down, so the warm-up is longer than the run.

Cyclic schedules (``CyclicLR``) and range tests rise on purpose: disable the rule for them.
"""

from __future__ import annotations

import math

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import WARMUP_LOOKBACK
from instrument.store import schema
from instrument.store.schema import Keys

PREFIX = Keys.LR + "/"

POINTS = 512
"""Learning-rate points kept per group for the geometric test (thinned by half when full)."""


def check(h, th, facts, state):
    out = []
    for key in h.scalar_keys(PREFIX):
        lr = h.now(key)
        if lr is None or not math.isfinite(lr):
            continue
        s = state.setdefault(key, {"peak": lr, "decayed": False, "streak": 0, "prev": lr,
                                   "from": None, "points": [], "last_rise": None})
        tol = th.schedule_tolerance
        if lr > s["prev"] * (1 + tol):
            if s["streak"] == 0:
                s["from"] = (h.step, s["prev"])
            s["streak"] += 1
            s["last_rise"] = h.step
        else:
            s["streak"] = 0
        group = key[len(PREFIX):]
        if s["decayed"]:
            out += _after_decay(h, th, s, group, lr)
        else:
            _keep_point(s, h.step, lr)
            out += _rising(h, th, s, group, lr)
        if lr < s["peak"] * (1 - tol) and s["streak"] == 0:
            s["decayed"] = True
            s["points"], s["spacing"] = [], 1
        s["peak"] = max(s["peak"], lr)
        s["prev"] = lr
    return out


def _after_decay(h, th, s, group, lr):
    if s["streak"] < th.schedule_rise_steps:
        return []
    start, low = s["from"]
    return [Finding(
        f"The learning rate of param group {group} rises outside a warm-up: from {fmt(low)} "
        f"at step {start} to {fmt(lr)} at step {h.step}, {s['streak']} increases in a row "
        f"after it had decayed from its peak {fmt(s['peak'])}.",
        None, {"group": group, "how": "after_decay", "from_step": start, "from_lr": low,
               "lr": lr, "peak": s["peak"]})]


def _keep_point(s, step, lr) -> None:
    """Record ``(step, lr)`` of the rising phase from the first positive value on, evenly
    spaced: at most ``POINTS`` points, the spacing doubles (every other point dropped) when
    full, so the learning rate at any past step is known to within the spacing."""
    pts = s["points"]
    if lr <= 0:
        return
    if pts and step < pts[-1][0] + s.get("spacing", 1):
        return
    pts.append((step, lr))
    if len(pts) > POINTS:
        s["points"] = pts[::2]
        s["spacing"] = s.get("spacing", 1) * 2


def _value_at(points, step) -> float:
    """The learning rate in effect at ``step`` (the last point at or before it)."""
    best = points[0][1]
    for st, v in points:
        if st > step:
            break
        best = v
    return best


def _rising(h, th, s, group, lr):
    pts = s["points"]
    if len(pts) < 3 or s["streak"] == 0:
        return []
    t0, lr0 = pts[0]
    span = h.step - t0
    ev = {"group": group, "from_step": t0, "from_lr": lr0, "lr": lr}
    if span > th.schedule_warmup_max:
        return [Finding(
            f"The learning rate of param group {group} is still rising {span} steps after "
            f"its first value {fmt(lr0)} (step {t0}), now {fmt(lr)}, and never came down: "
            f"longer than warm-ups last ({th.schedule_warmup_max} steps).", None,
            {**ev, "how": "too_long", "steps": span})]
    if lr < th.schedule_growth_factor * lr0:
        return []
    mid = _value_at(pts, t0 + span // 2)
    first, second = math.log(mid / lr0), math.log(lr / mid)
    if second < th.schedule_log_ratio * first or second <= 0:
        return []
    return [Finding(
        f"The learning rate of param group {group} grows geometrically: {fmt(lr0)} at step "
        f"{t0}, {fmt(mid)} at step {t0 + span // 2}, {fmt(lr)} at step {h.step} "
        f"({fmt(lr / lr0)}x, and as fast in the second half as in the first). A warm-up "
        f"slows down as it nears its target; this looks like a StepLR/ExponentialLR with "
        f"gamma > 1.", None, {**ev, "how": "geometric", "mid_lr": mid,
                             "factor": lr / lr0})]


def finish(h, th, facts, state):
    """At the end of a finished run: a learning rate still rising, never decayed."""
    out = []
    for key, s in state.items():
        if s["decayed"] or s["last_rise"] is None or h.step is None:
            continue
        _, lr = h.scalar(key, WARMUP_LOOKBACK)
        if len(lr) < 2 or not lr[-1] > lr[0] * (1 + th.schedule_tolerance):
            continue
        pts = s["points"]
        t0, lr0 = pts[0] if pts else (None, float("nan"))
        group = key[len(PREFIX):]
        out.append(Finding(
            f"The run ended while the learning rate of param group {group} was still rising "
            f"(from {fmt(lr0)} at step {t0} to {fmt(lr[-1])} at step {h.step}, never "
            f"decaying): the warm-up is longer than the run, which never trained at the "
            f"intended learning rate.", None,
            {"group": group, "how": "rising_at_end", "from_step": t0, "from_lr": lr0,
             "lr": float(lr[-1])}))
    return out


RULE = Rule(
    code="lr_schedule_increasing", severity=schema.WARNING,
    summary="the scheduled learning rate rises outside a warm-up",
    suggestion=("Check the scheduler: T_max / total_steps must cover the whole run (cosine "
                "schedules climb back up after T_max), gamma must be below 1 for StepLR / "
                "ExponentialLR, call scheduler.step() once per step (or per epoch, as "
                "designed), and pass the right step counts to warm-up schedulers."),
    check=check, finish=finish, keys=(PREFIX + "*",))
