"""Negative sampling and training batches, vectorised and seeded.

Every sampler works on whole arrays: positives are looked up by a binary
search within each user's sorted CSR row, vectorised over the draws, and
rejected negatives are redrawn in a loop over the still-bad subset only (a
few rounds at realistic densities). Only users in
``dataset.trained_users()`` contribute training examples, so the fold-in rows
of held-out users (protocol ``"users"``) are never trained on.

Training examples are made lazily, a chunk of ``CHUNK_ROWS`` at a time (a
block of whole batches in ``epoch_batches``): only the shuffle order of an
epoch is drawn up front, so an epoch cut short (``--max_steps``) samples only
the negatives of the batches it trains on, and a full epoch never holds more
than one chunk of examples. The chunk boundaries do not depend on where an
epoch is cut, so a cut epoch's batches are the first batches of the full one.

Everything takes a ``numpy.random.Generator`` (or an int seed) and is
deterministic for a given seed.

Data-parallel runs (``epoch_batches(..., rank=, world=)``): every rank draws
the epoch's shuffle order from the shared seed, and samples only its own
contiguous share of each global batch (``Share``): its negatives, its
per-user draws and its in-chunk shuffles come from a generator of its own.
The shares are disjoint and together cover the epoch once; one process
(``world=1``) samples exactly as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from dslrec.data.dataset import Dataset
from dslrec.distributed import shard
from dslrec.errors import DslrecError

KINDS = ("pairwise", "pointwise", "rows")
CHUNK_ROWS = 1 << 18  # training examples sampled at a time (rounded down to whole batches)


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
    starts = m.indptr[users].astype(np.int64)  # only the rows asked for are widened
    lengths = m.indptr[users + 1] - starts
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    # offset of entry j = start of its row + (j - first output index of its row)
    first = np.cumsum(lengths) - lengths
    offsets = np.arange(total, dtype=np.int64) + np.repeat(starts - first, lengths)
    return rows, m.indices[offsets].astype(np.int64), offsets


class Positives:
    """Which (user, item) pairs are stored entries of a CSR matrix: a binary search within each
    queried row, vectorised over the queries, in the matrix's own arrays. Nothing of the size of the
    data is built (sorted keys ``user * n_items + item`` would be 8 bytes per interaction)."""

    def __init__(self, m: sp.csr_matrix):
        if not m.has_sorted_indices:
            m = m.copy()
            m.sort_indices()
        self.indptr, self.indices = m.indptr, m.indices

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Bool mask: is ``(users[i], items[i])`` stored?"""
        lo = self.indptr[users].astype(np.int64)
        end = self.indptr[users + 1].astype(np.int64)
        if len(self.indices) == 0:
            return np.zeros(np.shape(users), dtype=bool)
        hi = end.copy()
        last = len(self.indices) - 1
        # lo ends at the first entry of the row >= the item: ceil(log2(longest row + 1)) rounds
        while True:
            open_ = lo < hi
            if not open_.any():
                break
            mid = (lo + hi) >> 1
            right = open_ & (self.indices[np.minimum(mid, last)] < items)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(open_ & ~right, mid, hi)
        return (lo < end) & (self.indices[np.minimum(lo, last)] == items)


def sample_negatives(
    positives: Positives, users: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniform item per entry of ``users`` that is not one of that user's ``positives``.

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
        todo = todo[positives.contains(flat_users[todo], flat[todo])]
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


def _trained_offsets(dataset: Dataset) -> tuple[np.ndarray | None, int]:
    """(CSR offsets of the trained users' training pairs, their number). The offsets are None when
    every stored pair is trained on (pair j is offset j), so nothing of the size of the data is made."""
    m = dataset.train
    users = dataset.trained_users()
    deg = np.diff(m.indptr)
    _check_room(dataset, users, deg[users], 1, "negative sampling")
    if len(users) == int((deg > 0).sum()):
        return None, int(m.nnz)
    _, _, offsets = csr_rows(m, users)
    return offsets, len(offsets)


def _shuffle_rows(rng: np.random.Generator, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of aligned arrays in a random order."""
    order = rng.permutation(len(next(iter(arrays.values()))))
    return {k: a[order] for k, a in arrays.items()}


def _row_of(indptr: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The CSR row (user) holding each entry offset (offsets in indptr's type: numpy would otherwise
    widen the whole indptr at every call)."""
    return np.searchsorted(indptr, offsets.astype(indptr.dtype, copy=False), side="right").astype(np.int64) - 1


def _shuffled(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of 0..n-1, int32 when it fits (half the memory of ``rng.permutation``)."""
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    rng.shuffle(order)
    return order


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """The sizes of the batches of ``n`` rows: whole batches, then the rest."""
    full, rest = divmod(n, batch_size)
    return np.append(np.full(full, batch_size, dtype=np.int64), [rest] if rest else []).astype(np.int64)


@dataclass(frozen=True)
class Share:
    """One rank's part of every global batch of a data-parallel epoch: the contiguous share
    ``distributed.shard`` gives it of each batch. ``rng`` draws what only this rank samples."""

    rank: int
    world: int
    batch_size: int
    rng: np.random.Generator

    def bounds(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop) within each global batch of ``sizes`` rows. A rank left without rows (a batch
        smaller than the world) takes the batch's first row, so that every rank steps together; its
        loss weight (``weights``) is 0."""
        start, stop = shard(np.asarray(sizes, dtype=np.int64), self.rank, self.world)
        empty = stop == start
        return np.where(empty, 0, start), np.where(empty, 1, stop)

    def weights(self, sizes: np.ndarray) -> np.ndarray:
        """Each batch's loss weight, ``world * rows / global rows``: the ranks' weighted mean losses
        average to the global batch's mean loss."""
        sizes = np.asarray(sizes, dtype=np.int64)
        start, stop = shard(sizes, self.rank, self.world)
        return self.world * (stop - start) / np.maximum(sizes, 1)

    def counts(self, n: int) -> np.ndarray:
        """Rows this rank samples of each global batch of a chunk of ``n`` rows (it starts at a batch)."""
        start, stop = self.bounds(batch_sizes(n, self.batch_size))
        return stop - start

    def positions(self, n: int) -> np.ndarray:
        """Positions (within a chunk of ``n`` rows) of this rank's rows, batch by batch."""
        start, stop = self.bounds(batch_sizes(n, self.batch_size))
        counts = stop - start
        first = np.arange(len(counts), dtype=np.int64) * self.batch_size + start
        offsets = np.cumsum(counts) - counts
        return np.repeat(first - offsets, counts) + np.arange(int(counts.sum()), dtype=np.int64)


def _chunk_rows(chunk: int | None) -> int:
    chunk = CHUNK_ROWS if chunk is None else chunk
    if chunk < 1:
        raise DslrecError(f"chunk must be >= 1, got {chunk}")
    return chunk


def _share_of(share: Share | None, chunk: int) -> None:
    if share is not None and chunk % share.batch_size:
        raise DslrecError(f"a rank's share needs chunks of whole batches: chunk {chunk}, batch {share.batch_size}")


def pairwise_chunks(
    dataset: Dataset, rng: np.random.Generator, chunk: int | None = None, *, per_user: bool = False,
    share: Share | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of BPR triples, ``chunk`` (default ``CHUNK_ROWS``) at a time: {"users", "pos", "neg"} int64 arrays.

    ``per_user=False``: every training pair once, in an order shuffled up front (an int32
    permutation), with one uniform negative each, drawn when its chunk is made.
    ``per_user=True`` (LightGCN's original sampler): as many draws as interactions, each a
    uniform trained user, a uniform positive of that user and a negative.
    ``share``: only that rank's rows of each global batch (``chunk`` a multiple of the batch);
    the order comes from ``rng``, every other draw from ``share.rng``.
    """
    chunk = _chunk_rows(chunk)
    _share_of(share, chunk)
    draw = rng if share is None else share.rng
    m = dataset.train
    indptr = m.indptr  # int32 for most data: not widened, it is as long as the users
    positives = Positives(m)
    if per_user:
        trained = dataset.trained_users()
        deg = np.diff(indptr)
        _check_room(dataset, trained, deg[trained], 1, "negative sampling")
        n = int(deg[trained].sum())
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            if share is not None:
                size = int(share.counts(size).sum())
            # i.i.d. uniform users, sorted for fast lookups, shuffled back below
            users = trained[np.sort(draw.integers(0, len(trained), size=size))]
            pick = indptr[users] + (draw.random(size) * deg[users]).astype(np.int64)
            yield _shuffle_rows(draw, {"users": users, "pos": m.indices[pick].astype(np.int64),
                                       "neg": sample_negatives(positives, users, dataset.n_items, draw)})
        return
    offsets, n = _trained_offsets(dataset)
    order = _shuffled(rng, n)
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        if share is not None:
            part = part[share.positions(len(part))]
        # the chunk's pairs in CSR (user) order for fast lookups, then shuffled within the chunk:
        # with the epoch's shuffle, every order of the pairs stays equally likely
        idx = np.sort(part).astype(np.int64)
        off = idx if offsets is None else offsets[idx]
        users = _row_of(indptr, off)
        yield _shuffle_rows(draw, {"users": users, "pos": m.indices[off].astype(np.int64),
                                   "neg": sample_negatives(positives, users, dataset.n_items, draw)})


def pointwise_chunks(
    dataset: Dataset, rng: np.random.Generator, chunk: int | None = None, *, n_neg: int = 4,
    share: Share | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of NeuMF examples, ``chunk`` at a time: every training pair once as a positive
    and ``n_neg`` negatives per pair (uniform non-positive items of its user, drawn when their
    chunk is made), in an order shuffled up front. {"users", "items"} int64, {"labels"} float32.
    ``share``: as in ``pairwise_chunks``."""
    if n_neg < 0:
        raise DslrecError(f"n_neg must be >= 0, got {n_neg}; use e.g. 4 negatives per positive")
    chunk = _chunk_rows(chunk)
    _share_of(share, chunk)
    draw = rng if share is None else share.rng
    m = dataset.train
    indptr = m.indptr  # int32 for most data: not widened, it is as long as the users
    positives = Positives(m)
    offsets, n = _trained_offsets(dataset)
    order = _shuffled(rng, n * (1 + n_neg))  # rows < n are the positives, row n + j*n_neg + k pair j's k-th negative
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        if share is not None:
            rows = rows[share.positions(len(rows))]
        rows = rows.astype(np.int64)
        positive = rows < n
        pair = np.where(positive, rows, (rows - n) // max(n_neg, 1))
        # in pair (user) order for fast lookups, shuffled back below; the low bit keeps the label
        key = np.sort(pair * 2 + ~positive)
        pair, positive = key >> 1, (key & 1) == 0
        off = pair if offsets is None else offsets[pair]
        users = _row_of(indptr, off)
        items = m.indices[off].astype(np.int64)
        neg = ~positive
        items[neg] = sample_negatives(positives, users[neg], dataset.n_items, draw)
        yield _shuffle_rows(draw, {"users": users, "items": items, "labels": positive.astype(np.float32)})


def _concat(chunks: Iterator[dict[str, np.ndarray]], empty: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    parts = list(chunks)
    if not parts:
        return {k: np.zeros(0, dtype=dt) for k, dt in empty.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def pairwise_epoch(
    dataset: Dataset, rng: np.random.Generator | int | None = None, *, per_user: bool = False
) -> dict[str, np.ndarray]:
    """BPR triples for one epoch, all at once: {"users", "pos", "neg"} int64 arrays.

    ``per_user=False``: every training pair once, shuffled, with one uniform
    negative each. ``per_user=True`` (LightGCN's original sampler): as many
    draws as interactions, each a uniform trained user, a uniform positive of
    that user and a negative. (The chunks of ``pairwise_chunks``, joined.)
    """
    chunks = pairwise_chunks(dataset, as_rng(rng), per_user=per_user)
    return _concat(chunks, {"users": np.int64, "pos": np.int64, "neg": np.int64})


def pointwise_epoch(
    dataset: Dataset, rng: np.random.Generator | int | None = None, *, n_neg: int = 4
) -> dict[str, np.ndarray]:
    """NeuMF examples for one epoch: each positive with ``n_neg`` negatives, shuffled.

    Returns {"users", "items"} int64 and {"labels"} float32 (1 positive, 0 negative).
    (The chunks of ``pointwise_chunks``, joined.)
    """
    chunks = pointwise_chunks(dataset, as_rng(rng), n_neg=n_neg)
    return _concat(chunks, {"users": np.int64, "items": np.int64, "labels": np.float32})


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
    positives = Positives(allpos)
    n = dataset.n_items
    neg = np.empty((len(users), n_neg), dtype=np.int64)
    flat = neg.reshape(-1)
    flat_users = np.repeat(users, n_neg)
    todo = np.arange(flat.size)
    while todo.size:
        flat[todo] = rng.integers(0, n, size=todo.size)
        bad = positives.contains(flat_users[todo], flat[todo])
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
    share: Share | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """{"users", "rows"} batches over the trained users in random order (for MultVAE);
    ``share``: only that rank's share of each batch."""
    if batch_size < 1:
        raise DslrecError(f"batch_size must be >= 1, got {batch_size}")
    users = as_rng(rng).permutation(dataset.trained_users())
    for start in range(0, len(users), batch_size):
        u = users[start : start + batch_size]
        if share is not None:
            (a,), (b,) = share.bounds([len(u)])
            u = u[a:b]
        yield {
            "users": torch.from_numpy(u).to(device),
            "rows": dense_rows(dataset.train, u, device),
        }


def _tensors(arrays: dict[str, np.ndarray], device: str | torch.device) -> dict[str, torch.Tensor]:
    """Integer arrays as LongTensors, floating ones as FloatTensors, on ``device``."""
    out = {}
    for name, a in arrays.items():
        dtype = torch.float32 if np.issubdtype(a.dtype, np.floating) else torch.int64
        out[name] = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
    return out


@dataclass
class EpochBatches:
    """One epoch of training batches: iterate it; ``len()`` is the batch count.

    Examples are sampled while iterating, a block of ``chunk_batches`` batches at a time
    (moved to ``device`` once per block, then sliced), so iteration that stops early, or an
    epoch cut to ``max_batches``, samples only the blocks it reaches. Iterating again gives
    the same batches (the sampling seed is fixed when it is built).

    With ``world`` > 1 each batch is rank ``rank``'s share of the global batch (``Share``), and
    ``weights()`` gives each batch's loss weight.
    """

    dataset: Dataset
    kind: str
    batch_size: int
    n: int  # examples in the full epoch
    seed: int
    device: str | torch.device
    per_user: bool = False
    n_neg: int = 4
    max_batches: int | None = None
    rank: int = 0
    world: int = 1

    @property
    def share(self) -> Share | None:
        """This rank's share of the global batches (None on one process)."""
        if self.world == 1:
            return None
        return Share(self.rank, self.world, self.batch_size, np.random.default_rng([self.seed, self.rank]))

    def weights(self) -> np.ndarray:
        """Each batch's loss weight: ``world * share rows / global rows`` (all 1.0 on one process)."""
        if self.world == 1:
            return np.ones(len(self))
        return self.share.weights(batch_sizes(self.n, self.batch_size))[: len(self)]

    @property
    def chunk_batches(self) -> int:
        return max(1, CHUNK_ROWS // self.batch_size)

    def __len__(self) -> int:
        full = -(-self.n // self.batch_size)
        return full if self.max_batches is None else min(full, self.max_batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return itertools.islice(self._all(), len(self))

    def _all(self) -> Iterator[dict[str, torch.Tensor]]:
        share = self.share
        if self.kind == "rows":
            yield from row_batches(self.dataset, self.batch_size, self.seed, self.device, share)
            return
        rng = np.random.default_rng(self.seed)
        chunk = self.chunk_batches * self.batch_size
        if self.kind == "pairwise":
            chunks = pairwise_chunks(self.dataset, rng, chunk, per_user=self.per_user, share=share)
        else:
            chunks = pointwise_chunks(self.dataset, rng, chunk, n_neg=self.n_neg, share=share)
        for first, arrays in zip(range(0, self.n, chunk), chunks):
            tensors = _tensors(arrays, self.device)
            rows = min(chunk, self.n - first)  # the chunk's rows over all ranks
            # the batches' rows: this rank's of each global batch with a share
            ends = np.cumsum(batch_sizes(rows, self.batch_size) if share is None else share.counts(rows))
            for start, stop in zip([0, *ends[:-1].tolist()], ends.tolist()):
                yield {name: t[start:stop] for name, t in tensors.items()}


def epoch_batches(
    dataset: Dataset,
    kind: str,
    batch_size: int,
    rng: np.random.Generator | int | None = None,
    *,
    per_user: bool = False,
    n_neg: int = 4,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> EpochBatches:
    """The training loop's entry: one epoch of batches of the backbone's sampling ``kind``.

    ``"pairwise"`` -> {"users", "pos", "neg"}; ``"pointwise"`` -> {"users",
    "items", "labels"}; ``"rows"`` -> {"users", "rows"}. Deterministic given
    ``rng``'s state (pass one Generator across epochs for fresh negatives): a
    seed for the epoch is drawn from it here, and the examples are sampled from
    that seed while iterating (see ``EpochBatches``). ``max_batches`` cuts the
    epoch after that many batches (the first batches of the full epoch). ``rank``/``world``: a
    data-parallel run's rank samples only its share of each global batch (see ``EpochBatches``).
    """
    if batch_size < 1:
        raise DslrecError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 0:
        raise DslrecError(f"max_batches must be >= 0, got {max_batches}")
    if kind not in KINDS:
        raise DslrecError(f"unknown sampling kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "pointwise" and n_neg < 0:
        raise DslrecError(f"n_neg must be >= 0, got {n_neg}; use e.g. 4 negatives per positive")
    rng = as_rng(rng)
    if kind == "rows":
        n = len(dataset.trained_users())
    else:
        # checks the room for negatives now, not at the first batch
        n = _trained_offsets(dataset)[1] * (1 + n_neg if kind == "pointwise" else 1)
    seed = int(rng.integers(0, 2**63 - 1))
    if not 0 <= rank < world:
        raise DslrecError(f"rank {rank} is not in a world of {world} processes")
    return EpochBatches(dataset, kind, batch_size, n, seed, device, per_user, n_neg, max_batches, rank, world)
