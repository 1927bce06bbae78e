"""When masks change and by how much: DSL's update ratio and GMP's density ramp."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def update_ratio(kind: str, t: int, total_steps: int, zeta0: float, eta_min: float) -> float:
    """zeta_t, the fraction of active weights moved by the update at iteration ``t`` (SPEC 1.5).

    cosine: ``eta_min + 0.5 (zeta0 - eta_min)(1 + cos(pi t / T))``;
    linear: from ``zeta0`` at t=0 to ``eta_min`` at t=T; constant: ``zeta0``.
    ``t`` beyond ``T`` is clamped to ``T``.
    """
    frac = min(max(t / max(total_steps, 1), 0.0), 1.0)
    if kind == "cosine":
        return eta_min + 0.5 * (zeta0 - eta_min) * (1.0 + math.cos(math.pi * frac))
    if kind == "linear":
        return eta_min + (zeta0 - eta_min) * (1.0 - frac)
    if kind == "constant":
        return zeta0
    raise ValueError(f"unknown schedule {kind!r}")


def n_moved(zeta: float, nnz: int | Tensor) -> int | Tensor:
    """k = ceil(zeta * nnz): how many active weights an update prunes (and regrows); ``nnz`` may be
    a tensor of counts (one per row, scope per_row)."""
    # the small tolerance keeps e.g. 0.3 * 10 from becoming 4 through float rounding
    if isinstance(nnz, Tensor):
        return torch.minimum(torch.ceil(zeta * nnz - 1e-9).long().clamp_(min=0), nnz)
    return min(nnz, max(0, math.ceil(zeta * nnz - 1e-9)))


def is_update_step(t: int, delta_t: int, total_steps: int, explore_until: float) -> bool:
    """DSL updates after optimiser step ``t`` (t counted from 1) every ``delta_t`` steps while exploring."""
    return t > 0 and t % delta_t == 0 and t < explore_until * total_steps


def gmp_density(t: int, total_steps: int, density: float, start: float, end: float) -> float:
    """Zhu & Gupta (2017) cubic ramp: sparsity s_t = s_f (1 - (1 - (t - t0) / (t1 - t0))^3).

    Dense (1.0) before ``start * T``, ``density`` from ``end * T`` on.
    """
    t0, t1 = start * total_steps, end * total_steps
    if t <= t0:
        return 1.0
    if t >= t1:
        return density
    progress = (t - t0) / (t1 - t0)
    return 1.0 - (1.0 - density) * (1.0 - (1.0 - progress) ** 3)
