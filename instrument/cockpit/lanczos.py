"""Lanczos for the largest Hessian eigenvalue, entirely on the device (no host sync).

A fixed number of Hessian-vector products builds the tridiagonal matrix ``T`` (full
reorthogonalization, so a few dozen iterations stay accurate). The device keeps only what the
next step needs: the top Ritz vector, used as the next start vector (the Hessian changes little
between tracked steps, so warm starts converge in a few products). ``T``'s coefficients go to
the host with the step's statistics, where :func:`ritz` gives the eigenvalue and its residual
``||H y - theta y|| = |beta_k s_k|`` as the convergence report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

SQUARINGS = 12
"""Repeated squarings of the shifted ``T`` that give its top eigenvector on the device
(``(T + sigma I)**4096``); only used for the warm start, so its accuracy is not critical."""

BREAKDOWN = 1e-10
"""A new Lanczos vector shorter than this (relative to the step's scale) means the Krylov space
is exhausted; the iteration continues with a fresh random direction instead."""


def lanczos(hvp: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
            generator: torch.Generator) -> tuple:
    """Run ``steps`` Lanczos iterations from ``start`` (flat, any norm).

    Returns ``(alphas, betas, top)``: float64 tensors of length ``steps`` and the unit top Ritz
    vector (flat, ``start``'s dtype).
    """
    D = start.numel()
    dtype, device = start.dtype, start.device
    V = torch.zeros(steps + 1, D, dtype=dtype, device=device)
    V[0] = start / start.norm().clamp_min(torch.finfo(dtype).tiny)
    alphas = torch.zeros(steps, dtype=torch.float64, device=device)
    betas = torch.zeros(steps, dtype=torch.float64, device=device)
    beta_prev = torch.zeros((), dtype=dtype, device=device)
    # one random direction per run, orthogonalized anew at each use, replaces the next vector
    # after a breakdown (drawing a fresh one every iteration cost half of Lanczos' own time)
    spare = torch.randn(D, generator=generator, dtype=dtype, device=device)
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
        betas[j] = b
        fresh = spare
        for _ in range(2):
            fresh = fresh - V[: j + 1].t() @ (V[: j + 1] @ fresh)
        fresh = fresh / fresh.norm().clamp_min(torch.finfo(dtype).tiny)
        scale = a.abs() + beta_prev.abs() + torch.finfo(dtype).tiny
        ok = b > BREAKDOWN * scale
        V[j + 1] = torch.where(ok, w / b.clamp_min(torch.finfo(dtype).tiny), fresh)
        beta_prev = torch.where(ok, b, torch.zeros_like(b))
        betas[j] = beta_prev
    return alphas, betas, _top_vector(alphas, betas, V[:steps])


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


def ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple:
    """Host side: ``(largest eigenvalue estimate, residual norm)`` from ``T``'s coefficients."""
    k = len(alphas)
    T = np.diag(alphas)
    if k > 1:
        T += np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    lam, S = np.linalg.eigh(T)
    theta = float(lam[-1])
    residual = float(abs(betas[k - 1] * S[k - 1, -1]))
    return theta, residual


def flat_start(previous: torch.Tensor | None, D: int, generator, dtype, device):
    """The warm start if there is one of the right size, else a seeded random vector."""
    if previous is not None and previous.numel() == D:
        return previous
    return torch.randn(D, generator=generator, dtype=dtype, device=device)
