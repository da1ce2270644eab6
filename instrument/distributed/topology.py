"""What a distributed model looks like: its wrapper, and for every parameter the ranks whose
local pieces add up to it.

* **DDP** (and no wrapper): every rank holds the whole parameter and, after ``backward()``, the
  same averaged gradient: replicated, nothing to add up.
* **FSDP2** (``fully_shard``): parameters, gradients and optimizer state are ``DTensor``\\ s.
  Their local pieces add up over the mesh dimensions whose placement is not ``Replicate``:
  the whole 1-D mesh, or only the shard dimension of an HSDP ``(replicate, shard)`` mesh
  (adding over the replicas too would count each shard once per replica).
* **FSDP1** (``FullyShardedDataParallel``): with ``use_orig_params=True`` each parameter is a
  1-D slice of its FSDP unit's flat shard (possibly empty, with no gradient) and adds up over
  that unit's process group (the intra-node group under hybrid sharding). With
  ``use_orig_params=False`` only the units' flat parameters exist: their norms are exact per
  unit, but not per parameter (noted).
* **DeepSpeed** engines keep gradients in their own partitioned buffers (``p.grad`` is None):
  the per-parameter instruments are switched off with a note.

Activations and the loss come from each rank's own data and add up over the data-parallel
group: the whole world for DDP, FSDP and HSDP. A mesh that does not cover the world (tensor or
pipeline parallelism) is not supported: the per-batch statistics are then not combined (noted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist
from torch import nn

try:
    from torch.distributed.tensor import DTensor
except Exception:  # pragma: no cover - builds without torch.distributed.tensor
    DTensor = ()

DDP = "ddp"
FSDP2 = "fsdp2"
HSDP = "hsdp"
FSDP1 = "fsdp1"
FSDP1_FLAT = "fsdp1-flat"
DEEPSPEED = "deepspeed"
NONE = "none"


@dataclass
class Topology:
    """The wrapper and the shard groups of a model's parameters (see the module doc).

    ``groups[i]`` is the sorted tuple of global ranks whose local pieces of ``params[i]`` add
    up to the whole, or None when this rank holds all of it (replicated).
    """

    wrapper: str
    rank: int
    world_size: int
    groups: list = field(default_factory=list)
    data_parallel: bool = True  # activations/loss add up over the whole world
    mesh: dict | None = None
    notes: list = field(default_factory=list)

    @property
    def sharded(self) -> bool:
        return any(g is not None for g in self.groups)

    def as_dict(self) -> dict:
        return {"wrapper": self.wrapper, "mesh": self.mesh,
                "sharded_parameters": sum(g is not None for g in self.groups),
                "data_parallel": self.data_parallel}


def _type_names(obj) -> set:
    return {c.__name__ for c in type(obj).__mro__}


def find_fsdp1(model: nn.Module) -> list:
    """FSDP1 units in the model, pre-order (root first)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except Exception:  # pragma: no cover
        return []
    return [m for m in model.modules() if isinstance(m, FullyShardedDataParallel)]


def describe(model: nn.Module, params: list) -> Topology:
    """The :class:`Topology` of ``model`` whose parameters (in the store's order) are ``params``."""
    rank, world = dist.get_rank(), dist.get_world_size()
    topo = Topology(NONE, rank, world, groups=[None] * len(params))
    while type(model).__name__ == "OptimizedModule":  # torch.compile(DDP(model))
        model = model._orig_mod
    names = _type_names(model)
    if "DeepSpeedEngine" in names:
        topo.wrapper = DEEPSPEED
        topo.notes.append(
            "DeepSpeed engine: gradients and (under ZeRO) parameters live in DeepSpeed's own "
            "partitioned buffers, so per-parameter gradient, weight, update and adaptive-LR "
            "statistics are not recorded; activations and the loss are combined over all ranks.")
        return topo
    dtensors = [i for i, p in enumerate(params) if isinstance(p, DTensor)]
    units = find_fsdp1(model)
    if dtensors:
        _describe_dtensor(topo, params, dtensors, model)
    elif units:
        _describe_fsdp1(topo, params, units)
    elif "DistributedDataParallel" in names:
        topo.wrapper = DDP
        pg = getattr(model, "process_group", None)
        if pg is not None and dist.get_world_size(pg) != world:
            _not_data_parallel(topo, f"DDP runs over {dist.get_world_size(pg)} of {world} ranks")
    else:
        topo.notes.append(
            "no DDP/FSDP wrapper found: parameters are taken as replicated on every rank (e.g. "
            "gradients all-reduced by hand) and activations and the loss are combined over all "
            "ranks. If the ranks train independent models, record them as separate runs.")
    return topo


def _not_data_parallel(topo: Topology, why: str) -> None:
    topo.data_parallel = False
    topo.notes.append(
        f"{why}: the data-parallel group is not the whole world (tensor/pipeline parallelism?),"
        " so activation statistics and logged scalars are not combined across ranks and are "
        "not recorded in the run store (see the per-rank stores).")


def _describe_dtensor(topo: Topology, params: list, indices: list, model) -> None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except Exception:  # pragma: no cover
        FSDPModule = ()
    meshes = {}
    for i in indices:
        p = params[i]
        mesh, placements = p.device_mesh, p.placements
        meshes[id(mesh)] = (mesh, placements)
        shard_dims = [d for d, pl in enumerate(placements) if not pl.is_replicate()]
        if not shard_dims:
            continue
        coord = mesh.get_coordinate()
        if coord is None:  # this rank is not in the parameter's mesh
            continue
        index = tuple(slice(None) if d in shard_dims else coord[d] for d in range(mesh.ndim))
        group = tuple(sorted(int(r) for r in mesh.mesh[index].reshape(-1).tolist()))
        topo.groups[i] = group if len(group) > 1 else None
    mesh, placements = next(iter(meshes.values()))
    names = mesh.mesh_dim_names
    topo.mesh = {"shape": list(mesh.shape), "dim_names": list(names) if names else None,
                 "placements": [str(pl) for pl in placements]}
    hsdp = mesh.ndim == 2 and placements[0].is_replicate() and not placements[1].is_replicate()
    fsdp = isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.modules())
    topo.wrapper = HSDP if hsdp else FSDP2 if fsdp else "dtensor"
    if not fsdp:
        _not_data_parallel(topo, "DTensor parameters without fully_shard")
        return
    if len(meshes) > 1:
        topo.notes.append(f"parameters live on {len(meshes)} different device meshes")
    for mesh, placements in meshes.values():
        if mesh.size() != topo.world_size or mesh.ndim > 2 or (mesh.ndim == 2 and not hsdp):
            _not_data_parallel(topo, f"a parameter mesh of shape {tuple(mesh.shape)} with "
                                     f"placements {list(map(str, placements))}")
            break


def _describe_fsdp1(topo: Topology, params: list, units: list) -> None:
    from torch.distributed.fsdp import ShardingStrategy

    owner = {}
    for unit in reversed(units):  # innermost units first: a parameter belongs to its own unit
        for p in unit.parameters():
            owner.setdefault(id(p), unit)
    flat = not all(getattr(u, "_use_orig_params", True) for u in units)
    topo.wrapper = FSDP1_FLAT if flat else FSDP1
    for i, p in enumerate(params):
        unit = owner.get(id(p))
        if unit is None or unit.sharding_strategy == ShardingStrategy.NO_SHARD:
            continue
        group = tuple(sorted(dist.get_process_group_ranks(unit.process_group)))
        topo.groups[i] = group if len(group) > 1 else None
    root = units[0]
    hybrid = root.sharding_strategy in (ShardingStrategy.HYBRID_SHARD,
                                        ShardingStrategy._HYBRID_SHARD_ZERO2)
    if not hybrid and dist.get_world_size(root.process_group) != topo.world_size:
        _not_data_parallel(topo, f"FSDP shards over {dist.get_world_size(root.process_group)} "
                                 f"of {topo.world_size} ranks")
    if flat:
        topo.notes.append(
            "FSDP1 with use_orig_params=False exposes only each unit's flattened parameter: "
            "gradient, weight and update norms are exact but per FSDP unit ('..._flat_param'), "
            "not per parameter. Wrap with use_orig_params=True for per-parameter series.")
