"""Where a process sits in a distributed job: rank, world size, local rank, node and host."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

NODE_ENV = ("GROUP_RANK", "SLURM_NODEID", "NODE_RANK")
"""Environment variables naming this process's node, in order of preference (torchrun sets
GROUP_RANK; SLURM and Lightning use the others)."""

LOCAL_RANK_ENV = ("LOCAL_RANK", "SLURM_LOCALID")


def _env_int(names) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


@dataclass
class RankInfo:
    """One process of the job. ``node`` and ``local_rank`` come from the launcher's environment,
    or are derived from the host names of all ranks (:func:`fill_missing`)."""

    rank: int
    world_size: int
    local_rank: int | None
    node: int | None
    host: str
    pid: int
    device: str = ""

    @classmethod
    def here(cls, rank: int, world_size: int, device: str = "") -> RankInfo:
        return cls(rank=rank, world_size=world_size, local_rank=_env_int(LOCAL_RANK_ENV),
                   node=_env_int(NODE_ENV), host=socket.gethostname(), pid=os.getpid(),
                   device=device)

    def as_dict(self) -> dict:
        return asdict(self)


def fill_missing(infos: list) -> list:
    """Derive missing ``node`` (order of first appearance of the host) and ``local_rank``
    (position among the ranks on the same host) from all ranks' infos, in rank order."""
    hosts: dict = {}
    on_host: dict = {}
    for info in sorted(infos, key=lambda i: i.rank):
        node = hosts.setdefault(info.host, len(hosts))
        position = on_host.get(info.host, 0)
        on_host[info.host] = position + 1
        if info.node is None:
            info.node = node
        if info.local_rank is None:
            info.local_rank = position
    return infos


def job_facts() -> dict:
    """Launcher facts worth keeping: the elastic run id and restart count (restarts can replay
    step numbers)."""
    out = {}
    for key, env in (("run_id", "TORCHELASTIC_RUN_ID"), ("restart_count", "TORCHELASTIC_RESTART_COUNT")):
        if env in os.environ:
            out[key] = os.environ[env]
    return out
