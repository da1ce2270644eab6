"""The curvature probe: on tracked steps, replay the step's forward pass on a private copy of
the model and compute the diagonal curvature (HessTrace, TIC) and/or Hessian-vector products
(HessMaxEV) from it.

The batch is the one the user's step used (captured by the per-sample engine's hooks: the model
inputs, the criterion's other arguments and the RNG state). The probe runs in the optimizer's
pre-step hook, when the parameters are still those the gradients were computed at; it shares
one replayed forward between the diagonal curvature and the HVPs. See
:mod:`instrument.cockpit.replica` for why the replay cannot disturb training.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

from instrument.cockpit import constants as C
from instrument.cockpit import ggn
from instrument.cockpit.lanczos import flat_start, lanczos
from instrument.cockpit.persample import PerSampleEngine
from instrument.cockpit.replica import Replica, fork_rng_at, replay_spec
from instrument.modules import float_tensors

CURVATURE_WHAT = "diagonal curvature (HessTrace, TICDiag, TICTrace)"
HVP_WHAT = "the Hessian's largest eigenvalue (HessMaxEV)"


class ProbeResult:
    """What one probe produced (device tensors; None where not computed)."""

    def __init__(self, step):
        self.step = step
        self.diag: dict = {}  # param index -> diagonal curvature (param-shaped)
        self.alphas: torch.Tensor | None = None
        self.betas: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None  # the replayed mean loss (detached)
        self.error: BaseException | None = None


class CurvatureProbe:
    """Shared by HessTrace, TICDiag, TICTrace and HessMaxEV (``ctx.services``)."""

    KEY = "cockpit.probe"

    @classmethod
    def of(cls, ctx) -> CurvatureProbe:
        probe = ctx.services.get(cls.KEY)
        if probe is None:
            probe = ctx.services[cls.KEY] = cls(ctx)
        return probe

    def __init__(self, ctx):
        self.ctx = ctx
        self.engine = PerSampleEngine.of(ctx)
        self.options = self.engine.options
        self.replica: Replica | None = None
        self._backpack = None
        self._want: dict = {}  # step -> {"diag", "hvp"}
        self._result: ProbeResult | None = None
        self._warm: torch.Tensor | None = None
        self._generator = None
        self._copy_error: str | None = None
        self._hvp_broken: str | None = None

    def setup(self) -> None:
        """Copy the model now: the monitor's hooks are registered after set-up, so the copy
        never carries them."""
        if self.replica is None and self._copy_error is None:
            try:
                self.replica = Replica(self.ctx.model)
            except Exception as exc:  # e.g. a model holding objects that cannot be copied
                self._copy_error = (f"the model cannot be copied for the probe "
                                    f"({type(exc).__name__}: {exc})")

    def request(self, step: int, what: str) -> None:
        """Ask for ``"diag"`` or ``"hvp"`` at ``step`` (call in begin_step)."""
        self._want.setdefault(step, set()).add(what)
        self._want = {s: w for s, w in self._want.items() if s >= step}
        self.engine.request(step, inputs=True, rng=True)

    def result(self, step: int) -> ProbeResult | None:
        """The probe of ``step``, computed on first call (from a consumer's pre_step)."""
        r = self._result
        if r is not None and r.step == step:
            if r.error is not None:
                raise r.error
            return r
        want = self._want.pop(step, set())
        cap = self.engine.capture_for(step)
        if not want or cap is None:
            return None
        r = self._result = ProbeResult(step)
        try:
            self._run(cap, want, r)
        except Exception as exc:
            r.error = exc
            raise
        return r

    # ---- the replay -------------------------------------------------------------------------
    def _run(self, cap, want, r: ProbeResult) -> None:
        cap.finish()
        reason = self._copy_error or cap.global_reason
        if reason is None and (cap.inputs is None or cap.call is None):
            reason = ("the step's forward pass or loss call was not captured (is the criterion "
                      "given as watch(loss_fn=...), or a standard functional loss, computed on "
                      "the model's output?)")
        spec = None
        if reason is None:
            spec = replay_spec(cap.output, cap.call.input)
            if spec is None:
                reason = ("the loss's input is not the model's output (or a view of it), "
                          "so the probe cannot replay the loss")
        if reason is not None:
            for what in want:
                self.engine.note("(model)", reason, CURVATURE_WHAT if what == "diag"
                                 else HVP_WHAT)
            return
        if "diag" in want and self.options.curvature == "diag_h":
            self._backpack_diag(cap, spec, r)
            if r.diag:
                want = want - {"diag"}
        if want:
            self._autograd(cap, spec, want, r)

    def _forward(self, cap, spec, copy_model, record: dict | None):
        """Replay forward + loss on ``copy_model``; returns ``(mean_loss, z)``."""
        args, kwargs = cap.inputs
        handles = []
        if record is not None:
            handles = self._record_hooks(copy_model, record)
        try:
            out = copy_model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        z = list(float_tensors(out))[spec[0]]
        if spec[1] is not None:
            z = z.reshape(spec[1])
        loss = cap.call.recompute(z)  # the loss function itself: no hooks
        if cap.reduction == "sum":
            loss = loss / cap.B
        return loss, z

    def _record_hooks(self, copy_model, record):
        leaves = self.replica.leaves
        record["order"], record["calls"], record["io"], record["bn"] = [], {}, {}, []
        handles = []
        for mi, m in enumerate(leaves):
            if mi in self.engine.layers or isinstance(m, _BatchNorm):
                def hook(module, args, output, mi=mi):
                    record["order"].append(mi)
                    record["calls"][mi] = record["calls"].get(mi, 0) + 1
                    if isinstance(module, _BatchNorm):
                        if module.training:
                            record["bn"].append((len(record["order"]) - 1,
                                                 self.ctx.module_names[mi]))
                    elif record["calls"][mi] == 1 and torch.is_tensor(output) \
                            and output.requires_grad:
                        record["io"][mi] = (args[0].detach(), output)
                    return None
                handles.append(m.register_forward_hook(hook))
        return handles

    def _autograd(self, cap, spec, want, r: ProbeResult) -> None:
        rep = self.replica
        rep.sync()
        record = {} if "diag" in want else None
        if self._hvp_broken:
            want = want - {"hvp"}
            if not want:
                return
        # the math attention kernel: fused kernels (flash) have no double backward on CPU
        with fork_rng_at(cap.rng, self.ctx.device), torch.enable_grad(), \
                sdpa_kernel([SDPBackend.MATH]):
            loss, z = self._forward(cap, spec, rep.copy, record)
            r.loss = loss.detach()
            if "diag" in want:
                self._diag_ggn(cap, loss, z, record, r)
            if "hvp" in want:
                try:
                    self._hvp(loss, r)
                except RuntimeError as exc:  # an op without a double backward
                    self._hvp_broken = (f"a Hessian-vector product cannot be formed for this "
                                        f"model ({exc})")
                    self.engine.note("(model)", self._hvp_broken, HVP_WHAT)

    def _diag_ggn(self, cap, loss, z, record, r: ProbeResult) -> None:
        B = cap.B
        outputs_per_sample = z.numel() // max(B, 1)
        if outputs_per_sample > C.LOSS_HESSIAN_MAX_OUTPUTS:
            self.engine.note("(model)", f"the model has {outputs_per_sample} outputs per sample "
                             f"(more than {C.LOSS_HESSIAN_MAX_OUTPUTS}); the loss Hessian is "
                             "too large to factor", CURVATURE_WHAT)
            return
        status = self._layer_status(record, B)
        usable = [mi for mi, reason in status.items() if reason is None]
        for mi, reason in status.items():
            if reason is not None:
                self.engine.note(self.ctx.module_names[mi], reason, CURVATURE_WHAT)
        for name, reason in self.engine.static_skips:
            self.engine.note(name, reason, CURVATURE_WHAT)
        if not usable:
            return
        columns = ggn.loss_hessian_factors(loss, z, B)
        outs = [record["io"][mi][1] for mi in usable]
        deltas = ggn.layer_output_grads(z, outs, columns)
        shared = self.engine.shared
        parts: dict = {}  # shared param index -> the shares of its modules
        with torch.no_grad():
            for mi, d in zip(usable, deltas):
                layer = self.engine.layers[mi]
                module = self.replica.leaves[mi]
                a = record["io"][mi][0]
                for pidx, which in ((layer.w, "weight"), (layer.b, "bias")):
                    if pidx in shared:
                        parts.setdefault(pidx, []).append((module, which, a, d))
                if all(i in shared for i in layer.params):
                    continue
                dw, db = ggn.diag_ggn_layer(module, a, d, self.engine.tuner)
                if layer.w is not None and layer.w not in shared:
                    r.diag[layer.w] = dw
                if layer.b is not None and db is not None and layer.b not in shared:
                    r.diag[layer.b] = db
            self._diag_shared(parts, status, r)

    def _diag_shared(self, parts: dict, status: dict, r: ProbeResult) -> None:
        """Shared parameters: the diagonal from every module's share, or a note if one of the
        modules that used it could not be treated."""
        engine = self.engine
        for pidx, shares in parts.items():
            users = [mi for mi in engine.shared[pidx] if mi in status]
            bad = [mi for mi in users if status[mi] is not None]
            if pidx in engine.incomplete or bad:
                why = (f"also used by '{engine.incomplete[pidx]}'" if pidx in engine.incomplete
                       else f"shared with '{self.ctx.module_names[bad[0]]}' "
                            f"({status[bad[0]]})")
                engine.note(self.ctx.param_names[pidx], why, CURVATURE_WHAT)
                continue
            r.diag[pidx] = ggn.diag_ggn_shared(shares, self.ctx.params[pidx], engine.tuner)

    def _layer_status(self, record, B) -> dict:
        last_bn = max(record["bn"]) if record["bn"] else None
        first = {}
        for pos, mi in enumerate(record["order"]):
            first.setdefault(mi, pos)
        out = {}
        for mi, (a, _) in record["io"].items():
            if record["calls"][mi] > 1:
                out[mi] = (f"called {record['calls'][mi]} times in one forward pass (shared "
                           "weights)")
            elif a.dim() < (1 if mi in self.engine.layers and isinstance(
                    self.engine.layers[mi].module, torch.nn.Embedding) else 2) or a.shape[0] != B:
                out[mi] = f"its input's first dimension is not the batch size {B}"
            elif last_bn is not None and first[mi] < last_bn[0]:
                out[mi] = (f"it runs before the BatchNorm '{last_bn[1]}' in train mode, which "
                           "mixes samples, so the per-sample factorization of the curvature "
                           "does not hold")
            else:
                out[mi] = None
        return out

    def _hvp(self, loss, r: ProbeResult) -> None:
        pmap = self.replica.param_map()
        params = [pmap[id(p)] for p in self.ctx.params if id(p) in pmap and p.requires_grad]
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
        if not pairs:
            return
        ps = [p for p, _ in pairs]
        gs = [g for _, g in pairs]
        sizes = [p.numel() for p in ps]
        D = sum(sizes)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            vs = [c.view_as(p) for c, p in zip(torch.split(v, sizes), ps)]
            hv = torch.autograd.grad(gs, ps, grad_outputs=vs, retain_graph=True,
                                     allow_unused=True)
            return torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1)
                              for h, p in zip(hv, ps)]).detach()

        dtype, device = ps[0].dtype, ps[0].device
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(C.LANCZOS_SEED)
        steps = self.options.lanczos_iterations
        if self._warm is None or self._warm.numel() != D:
            steps *= 2  # a cold start: buy the first estimate more iterations, once
        start = flat_start(self._warm, D, self._generator, dtype, device)
        alphas, betas, top = lanczos(hvp, start, steps, self._generator)
        self._warm = top
        r.alphas, r.betas = alphas, betas

    # ---- BackPACK's exact Hessian diagonal (Preset(curvature="diag_h")) ----------------------
    def _backpack_diag(self, cap, spec, r: ProbeResult) -> None:
        from instrument.cockpit.backpack_engine import BackpackDiagHessian

        if self._backpack is None:
            self._backpack = BackpackDiagHessian(self.ctx)
        reason = self._backpack.compute(cap, spec, r.diag)
        if reason:
            self.engine.note("(model)", reason + "; using the GGN diagonal instead",
                             CURVATURE_WHAT)
