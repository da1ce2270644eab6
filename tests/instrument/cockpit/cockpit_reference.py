"""Brute-force references for the Cockpit tests, written from the papers' definitions.

Nothing here imports instrument.cockpit (or cockpit): individual gradients come from one
backward pass per sample, curvature from the dense Hessian of a tiny model
(``torch.autograd.functional.hessian``), and every quantity is computed by its textbook formula
in float64 numpy.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

import instrument


# ---- tiny models and a recorded training run ---------------------------------------------------
def tiny_cnn(seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(27, 5), act(), nn.Linear(5, 4))


def batches(n, B=8, shape=(2, 6, 6), classes=4, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, *shape, generator=g) * scale,
             torch.randint(0, classes, (B,), generator=g)) for _ in range(n)]


def train(model, opt, crit, data, run_dir, **watch_kwargs):
    """Train with avionics attached (strict); record the parameters each step started from."""
    watch_kwargs.setdefault("strict", True)
    monitor = instrument.watch(model, opt, run=str(run_dir), loss_fn=crit, overwrite=True,
                               **watch_kwargs)
    records = []
    for x, y in data:
        records.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        monitor.log(loss=loss)
    records.append({n: p.detach().clone() for n, p in model.named_parameters()})
    monitor.close()
    return instrument.load(monitor.run_dir), records


# ---- store access -------------------------------------------------------------------------------
def layer_at(run, key, step):
    """``{layer: value}`` of layer series ``key`` at ``step`` (NaN dropped)."""
    df = run.layers([key], start=step, stop=step, dropna=True)
    return dict(zip(df["layer"], df["value"]))


def scalar_at(run, key, step):
    df = run.scalars([key], start=step, stop=step)
    return float(df["value"].iloc[0]) if len(df) else None


# ---- individual gradients, one backward per sample ----------------------------------------------
def individual_grads(model, params, crit, x, y):
    """``{name: (B, *shape) float64}``: gradient of each sample's own loss (the criterion on
    that sample alone), at ``params``."""
    names = list(params)
    out = {n: [] for n in names}
    for i in range(x.shape[0]):
        p = {n: params[n].clone().requires_grad_(True) for n in names}
        loss = crit(functional_call(model, p, (x[i: i + 1],)), y[i: i + 1])
        grads = torch.autograd.grad(loss, [p[n] for n in names])
        for n, g in zip(names, grads):
            out[n].append(g.double().numpy())
    return {n: np.stack(v) for n, v in out.items()}


def individual_losses(model, params, crit, x, y):
    with torch.no_grad():
        return np.array([float(crit(functional_call(model, params, (x[i: i + 1],)),
                                    y[i: i + 1])) for i in range(x.shape[0])])


def flat(G, names=None):
    """``(B, D)``: the individual gradients of ``names`` (all) side by side."""
    names = list(G) if names is None else names
    return np.concatenate([G[n].reshape(G[n].shape[0], -1) for n in names], axis=1)


# ---- the gradient tests (Byrd et al. 2012; Bollapragada et al. 2017) -----------------------------
def norm_test(g):
    """g: (B, D) individual gradients."""
    B = g.shape[0]
    mean = g.mean(0)
    var = ((g - mean) ** 2).sum() / (B - 1)
    return np.sqrt(var / (B * (mean @ mean)))


def inner_test(g):
    B = g.shape[0]
    mean = g.mean(0)
    p = g @ mean
    var = ((p - p.mean()) ** 2).sum() / (B - 1)
    return np.sqrt(var / (B * (mean @ mean) ** 2))


def ortho_test(g):
    B = g.shape[0]
    mean = g.mean(0)
    n2 = mean @ mean
    r = g - np.outer(g @ mean / n2, mean)
    var = (r ** 2).sum() / (B - 1)
    return np.sqrt(var / (B * n2))


# ---- elementwise noise statistics ------------------------------------------------------------
def mean_gsnr(g, eps=1e-5):
    mean = g.mean(0)
    var = g.var(0)  # population variance, as in Liu et al.'s definition used by Cockpit
    return np.mean(mean ** 2 / (var + eps))


def early_stopping(g, eps=1e-5):
    B = g.shape[0]
    mean = g.mean(0)
    var = g.var(0, ddof=1)
    return 1 - B * np.mean(mean ** 2 / (var + eps))


def cabs(g, lr, loss):
    return lr * g.var(0).sum() / loss  # lr * tr(Sigma) / L


# ---- curvature from the dense Hessian ---------------------------------------------------------
def dense_hessian(model, params, crit, x, y):
    """Hessian of the mean mini-batch loss w.r.t. all parameters, ``(D, D)`` float64, and the
    parameter names/shapes in order."""
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].reshape(-1) for n in names]).double()
    model64 = copy.deepcopy(model).double()

    def f(t):
        chunks = torch.split(t, sizes)
        p = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return crit(functional_call(model64, p, (x.double(),)), y)

    H = torch.autograd.functional.hessian(f, theta).numpy()
    return H, names, sizes


def split_diag(H, names, sizes):
    d = np.diag(H)
    out, o = {}, 0
    for n, s in zip(names, sizes):
        out[n] = d[o: o + s]
        o += s
    return out


def binned(values, lo, hi, bins):
    """The documented bin of each float32 value: ``clamp(floor((x - lo) * scale), 0, bins-1)``
    with every operation in float32."""
    x = np.asarray(values, dtype=np.float32)
    scale = np.float32(bins / (hi - lo))
    v = (x - np.float32(lo)) * scale
    return np.clip(np.floor(v), 0, bins - 1).astype(np.int64)


def alpha_from_definition(f0, l0, p0, f1, l1, p1, s):
    """Cockpit's alpha from its definition: a quadratic q(x) fitted by weighted least squares
    to the loss and slope observations at 0 and s (weights: inverse sample variances of the
    per-sample values); alpha = s / x_min - 1, or -1 if the fit is concave."""
    obs = np.array([f0, f1, p0.mean(), p1.mean()])
    var = np.array([l0.var(ddof=1), l1.var(ddof=1), p0.var(ddof=1), p1.var(ddof=1)])
    A = np.array([[1, 0, 0], [1, s, s ** 2], [0, 1, 0], [0, 1, 2 * s]], dtype=float)
    w = 1 / np.sqrt(var)
    coef, *_ = np.linalg.lstsq(A * w[:, None], obs * w, rcond=None)
    c0, c1, c2 = coef
    if c2 < 0:
        return -1.0
    x_min = -c1 / (2 * c2)
    return s / x_min - 1
