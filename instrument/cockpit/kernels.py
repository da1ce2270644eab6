"""Per-layer math: individual-gradient statistics of Linear, Conv and Embedding layers from the
layer's input ``a`` and the per-sample output gradient ``delta`` (``d loss_i / d output_i``).

The individual gradient of sample ``i`` is ``delta_i a_i^T`` for a Linear layer on 2-D inputs,
``sum_t delta_it a_it^T`` on sequences, a per-sample weight gradient for a convolution, and for
an embedding the rows ``sum_{t: a_it = v} delta_it`` (a scatter of the output gradient). The
rank-one case is never materialized (norms, inner products and second moments factor into small
matrix products, histograms use :mod:`instrument.cockpit.histogram`); the others are built
chunk by chunk of output channels, each chunk reduced right away. Everything stays on the
device; nothing here synchronizes with it.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from instrument.cockpit import constants as C
from instrument.cockpit import histogram as H

# the statistics a consumer can ask for (see PerSampleEngine.request)
SQ = "sq"            # sum_i ||g_i||^2
INNER = "inner"      # p_i = g_i . g (per layer) and ||g||^2
MEAN = "mean"        # g itself (elementwise)
SGS = "sgs"          # sum_i g_i**2 (elementwise)
HIST1D = "hist1d"
HIST2D = "hist2d"
PROJ = "proj"        # g_i . d for a given direction d
STATS = (SQ, INNER, MEAN, SGS, HIST1D, HIST2D, PROJ)

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
SUPPORTED_TYPES = (nn.Linear, nn.Embedding) + CONV_TYPES


class ParamStats:
    """The statistics of one parameter tensor at one step (device tensors, or None)."""

    __slots__ = ("sq", "gsq", "p", "mean", "sgs", "hist1d", "hist2d", "proj")

    def __init__(self):
        self.sq = self.gsq = self.p = self.mean = self.sgs = None
        self.hist1d = self.hist2d = self.proj = None

    def add(self, name, value):
        old = getattr(self, name)
        setattr(self, name, value if old is None else old + value)


class Specs:
    """Histogram specs of a run (from the Preset)."""

    def __init__(self, options):
        self.h1 = H.HistSpec(*options.hist_1d_range, options.hist_1d_bins)
        (glo, ghi), (plo, phi) = options.hist_2d_range
        self.g2 = H.HistSpec(glo, ghi, options.hist_2d_bins[0])
        self.p2 = H.HistSpec(plo, phi, options.hist_2d_bins[1])


def from_materialized(st: ParamStats, G: torch.Tensor, want, specs: Specs, B: int,
                      theta: torch.Tensor | None, direction: torch.Tensor | None,
                      mean_out: torch.Tensor | None, sgs_out: torch.Tensor | None):
    """Add the statistics of the individual gradients ``G`` (``B x n``, one column chunk of a
    parameter) to ``st``. ``theta``/``direction`` are the matching parameter values and
    direction elements; ``mean_out``/``sgs_out`` the matching slices to fill."""
    if SQ in want or SGS in want:
        sgs = (G * G).sum(0)
        if SQ in want:
            st.add("sq", sgs.sum(dtype=torch.float64))
        if sgs_out is not None:
            sgs_out.copy_(sgs)
    if INNER in want or MEAN in want:
        g = G.sum(0) / B
        if INNER in want:
            st.add("gsq", torch.dot(g, g).double())
            st.add("p", (G @ g).double())
        if mean_out is not None:
            mean_out.copy_(g)
    if HIST1D in want:
        st.add("hist1d", H.hist_1d(specs.h1, G))
    if HIST2D in want:
        st.add("hist2d", H.hist_2d(specs.g2, specs.p2, G, specs.p2.index(theta.reshape(-1))))
    if direction is not None:
        st.add("proj", (G @ direction.reshape(-1).to(G.dtype)).double())


def linear_rank_one(st: ParamStats, a: torch.Tensor, delta: torch.Tensor, want, specs: Specs,
                    weight: torch.Tensor, direction: torch.Tensor | None):
    """Weight statistics of a Linear layer on 2-D inputs: ``g_i = delta_i a_i^T``."""
    B = a.shape[0]
    need_g = INNER in want or MEAN in want
    if SQ in want:
        st.add("sq", torch.dot((delta * delta).sum(1), (a * a).sum(1)).double())
    if need_g:
        g = delta.t() @ a / B
        if INNER in want:
            st.add("gsq", (g * g).sum(dtype=torch.float64))
            st.add("p", ((delta @ g) * a).sum(1).double())
        if MEAN in want:
            st.mean = g
    if SGS in want:
        st.sgs = (delta * delta).t() @ (a * a)
    if HIST1D in want:
        st.add("hist1d", H.outer_hist_1d(specs.h1, delta, a))
    if HIST2D in want:
        st.add("hist2d", H.outer_hist_2d(specs.g2, specs.p2, delta, a, weight.detach()))
    if direction is not None:
        st.add("proj", ((delta @ direction.to(delta.dtype)) * a).sum(1).double())


def _chunks(total: int, per_unit: int, unit: int = 1):
    """Ranges over ``total`` channels in multiples of ``unit`` so that one chunk holds at most
    about ``MATERIALIZE_MAX_ELEMENTS`` values (``per_unit`` values per channel)."""
    step = max(unit, (C.MATERIALIZE_MAX_ELEMENTS // max(per_unit, 1)) // unit * unit)
    for lo in range(0, total, step):
        yield lo, min(total, lo + step)


def weight_chunks(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, tuner: Tuner):
    """Yield ``(o0, o1, G)``: individual weight gradients of output channels ``o0:o1`` as a
    ``B x ((o1 - o0) * in_per_out)`` matrix, for Linear (any input rank) and Conv layers."""
    B = a.shape[0]
    weight = module.weight
    per_out = weight[0].numel()
    if isinstance(module, nn.Embedding):
        for o0, o1 in _chunks(weight.shape[0], B * per_out):
            yield o0, o1, embedding_rows(module, a, delta, o0, o1)
        return
    if isinstance(module, nn.Linear):
        a3 = a.reshape(B, -1, a.shape[-1])
        d3 = delta.reshape(B, -1, delta.shape[-1])
        for o0, o1 in _chunks(weight.shape[0], B * per_out):
            G = torch.bmm(d3[:, :, o0:o1].transpose(1, 2), a3)
            yield o0, o1, G.reshape(B, -1)
        return
    groups = module.groups
    unit = weight.shape[0] // groups
    for o0, o1 in _chunks(weight.shape[0], B * per_out, unit):
        G = tuner.conv_per_sample(module, a, delta[:, o0:o1], o0, o1)
        yield o0, o1, G.reshape(B, -1)


def embedding_rows(module: nn.Embedding, idx: torch.Tensor, delta: torch.Tensor, o0: int,
                   o1: int) -> torch.Tensor:
    """Individual gradients of an embedding's rows ``o0:o1``, ``B x ((o1 - o0) * dim)``: each
    sample's output gradients added into the rows of its indices (none for ``padding_idx``).
    Indices outside the rows go to a spare row that is dropped (no data-dependent shapes, so no
    device sync)."""
    B, n = idx.shape[0], o1 - o0
    D = delta.shape[-1]
    idx = idx.reshape(B, -1)
    d = delta.reshape(B, -1, D)
    inside = (idx >= o0) & (idx < o1)
    if module.padding_idx is not None:
        inside &= idx != module.padding_idx
    slot = torch.arange(B, device=idx.device).unsqueeze(1) * n + (idx - o0)
    slot = torch.where(inside, slot, B * n)
    out = torch.zeros(B * n + 1, D, dtype=d.dtype, device=d.device)
    out.index_add_(0, slot.reshape(-1), d.reshape(-1, D))
    return out[: B * n].reshape(B, n * D)


def param_rows(module: nn.Module, which: str, a: torch.Tensor, delta: torch.Tensor, o0: int,
               o1: int, tuner: Tuner) -> torch.Tensor:
    """One module's share of the individual gradients of rows ``o0:o1`` (first dimension) of
    its ``which`` ("weight" or "bias") parameter, ``B x ((o1 - o0) * row size)``: the shares of
    a parameter used by several modules (tied weights) add up to its individual gradients."""
    B = a.shape[0]
    if which == "bias":
        return bias_grads(module, delta)[:, o0:o1]
    if isinstance(module, nn.Embedding):
        return embedding_rows(module, a, delta, o0, o1)
    if isinstance(module, nn.Linear):
        a3 = a.reshape(B, -1, a.shape[-1])
        d3 = delta.reshape(B, -1, delta.shape[-1])
        return torch.bmm(d3[:, :, o0:o1].transpose(1, 2), a3).reshape(B, -1)
    return tuner.conv_per_sample(module, a, delta[:, o0:o1], o0, o1).reshape(B, -1)


def row_chunks(param: torch.Tensor, batch: int):
    """Ranges over ``param``'s first dimension, each holding about
    ``MATERIALIZE_MAX_ELEMENTS`` individual-gradient values."""
    return _chunks(param.shape[0], batch * param[0].numel())


def bias_grads(module: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """Individual bias gradients ``B x out``: the output gradient summed over positions."""
    B = delta.shape[0]
    if isinstance(module, nn.Linear):
        return delta.reshape(B, -1, delta.shape[-1]).sum(1)
    return delta.reshape(B, delta.shape[1], -1).sum(2)


def conv_input(module: nn.Module, a: torch.Tensor):
    """The input as the convolution op sees it and the padding to pass: non-zero padding modes
    and string paddings are applied here explicitly."""
    nd = a.dim() - 2
    padding = module.padding
    if module.padding_mode != "zeros":
        a = F.pad(a, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return a, (0,) * nd
    if isinstance(padding, str):
        if padding == "valid":
            return a, (0,) * nd
        pads = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(a, pads), (0,) * nd
    return a, tuple(padding)


def project(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, d_weight, d_bias):
    """``g_i . d`` for every sample without individual gradients: the layer's own forward with
    the direction as its parameters, contracted with the output gradient (one forward)."""
    B = a.shape[0]
    if isinstance(module, nn.Embedding):  # sum_t delta_it . d[a_it]
        if d_weight is None:
            return torch.zeros(B, dtype=torch.float64, device=delta.device)
        rows = F.embedding(a, d_weight.to(delta.dtype))
        if module.padding_idx is not None:
            rows = rows * (a != module.padding_idx).unsqueeze(-1)
        return (rows * delta).reshape(B, -1).sum(1, dtype=torch.float64)
    dt = a.dtype
    dw = d_weight.to(dt) if d_weight is not None else torch.zeros_like(module.weight, dtype=dt)
    db = d_bias.to(dt) if d_bias is not None else None
    if isinstance(module, nn.Linear):
        out = F.linear(a, dw, db)
    else:
        out = module._conv_forward(a, dw, db)
    # per-sample dot products as one batched matrix product (no elementwise temporary)
    return torch.bmm(out.float().reshape(B, 1, -1), delta.reshape(B, -1, 1)).reshape(B).double()


class Tuner:
    """Chooses per conv layer how to build individual gradients: a grouped weight-gradient
    convolution (batch folded into groups) or ``unfold`` + batched matmul. Which is faster
    depends on the shapes (CPU time on this project's machine, batch 128: 14.5 vs 8.9 ms for
    a 3->16 channel layer on 32x32 inputs, 5.0 vs 13.3 ms for 16->32 on 16x16, and different
    again with 10 stacked curvature columns), so the first call times both (CPU time, best of
    two) once per layer and shape, and remembers."""

    def __init__(self):
        self.choice: dict = {}

    def conv_per_sample(self, module, a, delta, o0, o1):
        """``B x (o1 - o0) x (in/groups * prod(kernel))`` individual weight gradients."""
        x, padding = conv_input(module, a)
        key = (id(module), tuple(delta.shape), tuple(x.shape))
        method = self.choice.get(key)
        if method is None:
            method = self._decide(key, module, x, padding, delta, o0, o1)
        if method == "unfold":
            return _unfold_grads(module, x, padding, delta)
        return _grouped_grads(module, x, padding, delta, o0, o1)

    def _decide(self, key, module, x, padding, delta, o0, o1):
        eligible = (module.groups == 1 and x.dim() in (3, 4)
                    and _unfold_size(module, x, delta) <= C.MATERIALIZE_MAX_ELEMENTS)
        if not eligible or x.device.type != "cpu":
            method = "unfold" if eligible and x.device.type == "cuda" else "grouped"
        else:  # best of two runs each: the machine may be busy at the moment of choosing
            times = {"grouped": [], "unfold": []}
            for _ in range(2):
                for name, fn in (("grouped", lambda: _grouped_grads(module, x, padding, delta,
                                                                      o0, o1)),
                                 ("unfold", lambda: _unfold_grads(module, x, padding, delta))):
                    t0 = time.process_time()
                    fn()
                    times[name].append(time.process_time() - t0)
            method = min(times, key=lambda n: min(times[n]))
        self.choice[key] = method
        return method


def _unfold_size(module, x, delta):
    B = x.shape[0]
    positions = math.prod(delta.shape[2:])
    return B * x.shape[1] * math.prod(module.kernel_size) * positions


def _grouped_grads(module, x, padding, delta, o0, o1):
    B = x.shape[0]
    groups = module.groups
    weight = module.weight
    unit = weight.shape[0] // groups
    cin_g = weight.shape[1]
    g0, g1 = o0 // unit, o1 // unit
    per_sample_groups = 1  # groups == 1: any number of (stacked) output channels
    if groups > 1:
        x = x[:, g0 * cin_g: g1 * cin_g]
        per_sample_groups = g1 - g0
    oc = delta.shape[1]
    nd = x.dim() - 2
    grad_out = delta.reshape(1, B * oc, *delta.shape[2:])
    inp = x.reshape(1, B * x.shape[1], *x.shape[2:])
    w_shape = (B * oc, cin_g, *weight.shape[2:])
    w = torch.empty(w_shape, dtype=x.dtype, device=x.device)
    gw = torch.ops.aten.convolution_backward(
        grad_out.to(x.dtype), inp, w, None, list(module.stride), list(padding),
        list(module.dilation), False, [0] * nd, B * per_sample_groups, [False, True, False])[1]
    return gw.view(B, oc, -1)


def _unfold_grads(module, x, padding, delta):
    """Individual gradients as ``U @ delta^T`` with the unfolded input ``U`` built by one
    strided copy per kernel offset (``F.unfold`` was 2x slower on this CPU for few channels)."""
    B, C = x.shape[:2]
    if x.dim() == 3:  # conv1d as a 1 x L image
        x = x.unsqueeze(2)
        k, s, d = (1, module.kernel_size[0]), (1, module.stride[0]), (1, module.dilation[0])
        p = (0, padding[0])
    else:
        k, s, d, p = module.kernel_size, module.stride, module.dilation, tuple(padding)
    x = F.pad(x, (p[1], p[1], p[0], p[0])) if any(p) else x
    ho = (x.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (x.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    U = torch.empty(B, C, k[0], k[1], ho, wo, dtype=x.dtype, device=x.device)
    for i in range(k[0]):
        for j in range(k[1]):
            r0, c0 = i * d[0], j * d[1]
            U[:, :, i, j].copy_(x[:, :, r0: r0 + s[0] * (ho - 1) + 1: s[0],
                                  c0: c0 + s[1] * (wo - 1) + 1: s[1]])
    U = U.view(B, C * k[0] * k[1], ho * wo)
    out = torch.bmm(U, delta.reshape(B, delta.shape[1], -1).to(U.dtype).transpose(1, 2))
    return out.transpose(1, 2)
