"""Descriptions of the model, optimizer, host and library versions for the run's metadata."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

import torch
from torch import nn

from instrument.modules import display_name


def model_summary(model: nn.Module, leaf_names: list, max_layers: int = 2000) -> dict:
    """Class, parameter counts and the leaf layers (name, type, parameter count)."""
    params = list(model.parameters())
    leaves = {display_name(n): m for n, m in model.named_modules()}
    layers = []
    for name in leaf_names[:max_layers]:
        m = leaves.get(name)
        if m is None:
            continue
        layers.append({"name": name, "type": type(m).__name__,
                       "params": sum(p.numel() for p in m.parameters())})
    return {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "layers": layers,
        "training": bool(model.training),
    }


def optimizer_summary(optimizer) -> dict:
    """Class, defaults and param groups (sizes and hyperparameters) of a torch optimizer."""
    if optimizer is None:
        return {"class": None}

    def clean(v):
        if isinstance(v, (int, float, str, bool)) or v is None:
            return v
        if isinstance(v, (tuple, list)):
            return [clean(x) for x in v]
        if isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type == "cpu":
            return float(v)
        return repr(v)

    groups = [{"params": len(g["params"]),
               **{k: clean(v) for k, v in g.items() if k != "params"}}
              for g in optimizer.param_groups]
    return {"class": type(optimizer).__name__,
            "defaults": {k: clean(v) for k, v in optimizer.defaults.items()},
            "param_groups": groups}


def host_summary(device: torch.device) -> dict:
    """Where the run happens: host, process, device, rank variables."""
    env = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE") if k in os.environ}
    info = {"hostname": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(),
            "device": str(device), **env}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def versions() -> dict:
    """Versions of Python and the libraries that shape the recorded numbers."""
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for dist in ("avionics", "numpy", "backpack-for-pytorch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
