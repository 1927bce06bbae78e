"""Synthetic implicit feedback: the embedded default dataset (no download).

Users and items get latent factors from a planted low-rank model; each item
also has a popularity drawn from a power law, so the data has the long tail
real catalogues have. A user's interactions are sampled without replacement
with probability proportional to popularity * exp(affinity / temperature),
which makes personalised models clearly beat ranking by popularity.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import numpy as np

from dslrec.data.dataset import Dataset, csr_from_pairs


def synthetic_log(
    n_users: int = 2000,
    n_items: int = 1000,
    rank: int = 8,
    mean_items_per_user: int = 40,
    popularity_exponent: float = 1.0,
    temperature: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) pairs of a planted low-rank, long-tailed interaction log."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_users, rank)) / np.sqrt(rank)
    v = rng.standard_normal((n_items, rank)) / np.sqrt(rank)
    # Zipf-like popularity: item ranked r gets weight r^-exponent.
    pop = (1.0 + rng.permutation(n_items)) ** -popularity_exponent
    logits = (u @ v.T) * (np.sqrt(rank) / temperature) + np.log(pop)[None, :]
    # Gumbel top-k = sampling without replacement proportional to exp(logits).
    counts = np.clip(rng.geometric(1.0 / mean_items_per_user, size=n_users), 5, n_items // 2)
    keys = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-keys, axis=1)
    take = np.arange(n_items)[None, :] < counts[:, None]
    users = np.repeat(np.arange(n_users), counts)
    items = order[take]
    return users, items


def synthetic_dataset(
    n_users: int = 2000,
    n_items: int = 1000,
    seed: int = 0,
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    **kwargs,
) -> Dataset:
    """The embedded default: a synthetic log split per user at random (80/10/10)."""
    users, items = synthetic_log(n_users=n_users, n_items=n_items, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    # Per-user random split: rank each interaction by a random key within its user.
    key = rng.random(len(users))
    order = np.lexsort((key, users))
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(n_users))
    pos = np.arange(len(users)) - starts[users]
    n = np.bincount(users, minlength=n_users)[users]
    n_test = np.maximum(1, np.round(n * test_ratio)).astype(int)
    n_valid = np.maximum(1, np.round(n * valid_ratio)).astype(int)
    is_test = pos < n_test
    is_valid = ~is_test & (pos < n_test + n_valid)
    is_train = ~(is_test | is_valid)
    shape = (n_users, n_items)
    return Dataset(
        name="synthetic",
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
        train=csr_from_pairs(users[is_train], items[is_train], shape),
        valid=csr_from_pairs(users[is_valid], items[is_valid], shape),
        test=csr_from_pairs(users[is_test], items[is_test], shape),
        protocol="fixed",
        source="synthetic",
    )
