"""Which weights to prune and which to grow: pure functions on flat tensors.

Nothing here touches a model or an optimiser. Every function takes 1-D
tensors of one *scope* (a single flattened tensor, or the concatenation of
all sparsified tensors for the global scope) and returns a new boolean mask
or selection; the ``*_rows`` functions take (rows, columns) tensors whose
every row is a scope of its own. Storage of masks and their application to weights and
optimiser state live elsewhere (``storage.py``), so a compact storage mode
can reuse these decisions unchanged.

Ties: selections are exact (always ``k`` positions). Positions are ranked by
score; positions with equal score at the cut-off are chosen uniformly at
random with the caller's ``torch.Generator``. Random tie-breaking matters:
most positions of an embedding table get an exactly-zero gradient in a
mini-batch, so "largest |g|" is usually a tie among many zeros, and breaking
it by index would systematically favour low user/item ids.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dslrec.errors import DslrecError

# --- primitives: numpy on CPU (several times faster single-threaded), torch elsewhere ----------

USE_NUMPY = True  # tests switch it off to exercise the torch code path used on GPUs


def _numpy(t: Tensor) -> bool:
    return USE_NUMPY and t.device.type == "cpu"


def flat_nonzero(b: Tensor) -> Tensor:
    """Indices (int64) of the True entries of a 1-D bool tensor."""
    if _numpy(b):
        return torch.from_numpy(np.flatnonzero(b.numpy()))
    return b.nonzero().squeeze(1)


def count_true(b: Tensor) -> int:
    if _numpy(b):
        return int(np.count_nonzero(b.numpy()))  # ~10x torch.count_nonzero on one CPU thread
    return int(torch.count_nonzero(b))


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D tensor and int64 or bool indices (numpy on CPU: torch's bool
    gather goes through its slow ``nonzero``)."""
    if _numpy(values) and _numpy(index):
        return torch.from_numpy(values.numpy()[index.numpy()])
    return values[index]


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest value (1-based) of a 1-D tensor, as a 0-d tensor on its device."""
    if _numpy(values):
        # numpy's introselect is several times faster than torch.kthvalue on CPU, but it
        # degrades badly on long runs of equal values: _threshold strips those first
        return torch.as_tensor(np.partition(values.numpy(), k - 1)[k - 1])
    return torch.kthvalue(values, k).values


def _diverged() -> DslrecError:
    return DslrecError("NaN weights or gradients reached a mask update: the run diverged; "
                       "lower the learning rate or check the loss")


def _threshold(vals: Tensor, k: int) -> Tensor:
    """The k-th smallest value, without running a selection over big blocks of equal
    values at either end (exact zeros, constant scores)."""
    lo, hi = torch.aminmax(vals)
    if torch.isnan(lo) or torch.isnan(hi):
        raise _diverged()
    n_lo = count_true(vals == lo)
    if n_lo >= k:
        return lo
    n_hi = count_true(vals == hi)
    if vals.numel() - n_hi < k:
        return hi
    if n_lo + n_hi > vals.numel() // 100:
        return _kth_smallest(_take(vals, (vals > lo) & (vals < hi)), k - n_lo).to(vals.device)
    return _kth_smallest(vals, k).to(vals.device)


def _draw_distinct(n: int, k: int, generator: torch.Generator | None, pool: Tensor | None = None) -> Tensor:
    """Bool mask over ``range(n)`` of at least ``k`` distinct uniform draws (restricted to
    ``pool`` when given). The set of distinct values of i.i.d. uniform draws is
    exchangeable: given its size, every subset of the pool is equally likely."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seen = torch.zeros(n, dtype=torch.bool, device=gen_device)
    pool = None if pool is None else pool.to(gen_device)
    rate = 1.0 if pool is None else count_true(pool) / n
    have = 0
    while have < k:
        extra = int(1.1 * (k - have) / rate) + 16
        draw = torch.randint(0, n, (extra,), generator=generator, device=gen_device)
        if pool is not None:
            draw = _take(draw, _take(pool, draw))
        seen[draw] = True
        have = count_true(seen)
    return seen


def _random_subset(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``k`` distinct indices drawn uniformly from ``range(n)`` (a uniform random k-subset)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if k <= 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if 4 * k <= n:
        # few of many: distinct uniform draws, then a few of them dropped at random; O(n) on
        # bytes with no sort, instead of ranking n random keys
        idx = flat_nonzero(_draw_distinct(n, k, generator))
        if idx.numel() > k:
            keep = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
            keep[_random_subset(idx.numel(), idx.numel() - k, generator, idx.device)] = False
            idx = idx[keep]
        return idx.to(device)
    # a large share: the k smallest of n random keys (keys equal at the cut-off, vanishingly
    # rare, are taken in index order so the count stays exact)
    keys = torch.rand(n, generator=generator, device=gen_device)
    thr = _kth_smallest(keys, k)
    below = flat_nonzero(keys < thr)
    at = flat_nonzero(keys == thr)[: k - below.numel()]
    return torch.cat([below, at]).to(device)


def random_pick(pool: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Bool mask of ``k`` positions drawn uniformly at random from the True entries of ``pool``."""
    n_pool = count_true(pool)
    if k > n_pool:
        raise ValueError(f"cannot pick {k} of {n_pool} positions")
    if k == n_pool:
        return pool.clone()
    if 4 * k <= n_pool and 4 * n_pool >= pool.numel():
        # draw straight from the pool's positions, rejecting the few outside it
        seen = _draw_distinct(pool.numel(), k, generator, pool).to(pool.device)
        extra = count_true(seen) - k
        if extra > 0:
            idx = flat_nonzero(seen).to(pool.device)
            seen[idx[_random_subset(idx.numel(), extra, generator, pool.device)]] = False
        return seen
    idx = flat_nonzero(pool).to(pool.device)
    picked = torch.zeros_like(pool)
    picked[idx[_random_subset(idx.numel(), k, generator, pool.device)]] = True
    return picked


# --- selections ---------------------------------------------------------------------------

def select_smallest(scores: Tensor, eligible: Tensor, k: int, generator: torch.Generator | None = None,
                    absolute: bool = False) -> Tensor:
    """Bool mask of exactly ``k`` eligible positions with the smallest scores (``|scores|`` if ``absolute``).

    ``scores`` and ``eligible`` are 1-D of equal length; ``k`` must not exceed the
    number of eligible positions. Positions tied at the cut-off are chosen uniformly
    at random with ``generator``. ``absolute`` saves a pass over the whole tensor
    when few positions are eligible.
    """
    chosen = torch.zeros(eligible.shape, dtype=torch.bool, device=eligible.device)
    if k <= 0:
        return chosen
    idx = flat_nonzero(eligible).to(eligible.device)
    if k > idx.numel():
        raise ValueError(f"cannot select {k} of {idx.numel()} eligible positions")
    if k == idx.numel():
        return eligible.clone()
    vals = scores.detach().reshape(-1).index_select(0, idx).float()
    if absolute:
        vals = vals.abs_()
    thr = _threshold(vals, k)
    below = idx[flat_nonzero(vals < thr).to(idx.device)]
    chosen[below] = True
    need = k - below.numel()
    if need > 0:
        ties = idx[flat_nonzero(vals == thr).to(idx.device)]
        if ties.numel() < need:
            raise _diverged()
        if ties.numel() > need:
            ties = ties[_random_subset(ties.numel(), need, generator, idx.device)]
        chosen[ties] = True
    return chosen


def select_largest(scores: Tensor, eligible: Tensor, k: int, generator: torch.Generator | None = None,
                   nonnegative: bool = False) -> Tensor:
    """Bool mask of exactly ``k`` eligible positions with the largest scores (random among ties).

    Grow scores are mostly exact zeros (an embedding row outside the mini-batch has no
    gradient), so positive scores are handled first: if they do not fill ``k``, all of
    them are taken and the rest is a uniform random subset of the zeros, without any
    selection over the zero block. ``nonnegative``: the caller guarantees no score is
    negative (skips a check over the whole tensor).
    """
    if k <= 0:
        return torch.zeros(eligible.shape, dtype=torch.bool, device=eligible.device)
    s = scores.detach()
    positive = (s > 0) & eligible
    n_positive = count_true(positive)
    if n_positive > k:
        return select_smallest(-s, positive, k, generator)
    if n_positive == k:
        return positive
    if not nonnegative and bool((s < 0).any()):  # negative scores: the general path
        return select_smallest(-s, eligible, k, generator)
    return positive | random_pick(eligible & ~positive, k - n_positive, generator)  # NaN counts as zero


def choose_prune(kind: str, weight: Tensor, mask: Tensor, k: int, grad: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Bool mask of the ``k`` active positions to deactivate.

    magnitude: smallest |w|. taylor: smallest |w * g| (first-order estimate of the
    loss change). set: half (rounded down) from the negative weights closest to zero
    and the rest from the non-negative weights closest to zero; when one side has too
    few active weights the other side supplies the remainder.
    """
    if kind == "magnitude":
        return select_smallest(weight, mask, k, generator, absolute=True)
    if kind == "taylor":
        if grad is None:
            raise ValueError("taylor pruning needs a gradient")
        return select_smallest(weight * grad, mask, k, generator, absolute=True)
    if kind == "set":
        nonneg = mask & (weight >= 0)
        neg = mask & (weight < 0)
        n_nonneg, n_neg = count_true(nonneg), count_true(neg)
        k_neg = min(n_neg, k // 2)
        k_pos = min(n_nonneg, k - k_neg)
        k_neg = k - k_pos
        return select_smallest(weight, nonneg, k_pos, generator) | select_smallest(-weight, neg, k_neg, generator)
    raise ValueError(f"unknown prune criterion {kind!r}")


def grow_scores(kind: str, numel: int, grad: Tensor | None = None, signal: Tensor | None = None,
                ever_active: Tensor | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Score per position, larger = grow first; never negative.

    gradient: |g| of the last mini-batch. momentum / accumulated: |signal|, an
    exponential average / a sum of the dense gradients of the last steps, kept by
    the caller (the optimiser's own moments cannot serve: they are zeroed at
    inactive positions every step, so there they would only ever equal |g|). random: a constant, so the
    selection's random tie-breaking makes the choice uniform. random_unseen: 1 for
    never-active positions, 0 otherwise (uniform within each class, so positions
    that were active before are used only when the never-active ones run out).
    A missing gradient/signal counts as zero everywhere.
    """
    if kind == "gradient":
        return grad.abs() if grad is not None else torch.zeros(numel, device=device)
    if kind in ("momentum", "accumulated"):
        source = signal if signal is not None else grad
        return source.abs() if source is not None else torch.zeros(numel, device=device)
    if kind == "random":
        return torch.zeros(numel, device=device)
    if kind == "random_unseen":
        if ever_active is None:
            raise ValueError("random_unseen growth needs the ever-active mask")
        return (~ever_active).float()
    raise ValueError(f"unknown grow criterion {kind!r}")


def prune_and_grow(mask: Tensor, weight: Tensor, k: int, prune: str, grow: str, grad: Tensor | None = None,
                   signal: Tensor | None = None, ever_active: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """One exploration update of a scope (SPEC 1.4); returns the new mask.

    Prunes ``k`` active positions, then grows ``k`` positions among all positions
    inactive after the prune, the just-pruned ones included ("regret"). The
    number of active positions is unchanged. A just-pruned position that is
    regrown is active in both masks, so storage keeps its value and optimiser
    state as if it had never left; positions active only in the new mask are new.
    """
    nnz = count_true(mask)
    k = min(k, nnz)
    if k <= 0 or nnz == mask.numel():
        return mask.clone()
    pruned = choose_prune(prune, weight, mask, k, grad, generator)
    survivors = mask & ~pruned
    scores = grow_scores(grow, mask.numel(), grad, signal, ever_active, mask.device)
    grown = select_largest(scores, ~survivors, k, generator, nonnegative=True)
    return survivors | grown


def prune_to(mask: Tensor, weight: Tensor, target: int, generator: torch.Generator | None = None) -> Tensor:
    """Keep the ``target`` largest-|w| active positions (gradual magnitude pruning); never grows."""
    nnz = count_true(mask)
    if target >= nnz:
        return mask.clone()
    return mask & ~select_smallest(weight, mask, nnz - target, generator, absolute=True)


# --- per-row decisions (scope "per_row": every row of a table keeps its own budget) -------------

def as_rows(t: Tensor) -> Tensor:
    """A parameter-shaped tensor viewed as rows: (shape[0], rest) for 2-D and up, one row for 1-D."""
    return t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)


def rows_select(scores: Tensor, eligible: Tensor, counts: Tensor | int, generator: torch.Generator | None = None,
                largest: bool = False) -> Tensor:
    """Bool mask (R, C) choosing, in every row r, the ``counts[r]`` eligible positions with the
    smallest (``largest``: largest) scores; ties are broken uniformly at random with ``generator``.

    Vectorised over rows with one ``topk`` on an int64 key: the score's float32 bits mapped to
    an integer of the same order, then 24 random bits, so that ties (and only ties) are
    ordered at random.
    """
    n_rows, n_cols = eligible.shape
    counts = torch.as_tensor(counts, device=eligible.device).expand(n_rows)
    if bool((counts > eligible.view(torch.uint8).sum(dim=1, dtype=torch.int32)).any()):  # 2x a bool sum
        raise ValueError("a row has fewer eligible positions than it must select")
    chosen = torch.zeros_like(eligible)
    k_max = int(counts.max()) if n_rows else 0
    if k_max == 0:
        return chosen
    s = scores.detach().float().contiguous() + 0.0  # + 0.0 turns -0.0 into 0.0: one tie, not two values
    # one cheap reduction: a NaN sum means a NaN somewhere (or both infinities); only then look where,
    # since NaN where nothing is eligible is harmless (and would spoil s.min below)
    maybe_nan = bool(torch.isnan(s.sum()))
    if maybe_nan and bool(torch.isnan(s).logical_and_(eligible).any()):
        raise _diverged()
    key = s.view(torch.int32).to(torch.int64)
    negative = bool((key < 0).any()) if maybe_nan else bool(s.min() < 0)
    if negative:  # negative floats: reverse their order
        key = torch.where(key < 0, key ^ 0x7FFFFFFF, key)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(s.shape, generator=generator, device=gen_device).mul_(2**24).to(device=s.device,
                                                                                     dtype=torch.int64)
    fill = torch.iinfo(torch.int64).min if largest else torch.iinfo(torch.int64).max
    key = torch.add(noise, key, alpha=2**24).masked_fill_(~eligible, fill)
    top = key.topk(k_max, dim=1, largest=largest, sorted=True).indices
    take = torch.arange(k_max, device=eligible.device).expand(n_rows, k_max) < counts.unsqueeze(1)
    return chosen.scatter_(1, top, take)


def choose_prune_rows(kind: str, weight: Tensor, mask: Tensor, k: int, grad: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """``choose_prune`` row by row: ``k`` active positions of every row (rows as in ``as_rows``)."""
    if kind == "magnitude":
        return rows_select(weight.abs(), mask, k, generator)
    if kind == "taylor":
        if grad is None:
            raise ValueError("taylor pruning needs a gradient")
        return rows_select((weight * grad).abs(), mask, k, generator)
    if kind == "set":
        nonneg = mask & (weight >= 0)
        neg = mask & (weight < 0)
        k_neg = neg.sum(dim=1).clamp(max=k // 2)
        k_pos = torch.minimum(nonneg.sum(dim=1), k - k_neg)
        k_neg = k - k_pos
        return rows_select(weight, nonneg, k_pos, generator) | rows_select(-weight, neg, k_neg, generator)
    raise ValueError(f"unknown prune criterion {kind!r}")


def prune_and_grow_rows(mask: Tensor, weight: Tensor, k: int, prune: str, grow: str, grad: Tensor | None = None,
                        signal: Tensor | None = None, ever_active: Tensor | None = None,
                        generator: torch.Generator | None = None) -> Tensor:
    """``prune_and_grow`` with every row as its own scope: all tensors are (R, C) and every row r
    prunes ``k`` (an int, or ``k[r]``) of its active positions and grows as many among its
    positions inactive after the prune (regret included), so each row keeps its count exactly."""
    if not bool((torch.as_tensor(k) > 0).any()):
        return mask.clone()
    pruned = choose_prune_rows(prune, weight, mask, k, grad, generator)
    survivors = mask & ~pruned
    scores = grow_scores(grow, mask.numel(), None if grad is None else grad.reshape(-1),
                         None if signal is None else signal.reshape(-1),
                         None if ever_active is None else ever_active.reshape(-1), mask.device)
    grown = rows_select(scores.reshape(mask.shape), ~survivors, k, generator, largest=True)
    return survivors | grown


def prune_rows_to(mask: Tensor, weight: Tensor, target: int, generator: torch.Generator | None = None) -> Tensor:
    """``prune_to`` row by row: every row keeps its ``target`` largest-|w| active positions."""
    excess = (mask.sum(dim=1) - target).clamp(min=0)
    return mask & ~rows_select(weight.abs(), mask, excess, generator)


# --- decisions on positions: what both storages share (no tensor of a scope's full size) ----------
#
# A scope of ``n`` flat positions is described by its active positions (sorted int64) and their
# weights, plus the grow score at the few positions where it can be non-zero (the rows that received
# gradient). Masked and compact storage hand the same vectors to these functions, so they make the
# same decisions with the same generator; the random draws among zero-score positions are made by
# rejection against sorted position lists, never over a dense view of the scope.

ENUM_CHUNK = 1 << 22  # positions listed at a time when a free pool is enumerated


def is_member(sorted_values: Tensor, x: Tensor) -> Tensor:
    """Elementwise ``x in sorted_values`` for a sorted 1-D int64 tensor."""
    if sorted_values.numel() == 0 or x.numel() == 0:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    i = torch.searchsorted(sorted_values, x).clamp_(max=sorted_values.numel() - 1)
    return sorted_values[i] == x


def random_absent(n: int, m: int, blocked, n_blocked: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """``m`` distinct positions (sorted int64) drawn uniformly from ``range(n)`` minus the blocked ones.

    ``blocked(positions) -> bool tensor`` says which positions may not be drawn; ``n_blocked`` is
    how many there are. Few of many: uniform draws with rejection, kept distinct, then a uniform
    subset of the surplus dropped (the set of distinct accepted draws is exchangeable, so the
    result is a uniform m-subset). When the free pool is small or ``m`` a large share of it, the
    pool is listed instead, block by block (at densities above 3/4, or when nearly all of it is drawn).
    """
    pool = n - n_blocked
    if m > pool:
        raise ValueError(f"cannot draw {m} of {pool} free positions")
    if m <= 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if 4 * pool < n or 10 * m > 9 * pool:  # rejection would draw many times m: list the free pool
        free = torch.cat([c[~blocked(c)] for c in
                          (torch.arange(a, min(a + ENUM_CHUNK, n), device=gen_device) for a in range(0, n, ENUM_CHUNK))])
        return free[_random_subset(free.numel(), m, generator, free.device)].sort().values.to(device)
    rate = pool / n
    chosen = torch.empty(0, dtype=torch.int64, device=gen_device)
    while chosen.numel() < m:
        extra = int(1.1 * (m - chosen.numel()) / rate) + 16
        draw = torch.randint(0, n, (extra,), generator=generator, device=gen_device)
        chosen = torch.unique(torch.cat([chosen, draw[~blocked(draw)]]))
    surplus = chosen.numel() - m
    if surplus > 0:
        keep = torch.ones(chosen.numel(), dtype=torch.bool, device=gen_device)
        keep[_random_subset(chosen.numel(), surplus, generator, gen_device)] = False
        chosen = chosen[keep]
    return chosen.to(device)


def grow_positions(n: int, k: int, survivors: Tensor, cand_pos: Tensor | None, cand_score: Tensor | None,
                   generator: torch.Generator | None = None, unseen=None) -> Tensor:
    """``k`` positions to grow (sorted int64) among those not in ``survivors``: the largest positive
    scores first (random among ties at the cut-off), then uniform among the zero-score ones.

    ``cand_pos``/``cand_score``: every position whose score may be positive (sorted, with its
    score); all others score zero. ``unseen``: ``(is_seen(pos), n_seen)`` for random_unseen
    growth, where a never-active position scores 1 and the ever-active ones (survivors among
    them) score 0.
    """
    device = survivors.device
    if k <= 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if unseen is not None:
        is_seen, n_seen = unseen
        n_never = n - n_seen  # never-active positions are never survivors
        never = random_absent(n, min(k, n_never), is_seen, n_seen, generator, device)
        if never.numel() == k:
            return never
        taken = torch.cat([survivors, never]).sort().values
        rest = random_absent(n, k - never.numel(), lambda p: is_member(taken, p) | ~is_seen(p),
                             n_never + survivors.numel(), generator, device)
        return torch.cat([never, rest]).sort().values
    pos = torch.empty(0, dtype=torch.int64, device=device)
    if cand_pos is not None and cand_pos.numel():
        eligible = (cand_score > 0) & ~is_member(survivors, cand_pos)
        pos, score = cand_pos[eligible], cand_score[eligible]
        if pos.numel() >= k:
            if pos.numel() > k:
                pos = pos[select_smallest(-score, torch.ones_like(eligible[eligible]), k, generator)]
            return pos
    taken = torch.cat([survivors, pos]).sort().values
    rest = random_absent(n, k - pos.numel(), lambda p: is_member(taken, p), taken.numel(), generator, device)
    return torch.cat([pos, rest]).sort().values


def prune_and_grow_positions(n: int, active: Tensor, weight: Tensor, k: int, prune: str, grow: str,
                             cand_pos: Tensor | None = None, cand_score: Tensor | None = None,
                             active_grad: Tensor | None = None, unseen=None,
                             generator: torch.Generator | None = None) -> Tensor:
    """One exploration update of a scope of ``n`` positions, on positions (SPEC 1.4).

    ``active``: sorted active positions, ``weight`` their weights (``active_grad`` their gradient,
    for taylor pruning). Prunes ``k`` of them, then grows ``k`` among all positions not active
    after the prune, the just-pruned ones included ("regret"); returns the new sorted active
    positions, as many as before. Grow scores as in ``grow_scores``, given sparsely (see
    ``grow_positions``); ``grow="random"`` passes no candidates.
    """
    nnz = active.numel()
    k = min(k, nnz)
    if k <= 0 or nnz == n:
        return active.clone()
    pruned = choose_prune(prune, weight, torch.ones(nnz, dtype=torch.bool, device=active.device), k,
                          active_grad, generator)
    survivors = active[~pruned]
    grown = grow_positions(n, k, survivors, cand_pos, cand_score, generator, unseen)
    return torch.cat([survivors, grown]).sort().values


ROW_CHUNK_ELEMENTS = 1 << 22  # per-row decisions take rows in slices of about this many positions


def row_chunks(n_rows: int, n_cols: int, elements: int | None = None) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` of about ``elements`` (default ``ROW_CHUNK_ELEMENTS``) positions each,
    at least one row each, covering all rows."""
    step = max(1, (elements or ROW_CHUNK_ELEMENTS) // max(n_cols, 1))
    return [(lo, min(lo + step, n_rows)) for lo in range(0, n_rows, step)]


def _floyd_slots(free: Tensor, k: Tensor, generator: torch.Generator | None) -> Tensor:
    """For every row r, ``k[r]`` distinct slots drawn uniformly from ``range(free[r])`` (Robert
    Floyd's algorithm, vectorised over rows; the loop runs over the draws of a row, at most its
    budget). Returns (R, max k) int64, -1 past a row's ``k[r]``."""
    n_rows = free.numel()
    k_max = int(k.max()) if n_rows else 0
    gen_device = generator.device if generator is not None else torch.device("cpu")
    chosen = torch.full((n_rows, k_max), -1, dtype=torch.int64, device=free.device)
    for i in range(k_max):
        j = free - k + i  # Floyd: pick t in [0, j]; if taken, take j itself
        t = (torch.rand(n_rows, generator=generator, device=gen_device).to(free.device) * (j + 1)).long()
        t = torch.minimum(t, j)
        taken = (chosen[:, :i] == t.unsqueeze(1)).any(dim=1)
        chosen[:, i] = torch.where(i < k, torch.where(taken, j, t), torch.full_like(t, -1))
    return chosen


def _slots_to_columns(occupied: Tensor, n_occupied: Tensor, slots: Tensor) -> Tensor:
    """Column of the ``slot``-th free column of each row, given the row's occupied columns sorted
    in its first ``n_occupied[r]`` entries. The i-th free column is ``i + #{j: occupied[j] - j <= i}``."""
    width = occupied.shape[1]
    j = torch.arange(width, device=occupied.device)
    shifted = torch.where(j < n_occupied.unsqueeze(1), occupied - j, torch.iinfo(torch.int64).max)
    return slots + torch.searchsorted(shifted.contiguous(), slots.clamp(min=0).contiguous(), right=True)


def sorted_rows(cols: Tensor, valid: Tensor, fill: int) -> Tensor:
    """Each row's valid columns sorted to the front, ``fill`` after them."""
    return torch.where(valid, cols, torch.full_like(cols, fill)).sort(dim=1).values


def prune_and_grow_row_slots(n_cols: int, cols: Tensor, counts: Tensor, weight: Tensor, k: Tensor | int,
                             prune: str, cand_rows: Tensor | None = None, cand_block: Tensor | None = None,
                             active_grad: Tensor | None = None,
                             generator: torch.Generator | None = None) -> Tensor:
    """``prune_and_grow`` with every row as its own scope, on positions: row r holds ``counts[r]``
    active columns, sorted at the front of ``cols[r]`` (R, S) with their weights in ``weight``.
    Every row prunes ``k[r]`` of them and grows as many among its columns not active after the prune.

    Grow scores are ``cand_block`` (non-negative, one row per ``cand_rows`` entry) and zero in other
    rows. Rows with a positive score choose by ``rows_select`` on their block; the others draw
    uniformly among their free columns (``_floyd_slots``), so no (R, n_cols) tensor is built.
    Returns the new (R, S) columns, sorted, padding ``n_cols`` past each row's count.
    """
    n_rows, width = cols.shape
    device = cols.device
    k = torch.as_tensor(k, device=device).expand(n_rows).minimum(counts)
    if not bool((k > 0).any()):
        return cols.clone()
    valid = torch.arange(width, device=device).expand(n_rows, width) < counts.unsqueeze(1)
    pruned = choose_prune_rows(prune, weight, valid, k, active_grad, generator)
    survivors = sorted_rows(cols, valid & ~pruned, n_cols)
    n_surv = counts - k
    grown = torch.full((n_rows, int(k.max())), n_cols, dtype=torch.int64, device=device)
    touched = torch.zeros(n_rows, dtype=torch.bool, device=device)
    if cand_rows is not None and cand_rows.numel():
        hot = (cand_block > 0).any(dim=1)
        rows, block = cand_rows[hot], cand_block[hot]
        if rows.numel():
            touched[rows] = True
            occupied = torch.zeros((rows.numel(), n_cols + 1), dtype=torch.bool, device=device)
            occupied.scatter_(1, survivors[rows], True)  # padding lands in the extra last column
            pick = rows_select(block, ~occupied[:, :n_cols], k[rows], generator, largest=True)
            c = sorted_rows(torch.arange(n_cols, device=device).expand_as(pick), pick, n_cols)
            grown[rows] = c[:, :grown.shape[1]]
    cold = flat_nonzero(~touched).to(device)
    if cold.numel():
        free = n_cols - n_surv[cold]
        slots = _floyd_slots(free, k[cold], generator)
        c = _slots_to_columns(survivors[cold], n_surv[cold], slots)
        grown[cold] = torch.where(slots >= 0, c, torch.full_like(c, n_cols))
    merged = torch.cat([survivors, grown], dim=1).sort(dim=1).values
    return merged[:, :width]
