"""The exact diagonal of the generalized Gauss-Newton matrix, per Linear/Conv parameter.

``G = sum_i J_i^T H_i J_i`` with ``J_i`` the Jacobian of sample ``i``'s model output ``z_i``
and ``H_i`` the Hessian of the mean loss w.r.t. ``z_i``. With a factorization
``H_i = S_i S_i^T`` (``R`` columns ``s_ir``), ``diag(G) = sum_{i, r} (J_i^T s_ir)**2``: each
column is backpropagated once (``R`` backward passes, e.g. 10 for 10 classes) to every layer's
output, and each layer turns its per-sample output gradients into squared individual
gradients with the same kernels as the per-sample engine. For networks that are piecewise
linear in their inputs (ReLU, max-pooling) the GGN diagonal equals the Hessian diagonal.

``H_i`` is formed with autograd for any criterion: ``R`` cheap backward passes through the loss
only, then an eigendecomposition per sample (``S_i = V sqrt(max(lambda, 0))``).
"""

from __future__ import annotations

import torch
from torch import nn

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K


def loss_hessian_factors(loss: torch.Tensor, z: torch.Tensor, batch: int) -> torch.Tensor:
    """``S`` with ``S[i] @ S[i].T`` the Hessian of ``loss`` w.r.t. sample ``i``'s outputs.

    Returns ``(R, *z.shape)``: column ``r`` of every sample, shaped like ``z``. Columns that are
    zero for all samples (e.g. the constant direction of softmax cross-entropy, one backward
    pass saved out of C) are dropped on CPU, where deciding that costs no device sync.
    """
    outputs = z.numel() // batch
    g = torch.autograd.grad(loss, z, create_graph=True)[0].reshape(batch, outputs)
    rows = []
    for k in range(outputs):
        (h,) = torch.autograd.grad(g[:, k].sum(), z, retain_graph=True)
        rows.append(h.reshape(batch, outputs))
    Hs = torch.stack(rows, 1).detach().double()  # (B, out, out), symmetric
    Hs = (Hs + Hs.transpose(1, 2)) / 2
    lam, V = torch.linalg.eigh(Hs)
    S = V * lam.clamp_min(0).sqrt()[:, None, :]  # (B, out, R)
    if z.device.type == "cpu":
        # zero up to the rounding of z's dtype: such columns add nothing measurable
        tiny = lam.abs().amax() * torch.finfo(z.dtype).eps * 16
        keep = (lam.amax(0) > tiny).nonzero().reshape(-1)
        S = S[:, :, keep]
    return S.permute(2, 0, 1).reshape(-1, *z.shape).to(z.dtype)


def layer_output_grads(z: torch.Tensor, outputs: list, columns: torch.Tensor) -> list:
    """For each column, the gradients of ``<column, z>`` w.r.t. the layer outputs (one backward
    each); returns, per layer, a tensor ``(B, R, *output.shape[1:])`` (zeros where unreachable):
    sample-major, so that a convolution can treat the columns as extra output channels."""
    per_layer = [[] for _ in outputs]
    for col in columns:
        grads = torch.autograd.grad(z, outputs, grad_outputs=col, retain_graph=True,
                                    allow_unused=True)
        for acc, g, out in zip(per_layer, grads, outputs):
            acc.append(torch.zeros_like(out) if g is None else g)
    return [torch.stack(acc, 1) for acc in per_layer]


def diag_ggn_layer(module: nn.Module, a: torch.Tensor, deltas: torch.Tensor,
                   tuner: K.Tuner) -> tuple:
    """``(diag for weight, diag for bias or None)`` from the layer input ``a`` and the stacked
    column gradients ``deltas`` ``(B, R, *out)``."""
    B, R = deltas.shape[:2]
    deltas = deltas.float()
    w = module.weight
    if isinstance(module, nn.Embedding):
        return diag_ggn_shared([(module, "weight", a, deltas)], w, tuner), None
    a = a.float()
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            d2 = (deltas * deltas).sum(1)  # (B, out)
            return d2.t() @ (a * a), (d2.sum(0) if has_bias else None)
        a3 = a.reshape(B, -1, a.shape[-1])
        d4 = deltas.reshape(B, R, -1, deltas.shape[-1])
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        for r in range(R):
            dw += torch.bmm(d4[:, r].transpose(1, 2), a3).square().sum(0)
        db = d4.sum(2).square().sum((0, 1)) if has_bias else None
        return dw, db
    O = w.shape[0]
    db = deltas.reshape(B, R, O, -1).sum(3).square().sum((0, 1)) if has_bias else None
    dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
    step = R if module.groups == 1 else 1
    step = max(1, min(step, C.MATERIALIZE_MAX_ELEMENTS // max(B * w.numel(), 1)))
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        if module.groups == 1:  # the columns as extra output channels: one call
            d = deltas[:, r0:r1].reshape(B, (r1 - r0) * O, *deltas.shape[3:])
            G = tuner.conv_per_sample(module, a, d, 0, (r1 - r0) * O)
        else:
            G = torch.cat([tuner.conv_per_sample(module, a, deltas[:, r], 0, O)
                           for r in range(r0, r1)], 1)
        dw += G.reshape(B, r1 - r0, *w.shape).square().sum((0, 1))
    return dw, db


def diag_ggn_shared(parts: list, param: torch.Tensor, tuner: K.Tuner) -> torch.Tensor:
    """The GGN diagonal of ``param`` from the shares of every module that uses it (tied
    weights; or one embedding): ``parts`` holds ``(module, "weight" | "bias", a, deltas)`` with
    ``deltas`` ``(B, R, *out)``. For each column the shares of each sample's gradient are added
    before squaring, chunk by chunk of rows."""
    B, R = parts[0][3].shape[:2]
    out = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
    flat = out.view(param.shape[0], -1)
    for o0, o1 in K.row_chunks(param, B):
        for r in range(R):
            G = None
            for module, which, a, deltas in parts:
                x = a if not a.is_floating_point() else a.float()
                g = K.param_rows(module, which, x, deltas[:, r].float(), o0, o1, tuner)
                G = g if G is None else G + g
            flat[o0:o1] += G.square().sum(0).view(o1 - o0, -1)
    return out
