"""The per-step combination of every rank's statistics: ONE collective per logged step.

Each rank packs the buffer sections that need combining, plus a small header of host facts
(step, timings, which instruments measured or failed), into one float64 vector, and every rank
calls ``all_gather`` on it at every committed step, unconditionally and in step order. Then the
writing rank combines each section on the device according to its ``reduce`` kind
(:mod:`instrument.buffer`) and knowledge of the mesh:

``sum``          added over all ranks (the data-parallel group).
``min``/``max``  elementwise extreme over all ranks (correct for replicated and sharded
                 quantities alike: replicas agree).
``norm``         ``sqrt(sum(x**2))`` over the ranks in *this parameter's shard group* only, never
                 its replicas (see :mod:`.topology`); gathered only when some parameter is
                 sharded (under DDP norms are replicated and stay local).
``keyed``        user scalars: ``(sum, count)`` added over all ranks' rows with the same key;
                 the key column then holds how many ranks contributed.
``shard_local``  kept for replicated parameters, NaN for sharded ones.
``local``        NaN (kept in per-rank views).
``replicated``   kept.

Why all_gather and not all_reduce: the kinds need different reductions (sum, min, max, sums
over subsets of ranks per parameter, matching of keys), and one ``all_reduce`` applies one op
to everything. Gathering does it all in one call and gives the writing rank every rank's
header for free (per-rank step times, where a NaN began). It moves ``world_size`` times the
vector, which for these vectors (hundreds to a few thousand floats) costs about the same as
one all_reduce: latency dominates (see benchmarks/collective.py).

Neutral fills: sections are reset every step to their fill value. For combining, "this rank
measured nothing here" must be neutral, so gathered ``min``/``max`` sections are reset to
``+inf``/``-inf`` and ``norm`` sections to ``-1`` (norms are never negative); where no rank
measured anything, the section's original fill (NaN: "not recorded") is restored. A NaN that
was computed (a non-finite gradient) is not a sentinel and propagates.

Nothing here synchronizes the host with the device: validity checks (all ranks at the same
step, no rank failed to pack) are computed on the device into ``dist/status`` and read by the
writer thread (:meth:`Reducer.select`), which then decodes only instruments that some rank
measured and no rank disabled.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist

from instrument.store import schema

# ---- header: one row per rank --------------------------------------------------------------
VALID, STEP, RANK, STEP_TIME, COMPUTE_TIME, BETWEEN_TIME, SYNC_TIME, OVERFLOW = range(8)
HOST_FIELDS = 8  # then touched flags, then disabled flags (one per instrument), then:
LOSS_SUM, LOSS_COUNT, NONFINITE_MODULES = range(3)  # device fields, after the flags
DEVICE_FIELDS = 3

# ---- status: computed on the device after the gather -------------------------------------
ALL_VALID, SAME_STEP = range(2)
STATUS_FIELDS = 2

NEUTRAL = {"min": math.inf, "max": -math.inf, "norm": -1.0}

HEADER, RANKS, STATUS, LOCAL = "dist/header", "dist/ranks", "dist/status", "dist/local"


class CollectiveError(RuntimeError):
    """avionics' per-step collective failed (a peer died, or the ranks disagree)."""


def _gather(out: torch.Tensor, inp: torch.Tensor, group=None) -> None:
    """All-gather ``inp`` of every rank into the flat ``out`` (rank-major)."""
    fn = getattr(dist, "all_gather_single", None)  # torch >= 2.13 name
    if fn is None:
        fn = dist.all_gather_into_tensor
    fn(out, inp, group=group)


class Reducer:
    """Combines the statistics buffer across ranks with one collective per committed step.

    Built by :class:`instrument.distributed.session.Session`; the Monitor calls :meth:`setup`
    before allocating the buffer, :meth:`commit` at every step, :meth:`select` (writer thread)
    and :meth:`commit_at_close` / :meth:`close`.

    Args:
        topo: the model's :class:`~instrument.distributed.topology.Topology`.
        n_params: number of parameters (rows of ``norm``/``shard_local`` sections).
        instruments: the monitor's instruments (their order indexes the header flags).
        combines: this rank writes the run store and combines (rank 0).
        records: this rank records anything (rank 0, or per-rank stores are on).
        local_view: keep a pre-combination copy for a per-rank store on a combining rank.
    """

    def __init__(self, topo, n_params: int, instruments: list, *, combines: bool,
                 records: bool, local_view: bool, strict: bool = False):
        self.topo = topo
        self.rank, self.world = topo.rank, topo.world_size
        self.n_params = n_params
        self.instruments = instruments
        self.position = {id(inst): k for k, inst in enumerate(instruments)}
        self.combines, self.records, self.local_view = combines, records, local_view
        self.strict = strict
        self.notes: list = []
        self.collectives = 0  # issued so far (tests, benchmark)
        self.sync_time = math.nan  # host seconds of the last commit (collective + combine)
        self.phases = (math.nan, math.nan, math.nan)  # last commit: pack, collective, combine
        self.timer = None  # callable -> (step, compute, between) seconds, set by the RankView
        self.closers: list = []  # per-rank writers to close with the monitor
        self.on_notes = None  # callable(list of str): what set-up could not combine
        self._plan = None
        self.scalars = None
        self.fwd_section = None
        self._error_reported = False

    # ---- set-up (before the buffer is allocated) -----------------------------------------------
    def setup(self, buffer) -> None:
        """Classify the instruments' sections, set neutral fills, add this reducer's own
        sections, and check with one set-up collective that every rank has the same layout."""
        n_inst = len(self.instruments)
        self.header_width = HOST_FIELDS + 2 * n_inst + DEVICE_FIELDS
        self.gathered, self.blank, self.local_src, self.restore = [], [], [], {}
        for sec in list(buffer.sections.values()):
            kind = self._kind(sec)
            if kind in ("min", "max", "norm") and kind == sec.reduce:
                self.restore[sec.name] = sec.fill
                sec.fill = NEUTRAL[kind]
            if kind in ("sum", "min", "max", "norm", "keyed"):
                self.gathered.append((sec, kind))
            elif kind in ("blank", "shard_local"):
                self.blank.append((sec, kind))
            if sec.reduce in ("sum", "min", "max", "keyed", "local"):
                self.local_src.append(sec)  # what a per-rank view shows
        self.known = set(buffer.sections)  # sections added later are not combined
        self.header = buffer.add(HEADER, self.header_width, fill=0.0, reduce="local")
        self.ranks = buffer.add(RANKS, (self.world, self.header_width), fill=math.nan,
                                reduce="local")
        self.status = buffer.add(STATUS, STATUS_FIELDS, fill=0.0, reduce="local")
        n_local = sum(s.size for s in self.local_src) if self.local_view and self.combines else 0
        self.local = buffer.add(LOCAL, max(n_local, 1), fill=math.nan, reduce="local")
        self.fwd_section = buffer.sections.get("fwd_sums")  # the nonfinite instrument's
        self.payload_size = sum(s.size for s, _ in self.gathered) + self.header_width
        layout = [(s.name, list(s.shape), k) for s, k in self.gathered]
        digest = hashlib.sha1(json.dumps(layout).encode()).hexdigest()
        mine = {"size": self.payload_size, "layout": digest, "rank": self.rank}
        everyone = [None] * self.world
        dist.all_gather_object(everyone, mine)
        bad = [o["rank"] for o in everyone if o["layout"] != digest or o["size"] != self.payload_size]
        if bad:
            raise CollectiveError(
                f"avionics: the statistics layout of rank(s) {bad} differs from rank "
                f"{self.rank}'s ({self.payload_size} values): every rank must watch() the same "
                "model with the same optimizer class, schedules and loss_fn.")
        if self.notes and self.on_notes is not None:
            self.on_notes(list(self.notes))

    def _kind(self, sec) -> str:
        """How the section is combined here: its reduce kind, adjusted to the topology."""
        kind = sec.reduce
        if kind in ("sum", "min", "max", "keyed") and not self.topo.data_parallel:
            return "blank"
        if kind in ("norm", "shard_local"):
            if not self.topo.sharded:
                return "keep"  # replicated: the local value is the global one
            if sec.shape[0] != self.n_params:
                self.notes.append(f"buffer section {sec.name!r} ({kind}) does not have one row "
                                  "per parameter; it is not recorded for sharded models")
                return "blank"
            return kind
        if kind == "local":
            return "blank"
        if kind == "sum" and sec.fill != 0.0:
            self.notes.append(f"buffer section {sec.name!r} sums but is not filled with 0; "
                              "it is not combined")
            return "blank"
        return "keep" if kind == "replicated" else kind

    # ---- index plan (after allocation: offsets are known) -----------------------------------
    def _build_plan(self, buffer) -> dict:
        """Device index tensors for one step's pack, combine and unpack (built once)."""
        dev = buffer.device

        def idx(values):
            return torch.tensor(np.asarray(values, dtype=np.int64), dtype=torch.long, device=dev)

        payload, by_kind, header_p = self._payload_layout()
        assert payload.size == self.payload_size
        out = {"payload": idx(payload),
               "kinds": {kind: self._kind_plan(kind, e, buffer, idx)
                         for kind, e in by_kind.items()}}
        blank = self._blank_rows(buffer)
        out["blank"] = idx(np.concatenate(blank)) if blank else None
        out["header_p"] = idx(header_p)
        out["ranks"] = (self.ranks.offset, self.ranks.offset + self.ranks.size)
        src = [_span(s) for s in self.local_src]
        self.local_src_np = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
        self.local_dst_np = np.arange(self.local.offset, self.local.offset + self.local_src_np.size)
        if self.local_view and self.combines and self.local_src_np.size:
            out["local_src"], out["local_dst"] = idx(self.local_src_np), idx(self.local_dst_np)
        out["tensor"] = buffer.tensor
        return out

    def _payload_layout(self) -> tuple:
        """Where each gathered section sits in the buffer (``b``) and in the payload (``p``),
        grouped by reduce kind; then the header. Returns (payload, by_kind, header positions)."""
        payload, by_kind, pos = [], {}, 0
        for sec, kind in self.gathered:
            b = _span(sec)
            payload.append(b)
            entry = by_kind.setdefault(kind, {"b": [], "p": [], "fill": [], "rows": []})
            entry["b"].append(b)
            entry["p"].append(np.arange(pos, pos + sec.size))
            pos += sec.size
            entry["fill"].append(np.full(sec.size, self.restore.get(sec.name, sec.fill)))
            if kind == "norm":
                per_row = sec.size // sec.shape[0]
                entry["rows"].append(np.repeat(np.arange(sec.shape[0]), per_row))
        payload.append(_span(self.header))
        header_p = np.arange(pos, pos + self.header_width)
        return np.concatenate(payload), by_kind, header_p

    def _kind_plan(self, kind: str, e: dict, buffer, idx) -> dict:
        """Index tensors of one reduce kind (norm rows carry their shard-group membership)."""
        dev = buffer.device
        k = {"b": idx(np.concatenate(e["b"])), "p": idx(np.concatenate(e["p"])),
             "fill": torch.tensor(np.concatenate(e["fill"]), dtype=buffer.dtype, device=dev)}
        if kind == "norm":
            rows = np.concatenate(e["rows"])
            member = np.zeros((self.world, self.n_params), dtype=bool)
            for i, group in enumerate(self.topo.groups):
                for r in (group or (self.rank,)):
                    member[r, i] = True
            k["mask"] = torch.tensor(member[:, rows], device=dev)
        if kind == "keyed":
            k["rows"] = k["b"].numel() // 3
        return k

    def _blank_rows(self, buffer) -> list:
        """Buffer positions never shown as global values: blank sections, sharded rows of
        shard-local ones, and sections added after the layout was agreed."""
        blank = [_span(s) for s, kind in self.blank if kind != "shard_local"]
        for sec, kind in self.blank:
            if kind == "shard_local":
                per_row = sec.size // sec.shape[0]
                for i, group in enumerate(self.topo.groups):
                    if group is not None:
                        blank.append(np.arange(sec.offset + i * per_row,
                                               sec.offset + (i + 1) * per_row))
        own = {HEADER, RANKS, STATUS, LOCAL}
        late = [sec for name, sec in buffer.sections.items()
                if name not in self.known and name not in own]
        blank += [_span(sec) for sec in late]  # no agreed layout: never shown as global
        return blank

    # ---- every step --------------------------------------------------------------------------
    def commit(self, buffer, step: int, active: list, parts: list) -> list:
        """Join this step's collective and combine; return the instruments this rank decodes."""
        t0 = time.perf_counter()
        plan = self._plan
        if plan is None or plan["tensor"] is not buffer.tensor:
            plan = self._plan = self._build_plan(buffer)
        try:
            self._pack_header(buffer, step, parts)
            payload = buffer.tensor.index_select(0, plan["payload"])
        except Exception as exc:  # never skip the collective: the other ranks are in it
            if self.strict:
                raise
            self._report_once(exc)
            payload = torch.full((self.payload_size,), math.nan, dtype=buffer.dtype,
                                 device=buffer.device)
            payload[plan["header_p"][VALID]] = 0.0
        gathered = torch.empty(self.world * self.payload_size, dtype=buffer.dtype,
                               device=buffer.device)
        t1 = time.perf_counter()
        try:
            _gather(gathered, payload)
        except Exception as exc:
            raise CollectiveError(
                f"avionics' per-step collective failed at step {step} on rank {self.rank}: "
                f"{type(exc).__name__}: {exc}. A peer probably died or stopped calling the "
                "training loop's hooks (every rank must run the same steps and close()).") from exc
        self.collectives += 1
        t2 = time.perf_counter()  # (with NCCL the collective is only enqueued by now)
        if self.combines:
            if plan.get("local_src") is not None:
                buffer.tensor.index_copy_(0, plan["local_dst"],
                                          buffer.tensor.index_select(0, plan["local_src"]))
            self._combine(buffer.tensor, gathered.view(self.world, self.payload_size), plan, step)
        t3 = time.perf_counter()
        self.sync_time, self.phases = t3 - t0, (t1 - t0, t2 - t1, t3 - t2)
        if not self.records:
            return []
        rankview = self.instruments[-1]
        if not self.combines:  # a per-rank store only
            return [rankview]
        return [i for i in active if not i.disabled and i is not rankview] + [rankview]

    def _pack_header(self, buffer, step: int, parts: list) -> None:
        n = len(self.instruments)
        host = np.zeros(HOST_FIELDS + 2 * n)
        times = self.timer() if self.timer else (math.nan,) * 3
        overflow = float(getattr(self.scalars, "overflow", False))
        host[[VALID, STEP, RANK, STEP_TIME, COMPUTE_TIME, BETWEEN_TIME, SYNC_TIME, OVERFLOW]] = (
            1.0, step, self.rank, *times, self.sync_time, overflow)
        touched = {id(i) for i in parts}
        for k, inst in enumerate(self.instruments):
            host[HOST_FIELDS + k] = float(id(inst) in touched)
            host[HOST_FIELDS + n + k] = float(inst.disabled)
        view = self.header.view
        src = torch.from_numpy(host).to(view.dtype)
        if view.device.type == "cuda":
            src = src.pin_memory()  # asynchronous: no wait for the device
        view[: host.size].copy_(src, non_blocking=True)
        dev = view[host.size:]
        if self.scalars is not None:
            slot = self.scalars.slots.get(schema.Keys.LOSS)
            if slot is not None and slot[0] is not None:
                sec, i = slot
                dev[LOSS_SUM: LOSS_COUNT + 1].copy_(sec.view[i, :2])
        if self.fwd_section is not None:
            dev[NONFINITE_MODULES] = (~torch.isfinite(self.fwd_section.view)).sum()

    def _combine(self, buf: torch.Tensor, G: torch.Tensor, plan: dict, step: int) -> None:
        kinds = plan["kinds"]
        k = kinds.get("sum")
        if k is not None:
            buf.index_copy_(0, k["b"], G.index_select(1, k["p"]).sum(0))
        for kind, reduce, neutral in (("min", torch.amin, math.inf), ("max", torch.amax, -math.inf)):
            k = kinds.get(kind)
            if k is not None:
                r = reduce(G.index_select(1, k["p"]), dim=0)
                buf.index_copy_(0, k["b"], torch.where(r == neutral, k["fill"], r))
        k = kinds.get("norm")
        if k is not None:
            x = G.index_select(1, k["p"])
            use = k["mask"] & ~(x < 0)  # NaN is not < 0: a computed NaN counts (propagates)
            total = torch.where(use, x * x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(0)
            buf.index_copy_(0, k["b"], torch.where(use.any(0), total.sqrt(), k["fill"]))
        k = kinds.get("keyed")
        if k is not None:
            rows = G.index_select(1, k["p"]).view(self.world * k["rows"], 3)
            mine = rows.view(self.world, k["rows"], 3)[self.rank, :, 2]
            match = (rows[:, 2:3] == mine[None, :]) & (rows[:, 1:2] > 0) & (mine[None, :] != 0)
            zero = torch.zeros((), dtype=rows.dtype, device=rows.device)
            sums = torch.where(match, rows[:, 0:1], zero).sum(0)
            counts = torch.where(match, rows[:, 1:2], zero).sum(0)
            ranks = match.view(self.world, k["rows"], k["rows"]).any(1).sum(0).to(rows.dtype)
            buf.index_copy_(0, k["b"], torch.stack([sums, counts, ranks], dim=1).reshape(-1))
        if plan["blank"] is not None:
            buf.index_fill_(0, plan["blank"], math.nan)
        head = G.index_select(1, plan["header_p"])
        lo, hi = plan["ranks"]
        buf[lo:hi].copy_(head.reshape(-1))
        status = self.status.view
        status[ALL_VALID] = (head[:, VALID] == 1).all()
        status[SAME_STEP] = (head[:, STEP] == step).all()

    # ---- writer thread -----------------------------------------------------------------------
    def select(self, flat: np.ndarray, parts: list) -> list:
        """The parts to decode: instruments some rank measured and no rank disabled, at steps
        where every rank took part validly (decoded last: the rank view, always)."""
        if not self.combines:
            return parts
        n = len(self.instruments)
        ok = bool(np.all(self.status.host(flat) == 1))
        head = self.ranks.host(flat)
        flags = np.nan_to_num(head[:, HOST_FIELDS: HOST_FIELDS + 2 * n])  # NaN: a rank that
        touched = flags[:, :n].max(axis=0) > 0                          # failed to pack
        disabled = flags[:, n:].max(axis=0) > 0
        rankview = self.instruments[-1]
        out = [(inst, info) for inst, info in parts
               if inst is not rankview and ok and touched[self.position[id(inst)]]
               and not disabled[self.position[id(inst)]]]
        out += [(inst, info) for inst, info in parts if inst is rankview]
        return out

    def local_flat(self, flat: np.ndarray) -> np.ndarray:
        """This rank's own (uncombined) values, in the buffer's layout."""
        if not self.combines:
            return flat
        out = flat.copy()
        out[self.local_src_np] = flat[self.local_dst_np]
        return out

    def header_columns(self) -> dict:
        """Column positions in a header row, by field name (for the rank view)."""
        n = len(self.instruments)
        dev = HOST_FIELDS + 2 * n
        return {"step": STEP, "step_time": STEP_TIME, "compute_time": COMPUTE_TIME,
                "between_time": BETWEEN_TIME, "overflow": OVERFLOW,
                "sync_time": SYNC_TIME, "touched": HOST_FIELDS, "disabled": HOST_FIELDS + n,
                "loss_sum": dev + LOSS_SUM, "loss_count": dev + LOSS_COUNT,
                "nonfinite_modules": dev + NONFINITE_MODULES, "valid": VALID}

    # ---- closing -----------------------------------------------------------------------------
    def commit_at_close(self, status: str) -> bool:
        """Join a last collective only when closing normally with the group still up."""
        return status == schema.FINISHED and dist.is_available() and dist.is_initialized()

    def close(self, status: str, **meta) -> None:
        for closer in self.closers:
            closer(status, **meta)

    def _report_once(self, exc: Exception) -> None:
        if not self._error_reported:
            self._error_reported = True
            warnings.warn(f"avionics: rank {self.rank} could not pack its statistics "
                          f"({type(exc).__name__}: {exc}); the run store skips such steps",
                          RuntimeWarning, stacklevel=3)


def _span(sec) -> np.ndarray:
    """The buffer positions of a section."""
    return np.arange(sec.offset, sec.offset + sec.size)
