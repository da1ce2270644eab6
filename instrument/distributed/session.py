"""The glue between ``watch()`` and torch.distributed: one :class:`Session` per watched model
when a process group of two or more ranks is up.

``watch()`` calls, in order: :func:`join` (a set-up collective: every rank must call
``watch()``), :meth:`Session.configure` (instruments), :meth:`Session.annotate` (metadata),
:meth:`Session.open_writer`, and hands :attr:`Session.reducer` to the Monitor.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable

import torch.distributed as dist

from instrument.instruments.scalars import UserScalars
from instrument.modules import ROOT_NAME
from instrument.store import schema
from instrument.store.reader import store_path
from instrument.store.records import Event
from instrument.summary import model_summary
from instrument.tensorops import local

from .naming import clean_all, root_prefix
from .rankinfo import RankInfo, fill_missing, job_facts
from .rankview import RankView
from .reducer import Reducer
from .topology import DEEPSPEED, Topology, describe
from .writers import NullWriter, fresh_rank_store, rank_dir

PER_PARAMETER = ("grad_norm", "weight_norm", "update", "adaptive_lr")
"""Instruments that read ``p.grad``, parameters or optimizer state (off under DeepSpeed)."""

WRITER_RANK = 0


def active_world() -> tuple | None:
    """``(rank, world_size)`` if a process group of two or more ranks is up, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        launched = os.environ.get("WORLD_SIZE", "1")
        if launched.isdigit() and int(launched) > 1:
            warnings.warn(
                f"avionics: WORLD_SIZE={launched} but torch.distributed is not initialized: "
                "each rank records a separate run and nothing is combined. Call watch() after "
                "torch.distributed.init_process_group() (and after wrapping the model).",
                RuntimeWarning, stacklevel=4)
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def join(ctx, prepare_run_dir: Callable[[], str], *, per_rank: bool = False,
         strict: bool = False) -> Session | None:
    """Start the distributed session for ``ctx``, or return None without a process group of
    two or more ranks (single-process behaviour, no collectives).

    Rank 0 prepares the run directory (``prepare_run_dir``) and every rank learns it, the
    others' hosts and local parameter sizes in one set-up collective. Errors of rank 0's
    preparation, or ranks watching different models, raise the same error on every rank.
    """
    names = (list(ctx.param_names), list(ctx.module_names))
    if dist.is_available() and dist.is_initialized():
        clean_names(ctx)  # a DDP/FSDP model has the same names with one rank as with many
    where = active_world()
    if where is None:
        return None
    rank, world = where
    topo = describe(ctx.model, ctx.params)
    run_dir, error = None, None
    if rank == WRITER_RANK:
        try:
            run_dir = prepare_run_dir()
        except (TypeError, ValueError, OSError) as exc:
            error = (type(exc).__name__, str(exc))
    mine = {"info": RankInfo.here(rank, world, str(ctx.device)).as_dict(),
            "params": len(ctx.params), "modules": len(ctx.modules), "wrapper": topo.wrapper,
            "numels": [local(p).numel() for p in ctx.params],
            "run_dir": run_dir, "error": error}
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    first = everyone[WRITER_RANK]
    if first["error"] is not None:
        kind, message = first["error"]
        exc_type = {"TypeError": TypeError, "ValueError": ValueError}.get(kind, ValueError)
        raise exc_type(message if rank == WRITER_RANK else f"(on rank 0) {message}")
    odd = [o["info"]["rank"] for o in everyone
           if (o["params"], o["modules"], o["wrapper"]) != (mine["params"], mine["modules"], mine["wrapper"])]
    if odd:
        raise ValueError(
            f"avionics: rank(s) {odd} watch a different model than rank {rank} "
            f"({mine['params']} parameters, {mine['modules']} leaf modules, {topo.wrapper}); "
            "call watch() on every rank with the same wrapped model and optimizer.")
    infos = fill_missing([RankInfo(**o["info"]) for o in everyone])
    numels = []
    for i, group in enumerate(topo.groups):
        ranks = group if group is not None else (rank,)
        numels.append(sum(everyone[r]["numels"][i] for r in ranks))
    return Session(ctx, topo, infos, first["run_dir"], numels, names, per_rank, strict)


def clean_names(ctx) -> None:
    """Remove the wrappers' prefixes from the context's parameter and module names, in place."""
    prefix = root_prefix(ctx.model)
    ctx.param_names[:] = clean_all(ctx.param_names, prefix)
    ctx.module_names[:] = clean_all(ctx.module_names, prefix, root=ROOT_NAME)


class Session:
    """A distributed run on this rank; see the module doc for the order of calls."""

    def __init__(self, ctx, topo: Topology, infos: list, run_dir: str, numels: list,
                 original_names: tuple, per_rank: bool, strict: bool):
        self.ctx, self.topo, self.infos = ctx, topo, infos
        self.rank, self.world = topo.rank, topo.world_size
        self.run_dir = run_dir
        self.numels = numels
        self.original_names = original_names
        self.per_rank = per_rank
        self.strict = strict
        self.notes = list(topo.notes)
        self.reducer: Reducer | None = None
        self.rankview: RankView | None = None
        self.writer = None

    @property
    def writes_run_store(self) -> bool:
        return self.rank == WRITER_RANK

    def configure(self, instruments: list) -> list:
        """Adapt the instruments to the topology, append the rank view, build the reducer."""
        if self.topo.wrapper == DEEPSPEED:
            instruments = [i for i in instruments if i.name not in PER_PARAMETER]
        for inst in instruments:
            if isinstance(inst, UserScalars):
                inst.keyed = True
        names = {i.name for i in instruments}
        if self.topo.data_parallel and "activations" in names:
            self.notes.append(
                "act/dead_frac is not combined across ranks (a unit is dead only if it is zero "
                "on every rank's data, which per-rank counts cannot tell): it is recorded in the "
                "per-rank stores (watch(..., per_rank=True)), not in the run store.")
        if self.topo.sharded and "adaptive_lr" in names:
            self.notes.append(
                "adaptive_lr percentiles of sharded parameters cannot be combined from shards "
                "and are not recorded.")
        self.rankview = RankView(self.ctx, None, self.rank, self.world)
        instruments = list(instruments) + [self.rankview]
        self.reducer = Reducer(self.topo, len(self.ctx.params), instruments,
                               combines=self.writes_run_store,
                               records=self.writes_run_store or self.per_rank,
                               local_view=self.per_rank, strict=self.strict)
        self.reducer.scalars = next((i for i in instruments if isinstance(i, UserScalars)), None)
        self.reducer.timer = self.rankview.timer
        self.reducer.on_notes = self._add_notes
        self.rankview.reducer = self.reducer
        self.rankview.bind(instruments)
        return instruments

    def annotate(self, meta: dict) -> None:
        """Add the distributed facts to the run's metadata and fix the model summary (names
        without wrapper prefixes, global parameter counts of sharded models)."""
        ctx = self.ctx
        summary = model_summary(ctx.model, self.original_names[1])
        rename = dict(zip(self.original_names[1], ctx.module_names))
        per_module = [0] * len(ctx.modules)
        for i, owner in enumerate(ctx.param_owner):
            if owner >= 0:
                per_module[owner] += self.numels[i]
        index = {name: j for j, name in enumerate(self.original_names[1])}
        for layer in summary["layers"]:
            j = index.get(layer["name"])
            layer["name"] = rename.get(layer["name"], layer["name"])
            if j is not None:
                layer["params"] = per_module[j]
        model_params = len(list(ctx.model.parameters()))
        summary["parameters"] = sum(self.numels[:model_params])
        summary["trainable"] = sum(n for n, p in zip(self.numels[:model_params], ctx.params)
                                   if p.requires_grad)
        meta["model"] = summary
        meta["distributed"] = self._facts()

    def _facts(self) -> dict:
        return {"world_size": self.world, "backend": str(dist.get_backend()),
                "writer_rank": WRITER_RANK, "per_rank": self.per_rank,
                **self.topo.as_dict(), **job_facts(),
                "ranks": [info.as_dict() for info in self.infos], "notes": list(self.notes)}

    def open_writer(self, open_store: Callable, meta: dict):
        """This rank's writer: the run store on rank 0, else its per-rank store or nothing."""
        if self.writes_run_store:
            self.writer = open_store(store_path(self.run_dir), meta)
            for note in self.notes:
                self.writer.submit(Event(schema.DISTRIBUTED, schema.INFO, note))
            if self.per_rank:
                own = open_store(fresh_rank_store(self.run_dir, self.rank), self._rank_meta(meta))
                self.rankview.local_writer = own
                self.reducer.closers.append(own.close)
            return self.writer
        if self.per_rank:
            return open_store(fresh_rank_store(self.run_dir, self.rank), self._rank_meta(meta))
        return NullWriter()

    def _rank_meta(self, meta: dict) -> dict:
        out = copy.deepcopy(meta)
        out["name"] = f"{meta.get('name', 'run')} rank {self.rank}"
        facts = dict(out.get("distributed") or self._facts())
        facts.update(scope="rank", rank=self.infos[self.rank].as_dict(),
                     run_store=store_path(self.run_dir))
        out["distributed"] = facts
        return out

    def _add_notes(self, notes: list) -> None:
        """Notes found while setting up the buffer (called by the reducer)."""
        self.notes += notes
        if self.writer is not None:
            for note in notes:
                self.writer.submit(Event(schema.DISTRIBUTED, schema.INFO, note))
            self.writer.set_meta(distributed=self._facts())


__all__ = ["Session", "join", "active_world", "rank_dir"]
