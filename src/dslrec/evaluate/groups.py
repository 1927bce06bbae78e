"""Popularity groups: users and items split into groups of equal total interactions.

Entities (users or items) are sorted by their training interaction count,
least popular first (group 0 = the long tail, the last group = the head);
equal counts are ordered by index, so a run of equal counts can straddle a
cut. Laid end to end, the entities cover the interval [0, total); each goes
to the group holding the midpoint of its own stretch, i.e.
``group = floor(n_groups * (cumsum_before + count / 2) / total)``. Groups
therefore hold total / n_groups interactions each, up to one entity per cut;
a group can be empty when one entity holds more than a group's share.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from dslrec.data.dataset import Dataset
from dslrec.data.sampling import csr_rows
from dslrec.errors import DslrecError
from dslrec.evaluate.ranking import UserMetrics


def popularity_groups(counts: np.ndarray, n_groups: int = 10) -> np.ndarray:
    """Group index (0 = least popular) of each entity, by equal total ``counts`` per group."""
    if n_groups < 1:
        raise DslrecError(f"number of groups must be >= 1, got {n_groups}")
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    small = np.min_scalar_type(n_groups - 1)  # one byte per entity for up to 256 groups: kept all run
    if total <= 0:
        return np.zeros(len(counts), dtype=small)
    order = np.argsort(counts, kind="stable")
    c = counts[order]
    mid = np.cumsum(c) - c / 2.0
    groups = np.empty(len(counts), dtype=small)
    groups[order] = np.minimum((mid * n_groups / total).astype(np.int64), n_groups - 1)
    return groups


def user_groups(dataset: Dataset, n_groups: int = 10) -> np.ndarray:
    """Popularity group of each user by training interactions."""
    return popularity_groups(dataset.user_activity(), n_groups)


def item_groups(dataset: Dataset, n_groups: int = 10) -> np.ndarray:
    """Popularity group of each item by training interactions."""
    return popularity_groups(dataset.item_popularity(), n_groups)


def group_counts(values_per_row, groups, n_groups: int | None = None):
    """Sum a per-row quantity by group: ``out[g] = sum(values[groups == g])``.

    Works on numpy arrays or torch tensors (result on the same device, in the
    values' dtype for tensors, float64 for numpy).
    """
    if isinstance(values_per_row, torch.Tensor):
        g = torch.as_tensor(groups, device=values_per_row.device).long()
        n = int(n_groups if n_groups is not None else (int(g.max()) + 1 if g.numel() else 0))
        out = torch.zeros(n, dtype=values_per_row.dtype, device=values_per_row.device)
        return out.index_add_(0, g, values_per_row)
    g = np.asarray(groups, dtype=np.int64)
    n = n_groups if n_groups is not None else (int(g.max()) + 1 if g.size else 0)
    return np.bincount(g, weights=np.asarray(values_per_row, dtype=np.float64), minlength=n)


def user_group_metrics(
    result: UserMetrics, groups: np.ndarray, n_groups: int = 10
) -> dict[str, list[float]]:
    """Each metric averaged over the evaluated users of each user group (NaN if none).

    Also ``"users"``: how many evaluated users each group has.
    """
    g = np.asarray(groups)[result.users]
    n = np.bincount(g, minlength=n_groups).astype(np.float64)
    out: dict[str, list[float]] = {"users": n.astype(int).tolist()}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, v in result.values.items():
            out[key] = (np.bincount(g, weights=v, minlength=n_groups) / n).tolist()
    return out


def item_group_metrics(
    result: UserMetrics,
    target: sp.csr_matrix,
    groups: np.ndarray,
    ks=(20,),
    n_groups: int = 10,
) -> dict[str, list[float]]:
    """Recall restricted to each item group, averaged over users (NaN if none).

    For user u and group g with T_ug > 0 target items of g:
    ``recall@K_g(u) = (hits on group-g items in the top K) / T_ug``; averaged
    over users with T_ug > 0. Also ``"targets"`` (sum of T_ug) and
    ``"hits@K"`` (total hits on the group's items) so micro averages can be
    formed.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n = len(result.users)
    rows, cols, _ = csr_rows(target, result.users)
    n_tg = np.bincount(rows * n_groups + groups[cols], minlength=n * n_groups).reshape(n, n_groups)
    has = n_tg > 0
    n_users_g = has.sum(axis=0).astype(np.float64)
    out: dict[str, list[float]] = {"targets": n_tg.sum(axis=0).tolist()}
    for k in ks:
        hit = result.hits[:, :k]
        r, j = np.nonzero(hit)
        item_g = groups[result.topk[:, :k][r, j]]
        h_ug = np.bincount(r * n_groups + item_g, minlength=n * n_groups).reshape(n, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            rec = np.where(has, h_ug / np.maximum(n_tg, 1), 0.0).sum(axis=0) / n_users_g
        out[f"recall@{k}"] = rec.tolist()
        out[f"hits@{k}"] = h_ug.sum(axis=0).tolist()
    return out
