"""The per-sample engine: individual-gradient statistics computed inside the user's own backward.

No second forward or backward pass. On a step where a Cockpit instrument asked for it, the
engine captures the first grad-enabled forward of the step: forward hooks keep each Linear/Conv
layer's input ``a`` and put a tensor hook on its output; the step's first loss call (the
criterion module's, or a captured functional loss, see :mod:`instrument.losses`; inside the
model's ``forward`` or after it) gives each sample's loss and gets a hook, whose gradient tells
how the loop scales it. In the
backward, the output gradient of a layer times ``B`` (mean reduction) divided by that scale is
``delta_i = d loss_i / d output_i``, and :mod:`instrument.cockpit.kernels` reduces ``(a, delta)``
to the requested statistics right there, layer by layer. Hooks return None and never write
``.grad``: training is bit-identical with the engine on or off.

Linear, Conv and Embedding layers are treated. A parameter used by several of them (tied
weights, e.g. nanoGPT's head and token embedding) gets the sum of every module's share, reduced
once the last share's gradient arrives: its statistics use its whole gradient, recorded once
under its first name. Layers it cannot treat per sample are skipped with a note (stored as an
event): parameters of other module types (BatchNorm, LayerNorm, attention, custom modules),
layers called more than once per forward, every layer called before a BatchNorm in train mode
(which mixes the samples of a batch, so individual gradients are not defined upstream of it),
and a shared parameter one of whose modules is skipped.

An error inside a hook is kept and re-raised from the consumer instrument's ``pre_step``, where
the monitor's guard handles it (the instrument is disabled, or the error raised under strict);
the user's backward never sees it.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K
from instrument.cockpit.presets import Preset

PER_SAMPLE_WHAT = ("per-sample quantities (norm/inner/orthogonality tests, gradient histograms, "
                   "alpha, GSNR, CABS, early stopping, TIC)")

MEAN_LIKE = ("mean", "batchmean")
SUM_LIKE = ("sum",)


class LayerInfo:
    """A Linear/Conv/Embedding leaf module and the indices (into ``ctx.params``) of its weight
    and bias."""

    def __init__(self, index, name, module, w, b):
        self.index, self.name, self.module, self.w, self.b = index, name, module, w, b

    @property
    def params(self):
        return [p for p in (self.w, self.b) if p is not None]


class Demand:
    """What the consumers scheduled at one step want from the next captured pass."""

    def __init__(self, step):
        self.step = step
        self.stats: set = set()
        self.direction: dict | None = None  # param index -> tensor (Alpha's end point)
        self.keep = False  # keep (a, delta) per layer until post_step (Alpha's start point)
        self.losses = False
        self.inputs = False  # model inputs/outputs and criterion arguments (the probe)
        self.rng = False
        self.used = False

    @property
    def per_layer(self) -> bool:
        return bool(self.stats) or self.direction is not None or self.keep


class Capture:
    """One captured forward/backward: inputs, per-sample losses and per-parameter statistics."""

    def __init__(self, demand: Demand, batch: int):
        self.demand = demand
        self.step = demand.step
        self.B = batch
        self.capturing = True
        self.forward_done = False
        self.crit_done = False
        self.inputs = None  # (args, kwargs) of the model call
        self.output = None
        self.call = None  # the step's first loss call (instrument.losses.LossCall)
        self.rng = None
        self.losses: torch.Tensor | None = None
        self.reduction: str | None = None
        self.gscale: torch.Tensor | None = None
        self.order: list = []
        self.calls: Counter = Counter()
        self.bn_train: list = []  # (position in order, module name)
        self.io: dict = {}
        self.done: set = set()
        self.kept: dict = {}  # module index -> (input, output gradient), projected later
        self.kept_grads: dict = {}  # param index -> individual gradients (B x numel)
        self.params: dict = {}  # param index -> ParamStats
        self.skipped: dict = {}  # layer name -> reason, this capture
        self.global_reason: str | None = None
        self.errors: list = []
        self._status: dict | None = None
        self._finished = False
        self.p_total: torch.Tensor | None = None
        self.proj: torch.Tensor | None = None
        self.proj_params: set = set()
        self.parts: dict = {}  # shared param index -> {module index: (a, delta)} until complete
        self.blocked: set = set()  # shared param indices one of whose modules is unusable
        self.on_finish = None  # the engine's completion of shared parameters

    @property
    def factor(self) -> torch.Tensor | None:
        """``delta = output_grad * factor``: ``B`` (mean) or 1 (sum) over the loss's scale."""
        if self.gscale is None or self.reduction is None:
            return None
        n = self.B if self.reduction in MEAN_LIKE else 1
        return n / self.gscale

    def finish(self) -> Capture:
        """Called by consumers when gradients are final: re-raise hook errors, add up layers."""
        if not self._finished and self.on_finish is not None:
            try:  # shared parameters some of whose modules got no gradient
                self.on_finish(self)
            except Exception as exc:
                self.errors.append(exc)
        if self.errors:
            err, self.errors = self.errors[0], []
            raise err
        if not self._finished:
            self._finished = True
            ps = [s.p for s in self.params.values() if s.p is not None]
            if ps:
                self.p_total = torch.stack(ps).sum(0)
        return self


class PerSampleEngine:
    """Shared by all per-sample Cockpit instruments of one ``watch()`` (``ctx.services``)."""

    KEY = "cockpit.persample"

    @classmethod
    def of(cls, ctx) -> PerSampleEngine:
        engine = ctx.services.get(cls.KEY)
        if engine is None:
            engine = ctx.services[cls.KEY] = cls(ctx)
        return engine

    def __init__(self, ctx):
        self.ctx = ctx
        self.options: Preset = ctx.services.get("cockpit.options") or Preset()
        self.specs = K.Specs(self.options)
        self.tuner = K.Tuner()
        self.layers: dict = {}
        self.static_skips: list = []  # (layer name, reason)
        self._classify()
        self.demand: Demand | None = None
        self.capture: Capture | None = None
        self._attached = False
        self._noted: set = set()
        self._notes: list = []

    # ---- set-up -------------------------------------------------------------------------
    def _classify(self):
        ctx = self.ctx
        index = {id(p): i for i, p in enumerate(ctx.params)}
        owned = set()
        elsewhere = {}  # param index -> an unsupported module that also uses it
        for mi, (name, m) in enumerate(zip(ctx.module_names, ctx.modules)):
            params = [p for p in m.parameters() if p.requires_grad]
            if not params:
                continue
            owned.update(id(p) for p in params)
            reason = self._unsupported(m)
            if reason:
                self.static_skips.append((name, reason))
                for p in params:
                    elsewhere.setdefault(index.get(id(p)), name)
                continue
            bias = getattr(m, "bias", None)
            w = index.get(id(m.weight)) if m.weight.requires_grad else None
            b = index.get(id(bias)) if bias is not None and bias.requires_grad else None
            self.layers[mi] = LayerInfo(mi, name, m, w, b)
        self._classify_shared(elsewhere)
        for i, (name, p) in enumerate(zip(ctx.param_names, ctx.params)):
            if p.requires_grad and id(p) not in owned and ctx.param_owner[i] == -1:
                if not name.startswith("optimizer."):
                    self.static_skips.append((name, "a parameter used directly in a container "
                                                    "module's forward (not by a leaf layer)"))

    def _classify_shared(self, elsewhere: dict) -> None:
        """Parameters used by several supported modules (tied weights: nanoGPT's head and token
        embedding) get the sum of every module's share (``shared``); those also used by an
        unsupported module cannot, and are left out with a note (``incomplete``)."""
        users: dict = {}
        for mi, layer in self.layers.items():
            for pidx in layer.params:
                users.setdefault(pidx, []).append(mi)
        self.shared = {p: u for p, u in users.items() if len(u) > 1}
        self.incomplete = {p: elsewhere[p] for p in users if p in elsewhere}
        for pidx, mods in self.shared.items():
            grouped = [self.ctx.module_names[mi] for mi in mods
                       if isinstance(self.layers[mi].module, K.CONV_TYPES)
                       and self.layers[mi].module.groups > 1]
            if grouped:
                self.incomplete[pidx] = grouped[0]

    def _incomplete_note(self, pidx) -> None:
        self.note(self.ctx.param_names[pidx],
                  f"the parameter is also used by '{self.incomplete[pidx]}' (an unsupported or "
                  "grouped-convolution layer), so its individual gradients would miss that "
                  "module's share")

    @staticmethod
    def _unsupported(m: nn.Module) -> str | None:
        kind = type(m).__name__
        if isinstance(m, _BatchNorm):
            return (f"{kind} parameters have no per-sample gradients in train mode and are not "
                    "supported by the per-sample engine")
        if not isinstance(m, K.SUPPORTED_TYPES):
            return (f"{kind} layers are not supported by the per-sample engine (supported: "
                    "Linear, Embedding, Conv1d, Conv2d, Conv3d)")
        if isinstance(m, nn.Embedding) and (m.sparse or m.scale_grad_by_freq):
            return (f"{kind} with sparse=True or scale_grad_by_freq=True is not supported by "
                    "the per-sample engine (the frequency scaling mixes the samples)")
        for cls in K.SUPPORTED_TYPES:
            if isinstance(m, cls) and type(m).forward is not cls.forward:
                return f"{kind} overrides the forward of {cls.__name__}"
        if parametrize.is_parametrized(m):
            return f"{kind} has parametrized weights (torch.nn.utils.parametrize)"
        if any(True for _ in m.children()):
            return f"{kind} has submodules"
        return None

    def attach(self) -> list:
        """Register the engine's hooks once (later calls return no new handles)."""
        if self._attached:
            return []
        self._attached = True
        model = self.ctx.model
        hs = [model.register_forward_pre_hook(self._pre, with_kwargs=True)]
        for mi, m in enumerate(self.ctx.modules):
            if mi in self.layers or isinstance(m, _BatchNorm):
                hs.append(m.register_forward_hook(self._leaf(mi)))
        # after the leaf hooks: a model that is itself a leaf module still gets recorded
        hs.append(model.register_forward_hook(self._post, with_kwargs=True))
        if self.ctx.optimizer is not None:  # runs after the monitor's post-step hook
            hs.append(self.ctx.optimizer.register_step_post_hook(self._release))
        return hs

    def _release(self, *args) -> None:
        """After the optimizer step: drop the references to activations and inputs that the
        consumers no longer need, so no step keeps the previous one's tensors alive."""
        c = self.capture
        if c is not None:
            c.io, c.kept, c.kept_grads = {}, {}, {}
            c.inputs = c.output = c.call = None

    # ---- consumers ----------------------------------------------------------------------
    def request(self, step: int, stats=(), *, direction: dict | None = None,
                keep: bool = False, losses: bool = False, inputs: bool = False,
                rng: bool = False) -> None:
        """Ask for statistics of step ``step``'s first forward/backward (call in begin_step)."""
        d = self.demand
        if d is None or d.step != step:
            d = self.demand = Demand(step)
        d.stats.update(stats)
        if direction is not None:
            d.direction = direction
            d.stats.add(K.PROJ)
        d.keep |= keep
        d.losses |= losses
        d.inputs |= inputs
        d.rng |= rng

    def capture_for(self, step: int) -> Capture | None:
        """The capture of ``step`` (None if that step had no captured forward)."""
        c = self.capture
        return c if c is not None and c.step == step else None

    def take_notes(self) -> list:
        """New ``(layer, reason, what)`` degradation notes, each handed out once."""
        out, self._notes = self._notes, []
        return out

    def note(self, layer: str, reason: str, what: str = PER_SAMPLE_WHAT) -> None:
        key = (layer, reason, what)
        if key not in self._noted:
            self._noted.add(key)
            self._notes.append(key)

    def project_kept(self, capture: Capture, direction: dict):
        """``(g_i . d)`` over the kept layers of ``capture`` (Alpha's start point), and the
        parameter indices it covers."""
        total, covered = None, set()
        for pidx, G in capture.kept_grads.items():  # individual gradients kept whole
            if pidx in direction:
                p = (G @ direction[pidx].reshape(-1).to(G.dtype)).double()
                total = p if total is None else total + p
                covered.add(pidx)
        for mi, (a, delta) in capture.kept.items():
            layer = self.layers[mi]
            dw = direction.get(layer.w) if layer.w not in (None, *covered) else None
            db = direction.get(layer.b) if layer.b not in (None, *covered) else None
            if dw is None and db is None:
                continue
            p = K.project(layer.module, a, delta, dw, db)
            total = p if total is None else total + p
            covered.update(i for i, v in ((layer.w, dw), (layer.b, db)) if v is not None)
        capture.kept, capture.kept_grads = {}, {}
        return total, covered

    # ---- hooks (training thread) --------------------------------------------------------
    def _pre(self, module, args, kwargs):
        d = self.demand
        c = self.capture
        if (d is None or d.used or not torch.is_grad_enabled()
                or (c is not None and c.capturing)):
            return None
        d.used = True
        batch = _batch_size(args, kwargs)
        c = self.capture = Capture(d, batch if batch is not None else -1)
        c.on_finish = self._complete_shared
        if batch is None:
            c.global_reason = "the model input holds no tensor with a batch dimension"
        if d.inputs:
            c.inputs = (args, kwargs)
        if d.rng:
            c.rng = _rng_state(self.ctx.device)
        return None

    def _post(self, module, args, kwargs, output):
        c = self.capture
        if c is not None and c.capturing:
            c.capturing = False
            c.forward_done = True
            if c.demand.inputs:
                c.output = output
        return None

    def _leaf(self, mi):
        def hook(module, args, output):
            c = self.capture
            if c is None or not c.capturing:
                return None
            c.order.append(mi)
            c.calls[mi] += 1
            if isinstance(module, _BatchNorm):
                if module.training:
                    c.bn_train.append((len(c.order) - 1, self.ctx.module_names[mi]))
                return None
            if c.calls[mi] == 1 and c.demand.per_layer and args and torch.is_tensor(args[0]) \
                    and torch.is_tensor(output) and output.requires_grad:
                c.io[mi] = args[0].detach()
                output.register_hook(self._grad_hook(c, mi))
            return None

        return hook

    def on_loss(self, call) -> None:
        """A grad-enabled loss call (``instrument.losses.LossCall``), from the criterion module
        or captured: the first one of the captured forward's step (during or after that forward:
        a loss computed inside ``forward`` counts) defines the per-sample losses."""
        c = self.capture
        if (c is None or not (c.capturing or c.forward_done) or c.crit_done
                or c.global_reason):
            return
        c.crit_done = True
        try:
            with torch.no_grad():
                self._criterion_facts(c, call)
        except Exception as exc:  # surfaced by the consumer through the guard
            c.errors.append(exc)
        output = call.output
        if torch.is_tensor(output) and output.requires_grad and c.global_reason is None:
            def scale_hook(grad, c=c):
                c.gscale = grad.detach().reshape(())
                return None
            output.register_hook(scale_hook)

    def _criterion_facts(self, c: Capture, call):
        reduction = call.reduction
        name = call.name
        if reduction not in MEAN_LIKE + SUM_LIKE:
            c.global_reason = (f"the loss {name} has reduction={reduction!r}; per-sample "
                               "quantities need a loss with reduction 'mean' or 'sum' (as "
                               "Cockpit, which needs 'mean')")
            return
        output = call.output
        if not torch.is_tensor(output) or output.numel() != 1:
            c.global_reason = f"the loss {name} did not return a scalar"
            return
        x = call.input
        if not torch.is_tensor(x) or x.dim() == 0 or x.numel() % max(c.B, 1) != 0:
            c.global_reason = (f"the input of the loss {name} does not split into the model's "
                               f"batch of {c.B} samples")
            return
        c.reduction = reduction
        if c.demand.inputs:
            c.call = call
        if c.demand.losses:
            none = call.recompute(reduction="none")
            rows = none.reshape(c.B, -1).sum(1, dtype=torch.float64)
            if reduction in MEAN_LIKE:
                rows = rows * (c.B / _normalizer(call, none, c.B))
            c.losses = rows

    def _grad_hook(self, c: Capture, mi: int):
        def hook(grad):
            if mi in c.done:
                return None  # a second backward through the same graph
            c.done.add(mi)
            try:
                with torch.no_grad():
                    self._process(c, mi, grad)
            except Exception as exc:  # surfaced by the consumer through the guard
                c.errors.append(exc)
            return None

        return hook

    # ---- per-layer work -----------------------------------------------------------------
    def _status(self, c: Capture) -> dict:
        if c._status is None:
            st = {}
            last_bn = max(c.bn_train) if c.bn_train else None
            first = {}
            for pos, mi in enumerate(c.order):
                first.setdefault(mi, pos)
            for mi in c.io:
                a = c.io[mi]
                if c.global_reason:
                    st[mi] = c.global_reason
                elif c.calls[mi] > 1:
                    st[mi] = (f"called {c.calls[mi]} times in one forward pass (shared "
                              "weights); individual gradients need one call")
                elif a.dim() < _min_dim(self.layers[mi].module) or a.shape[0] != c.B:
                    st[mi] = (f"its input's first dimension ({a.shape[0] if a.dim() else 0}) is "
                              f"not the batch size {c.B}")
                elif last_bn is not None and first[mi] < last_bn[0]:
                    st[mi] = (f"it runs before the BatchNorm '{last_bn[1]}' in train mode, "
                              "which mixes the samples of a batch, so individual gradients are "
                              "not defined (put BatchNorm in eval mode, or use GroupNorm)")
                else:
                    st[mi] = None
            c._status = st
            for name, reason in self.static_skips:
                self.note(name, reason)
        return c._status

    def _process(self, c: Capture, mi: int, grad: torch.Tensor):
        layer = self.layers[mi]
        reason = self._status(c).get(mi)
        if reason is None and c.factor is None:
            reason = ("the loss did not reach this layer through a loss avionics saw (the "
                      "criterion given as watch(loss_fn=...), or without one F.cross_entropy, "
                      "F.nll_loss, F.binary_cross_entropy[_with_logits] or F.mse_loss): is the "
                      "backward pass started from its output?")
        if reason:
            c.skipped[layer.name] = reason
            self.note(layer.name, reason)
            return
        a = c.io[mi]
        if a.is_floating_point() and a.dtype != torch.float32:
            a = a.float()
        d = c.demand
        direction = d.direction or {}
        want = d.stats
        module = layer.module
        if want <= {K.PROJ} and not d.keep:  # only Alpha's end point: one forward
            if any(i in direction for i in layer.params):
                # project the raw output gradient and scale the B results (not the gradient)
                p = K.project(module, a, grad.float(), direction.get(layer.w),
                              direction.get(layer.b)) * c.factor.double()
                c.proj = p if c.proj is None else c.proj + p
                c.proj_params.update(i for i in layer.params if i in direction)
            return
        delta = grad.float() * c.factor
        shared = [i for i in layer.params if i in self.shared]
        materialize = want - {K.PROJ} and not (isinstance(module, nn.Linear) and a.dim() == 2)
        if d.keep and (not materialize or shared):  # projected later by one forward
            c.kept[mi] = (a, delta)
        if want <= {K.PROJ}:  # Alpha's end and start points, nothing else
            if any(i in direction for i in layer.params):
                p = K.project(module, a, delta, direction.get(layer.w), direction.get(layer.b))
                c.proj = p if c.proj is None else c.proj + p
                c.proj_params.update(i for i in layer.params if i in direction)
            return
        for pidx in shared:
            self._contribute(c, pidx, mi, a, delta)
        if layer.w is not None and layer.w not in self.shared:
            if layer.w in self.incomplete:
                self._incomplete_note(layer.w)
            else:
                self._weight(c, layer, a, delta, direction.get(layer.w),
                             d.keep and layer.index not in c.kept)
        if layer.b is not None and layer.b not in self.shared:
            self._bias(c, layer, delta, direction.get(layer.b), d.keep and materialize)

    def _weight(self, c, layer, a, delta, dw, keep):
        module, want = layer.module, c.demand.stats
        st = c.params[layer.w] = K.ParamStats()
        if isinstance(module, nn.Linear) and a.dim() == 2:
            K.linear_rank_one(st, a, delta, want, self.specs, module.weight, dw)
        else:
            kept = self._materialized(st, layer, a, delta, want, dw, c.B, keep)
            if keep:
                if kept is None:
                    c.kept[layer.index] = (a, delta)
                else:
                    c.kept_grads[layer.w] = kept
        self._add_proj(c, st, layer.w, dw)

    def _bias(self, c, layer, delta, db, keep):
        module, want = layer.module, c.demand.stats
        st = c.params[layer.b] = K.ParamStats()
        mean = torch.empty_like(module.bias, dtype=torch.float32) if K.MEAN in want else None
        sgs = torch.empty_like(module.bias, dtype=torch.float32) if K.SGS in want else None
        gb = K.bias_grads(module, delta)
        K.from_materialized(st, gb, want, self.specs, c.B, module.bias.detach(), db, mean, sgs)
        st.mean, st.sgs = mean, sgs
        self._add_proj(c, st, layer.b, db)
        if keep:
            c.kept_grads[layer.b] = gb

    # ---- parameters shared by several modules (tied weights) ----------------------------
    def _contribute(self, c: Capture, pidx: int, mi: int, a, delta) -> None:
        """Keep one module's ``(a, delta)`` for shared parameter ``pidx``; once every module
        that used it in the captured forward has its gradient, reduce their summed shares."""
        if pidx in c.blocked:
            return
        if pidx in self.incomplete:
            c.blocked.add(pidx)
            self._incomplete_note(pidx)
            return
        status = self._status(c)
        expected = [u for u in self.shared[pidx] if u in c.io]
        bad = [u for u in expected if status.get(u)]
        if bad:
            c.blocked.add(pidx)
            self.note(self.ctx.param_names[pidx],
                      f"the parameter is shared with '{self.ctx.module_names[bad[0]]}', whose "
                      f"individual gradients cannot be formed ({status[bad[0]]})")
            return
        parts = c.parts.setdefault(pidx, {})
        parts[mi] = (a, delta)
        if all(u in parts for u in expected):
            self._shared_stats(c, pidx, c.parts.pop(pidx))

    def _complete_shared(self, c: Capture) -> None:
        """At the consumers' pre-step: shared parameters some of whose modules got no
        gradient (their share is zero) are reduced from the shares that arrived."""
        with torch.no_grad():
            for pidx in list(c.parts):
                self._shared_stats(c, pidx, c.parts.pop(pidx))

    def _shared_stats(self, c: Capture, pidx: int, parts: dict) -> None:
        """Statistics of a shared parameter from the sum of its modules' shares, built chunk by
        chunk of rows (as for any materialized layer)."""
        want = c.demand.stats
        param = self.ctx.params[pidx]
        dw = (c.demand.direction or {}).get(pidx)
        st = c.params[pidx] = K.ParamStats()
        rows = param.shape[0]
        mean = torch.empty(param.shape, dtype=torch.float32, device=param.device) \
            if K.MEAN in want else None
        sgs = torch.empty(param.shape, dtype=torch.float32, device=param.device) \
            if K.SGS in want else None
        theta = param.detach().reshape(rows, -1)
        for o0, o1 in K.row_chunks(param, c.B):
            G = None
            for mi, (a, delta) in parts.items():
                layer = self.layers[mi]
                which = "weight" if layer.w == pidx else "bias"
                g = K.param_rows(layer.module, which, a, delta, o0, o1, self.tuner)
                G = g if G is None else G + g
            K.from_materialized(
                st, G, want, self.specs, c.B, theta[o0:o1],
                None if dw is None else dw.reshape(rows, -1)[o0:o1],
                None if mean is None else mean.view(rows, -1)[o0:o1].view(-1),
                None if sgs is None else sgs.view(rows, -1)[o0:o1].view(-1))
        st.mean, st.sgs = mean, sgs
        self._add_proj(c, st, pidx, dw)

    def _materialized(self, st, layer, a, delta, want, dw, B, keep=False):
        """Statistics from individual weight gradients built chunk by chunk; returns them
        whole (``B x numel``) when ``keep`` and they fit ``MATERIALIZE_MAX_ELEMENTS``."""
        w = layer.module.weight
        keep = keep and B * w.numel() <= C.MATERIALIZE_MAX_ELEMENTS
        chunks = []
        mean = torch.empty(w.shape, dtype=torch.float32, device=w.device) \
            if K.MEAN in want else None
        sgs = torch.empty(w.shape, dtype=torch.float32, device=w.device) \
            if K.SGS in want else None
        theta = w.detach().reshape(w.shape[0], -1)
        for o0, o1, G in K.weight_chunks(layer.module, a, delta, self.tuner):
            K.from_materialized(
                st, G, want, self.specs, B, theta[o0:o1],
                None if dw is None else dw.reshape(w.shape[0], -1)[o0:o1],
                None if mean is None else mean.view(w.shape[0], -1)[o0:o1].view(-1),
                None if sgs is None else sgs.view(w.shape[0], -1)[o0:o1].view(-1))
            if keep:
                chunks.append(G)
        st.mean, st.sgs = mean, sgs
        return torch.cat(chunks, 1) if keep else None

    @staticmethod
    def _add_proj(c, st, pidx, d):
        if d is not None and st.proj is not None:
            c.proj = st.proj if c.proj is None else c.proj + st.proj
            c.proj_params.add(pidx)


def _min_dim(module) -> int:
    """Fewest input dimensions of a per-sample layer: the batch, plus features except for an
    embedding (whose input is indices)."""
    return 1 if isinstance(module, nn.Embedding) else 2


def _batch_size(args, kwargs) -> int | None:
    for v in list(args) + list(kwargs.values()):
        if torch.is_tensor(v) and v.dim() > 0:
            return int(v.shape[0])
        if isinstance(v, (list, tuple)):
            b = _batch_size(v, {})
            if b is not None:
                return b
        if isinstance(v, dict):
            b = _batch_size((), v)
            if b is not None:
                return b
    return None


def _normalizer(call, none: torch.Tensor, batch: int):
    """What a mean-reduced loss divides the summed per-element losses by: the number (or the
    class weights) of the targets it does not ignore, for class-index targets."""
    if call.reduction == "batchmean":
        return batch
    target = call.target
    if call.classifier and torch.is_tensor(target) and not target.is_floating_point():
        valid = target != call.ignore_index
        weight = call.kwargs.get("weight")
        if weight is not None:
            w = weight[torch.where(valid, target, 0)] * valid
            return w.sum(dtype=torch.float64)
        return valid.sum(dtype=torch.float64)
    return none.numel()


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state
