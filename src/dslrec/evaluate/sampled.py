"""The sampled protocol: each target item ranked among 100 sampled negatives.

The literature on leave-one-out splits (NeuMF) reports it. Per user with a
target item, ``n_neg`` distinct negatives are drawn once (seeded) from the
items that are not positives of that user in any split. Each (user, target
item) pair is a candidate list ``[target] + negatives``; the target's rank is
the number of negatives scoring higher plus the number scoring equal with a
lower item index (the same tie rule as full ranking; NaN counts as the lowest
score). Then, with 0-based rank r:

- ``hitrate@K`` = 1 if r < K, else 0;
- ``ndcg@K``    = 1 / log2(r + 2) if r < K, else 0 (one relevant item);
- ``mrr@K``     = 1 / (r + 1) if r < K, else 0.

Values are averaged over a user's pairs (one under leave-one-out), then over
users. Scores come from the full-ranking scorer, gathered at the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dslrec.data.dataset import Dataset
from dslrec.data.sampling import as_rng, csr_rows, eval_negatives
from dslrec.errors import DslrecError
from dslrec.evaluate.ranking import Scorer, default_batch_size, eval_users

SAMPLED_METRICS = ("hitrate", "ndcg", "mrr")


def sampled_ranks(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
) -> torch.Tensor:
    """0-based rank of each positive among its negatives (ties: lower item index first)."""
    pos_scores = torch.nan_to_num(pos_scores, nan=-float("inf"))[:, None]
    neg_scores = torch.nan_to_num(neg_scores, nan=-float("inf"))
    before = (neg_scores > pos_scores) | ((neg_scores == pos_scores) & (neg_items < pos_items[:, None]))
    return before.sum(dim=1)


def sampled_evaluate(
    scorer: Scorer,
    dataset: Dataset,
    split: str = "test",
    ks: Sequence[int] = (10,),
    n_neg: int = 100,
    seed: int | np.random.Generator = 0,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    prefix: str = "sampled_",
) -> dict[str, float]:
    """Sampled-protocol metrics ``{"sampled_hitrate@10": ..., "sampled_ndcg@10": ..., ...}``.

    ``negatives``: ``(users, negs)`` from ``sampled_negatives`` to reuse the
    same candidates across calls (e.g. every validation epoch); otherwise they
    are drawn from ``seed``.
    """
    if split not in ("valid", "test"):
        raise DslrecError(f"cannot evaluate on split {split!r}; choose valid or test")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise DslrecError(f"cut-offs K must be positive integers, got {list(ks)}")
    batch_size = batch_size or default_batch_size(device, dataset.n_items)
    target = dataset.split(split)
    users, negs = negatives if negatives is not None else sampled_negatives(dataset, split, n_neg, seed)
    if len(users) == 0:
        raise DslrecError(f"dataset {dataset.name!r}: split {split} has no users to evaluate")
    sums = {f"{prefix}{m}@{k}": np.zeros(len(users)) for k in ks for m in SAMPLED_METRICS}
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            u = users[start : start + batch_size]
            scores = scorer(torch.from_numpy(u).to(device))
            dev = scores.device
            rows, items, _ = csr_rows(target, u)
            r = torch.from_numpy(rows).to(dev)
            pos = torch.from_numpy(items).to(dev)
            neg = torch.from_numpy(negs[start : start + batch_size]).to(dev)[r]
            rank = sampled_ranks(scores[r, pos], scores[r[:, None], neg], pos, neg).cpu().numpy()
            per_pair = {
                "hitrate": lambda k: (rank < k).astype(np.float64),
                "ndcg": lambda k: np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0),
                "mrr": lambda k: np.where(rank < k, 1.0 / (rank + 1.0), 0.0),
            }
            for k in ks:
                for m in SAMPLED_METRICS:
                    sums[f"{prefix}{m}@{k}"][start : start + len(u)] = np.bincount(
                        rows, weights=per_pair[m](k), minlength=len(u)
                    )
    n_pairs = np.diff(target.indptr)[users]
    return {key: float((s / n_pairs).mean()) for key, s in sums.items()}


def sampled_negatives(
    dataset: Dataset, split: str = "test", n_neg: int = 100, seed: int | np.random.Generator = 0,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(users (of ``users``, default all) with an item in ``split``, their (n, n_neg) negatives)
    for ``sampled_evaluate``."""
    users = eval_users(dataset, split, users)
    return users, eval_negatives(dataset, users, n_neg, as_rng(seed))
