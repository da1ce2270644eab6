"""BackPACK's exact Hessian diagonal (``DiagHessian``), for ``Preset(curvature="diag_h")``.

It runs on its own BackPACK-extended copy of the model (BackPACK's hooks would slow the user's
model down and make ``torch.func`` fail on it), replaying the step like the autograd probe.
BackPACK needs every module on the path to have a ``DiagHessian`` rule and the criterion to be
applied to the model's output directly; otherwise the reason is returned and the caller falls
back to the GGN diagonal. Measured on the benchmark CNN it is about 2x slower than the
GGN engine (docs/cockpit.md), and the two agree exactly for piecewise-linear networks.
"""

from __future__ import annotations

import copy
import warnings

import torch

from instrument.cockpit.replica import Replica, fork_rng_at
from instrument.modules import float_tensors


class BackpackDiagHessian:
    """A BackPACK-extended replica and criterion."""

    def __init__(self, ctx):
        from backpack import extend

        self.ctx = ctx
        self.replica = Replica(ctx.model)
        self.model = extend(self.replica.copy)
        self._extend = extend
        self._loss_fns: dict = {}  # (kind, options) -> an extended criterion module

    def compute(self, cap, spec, out: dict) -> str | None:
        """Fill ``out`` (param index -> Hessian diagonal of the mean loss); or say why not."""
        from backpack import backpack
        from backpack.extensions import DiagHessian

        if self.ctx.services.get("cockpit.persample") is not None and \
                self.ctx.services["cockpit.persample"].shared:
            return ("BackPACK keeps one curvature per module, so a parameter shared by several "
                    "modules (tied weights) would get only one module's share")
        if spec[1] is not None:
            return ("BackPACK needs the criterion applied to the model's output itself (not a "
                    "reshaped view)")
        rep = self.replica
        rep.sync()
        pmap = rep.param_map()
        params = [(i, pmap.get(id(p))) for i, p in enumerate(self.ctx.params)]
        try:
            with fork_rng_at(cap.rng, self.ctx.device), torch.enable_grad(), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")  # BackPACK's full-backward-hook notices
                args, kwargs = cap.inputs
                z = list(float_tensors(self.model(*args, **kwargs)))[spec[0]]
                loss = self._loss_fn(cap.call)(z, *cap.call.args[1:],
                                                **cap.call.module_kwargs())
                with backpack(DiagHessian()):
                    loss.backward()
        except Exception as exc:  # unsupported module or criterion
            return f"BackPACK's DiagHessian failed ({type(exc).__name__}: {exc})"
        finally:
            for _, p in params:
                if p is not None:
                    p.grad = None
        scale = 1.0 / cap.B if cap.reduction == "sum" else 1.0
        for i, p in params:
            if p is not None and getattr(p, "diag_h", None) is not None:
                out[i] = p.diag_h.detach() * scale
                del p.diag_h  # BackPACK's fields outlive the step otherwise
        return None


    def _loss_fn(self, call):
        """The extended criterion module computing ``call``'s loss (BackPACK needs a module)."""
        key = (call.kind, call.name, tuple((k, id(v) if torch.is_tensor(v) else v)
                                           for k, v in sorted(call.kwargs.items())))
        fn = self._loss_fns.get(key)
        if fn is None:
            module = call.replay_module()
            if module is None:
                raise TypeError(f"no criterion module computes {call.name}")
            fn = self._loss_fns[key] = self._extend(copy.deepcopy(_without_hooks(module)))
        return fn


def _without_hooks(module):
    clone = copy.copy(module)
    for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks"):
        if hasattr(clone, attr):
            setattr(clone, attr, type(getattr(clone, attr))())
    return clone
