"""Negative sampling and training batches, vectorised and seeded.

Every sampler works on whole arrays: positives are looked up with
``np.searchsorted`` on the sorted keys ``user * n_items + item`` of a CSR
matrix, and rejected negatives are redrawn in a loop over the still-bad subset
only (a few rounds at realistic densities). Only users in
``dataset.trained_users()`` contribute training examples, so the fold-in rows
of held-out users (protocol ``"users"``) are never trained on.

Everything takes a ``numpy.random.Generator`` (or an int seed) and is
deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from dslrec.data.dataset import Dataset
from dslrec.errors import DslrecError

KINDS = ("pairwise", "pointwise", "rows")


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed or None (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else int(rng))


def csr_rows(m: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of rows ``users`` of ``m``: (local row 0..len-1, column, CSR data offset).

    Vectorised replacement for ``m[users]`` that also gives the positions in
    ``m.data`` (to fetch values) without building a new matrix.
    """
    users = np.asarray(users, dtype=np.int64)
    indptr = m.indptr.astype(np.int64, copy=False)
    starts = indptr[users]
    lengths = indptr[users + 1] - starts
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    # offset of entry j = start of its row + (j - first output index of its row)
    first = np.cumsum(lengths) - lengths
    offsets = np.arange(total, dtype=np.int64) + np.repeat(starts - first, lengths)
    return rows, m.indices[offsets].astype(np.int64), offsets


def pair_keys(m: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys ``row * n_cols + col`` of the stored entries of ``m``."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keys = rows * m.shape[1] + m.indices.astype(np.int64)
    if not m.has_sorted_indices:
        keys.sort()
    return keys


def contains(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Bool mask: is (users[i], items[i]) among the sorted ``keys``?"""
    q = users.astype(np.int64) * n_items + items
    if len(keys) == 0:
        return np.zeros(q.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return keys[pos] == q


def sample_negatives(
    keys: np.ndarray, users: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniform item per entry of ``users`` that is not a positive (per ``keys``) of that user.

    Rejection sampling; each round redraws only the entries still bad. The
    caller guarantees no user has every item as a positive. Lookups are much
    faster when ``users`` is sorted (shuffle afterwards, not before).
    """
    neg = np.empty(users.shape, dtype=np.int64)
    todo = np.arange(users.size)
    flat_users = users.reshape(-1)
    flat = neg.reshape(-1)
    while todo.size:
        flat[todo] = rng.integers(0, n_items, size=todo.size)
        todo = todo[contains(keys, flat_users[todo], flat[todo], n_items)]
    return neg


def _check_room(
    dataset: Dataset, users: np.ndarray, counts: np.ndarray, need: int, what: str
) -> None:
    """Clear error instead of an endless rejection loop when a user has too few non-positives."""
    full = counts > dataset.n_items - need
    if full.any():
        j = int(np.flatnonzero(full)[0])
        raise DslrecError(
            f"dataset {dataset.name!r}: user {dataset.user_ids[users[j]]} has {int(counts[j])} of "
            f"{dataset.n_items} items as positives, leaving fewer than {need} for {what}; "
            "filter such users out (e.g. a k-core or maximum-activity filter)"
        )


def _trained_pairs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the training interactions of trained users."""
    users = dataset.trained_users()
    _check_room(dataset, users, np.diff(dataset.train.indptr)[users], 1, "negative sampling")
    rows, items, _ = csr_rows(dataset.train, users)
    return users[rows], items


def pairwise_epoch(
    dataset: Dataset, rng: np.random.Generator | int | None = None, *, per_user: bool = False
) -> dict[str, np.ndarray]:
    """BPR triples for one epoch: {"users", "pos", "neg"} int64 arrays.

    ``per_user=False``: every training pair once, shuffled, with one uniform
    negative each. ``per_user=True`` (LightGCN's original sampler): as many
    draws as interactions, each a uniform trained user, a uniform positive of
    that user and a negative.
    """
    rng = as_rng(rng)
    users, items = _trained_pairs(dataset)
    if per_user:
        # i.i.d. uniform users, drawn as per-user counts so they come out grouped
        # by user (sorted lookups are several times faster); shuffled below
        trained = dataset.trained_users()
        counts = rng.multinomial(len(users), np.full(len(trained), 1.0 / len(trained)))
        users = np.repeat(trained, counts)
        indptr = dataset.train.indptr.astype(np.int64)
        deg = indptr[users + 1] - indptr[users]
        pick = indptr[users] + (rng.random(len(users)) * deg).astype(np.int64)
        items = dataset.train.indices[pick].astype(np.int64)
    neg = sample_negatives(pair_keys(dataset.train), users, dataset.n_items, rng)
    order = rng.permutation(len(users))
    return {"users": users[order], "pos": items[order], "neg": neg[order]}


def pointwise_epoch(
    dataset: Dataset, rng: np.random.Generator | int | None = None, *, n_neg: int = 4
) -> dict[str, np.ndarray]:
    """NeuMF examples for one epoch: each positive with ``n_neg`` negatives, shuffled.

    Returns {"users", "items"} int64 and {"labels"} float32 (1 positive, 0 negative).
    """
    if n_neg < 0:
        raise DslrecError(f"n_neg must be >= 0, got {n_neg}; use e.g. 4 negatives per positive")
    rng = as_rng(rng)
    users, items = _trained_pairs(dataset)
    neg_users = np.repeat(users, n_neg)
    negs = sample_negatives(pair_keys(dataset.train), neg_users, dataset.n_items, rng)
    all_users = np.concatenate([users, neg_users])
    all_items = np.concatenate([items, negs])
    labels = np.concatenate([np.ones(len(users), np.float32), np.zeros(len(negs), np.float32)])
    order = rng.permutation(len(all_users))
    return {"users": all_users[order], "items": all_items[order], "labels": labels[order]}


def eval_negatives(
    dataset: Dataset,
    users: np.ndarray,
    n_neg: int = 100,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """(len(users), n_neg) distinct items per user, none a positive of that user in any split.

    For the sampled protocol (the positive ranked among 100 negatives). Draws
    are uniform without replacement: entries that hit a positive or repeat an
    earlier entry of the same row are redrawn until none do.
    """
    rng = as_rng(rng)
    users = np.asarray(users, dtype=np.int64)
    allpos = (dataset.train + dataset.valid + dataset.test).tocsr()
    allpos.sort_indices()
    _check_room(dataset, users, np.diff(allpos.indptr)[users], n_neg, "the sampled protocol")
    keys = pair_keys(allpos)
    n = dataset.n_items
    neg = np.empty((len(users), n_neg), dtype=np.int64)
    flat = neg.reshape(-1)
    flat_users = np.repeat(users, n_neg)
    todo = np.arange(flat.size)
    while todo.size:
        flat[todo] = rng.integers(0, n, size=todo.size)
        bad = contains(keys, flat_users[todo], flat[todo], n)
        # a repeat within a row (only rows just redrawn can have one): keep the
        # first occurrence (stable sort), redraw the others
        rows = np.unique(todo // n_neg)
        sub = neg[rows]
        order = np.argsort(sub, axis=1, kind="stable")
        srt = np.take_along_axis(sub, order, axis=1)
        dup = np.zeros(sub.shape, dtype=bool)
        np.put_along_axis(dup, order[:, 1:], srt[:, 1:] == srt[:, :-1], axis=1)
        r, c = np.nonzero(dup)
        todo = np.union1d(todo[bad], rows[r] * n_neg + c)
    return neg


def batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    rng: np.random.Generator | int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[dict[str, torch.Tensor]]:
    """Mini-batches of aligned arrays as tensors on ``device``.

    Integer arrays become LongTensors, floating ones FloatTensors. With ``rng``
    the rows are shuffled first; the last batch may be smaller. The arrays are
    moved to the device once, then sliced.
    """
    if batch_size < 1:
        raise DslrecError(f"batch_size must be >= 1, got {batch_size}")
    n = len(next(iter(arrays.values()))) if arrays else 0
    order = as_rng(rng).permutation(n) if rng is not None else None
    tensors = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if len(a) != n:
            raise ValueError(f"array {name!r} has length {len(a)}, expected {n}")
        if order is not None:
            a = a[order]
        dtype = torch.float32 if np.issubdtype(a.dtype, np.floating) else torch.int64
        tensors[name] = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
    for start in range(0, n, batch_size):
        yield {name: t[start : start + batch_size] for name, t in tensors.items()}


def dense_rows(
    m: sp.csr_matrix, users: np.ndarray, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Rows ``users`` of ``m`` as a dense float32 tensor on ``device``."""
    rows, cols, offsets = csr_rows(m, users)
    out = torch.zeros((len(users), m.shape[1]), dtype=torch.float32, device=device)
    values = torch.from_numpy(m.data[offsets].astype(np.float32)).to(device)
    out[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = values
    return out


def row_batches(
    dataset: Dataset,
    batch_size: int,
    rng: np.random.Generator | int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[dict[str, torch.Tensor]]:
    """{"users", "rows"} batches over the trained users in random order (for MultVAE)."""
    if batch_size < 1:
        raise DslrecError(f"batch_size must be >= 1, got {batch_size}")
    users = as_rng(rng).permutation(dataset.trained_users())
    for start in range(0, len(users), batch_size):
        u = users[start : start + batch_size]
        yield {
            "users": torch.from_numpy(u).to(device),
            "rows": dense_rows(dataset.train, u, device),
        }


@dataclass
class EpochBatches:
    """One epoch of training batches: iterate it once; ``len()`` is the batch count.

    Sampling happens when it is built (see ``epoch_batches``); tensors are
    made on ``device`` while iterating.
    """

    arrays: dict[str, np.ndarray] | None
    dataset: Dataset
    batch_size: int
    n: int
    seed: int
    device: str | torch.device

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.arrays is None:
            return row_batches(self.dataset, self.batch_size, self.seed, self.device)
        return batches(self.arrays, self.batch_size, None, self.device)


def epoch_batches(
    dataset: Dataset,
    kind: str,
    batch_size: int,
    rng: np.random.Generator | int | None = None,
    *,
    per_user: bool = False,
    n_neg: int = 4,
    device: str | torch.device = "cpu",
) -> EpochBatches:
    """The training loop's entry: one epoch of batches of the backbone's sampling ``kind``.

    ``"pairwise"`` -> {"users", "pos", "neg"}; ``"pointwise"`` -> {"users",
    "items", "labels"}; ``"rows"`` -> {"users", "rows"}. Deterministic given
    ``rng``'s state (pass one Generator across epochs for fresh negatives).
    """
    if batch_size < 1:
        raise DslrecError(f"batch_size must be >= 1, got {batch_size}")
    rng = as_rng(rng)
    if kind == "pairwise":
        arrays = pairwise_epoch(dataset, rng, per_user=per_user)
    elif kind == "pointwise":
        arrays = pointwise_epoch(dataset, rng, n_neg=n_neg)
    elif kind == "rows":
        n = len(dataset.trained_users())
        seed = int(rng.integers(0, 2**63 - 1))
        return EpochBatches(None, dataset, batch_size, n, seed, device)
    else:
        raise DslrecError(f"unknown sampling kind {kind!r}; choose one of {', '.join(KINDS)}")
    n = len(arrays["users"])
    return EpochBatches(arrays, dataset, batch_size, n, 0, device)
