"""lr_schedule_increasing: the scheduled learning rate rises outside a warm-up.

Per param group: once the learning rate has come down from its peak (a decay began), a run of
``schedule_rise_steps`` consecutive increases is reported. Warm-up (rising before any decay)
and warm restarts (one jump back up, then decay) stay quiet. A cosine schedule whose
``T_max`` is shorter than the run climbs back up smoothly after reaching its minimum: that is
the typical catch. Cyclic schedules (``CyclicLR``) rise on purpose; disable the rule for them.
"""

from __future__ import annotations

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import Keys

PREFIX = Keys.LR + "/"


def check(h, th, facts, state):
    out = []
    tol = th.schedule_tolerance
    for key in h.scalar_keys(PREFIX):
        lr = h.now(key)
        if lr is None:
            continue
        s = state.setdefault(key, {"peak": lr, "decayed": False, "streak": 0, "prev": lr,
                                   "from": None, "low": lr})
        if lr > s["prev"] * (1 + tol):
            if s["streak"] == 0:
                s["from"] = (h.step, s["prev"])
            s["streak"] += 1
        else:
            s["streak"] = 0
        if s["decayed"] and s["streak"] >= th.schedule_rise_steps:
            start, low = s["from"]
            out.append(Finding(
                f"The learning rate of param group {key[len(PREFIX):]} rises outside a warm-up: "
                f"from {fmt(low)} at step {start} to {fmt(lr)} at step {h.step}, "
                f"{s['streak']} increases in a row after it had decayed from its peak "
                f"{fmt(s['peak'])}.",
                None, {"group": key[len(PREFIX):], "from_step": start, "from_lr": low,
                       "lr": lr, "peak": s["peak"]}))
        if lr < s["peak"] * (1 - tol) and s["streak"] == 0:
            s["decayed"] = True
        s["peak"] = max(s["peak"], lr)
        s["prev"] = lr
    return out


RULE = Rule(
    code="lr_schedule_increasing", severity=schema.WARNING,
    summary="the scheduled learning rate rises outside a warm-up",
    suggestion=("Check the scheduler: T_max / total_steps must cover the whole run (cosine "
                "schedules climb back up after T_max), call scheduler.step() once per step (or "
                "per epoch, as designed), and pass the right step count to warm-up schedulers."),
    check=check, keys=(PREFIX + "*",))
