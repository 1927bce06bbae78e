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


def int_lines(heads: np.ndarray, counts: np.ndarray, values: np.ndarray) -> bytes:
    """The text ``head value value ...\\n`` per line, built with numpy (no loop over lines or values).

    Line j is ``heads[j]`` followed by the next ``counts[j]`` entries of ``values`` (non-negative
    integers), separated by single spaces.
    """
    heads = np.asarray(heads, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    if len(heads) == 0:
        return b""
    # tokens in file order: each line's head, then its values
    n_tokens = len(heads) + len(values)
    line_start = np.cumsum(counts + 1) - (counts + 1)
    tokens = np.empty(n_tokens, dtype=np.int64)
    is_head = np.zeros(n_tokens, dtype=bool)
    is_head[line_start] = True
    tokens[is_head] = heads
    tokens[~is_head] = values
    digits = np.ones(n_tokens, dtype=np.int64)
    power = 10
    while True:  # digits per token: one pass per digit count, at most 19
        more = tokens >= power
        if not more.any():
            break
        digits += more
        power *= 10
    end = np.cumsum(digits + 1) - 1  # the separator after each token
    buf = np.full(int(end[-1]) + 1, ord(" "), dtype=np.uint8)
    last = np.r_[line_start[1:] - 1, n_tokens - 1]  # the last token of each line
    buf[end[last]] = ord("\n")
    rest = tokens.copy()
    for j in range(int(digits.max())):  # the j-th digit from the right of every token that has one
        has = digits > j
        buf[end[has] - 1 - j] = ord("0") + rest[has] % 10
        rest //= 10
    return buf.tobytes()


def write_lightgcn_folder(path, n_users: int = 2_000_000, n_items: int = 500_000, per_user: float = 6.0,
                          seed: int = 0, test_ratio: float = 0.2, exponent: float = 1.0) -> dict:
    """Write a LightGCN-format folder (``train.txt``, ``test.txt``) of a big, long-tailed log.

    Each user gets ``1 + Poisson(per_user - 1)`` distinct items (mean about ``per_user``),
    drawn with Zipf-like popularity (the item of rank r has weight r^-``exponent``; ranks are
    shuffled over item ids). Users with two or more items give ``max(1, round(test_ratio *
    n))`` of them to ``test.txt``; lines list a user id, then item ids, in increasing order (as
    the LightGCN files do). Vectorised and deterministic given ``seed``; the default size is the
    big-data benchmark's (2,000,000 users, 500,000 items, about 12,000,000 interactions).
    Returns the counts written.
    """
    from pathlib import Path

    if n_users < 1 or n_items < 2 or per_user < 1:
        raise ValueError("need n_users >= 1, n_items >= 2 and per_user >= 1")
    rng = np.random.default_rng(seed)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    counts = np.minimum(1 + rng.poisson(per_user - 1, size=n_users), n_items // 2)
    weight = (1.0 + rng.permutation(n_items)) ** -float(exponent)
    cdf = np.cumsum(weight / weight.sum())
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    items = np.minimum(np.searchsorted(cdf, rng.random(len(users))), n_items - 1)
    # distinct items per user: redraw repeats (a few rounds; popular items repeat most). Users
    # come sorted, so the stable sorts below are nearly linear.
    while True:
        key = users * n_items + items
        order = np.argsort(key, kind="stable")
        dup = np.zeros(len(key), dtype=bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not dup.any():
            break
        items[dup] = np.minimum(np.searchsorted(cdf, rng.random(int(dup.sum()))), n_items - 1)
    users, items = users[order], items[order]  # (user, item) order, as the files list them
    # per user, a random test_ratio share goes to test (users with one item keep it in train)
    n_test = np.where(counts >= 2, np.maximum(1, np.floor(counts * test_ratio + 0.5)).astype(np.int64), 0)
    start = np.cumsum(counts) - counts
    shuffle = np.argsort((users << 31) | rng.integers(0, 2**31, size=len(users)), kind="stable")
    rank = np.empty(len(users), dtype=np.int64)  # a random rank of each interaction within its user
    rank[shuffle] = np.arange(len(users)) - start[users[shuffle]]
    test = rank < n_test[users]
    written = {}
    for name, sel in (("train.txt", ~test), ("test.txt", test)):
        u, i = users[sel], items[sel]
        line_users, per_line = np.unique(u, return_counts=True)
        (folder / name).write_bytes(int_lines(line_users, per_line, i))
        written[name[:-4]] = int(sel.sum())
    return {"users": n_users, "items": n_items, **written}
