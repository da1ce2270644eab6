"""The rank view: per-rank step times, losses and NaN origins in the run store, and each rank's
own statistics in its per-rank store.

An instrument appended last in distributed runs (it decodes after every other instrument):

* **timings** (training thread, host clock, no device work): ``step_time`` is the wall time
  between this rank's arrivals at consecutive step commits (a whole iteration);
  ``compute_time`` runs from the first training forward of the step to the end of
  ``optimizer.step()``; ``between_time`` from there to the arrival at the next step's commit
  (data loading, evaluation, logging: purely local work); ``sync_time`` is the time this rank
  then spent in avionics' own collective (reported with the next step). Under synchronous
  data parallelism every rank waits for the slowest (inside backward, or in the collective),
  so a straggler shows as the rank with the longer compute or between-steps time while the
  others' compute or sync time holds the wait.
* **in the run store** (rank 0): layer series ``rank/step_time``, ``rank/compute_time``,
  ``rank/between_time``, ``rank/sync_time``, ``rank/loss`` (each rank's own mean loss), ``rank/nonfinite_modules``
  (leaf modules whose output went non-finite on that rank's data), one layer per rank named
  ``"0"``, ``"1"``, ...; the scalar ``rank/step_time_spread`` (slowest minus fastest rank);
  NaN/Inf events get the rank where they began (``Event.rank``, evidence ``ranks``); events
  when ranks disagree or an instrument failed on some rank.
* **in a per-rank store** (``watch(..., per_rank=True)``): this rank's timings as scalars, its
  own scalars (loss, ...), activation statistics of its own data (including dead units), and
  NaN events of its own data.
"""

from __future__ import annotations

import math
import time

import numpy as np

from instrument.instruments.activations import Activations
from instrument.instruments.base import HostStep, Instrument
from instrument.instruments.nonfinite import NonFinite
from instrument.instruments.scalars import KEYED_SLOTS, UserScalars
from instrument.store import schema
from instrument.store.records import Event, LayerValues, StepData
from instrument.store.schema import Keys

from .reducer import HEADER, RANKS


class RankView(Instrument):
    name = "ranks"
    default_schedule = 1

    def __init__(self, ctx, reducer, rank: int, world_size: int):
        super().__init__(ctx)
        self.reducer = reducer
        self.rank, self.world = rank, world_size
        self.local_writer = None  # rank 0's own per-rank store (per_rank=True)
        self._t_begin = self._t_post = None
        self._last = None
        self._bad_global: dict = {}
        self._bad_local: dict = {}
        self._disabled_seen: set = set()
        self._peers = {}

    def bind(self, instruments: list) -> None:
        """Find the instruments whose results the per-rank view shows."""
        for cls in (UserScalars, Activations, NonFinite):
            self._peers[cls] = next((i for i in instruments if isinstance(i, cls)), None)

    # ---- training thread ---------------------------------------------------------------------
    def attach(self):
        handles = [self.ctx.model.register_forward_pre_hook(self._on_forward)]
        if self.ctx.optimizer is not None:
            handles.append(self.ctx.optimizer.register_step_post_hook(self._on_step))
        return handles

    def _on_forward(self, module, args):
        import torch

        if self._t_begin is None and torch.is_grad_enabled():
            self._t_begin = time.perf_counter()

    def _on_step(self, optimizer, args, kwargs):
        self._t_post = time.perf_counter()

    def timer(self):
        """``(step, compute, between)`` seconds of the step being committed: called by the
        reducer when this rank arrives at the commit, before the collective."""
        now = time.perf_counter()
        start = self._last if self._last is not None else self._t_begin
        step_time = now - start if start is not None else math.nan
        post, begin = self._t_post, self._t_begin
        compute = post - begin if post is not None and begin is not None else math.nan
        between = now - post if post is not None else math.nan
        self._last, self._t_begin, self._t_post = now, None, None
        return step_time, compute, between

    def snapshot(self):
        info = {}
        scalars = self._peers.get(UserScalars)
        if scalars is not None and scalars.keyed:
            info["scalars"] = scalars.snapshot()
        nonfinite = self._peers.get(NonFinite)
        if nonfinite is not None and not nonfinite.disabled:
            info["order"] = list(getattr(nonfinite, "_order", ()))
        return info

    # ---- writer thread -----------------------------------------------------------------------
    def decode(self, step: HostStep, info):
        if self.reducer.combines:
            self._global(step, info)
            if self.local_writer is not None:
                data = StepData(step.step, step.data.wall_time)
                events = self._local(step.step, self.reducer.local_flat(step.flat),
                                     step.sections, info, data)
                self.local_writer.submit(data)
                for e in events:
                    self.local_writer.submit(e)
        else:
            step.events.extend(self._local(step.step, step.flat, step.sections, info, step.data))

    def _global(self, step: HostStep, info: dict) -> None:
        cols = self.reducer.header_columns()
        head = step.section(RANKS)
        names = [str(r) for r in range(self.world)]
        layers, scalars = step.data.layers, step.data.scalars
        count = head[:, cols["loss_count"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = np.where(count > 0, head[:, cols["loss_sum"]] / count, np.nan)
        series = {Keys.RANK_STEP_TIME: head[:, cols["step_time"]],
                  Keys.RANK_COMPUTE_TIME: head[:, cols["compute_time"]],
                  Keys.RANK_BETWEEN_TIME: head[:, cols["between_time"]],
                  Keys.RANK_SYNC_TIME: head[:, cols["sync_time"]],
                  Keys.RANK_LOSS: loss,
                  Keys.RANK_NONFINITE: head[:, cols["nonfinite_modules"]]}
        for key, values in series.items():
            if not np.all(np.isnan(values)):
                layers[key] = LayerValues(names, values)
        times = head[:, cols["step_time"]]
        if np.any(np.isfinite(times)):
            scalars[Keys.RANK_STEP_TIME_SPREAD] = float(np.nanmax(times) - np.nanmin(times))
        step.events.extend(self._status_events(step, head, cols))
        self._annotate_nonfinite(step, head, cols, loss)
        if np.nansum(head[:, cols["overflow"]]) > 0:
            self._partial_scalars(step, info.get("scalars") or {})

    def _partial_scalars(self, step: HostStep, rows: dict) -> None:
        """A rank dropped scalar keys (over capacity) at this step: a key some rank lacks may be
        one it dropped, so only keys every rank contributed to are recorded."""
        partial = [key for key, (section, i) in rows.items()
                   if key in step.data.scalars and step.section(section)[i][2] < self.world]
        for key in partial:
            del step.data.scalars[key]
        if partial and "overflow" not in self._disabled_seen:
            self._disabled_seen.add("overflow")
            step.events.append(Event(
                schema.DISTRIBUTED, schema.WARNING,
                f"A rank logged more than {KEYED_SLOTS} distinct scalar keys at step "
                f"{step.step}; at such steps only keys that every rank logged are recorded "
                f"(not recorded here: {partial[:10]}).", step=step.step,
                suggestion="Log fewer distinct keys, or raise "
                           "instrument.instruments.scalars.KEYED_SLOTS on every rank."))

    def _status_events(self, step, head, cols) -> list:
        out = []
        valid = head[:, cols["valid"]] == 1
        steps = head[:, cols["step"]]
        ok = bool(valid.all() and np.all(steps == step.step))
        if self._transition(self._bad_global, "mismatch", not ok):
            out.append(Event(
                schema.DISTRIBUTED, schema.CRITICAL,
                f"Ranks disagree at step {step.step}: steps per rank "
                f"{[None if not v else int(s) for v, s in zip(valid, steps)]}; the combined "
                "values of such steps are not recorded.", step=step.step,
                evidence={"steps": [float(s) for s in steps], "valid": valid.tolist()},
                suggestion="Every rank must run the same optimizer steps and grad-enabled "
                           "forwards (run evaluation under torch.no_grad()), and close() the "
                           "monitor."))
        n = len(self.reducer.instruments)
        flags = head[:, cols["disabled"]: cols["disabled"] + n]
        for k, inst in enumerate(self.reducer.instruments):
            ranks = [r for r in range(self.world) if flags[r, k] > 0]
            if ranks and inst.name not in self._disabled_seen:
                self._disabled_seen.add(inst.name)
                out.append(Event(
                    schema.INSTRUMENT_ERROR, schema.WARNING,
                    f"avionics instrument '{inst.name}' failed on rank(s) {ranks} and is off "
                    f"there; its combined values are not recorded from step {step.step} on.",
                    step=step.step, layer=inst.name, rank=ranks[0],
                    evidence={"ranks": ranks}))
        return out

    def _annotate_nonfinite(self, step, head, cols, loss) -> None:
        act = [r for r in range(self.world) if head[r, cols["nonfinite_modules"]] > 0]
        bad_loss = [r for r in range(self.world)
                    if head[r, cols["loss_count"]] > 0 and not np.isfinite(loss[r])]
        for e in step.events:
            if e.code != schema.NONFINITE:
                continue
            evidence = dict(e.evidence or {})
            kind = evidence.get("tensor")
            began = act if kind == "activation" else bad_loss if kind == "loss" else (act or bad_loss)
            evidence["ranks"] = began
            e.evidence = evidence
            if began and kind in ("activation", "loss"):
                e.rank = began[0]
                e.message += f" It began on rank(s) {began}."

    def _local(self, step: int, flat, sections, info, data: StepData) -> list:
        """This rank's own view into ``data``; returns its events."""
        cols = self.reducer.header_columns()
        row = sections[HEADER].host(flat)
        for key, col in ((Keys.RANK_STEP_TIME, "step_time"),
                         (Keys.RANK_COMPUTE_TIME, "compute_time"),
                         (Keys.RANK_BETWEEN_TIME, "between_time"),
                         (Keys.RANK_SYNC_TIME, "sync_time")):
            if np.isfinite(row[cols[col]]):
                data.scalars[key] = float(row[cols[col]])
        host = HostStep(step, flat, sections, data)
        scalars = self._peers.get(UserScalars)
        if scalars is not None and "scalars" in info:
            scalars.decode(host, info["scalars"])  # stateless: means of this rank's own rows
        act = self._peers.get(Activations)
        k = self.reducer.position.get(id(act))
        if act is not None and k is not None and row[cols["touched"] + k] > 0:
            act.decode(host, None)  # stateless; act_units here are this rank's own
        return self._local_events(step, host, info, data)

    def _local_events(self, step, host, info, data) -> list:
        out = []
        names = self.ctx.module_names
        order = info.get("order")
        if "fwd_sums" in host.sections and order is not None:
            fwd = host.section("fwd_sums")
            bad = [i for i in order if not np.isfinite(fwd[i])]
            if self._transition(self._bad_local, "activation", bool(bad)):
                out.append(Event(
                    schema.NONFINITE, schema.CRITICAL,
                    f"Non-finite (NaN/Inf) output first at module '{names[bad[0]]}' at step "
                    f"{step} on rank {self.rank}'s own data, {len(bad)} module(s) affected.",
                    step=step, layer=names[bad[0]], rank=self.rank,
                    evidence={"tensor": "activation", "modules": [names[i] for i in bad[:20]]}))
        loss = data.scalars.get(Keys.LOSS)
        bad_loss = loss is not None and not np.isfinite(loss)
        if self._transition(self._bad_local, "loss", bad_loss):
            out.append(Event(schema.NONFINITE, schema.CRITICAL,
                             f"The loss on rank {self.rank} is {loss} at step {step}.",
                             step=step, rank=self.rank,
                             evidence={"tensor": "loss", "value": str(loss)}))
        return out

    @staticmethod
    def _transition(state: dict, kind: str, bad: bool) -> bool:
        was = state.get(kind, False)
        state[kind] = bad
        return bad and not was
