"""Lanczos for the largest Hessian eigenvalue, with a stopping rule that bounds its error.

Each iteration costs one Hessian-vector product and extends the tridiagonal matrix ``T``
(full reorthogonalization, so a few dozen iterations stay accurate). The iteration stops as
soon as :func:`ritz` bounds the top Ritz value's error below ``tolerance`` (relative), or after
``steps`` products. Reading that bound needs ``T``'s coefficients on the host: one copy of a few
scalars per product, after the product (a double backward) that dominates the iteration, and
only from ``min_steps`` on. A fixed count could not be right: a mini-batch Hessian's top two
eigenvalues can be within 10 % of each other and its top eigenvector turns between batches, so
four products read 10-20 % low on some steps while others are exact after three.

The device keeps the top Ritz vector, used as the next tracked step's start vector. ``T``'s
coefficients also go to the host with the step's statistics, where :func:`ritz` gives the
eigenvalue, its residual and its error bound as the convergence report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from instrument.cockpit import constants as C

SQUARINGS = 12
"""Repeated squarings of the shifted ``T`` that give its top eigenvector on the device
(``(T + sigma I)**4096``); only used for the warm start, so its accuracy is not critical."""

BREAKDOWN = 1e-10
"""A new Lanczos vector shorter than this (relative to the step's scale) means the Krylov space
is exhausted; the iteration continues with a fresh random direction instead."""


class Ritz(NamedTuple):
    """The top Ritz value of ``T`` and what is known about its distance to the top eigenvalue."""

    theta: float
    """The estimate of the largest eigenvalue (never above it)."""
    residual: float
    """``||H y - theta y||`` of the top Ritz vector ``y``: some eigenvalue lies within it."""
    bound: float
    """Error bound: how far the largest eigenvalue may lie above ``theta`` (:func:`ritz`)."""


def lanczos(hvp: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
            generator: torch.Generator, tolerance: float = C.HESS_MAX_EV_TOLERANCE,
            min_steps: int = C.LANCZOS_MIN_ITERATIONS) -> tuple:
    """Run at most ``steps`` Lanczos iterations from ``start`` (flat, any norm).

    From ``min_steps`` products on, stop as soon as :func:`ritz` bounds the top Ritz value's
    error by ``tolerance * |theta|`` (``tolerance=0``: always run ``steps``).

    Returns ``(alphas, betas, top)``: float64 tensors of the iterations run and the unit top
    Ritz vector (flat, ``start``'s dtype).
    """
    D = start.numel()
    dtype, device = start.dtype, start.device
    tiny = torch.finfo(dtype).tiny
    V = torch.zeros(steps + 1, D, dtype=dtype, device=device)
    V[0] = start / start.norm().clamp_min(tiny)
    alphas = torch.zeros(steps, dtype=torch.float64, device=device)
    betas = torch.zeros(steps, dtype=torch.float64, device=device)
    beta_prev = torch.zeros((), dtype=dtype, device=device)
    # one random direction per run, orthogonalized anew at each use, replaces the next vector
    # after a breakdown (drawing a fresh one every iteration cost half of Lanczos' own time)
    spare = torch.randn(D, generator=generator, dtype=dtype, device=device)
    n = steps
    for j in range(steps):
        w = hvp(V[j])
        if j > 0:
            w = w - beta_prev * V[j - 1]
        a = torch.dot(w, V[j])
        w = w - a * V[j]
        for _ in range(2):  # full reorthogonalization, twice ("twice is enough")
            w = w - V[: j + 1].t() @ (V[: j + 1] @ w)
        b = w.norm()
        alphas[j] = a
        fresh = spare
        for _ in range(2):
            fresh = fresh - V[: j + 1].t() @ (V[: j + 1] @ fresh)
        fresh = fresh / fresh.norm().clamp_min(tiny)
        scale = a.abs() + beta_prev.abs() + tiny
        ok = b > BREAKDOWN * scale
        V[j + 1] = torch.where(ok, w / b.clamp_min(tiny), fresh)
        # after a breakdown T splits into blocks; the zero coupling keeps H V = V T exact
        beta_prev = torch.where(ok, b, torch.zeros_like(b))
        betas[j] = beta_prev
        if tolerance > 0 and min_steps <= j + 1 < steps and _converged(alphas, betas, j + 1,
                                                                      tolerance):
            n = j + 1
            break
    return alphas[:n], betas[:n], _top_vector(alphas[:n], betas[:n], V[:n])


def _converged(alphas, betas, k, tolerance) -> bool:
    """The stopping rule, on the host (one copy of ``2k`` scalars)."""
    ab = torch.stack((alphas[:k], betas[:k])).cpu().numpy()
    r = ritz(ab[0], ab[1])
    return bool(r.bound <= tolerance * abs(r.theta))


def tridiagonal(alphas, betas):
    """``T`` from its diagonal and the first ``k - 1`` off-diagonal entries."""
    k = alphas.shape[0]
    T = torch.diag(alphas)
    if k > 1:
        off = betas[: k - 1]
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T


def _top_vector(alphas, betas, V):
    T = tridiagonal(alphas, betas)
    k = T.shape[0]
    sigma = T.abs().sum(1).max()  # Gershgorin: T + sigma I is positive semi-definite
    M = T + sigma * torch.eye(k, dtype=T.dtype, device=T.device)
    for _ in range(SQUARINGS):
        M = M @ M
        M = M / M.norm().clamp_min(torch.finfo(M.dtype).tiny)
    col = M.index_select(1, torch.argmax(torch.diagonal(M)).reshape(1)).reshape(-1)
    s = col / col.norm().clamp_min(torch.finfo(col.dtype).tiny)
    y = V.t() @ s.to(V.dtype)
    return y / y.norm().clamp_min(torch.finfo(y.dtype).tiny)


def ritz(alphas: np.ndarray, betas: np.ndarray) -> Ritz:
    """Host side: the top Ritz value of ``T``, its residual and a bound on its error.

    Every Ritz pair ``(theta_i, y_i)`` has the residual ``r_i = |beta_k s_i[k]|``; some
    eigenvalue of ``H`` lies in each interval ``[theta_i - r_i, theta_i + r_i]``, and the top
    Ritz value never exceeds the top eigenvalue. ``bound`` is the largest of:

    * the top eigenvalue's distance from ``theta_1`` if the Ritz intervals account for the top
      of the spectrum: ``r_1**2 / delta`` (Kato-Temple) when the other intervals end
      ``delta = theta_1 - max_i>1 (theta_i + r_i) > 0`` below ``theta_1`` (``theta_1`` then
      approximates an isolated eigenvalue, to second order in its residual), else
      ``max(r_1, -delta)`` (another interval reaches up to or above ``theta_1``, so the top
      eigenvalue may lie there rather than near ``theta_1``);
    * the last product's gain, ``theta_1(T_k) - theta_1(T_{k-1})``: a top eigenvector that the
      Krylov space is still picking up moves the estimate before the intervals show it.

    The first term is a true bound only where the intervals' picture is complete. Until the
    second eigenvalue is resolved, ``delta`` overestimates the gap and the bound can be
    optimistic (measured: up to about 5x on small networks, docs/cockpit.md); hence a stopping
    tolerance (:data:`~instrument.cockpit.constants.HESS_MAX_EV_TOLERANCE`) well below the
    accuracy it is meant to deliver.
    """
    k = len(alphas)
    a = np.asarray(alphas, dtype=np.float64)
    b = np.asarray(betas, dtype=np.float64)
    lam, S = np.linalg.eigh(_tridiagonal_np(a, b, k))
    r = np.abs(b[k - 1] * S[k - 1, :])
    theta, r1 = float(lam[-1]), float(r[-1])
    if k == 1:
        return Ritz(theta, r1, r1)
    delta = theta - float(np.max(lam[:-1] + r[:-1]))
    interval = min(r1, r1 * r1 / delta) if delta > 0 else max(r1, -delta)
    gain = theta - float(np.linalg.eigvalsh(_tridiagonal_np(a, b, k - 1))[-1])
    return Ritz(theta, r1, max(interval, gain))


def _tridiagonal_np(a, b, k):
    T = np.diag(a[:k])
    if k > 1:
        T += np.diag(b[: k - 1], 1) + np.diag(b[: k - 1], -1)
    return T


def flat_start(previous: torch.Tensor | None, D: int, generator, dtype, device):
    """The warm start if there is one of the right size, else a seeded random vector."""
    if previous is not None and previous.numel() == D:
        return previous
    return torch.randn(D, generator=generator, dtype=dtype, device=device)
