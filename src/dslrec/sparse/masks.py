"""Initial masks: exact-count uniform, Erdos-Renyi-Kernel (ERK) and magnitude.

Every function returns ``{name: bool tensor}`` with exactly the budgeted number
of active positions: ``round(density * numel)`` per tensor (``per_tensor``
scope), ``round(density * total)`` over all tensors (``global`` scope) or
``round(density * row length)`` in every row (``per_row`` scope).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from dslrec.errors import DslrecError
from dslrec.sparse.decisions import (_floyd_slots, as_rows, flat_nonzero, random_absent, row_chunks, rows_select,
                                    select_largest)


def budget(numel: int, density: float) -> int:
    """Active weights allowed in a scope of ``numel`` positions."""
    return min(numel, max(0, round(density * numel)))


def _split(flat: Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    sizes = [math.prod(s) for s in shapes.values()]
    return {name: part.view(shape) for (name, shape), part in zip(shapes.items(), torch.split(flat, sizes))}


def top_masks(scores: Mapping[str, Tensor], counts: Mapping[str, int] | int,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Keep the largest scores: ``counts`` per tensor (a mapping) or over all tensors (an int)."""
    if isinstance(counts, int):
        flat = torch.cat([s.detach().reshape(-1) for s in scores.values()])
        keep = select_largest(flat, torch.ones_like(flat, dtype=torch.bool), counts, generator)
        return _split(keep, {n: s.shape for n, s in scores.items()})
    out = {}
    for name, s in scores.items():
        flat = s.detach().reshape(-1)
        out[name] = select_largest(flat, torch.ones_like(flat, dtype=torch.bool), counts[name], generator).view(s.shape)
    return out


def row_masks(scores: Mapping[str, Tensor], density: float,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Keep the largest scores in every row: ``round(density * row length)`` per row (scope per_row)."""
    out = {}
    for name, s in scores.items():
        rows = as_rows(s.detach())
        k = budget(rows.shape[1], density)
        out[name] = rows_select(rows, torch.ones_like(rows, dtype=torch.bool), k, generator, largest=True).view(s.shape)
    return out


def scope_counts(shapes: Mapping[str, torch.Size], density: float, scope: str) -> dict[str, int] | int:
    """Budget per tensor (per_tensor scope) or one budget over all tensors (global scope)."""
    if scope == "global":
        return budget(sum(math.prod(s) for s in shapes.values()), density)
    return {name: budget(math.prod(s), density) for name, s in shapes.items()}


def uniform_positions(shapes: Mapping[str, torch.Size], density: float, scope: str,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                      counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
    """Sorted flat positions, exactly the budgeted number per scope, uniformly at random, drawn
    without any tensor of the tables' size (compact storage starts from these). ``counts``:
    fixed counts per tensor instead (ERK)."""
    if counts is not None:
        return {n: random_absent(math.prod(s), counts[n], _nothing, 0, generator, device) for n, s in shapes.items()}
    if scope == "per_row":
        out = {}
        for name, shape in shapes.items():
            n_rows, n_cols = as_rows(torch.empty(shape, device="meta")).shape
            k = budget(n_cols, density)
            positions = torch.empty(n_rows * k, dtype=torch.int64, device=device)
            for lo, hi in row_chunks(n_rows, n_cols):  # a slice of rows at a time: small transients
                slots = _floyd_slots(torch.full((hi - lo,), n_cols, dtype=torch.int64, device=device),
                                     torch.full((hi - lo,), k, dtype=torch.int64, device=device), generator)
                rows = torch.arange(lo, hi, device=device).unsqueeze(1)
                positions[lo * k: hi * k] = (rows * n_cols + slots.sort(dim=1).values).reshape(-1)
            out[name] = positions
        return out
    if scope == "global":
        sizes = [math.prod(s) for s in shapes.values()]
        flat = random_absent(sum(sizes), budget(sum(sizes), density), _nothing, 0, generator, device)
        bounds = torch.tensor([0, *itertools.accumulate(sizes)], device=device)
        return {n: flat[(flat >= bounds[i]) & (flat < bounds[i + 1])] - bounds[i] for i, n in enumerate(shapes)}
    return {n: random_absent(math.prod(s), budget(math.prod(s), density), _nothing, 0, generator, device)
            for n, s in shapes.items()}


def _nothing(positions: Tensor) -> Tensor:
    return torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)


def positions_to_masks(positions: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    out = {}
    for n, pos in positions.items():
        mask = torch.zeros(math.prod(shapes[n]), dtype=torch.bool, device=pos.device)
        mask[pos] = True
        out[n] = mask.view(shapes[n])
    return out


def uniform_masks(shapes: Mapping[str, torch.Size], density: float, scope: str,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Exactly the budgeted number of positions per scope, uniformly at random (as bool masks)."""
    return positions_to_masks(uniform_positions(shapes, density, scope, generator, device), shapes)


def erk_counts(shapes: Mapping[str, torch.Size], density: float) -> dict[str, int]:
    """Erdos-Renyi-Kernel allocation (RigL, Evci et al. 2020) of ``round(density * total)`` weights.

    A tensor's density is proportional to ``sum(shape) / prod(shape)`` (for a
    weight matrix ``(n_in + n_out) / (n_in * n_out)``; for an embedding table rows
    and columns play those roles), scaled so the total matches the budget.
    Tensors whose density would exceed 1 become dense and the rest is
    re-scaled. Counts are rounded by largest remainder so they sum exactly.
    """
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    total_budget = budget(sum(numel.values()), density)
    dense: set[str] = set()
    while True:
        rest = total_budget - sum(numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in numel if n not in dense)
        eps = rest / divisor if divisor > 0 else 0.0
        over = [n for n in numel if n not in dense and eps * raw[n] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    exact = {n: float(numel[n]) if n in dense else min(float(numel[n]), eps * raw[n] * numel[n]) for n in numel}
    counts = {n: int(math.floor(v)) for n, v in exact.items()}
    left = total_budget - sum(counts.values())
    order = sorted(numel, key=lambda n: exact[n] - counts[n], reverse=True)
    while left > 0:
        progressed = False
        for n in order:
            if left > 0 and counts[n] < numel[n]:
                counts[n] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    while left < 0:  # float rounding gave one too many somewhere
        n = max((n for n in order if counts[n] > 0), key=lambda n: counts[n] - exact[n])
        counts[n] -= 1
        left += 1
    return counts


def erk_masks(shapes: Mapping[str, torch.Size], density: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Random masks with ERK counts per tensor (uniform positions within each tensor)."""
    pos = uniform_positions(shapes, density, "per_tensor", generator, device, counts=erk_counts(shapes, density))
    return positions_to_masks(pos, shapes)


def magnitude_masks(params: Mapping[str, Tensor] | Sequence[tuple[str, Tensor]], density: float,
                    scope: str = "per_tensor", generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Keep the largest |w| (one-shot magnitude pruning of trained weights, or magnitude init).

    ``params``: ``{name: tensor}`` or ``(name, tensor)`` pairs, e.g.
    ``dict(sparsifiable_parameters(model))``. Ties are broken at random.
    """
    params = dict(params)
    if not params:
        raise DslrecError("magnitude_masks got no parameters; pass the tensors to prune")
    if scope not in ("per_tensor", "global", "per_row"):
        raise DslrecError(f"scope={scope!r} is unknown; use per_tensor, global or per_row")
    scores = {n: p.detach().abs() for n, p in params.items()}
    if scope == "per_row":
        return row_masks(scores, density, generator)
    return top_masks(scores, scope_counts({n: p.shape for n, p in params.items()}, density, scope), generator)


def initial_positions(kind: str, params: Mapping[str, Tensor], density: float, scope: str,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Initial sorted flat positions of a sparse run (what ``initial_masks`` marks True)."""
    shapes = {n: p.shape for n, p in params.items()}
    device = next(iter(params.values())).device
    device = torch.device("cpu") if device.type == "meta" else device  # a deferred model: drawn on the CPU
    if kind == "uniform":
        return uniform_positions(shapes, density, scope, generator, device)
    if kind == "erk":
        return uniform_positions(shapes, density, scope, generator, device, counts=erk_counts(shapes, density))
    if kind == "magnitude":
        masks = magnitude_masks(params, density, scope, generator)
        return {n: flat_nonzero(m.reshape(-1)).to(device) for n, m in masks.items()}
    raise DslrecError(f"init={kind!r} is unknown; use uniform, erk or magnitude")


def initial_masks(kind: str, params: Mapping[str, Tensor], density: float, scope: str,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Initial masks of a sparse run: ``uniform``, ``erk`` or ``magnitude``."""
    if kind == "magnitude":
        return magnitude_masks(params, density, scope, generator)
    positions = initial_positions(kind, params, density, scope, generator)
    return positions_to_masks(positions, {n: p.shape for n, p in params.items()})
