"""Top-K metrics from a user's ranked hit list, vectorised over a batch of users.

Inputs: ``hits`` (B, L) bool, whether the item at rank r (0-based) is one of
the user's target items; ``n_target`` (B,) the number of target items (>= 1).
Binary relevance throughout. For each K:

- ``recall@K``    = hits in the top K / n_target (the LightGCN convention;
  it cannot reach 1 when n_target > K).
- ``precision@K`` = hits in the top K / K.
- ``hitrate@K``   = 1 if any of the top K is a hit, else 0.
- ``ndcg@K``      = DCG / IDCG with DCG = sum over hits of 1 / log2(rank + 2)
  (rank 0-based, i.e. log2(position + 1) for 1-based positions) and IDCG the
  DCG of min(n_target, K) hits at the top positions.
- ``mrr@K``       = 1 / (1-based position of the first hit) if it is within
  the top K, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dslrec.errors import DslrecError

METRICS = ("recall", "ndcg", "precision", "hitrate", "mrr")


def metric_key(metric: str, k: int) -> str:
    """The result key of ``metric`` at cut-off ``k``, e.g. ``"recall@20"``."""
    return f"{metric}@{k}"


def check_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    """Cut-offs as a sorted tuple of distinct positive ints."""
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise DslrecError(f"cut-offs K must be positive integers, got {list(ks)}; e.g. --ks 10 20")
    return tuple(sorted({int(k) for k in ks}))


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Metric names, checked against ``METRICS``."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise DslrecError(
            f"unknown metric(s) {unknown or metrics}; choose from {', '.join(METRICS)}"
        )
    return metrics


def discounts(n: int, device=None) -> torch.Tensor:
    """1 / log2(rank + 2) for ranks 0..n-1 (float64)."""
    return 1.0 / torch.log2(torch.arange(n, device=device, dtype=torch.float64) + 2.0)


def rank_metrics(
    hits: torch.Tensor, n_target: torch.Tensor, ks: Sequence[int], metrics: Sequence[str] = METRICS
) -> dict[str, torch.Tensor]:
    """Per-user float64 metric values ``{"recall@20": (B,), ...}`` from ranked hits."""
    device = hits.device
    hits = hits.to(torch.float64)
    n_target = n_target.to(device=device, dtype=torch.float64)
    width = hits.shape[1]
    disc = discounts(max(max(ks), 1), device)
    ideal = torch.cumsum(disc, 0)
    first = torch.argmax(hits, dim=1) if width else torch.zeros(len(hits), dtype=torch.long)
    any_hit = hits.sum(dim=1) > 0
    out = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(dim=1)
        for m in metrics:
            if m == "recall":
                v = n_hit / n_target
            elif m == "precision":
                v = n_hit / k
            elif m == "hitrate":
                v = (n_hit > 0).to(torch.float64)
            elif m == "ndcg":
                dcg = (h * disc[: h.shape[1]]).sum(dim=1)
                n_ideal = torch.clamp(n_target, max=k).long().clamp(min=1)
                v = dcg / ideal[n_ideal - 1]
            else:  # mrr: argmax gives the first maximal position
                within = any_hit & (first < k)
                v = torch.where(within, 1.0 / (first.to(torch.float64) + 1.0), 0.0)
            out[metric_key(m, k)] = v
    return out
