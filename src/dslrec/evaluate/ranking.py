"""Full-ranking evaluation: every item a user has not trained on is ranked.

For each user with at least one item in the target split, the scorer's scores
over all items are computed, the user's training items (and validation items
when the target is ``"test"``) are set to ``-inf`` so they rank last and can
never count, and the top ``max(ks)`` items are compared with the target items.

Ranking rule (the tests' reference uses the same): items are ordered by score,
highest first; equal scores are ordered by lower item index first. NaN and
-inf model scores count as the lowest finite score, so excluded items always
come after every candidate and are never hits.

``torch.topk`` picks an arbitrary subset among equal values, so the ranking
is made deterministic this way: take the top ``K + 1`` values (from a cheap
chunk-maxima pass, see ``top_values``); if the ``K``-th and ``K + 1``-th
differ, the top-``K`` *set* is unique and only its order needs fixing (sort
the K indices, then a stable descending sort by value). Rows with a tie across
the cut, a NaN or a -inf among those values (rare with real-valued scores) are
rescored and redone exactly: everything above the cut value, plus the
lowest-indexed items equal to it until K are taken.

Dot-product scorers (``DotScorer``: MF, LightGCN) on a CPU that multiplies
bfloat16 natively are ranked by a cheaper route with the same answer up to
float32's last bit (``ReducedItems``): a bfloat16 product picks candidates,
their float32 scores rank them, and a bound on the rounding error proves per
user that nothing left out could enter the top K; the few users it cannot
vouch for are ranked from float32 scores as above.

Cold users (items in the target split but none in training, see
``Dataset.cold_users``) are left out (``cold_users="drop"``, the default) or
ranked by training item popularity instead of the model's scores
(``cold_users="popular"``; same exclusions and tie rule), so that their
hits count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dslrec.data.dataset import COLD_USERS, Dataset
from dslrec.data.sampling import csr_rows
from dslrec.errors import DslrecError
from dslrec.evaluate.metrics import METRICS, check_ks, check_metrics, metric_key, rank_metrics
from dslrec.models.base import DotScorer

Scorer = Callable[[torch.Tensor], torch.Tensor]
CHUNK = 64  # items per chunk in the top-k candidate pass (see ``top_values``)
MIN_BLOCK = 8192  # items per block when whole rows do not fit the score budget (``plan_blocks``)


@dataclass
class UserMetrics:
    """Per-user results of one evaluation (rows aligned with ``users``).

    ``values[key]`` are float64 arrays (e.g. ``values["recall@20"]``);
    ``topk`` (n, max K) are the ranked items (``-1`` past the number of
    items), ``hits`` whether each is a target item; ``n_target`` the user's
    number of items in the target split.
    """

    users: np.ndarray
    n_target: np.ndarray
    topk: np.ndarray
    hits: np.ndarray
    values: dict[str, np.ndarray]

    def summary(self) -> dict[str, float]:
        """Each metric averaged over the evaluated users."""
        return {k: float(v.mean()) for k, v in self.values.items()}


def join_user_metrics(parts: Sequence[UserMetrics]) -> UserMetrics:
    """Per-user results of consecutive shares of the users as one (a distributed evaluation's ranks,
    in rank order): its ``summary()`` is that of evaluating all of them at once."""
    first = parts[0]
    return UserMetrics(
        users=np.concatenate([p.users for p in parts]),
        n_target=np.concatenate([p.n_target for p in parts]),
        topk=np.concatenate([p.topk for p in parts]),
        hits=np.concatenate([p.hits for p in parts]),
        values={k: np.concatenate([p.values[k] for p in parts]) for k in first.values},
    )


CPU_BLOCK_BYTES_PER_THREAD = 2**23  # float32 scores per batch and thread on CPU ...
CPU_BLOCK_BYTES_MAX = 2**25  # ... up to glibc's largest heap block: bigger ones are mapped afresh each time
GPU_BLOCK_BYTES = 2**31
MIN_BATCH_USERS = 16  # a huge catalogue still scores this many users per pass over its item table


def default_batch_size(device: str | torch.device, n_items: int) -> int:
    """Users per evaluation batch: a (B, n_items) float32 block of 8 MiB per thread on CPU (at most
    32 MiB), 2 GiB on GPUs; at least ``MIN_BATCH_USERS`` (a 500,000-item catalogue: 16 users, 31 MB).

    On CPU a block this size stays in cache between the matrix product that writes it and the top-k
    that reads it, and is reused from the heap batch after batch. Gowalla MF, one thread: 51 users a
    batch (8 MiB) evaluate in 2.5 s, 204 (32 MiB) in 3.9 s; two threads: 102 users (16 MiB) in 1.3 s,
    51 or 204 in 1.7 s. Blocks above 32 MiB are mapped afresh for every batch, and their page faults
    took a third of the CPU time at 256 MiB. Fewer than 16 users a batch would read a huge item table
    once per handful of users.
    """
    if torch.device(device).type == "cpu":
        budget = min(CPU_BLOCK_BYTES_PER_THREAD * torch.get_num_threads(), CPU_BLOCK_BYTES_MAX)
    else:
        budget = GPU_BLOCK_BYTES
    return max(MIN_BATCH_USERS, budget // (4 * max(n_items, 1)))


def plan_blocks(n_users: int, n_items: int, budget_bytes: int, max_block: int | None = None,
                min_block: int | None = None) -> tuple[int, int]:
    """(users per batch, items per block) so that a batch x block of float32 scores fits ``budget_bytes``.

    Blocks of ``max_block`` items (default: the whole catalogue) when at least 256 users fit
    beside one (few big matrix products); else blocks of at least ``min_block`` items with as
    many users as fit. Never less than one user and one item.
    """
    floats = max(1, budget_bytes // 4)
    min_block = min_block or MIN_BLOCK
    n_users, n_items = max(1, n_users), max(1, n_items)
    block = min(n_items, max_block or n_items)
    if floats // block < min(n_users, 256):
        block = min(block, max(min_block, floats // min(n_users, 4096)))
    return max(1, min(n_users, floats // block)), block


def exclusion_splits(dataset: Dataset, split: str) -> list:
    """Splits whose items are removed from the ranking when evaluating ``split``."""
    if split == "valid":
        return [dataset.train]
    if split == "test":
        return [dataset.train, dataset.valid]
    raise DslrecError(f"cannot evaluate on split {split!r}; choose valid or test")


def eval_users(dataset: Dataset, split: str, users: np.ndarray | None = None,
               cold_users: str = "drop") -> np.ndarray:
    """Users (of ``users``, default all) with at least one item in ``split``; with
    ``cold_users="drop"`` only those that also have training items."""
    if cold_users not in COLD_USERS:
        raise DslrecError(f"unknown cold_users {cold_users!r}; choose one of {', '.join(COLD_USERS)}")
    n_target = np.diff(dataset.split(split).indptr)
    wanted = n_target > 0
    if cold_users == "drop":
        wanted &= np.diff(dataset.train.indptr) > 0
    if users is None:
        return np.flatnonzero(wanted)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if users.size and (users.min() < 0 or users.max() >= len(n_target)):
        raise DslrecError(
            f"user indices must lie in 0..{len(n_target) - 1} for dataset {dataset.name!r}; "
            f"got {int(users.min())}..{int(users.max())}"
        )
    return users[wanted[users]]


def sample_users(dataset: Dataset, n: int, seed: int, cold_users: str = "drop",
                 splits: Sequence[str] = ("valid", "test")) -> tuple[np.ndarray | None, int]:
    """(a seeded uniform sample of ``n`` users, sorted; the number it was drawn from).

    The pool is the users evaluated on any of ``splits`` (``eval_users``), so one sample serves
    validation and test alike: each split then ranks the sampled users that have items in it.
    ``None`` (everyone) when ``n`` is at least the pool. Deterministic given ``seed``.
    """
    if n < 1:
        raise DslrecError(f"the number of users to sample must be >= 1, got {n}")
    pool = np.zeros(dataset.n_users, dtype=bool)
    for split in splits:
        pool[eval_users(dataset, split, cold_users=cold_users)] = True
    candidates = np.flatnonzero(pool)
    if n >= len(candidates):
        return None, len(candidates)
    picked = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    return np.sort(picked), len(candidates)


def popular_for_cold(scorer: Scorer, dataset: Dataset, device) -> Scorer:
    """``scorer`` with the rows of users without training items replaced by item popularity."""
    cold_np = np.diff(dataset.train.indptr) == 0
    if not cold_np.any():
        return scorer
    cold = torch.from_numpy(cold_np).to(device)
    popularity = torch.from_numpy(dataset.item_popularity().astype(np.float32)).to(device)

    def score(users: torch.Tensor) -> torch.Tensor:
        scores = scorer(users)
        rows = cold[users.to(cold.device)]
        if not bool(rows.any()):
            return scores
        scores = scores if scores.is_floating_point() else scores.float()
        return torch.where(rows.to(scores.device)[:, None], popularity.to(scores)[None, :], scores)

    return score


def own_scores(scores: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The scorer's output, checked, as a contiguous float tensor safe to write into."""
    if tuple(scores.shape) != shape:
        raise ValueError(f"scorer returned shape {tuple(scores.shape)}, expected {shape}")
    if not scores.is_floating_point():
        return scores.float()
    if scores.requires_grad or scores._is_view() or not scores.is_contiguous():
        # never write into a model's cached tensor or an expanded view
        return scores.detach().clone(memory_format=torch.contiguous_format)
    return scores


def excluded_pairs(splits: Sequence, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, item) of the users' items in ``splits``: the pairs never ranked."""
    parts = [csr_rows(m, users)[:2] for m in splits]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def top_values(
    scores: torch.Tensor, k: int, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values per row (exact, descending) and items holding them.

    Indices are exact for every value strictly above the ``k``-th largest
    value; among values equal to it the choice is arbitrary (the caller
    repairs such rows). NaN counts as larger than everything, as in
    ``torch.topk``.

    Fast path for wide rows: the maxima of chunks of ``chunk`` consecutive
    items are one cheap pass; the k-th largest chunk maximum m is a lower
    bound of the k-th largest value (k chunks each hold a value >= m), so
    every value above m lies in the k best chunks or in the leftover tail
    (< chunk items, always kept), and ``topk`` only runs over those.
    """
    b, n = scores.shape
    chunk = chunk or CHUNK
    n_chunks = n // chunk
    if n_chunks < 4 * k:  # too few chunks to pay off
        return torch.topk(scores, k, dim=1, largest=True, sorted=True)
    n_main = n_chunks * chunk
    blocks = scores[:, :n_main].view(b, n_chunks, chunk)
    best = torch.topk(blocks.amax(dim=2), k, dim=1, largest=True, sorted=False).indices
    cand = torch.gather(blocks, 1, best[:, :, None].expand(b, k, chunk)).view(b, k * chunk)
    if n_main < n:
        cand = torch.cat([cand, scores[:, n_main:]], dim=1)
    vals, pos = torch.topk(cand, k, dim=1, largest=True, sorted=True)
    in_block = pos < k * chunk
    block_item = torch.gather(best, 1, (pos // chunk).clamp_(max=k - 1)) * chunk + pos % chunk
    return vals, torch.where(in_block, block_item, pos - k * chunk + n_main)


def exact_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` per row with ties at the cut resolved by lower item index (NaN-free input)."""
    cut = torch.topk(scores, k, dim=1, largest=True, sorted=True).values[:, k - 1 : k]
    above = scores > cut
    need = k - above.sum(dim=1, keepdim=True)
    equal = scores == cut
    take = above | (equal & (torch.cumsum(equal, dim=1) <= need))
    # nonzero is row-major: exactly k columns per row, in ascending item index
    idx = torch.nonzero(take)[:, 1].view(-1, k)
    return torch.gather(scores, 1, idx), idx


def order_top(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row's top items by value descending, then item index ascending."""
    idx, perm = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(idx, 1, perm)


def topk_ordered(
    scores: torch.Tensor, k: int, rescore: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, items) of the top ``k`` per row: score descending, then item index ascending.

    ``scores`` may hold NaN and -inf (excluded items are -inf). Rows whose top
    ``k + 1`` values show a tie across the cut, a NaN or a -inf are redone
    exactly from ``rescore(rows)``, which must give those rows with NaN / -inf
    model scores replaced by the lowest finite value and excluded items at
    -inf, so excluded items rank after every candidate (``evaluate`` calls the
    scorer again). Default: a copy of the rows with NaN made the lowest finite
    value (a model's -inf then ties with excluded items).
    """
    n = scores.shape[1]
    k = min(k, n)
    kq = min(k + 1, n)
    vals, idx = top_values(scores, kq)
    bad = torch.isnan(vals).any(dim=1) | (vals[:, -1] == float("-inf"))
    if kq > k:
        bad |= vals[:, k] == vals[:, k - 1]
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    rows = torch.nonzero(bad).flatten()
    if rows.numel():
        if rescore is None:
            info = torch.finfo(scores.dtype)
            sub = scores[rows].nan_to_num_(nan=info.min, posinf=float("inf"), neginf=float("-inf"))
        else:
            sub = rescore(rows)
        vals[rows], idx[rows] = exact_top(sub, k)
    return order_top(vals, idx)


def merge_top(vals: torch.Tensor, items: torch.Tensor, more_vals: torch.Tensor, more_items: torch.Tensor,
              k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of two ordered top lists whose second holds only higher item indices.

    Both are ordered by score descending, then index ascending; a stable sort by
    score of their concatenation keeps that order (at equal scores the first
    list's, lower-indexed, items come first), so no index sort is needed.
    """
    v = torch.cat([vals, more_vals], dim=1)
    i = torch.cat([items, more_items], dim=1)
    v, perm = torch.sort(v, dim=1, descending=True, stable=True)
    return v[:, :k].contiguous(), torch.gather(i, 1, perm[:, :k])


def _exclude_block(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> None:
    if len(rows):
        dev = scores.device
        idx = (torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev))
        scores.index_put_(idx, torch.tensor(float("-inf"), device=dev, dtype=scores.dtype))


def rank_batch(
    block_scores: Callable[[torch.Tensor | None, int, int], torch.Tensor],
    n_users: int,
    n_items: int,
    k: int,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    block: int | None = None,
    batch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, items) of the top ``k`` items of ``n_users`` users: the ranking kernel shared
    by evaluation and serving.

    ``block_scores(rows, start, stop)`` gives the raw model scores of items
    ``start..stop-1`` for all the users (``rows`` None: ``(n_users, stop - start)``)
    or for some of them (a LongTensor of user positions). The catalogue is scored
    in blocks of ``block`` items (default: all at once), ``batch`` users at a time
    (default: all); each block's top ``k`` is merged into a running top list, so
    memory follows the (batch x block) score block, not the catalogue. Blocks are
    the outer loop: a scorer that builds a block of its item table (a compact
    table made dense) can build it once for every batch (ask for the same
    ``start, stop`` again and again).
    ``excluded``: (user position, item) pairs set to -inf, never ranked (no dense mask).
    Order: score descending, then item index ascending; NaN / -inf model scores rank
    as the lowest finite score, after every candidate and before excluded items
    (which come back with value -inf; callers treat those as no item).
    """
    k = min(k, n_items)
    block = min(block or n_items, n_items)
    batch = min(batch or n_users, n_users)
    rows = cols = np.zeros(0, dtype=np.int64)
    if excluded is not None:
        order = np.lexsort((excluded[1], excluded[0]))  # by user, then item
        rows, cols = excluded[0][order], excluded[1][order]
    spans = []  # per batch of users: its rows (None: everyone) and its excluded pairs, by item
    for lo in range(0, n_users, batch):
        hi = min(lo + batch, n_users)
        a, b = np.searchsorted(rows, [lo, hi])
        by_item = np.argsort(cols[a:b], kind="stable")
        picked = None if (lo, hi) == (0, n_users) else torch.arange(lo, hi)
        spans.append((picked, hi - lo, rows[a:b][by_item] - lo, cols[a:b][by_item]))
    tops: list = [None] * len(spans)
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        for j, (picked, size, b_rows, b_cols) in enumerate(spans):
            lo, hi = np.searchsorted(b_cols, [start, stop])
            r, c = b_rows[lo:hi], b_cols[lo:hi] - start
            scores = own_scores(block_scores(picked, start, stop), (size, stop - start))
            _exclude_block(scores, r, c)

            def rescore(bad: torch.Tensor, picked=picked, start=start, stop=stop, r=r, c=c) -> torch.Tensor:
                # the rare rows with ties at the cut, NaN or -inf: scored again, cleaned, excluded
                which = bad if picked is None else picked[bad.cpu()]
                sub = own_scores(block_scores(which, start, stop), (len(bad), stop - start))
                info = torch.finfo(sub.dtype)
                sub = sub.nan_to_num_(nan=info.min, posinf=float("inf"), neginf=info.min)
                where = np.full(size, -1, dtype=np.int64)
                where[bad.cpu().numpy()] = np.arange(len(bad))
                keep = where[r] >= 0
                _exclude_block(sub, where[r[keep]], c[keep])
                return sub

            v, i = topk_ordered(scores, min(k, stop - start), rescore)
            del scores  # freed before the next block is scored: one block of scores alive, not two
            i = i + start
            tops[j] = (v, i) if tops[j] is None else merge_top(*tops[j], v, i, k)
    if len(tops) == 1:
        return tops[0]
    return torch.cat([t[0] for t in tops]), torch.cat([t[1] for t in tops])


REDUCED_GROUP = 32  # items per group in the candidate pass (see ``ReducedItems``)
OUTPUT_ROUNDING = 2**-7  # relative error of the bfloat16 product's output (2**-8 rounded to nearest;
# 2**-7 also covers truncation)
REDUCED_TABLE_BYTES_MAX = 2**25  # largest bfloat16 item copy made for it: beside the float32 table it
# raises the evaluation's peak by half that table, and by the whole table again where the scorer holds it
# transposed (LightGCN's), since rows of items are gathered (a 500,000-item catalogue at dim 64 stays on
# the float32 route)
TINY = 2**-126  # float32's smallest normal: below it products lose relative precision or are flushed to 0


def candidates_for(k: int) -> int:
    """Groups (and at least that many candidates) the bfloat16 pass keeps per user for a top ``k``.
    The margin above ``k`` is what lets rows pass the exactness check: of the 29,858 test users of an
    untrained Gowalla MF at K = 20, 2 were redone in float32 with ``2k + 8`` (228 with ``2k``)."""
    return 2 * k + 8


@functools.cache
def native_bfloat16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (x86 ``avx512_bf16`` or ``amx_bf16``):
    there a bfloat16 product is several times faster than a float32 one (about 4x on the AMD EPYC
    that measured ``bench_eval.py``); elsewhere it is emulated and slower. Read from ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def dot_table_fits(scorer, device) -> bool:
    """A ``DotScorer`` whose item table is float32 on the CPU, evaluated on the CPU: what the pass
    and its bound are made for (a float64 or bfloat16 model ranks by its own precision)."""
    return (isinstance(scorer, DotScorer) and torch.device(device).type == "cpu"
            and scorer.item_t.dtype == torch.float32 and scorer.item_t.device.type == "cpu")


class ReducedItems:
    """An item table in bfloat16 for a candidate pass whose answer is checked exactly.

    For a batch of user vectors ``u`` the pass scores every item in bfloat16 (``approx``),
    takes the ``C`` groups of items with the largest maxima (``C = candidates_for(k)``),
    ``tau`` the smallest of those maxima, keeps the items of those groups at or above
    ``tau`` (at least ``C``) and scores them again in float32 (``vecdot``). Every other
    item has ``approx <= tau``. The maxima are taken on the scores' bits as integers, which
    order non-negative values only, so a row passes only with ``tau >= 0``; a row whose scores
    could overflow a float32 sum (``|u| max|v| >= 2**126``) does not pass either. An item
    left out then scores at most ``bound`` in float32:

    - before its output was rounded to bfloat16 (relative error at most ``2**-8``, counted
      as ``OUTPUT_ROUNDING = 2**-7``, which also covers truncation), the product was at
      most ``tau / (1 - r)``;
    - rounding ``u`` and ``v`` to bfloat16 (``2**-8`` each) and the float32 sums of both
      products (``d * 2**-24`` each) move a score by at most
      ``(2**-7 + 2**-16 + 2 * d * 2**-24) * sum(|u_d| |v_d|)``, and
      ``sum(|u_d| |v_d|) <= |u| max|v|`` (Cauchy-Schwarz);
    - below float32's smallest normal (``TINY``) relative errors no longer hold, and
      the product may flush values to zero: at most ``TINY`` per input, product and
      sum, ``4 d TINY (1 + |u| + max|v|)`` in all.

    When the ``k``-th best candidate's float32 score is above ``bound``, every item left
    out scores below it, so the top ``k`` (ties at the cut included) lies among the
    candidates and is exact. Rows that fail the check, or show a NaN or an infinity, are
    marked, and the caller ranks them again from float32 scores. "Exact" means: among
    float32 scores computed by ``vecdot``, one pair at a time. The float32 route's matrix
    product can round a score differently in the last bit (as two batch sizes can), so
    two items whose scores differ by one unit in the last place may swap.

    Groups are strided (group ``g`` holds items ``g, g + G, g + 2G, ...``) so that their
    maxima are an element-wise maximum over ``REDUCED_GROUP`` rows of the score block (fewer
    items a group on catalogues under ``2 * C * REDUCED_GROUP`` items).
    """

    def __init__(self, item_t: torch.Tensor, k: int):
        items = item_t.detach().T  # (n, d)
        n, dim = items.shape
        # rows of items are gathered for the float32 scores: a transposed table (LightGCN's) is copied
        self.n_items, self.items = n, items.float().contiguous()
        # REDUCED_GROUP items a group, fewer on a small catalogue: at least 2 groups per candidate
        self.group = max(1, min(REDUCED_GROUP, n // (2 * candidates_for(k))))
        self.groups = -(-n // self.group)
        padded = torch.zeros(self.groups * self.group, dim, dtype=torch.bfloat16, device=items.device)
        padded[:n] = items
        # entries beyond bfloat16's range (|x| >= 2**128 * (1 - 2**-9)) would become infinite: such a
        # table (or a NaN in it) takes the float32 route (``usable``)
        self.usable = bool(torch.isfinite(padded).all())
        self.reduced_t = padded.T
        self.block = None
        self.max_norm = float(torch.linalg.vector_norm(self.items.double(), dim=1).max()) if n else 0.0
        self.dim = dim
        # inputs rounded to bfloat16, then float32 sums in both products (the output's rounding is
        # bounded separately, relative to the score)
        self.err_per_norm = (2**-7 + 2**-16 + 2 * dim * 2**-24) * (1 + 2**-10)

    @staticmethod
    def suits(scorer, n_users: int, k: int, device) -> bool:
        """Whether the pass pays for ``scorer`` here: a ``DotScorer`` with a float32 table on a CPU with
        native bfloat16 products, a catalogue of at least 8 groups per candidate, a bfloat16 copy
        under ``REDUCED_TABLE_BYTES_MAX``, and more users than it takes to make that copy."""
        if not dot_table_fits(scorer, device):
            return False
        dim, n = scorer.item_t.shape
        return (native_bfloat16_matmul() and n >= 8 * REDUCED_GROUP * candidates_for(k)
                and 2 * dim * n <= REDUCED_TABLE_BYTES_MAX and n_users >= 64)

    def reduced_scores(self, u: torch.Tensor, excluded: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
        """(B, groups * group) bfloat16 scores of bfloat16 user vectors ``u``; padding and excluded
        pairs -inf."""
        b, width = len(u), self.group * self.groups
        if self.block is None or len(self.block) < b:  # reused batch after batch: no page faults
            self.block = torch.empty(b, width, dtype=torch.bfloat16, device=u.device)
        approx = torch.mm(u, self.reduced_t, out=self.block[:b])
        approx[:, self.n_items:] = float("-inf")
        rows, cols = excluded
        if len(rows):
            approx.view(-1).index_fill_(0, torch.from_numpy(rows * width + cols), float("-inf"))
        return approx

    def top(self, u: torch.Tensor, k: int, excluded: tuple[np.ndarray, np.ndarray]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, items, bad) of the top ``k`` of each row of user vectors ``u`` (B, d), excluded
        (row, item) pairs left out; ``values`` and ``items`` are exact for rows where ``bad`` is
        False, in the ranking order of ``topk_ordered``."""
        b, g, group = len(u), self.groups, self.group
        u = u.float()
        reduced_u = u.to(torch.bfloat16)
        grouped = self.reduced_scores(reduced_u, excluded).view(b, group, g)
        # group maxima as integers: a bfloat16's bits read as an int16 keep the order of non-negative
        # values, and every negative value (sign bit set) reads below every non-negative one; an
        # integer maximum is 1.8x as fast as a bfloat16 one. So the keys are true maxima wherever a
        # group holds a value >= +0, and rows whose n_cand-th key is negative are left to float32.
        keys = grouped.view(torch.int16).amax(dim=1).numpy().astype(np.int32)  # (B, G); numpy partitions
        # int32 4x as fast as int16
        n_cand = candidates_for(k)
        # the n_cand best groups (ties at the n_cand-th maximum broken arbitrarily) and that maximum:
        # every item outside them, or inside but below tau, has approx <= tau
        chosen = np.sort(np.argpartition(keys, g - n_cand, axis=1)[:, g - n_cand:], axis=1)
        tau_key = np.take_along_axis(keys, chosen, axis=1).min(axis=1)
        tau = torch.from_numpy(tau_key.astype(np.int16)).view(torch.bfloat16).float().numpy()
        norms = torch.linalg.vector_norm(u.double(), dim=1).numpy()
        bad = (
            (tau_key < 0) | ~np.isfinite(tau)  # scores below zero at the cut (or tau infinite, NaN)
            | ~torch.isfinite(reduced_u).all(dim=1).numpy()  # a user vector beyond bfloat16's range
            # sums that could overflow (inf - inf = NaN, which no key shows): the scores are at most
            # |u| max|v| in size
            | ~(norms * self.max_norm < 2.0**126)
        )
        chosen_t = torch.from_numpy(chosen)
        members = torch.gather(grouped, 2, chosen_t[:, None, :].expand(b, group, n_cand))  # (B, group, C)
        tau_t = torch.from_numpy(np.where(bad, np.inf, tau).astype(np.float32))
        keep = (members.float() >= tau_t[:, None, None]).numpy()
        row, j, c = np.nonzero(keep)  # row-major: grouped by row, then by j, then by c
        item = chosen[row, c] + g * j  # so (chosen sorted, chosen < g) ascending within each row
        exact = torch.linalg.vecdot(u.index_select(0, torch.from_numpy(row)),
                                    self.items.index_select(0, torch.from_numpy(item))).numpy()
        # each row's candidates side by side in item order (padding: -inf), then a stable sort by
        # score descending: the ranking rule
        count = np.bincount(row, minlength=b)
        col = np.arange(len(row)) - (np.cumsum(count) - count)[row]
        vals = np.full((b, max(int(count.max()), k)), -np.inf, dtype=np.float32)
        items = np.full(vals.shape, np.iinfo(np.int64).max)
        vals[row, col], items[row, col] = exact, item
        order = np.argsort(-vals, axis=1, kind="stable")
        vals, items = np.take_along_axis(vals, order, 1)[:, :k], np.take_along_axis(items, order, 1)[:, :k]
        # an item left out scores at most ``bound`` (see the class); a row with fewer than k
        # candidates (only a row already bad) has -inf at k and fails too
        tau64 = np.where(bad, 0.0, tau.astype(np.float64))  # bad rows fail below whatever their bound
        before_rounding = tau64 / (1 - OUTPUT_ROUNDING)  # tau >= 0 in every row that can pass
        # relative errors hold down to float32's smallest normal; below it values are flushed or lose
        # bits, at most TINY per input, product and sum (absolute), in either product
        flushed = 4 * self.dim * TINY * (1 + norms + self.max_norm)
        # the last term covers the float64 rounding of this sum itself
        bound = before_rounding + self.err_per_norm * self.max_norm * norms + flushed + np.abs(tau64) * 2**-20
        not_finite = np.zeros(b, dtype=bool)
        not_finite[row[~np.isfinite(exact)]] = True
        bad |= not_finite | ~(vals[:, k - 1].astype(np.float64) > bound)
        items[bad] = 0  # placeholders (the padding's): the caller ranks bad rows again in float32
        return torch.from_numpy(vals), torch.from_numpy(items), torch.from_numpy(bad)


CANDIDATE_BLOCK_BYTES_PER_THREAD = 2**24  # bfloat16 scores per batch and thread in the candidate pass
CANDIDATE_BLOCK_BYTES_MAX = 2**26


def candidate_batch_size(n_items: int) -> int:
    """Users per batch of the candidate pass: a (B, n_items) bfloat16 block of 16 MiB per thread (at
    most 64 MiB), at least ``MIN_BATCH_USERS``; made once and reused, so no size is mapped afresh.
    Its product is cheap, and the work per batch outside it (group maxima, candidates) has a fixed
    part: on Gowalla, one thread, 204 users a batch beat 102 by 10%, two threads 408 beat 204 by 8%."""
    budget = min(CANDIDATE_BLOCK_BYTES_PER_THREAD * torch.get_num_threads(), CANDIDATE_BLOCK_BYTES_MAX)
    return max(MIN_BATCH_USERS, budget // (2 * max(n_items, 1)))


def uses_candidate_pass(scorer, n_users: int, n_items: int, k: int, device, wanted: bool | None = None
                        ) -> bool:
    """Whether ``rank_users`` ranks through ``ReducedItems``: where it pays (``wanted`` None,
    ``ReducedItems.suits``) or where asked (``wanted`` True) and possible (a ``DotScorer`` on CPU,
    at least two items per candidate). Its batches are then ``candidate_batch_size`` users."""
    if wanted is None:
        return ReducedItems.suits(scorer, n_users, k, device)
    return bool(wanted and dot_table_fits(scorer, device) and n_items >= 2 * candidates_for(k))


METRIC_USERS = 2**16  # users whose hits and metrics are computed at once, after ranking


def _row_counts(m, rows: np.ndarray) -> np.ndarray:
    """Stored entries of each of ``rows`` (not a count for every row: the users evaluated may be a few
    of millions)."""
    return m.indptr[rows + 1] - m.indptr[rows]


def target_hits(target, users: np.ndarray, items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bool (B, K): is ``items[b, j]`` a target item of ``users[b]`` (and a real candidate)?"""
    n_items = target.shape[1]
    rows, cols, _ = csr_rows(target, users)
    device = items.device
    keys = torch.from_numpy(rows * n_items + cols).to(device)  # sorted: CSR order
    if keys.numel() == 0:
        return torch.zeros_like(items, dtype=torch.bool)
    q = torch.arange(len(users), device=device)[:, None] * n_items + items
    pos = torch.searchsorted(keys, q.reshape(-1)).clamp_(max=keys.numel() - 1)
    return (keys[pos] == q.reshape(-1)).view_as(items) & valid


def rank_users(
    scorer: Scorer,
    dataset: Dataset,
    split: str = "valid",
    ks: Sequence[int] = (20,),
    metrics: Sequence[str] = METRICS,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    users: np.ndarray | None = None,
    cold_users: str = "drop",
    candidate_pass: bool | None = None,
) -> UserMetrics:
    """Per-user full-ranking metrics; see ``evaluate``."""
    batch_size_given = batch_size
    batch_size = batch_size or default_batch_size(device, dataset.n_items)
    if batch_size < 1:
        raise DslrecError(f"evaluation batch size must be >= 1, got {batch_size}")
    ks = check_ks(ks)
    metrics = check_metrics(metrics)
    splits = exclusion_splits(dataset, split)
    target = dataset.split(split)
    users = eval_users(dataset, split, users, cold_users)
    if len(users) == 0:
        n_cold = len(dataset.cold_users(split))
        if n_cold:
            raise DslrecError(
                f"dataset {dataset.name!r}: every user with items in the {split} split ({n_cold:,}) has no "
                "training items, so there is nothing to evaluate; use cold_users='popular' (--cold-users popular)"
            )
        raise DslrecError(
            f"dataset {dataset.name!r}: no user has items in the {split} split, so there is "
            "nothing to evaluate; use a split with held-out items (e.g. a non-zero valid ratio)"
        )
    if cold_users == "popular":
        scorer = popular_for_cold(scorer, dataset, device)
    n_items = dataset.n_items
    max_k = max(ks)
    candidate_pass = uses_candidate_pass(scorer, len(users), n_items, max_k, device, candidate_pass)
    reduced = ReducedItems(scorer.item_t, max_k) if candidate_pass else None
    if reduced is not None and not reduced.usable:
        reduced = None
    float32_batch = batch_size
    if reduced is not None and batch_size_given is None:
        batch_size = candidate_batch_size(n_items)
    # results go into arrays made up front: per-batch pieces kept on the heap between the score blocks
    # would split the freed block, and the next one would take new memory (tens of MB on big catalogues)
    topk = np.full((len(users), max_k), -1, dtype=np.int64)
    valid = np.zeros((len(users), max_k), dtype=bool)
    width = min(max_k, n_items)  # the ranked lists' length: fewer than K when there are fewer items

    def rank_float32(positions: np.ndarray) -> None:
        """Rank users[positions] from the scorer's float32 scores, into topk and valid."""
        u = users[positions]
        users_t = torch.from_numpy(u).to(device)

        def block_scores(rows, start, stop):  # the whole catalogue at once
            return scorer(users_t if rows is None else users_t[rows.to(users_t.device)])

        vals, items = rank_batch(block_scores, len(u), n_items, width, excluded_pairs(splits, u))
        topk[positions, :width] = items.cpu().numpy()
        valid[positions, :width] = (vals > float("-inf")).cpu().numpy()

    redo = []  # positions the bfloat16 pass could not vouch for, ranked in float32 at the end
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            stop = min(start + batch_size, len(users))
            if reduced is None:
                rank_float32(np.arange(start, stop))
                continue
            u = users[start:stop]
            user_vectors = scorer.user_vectors(torch.from_numpy(u).to(device))
            vals, items, bad = reduced.top(user_vectors, width, excluded_pairs(splits, u))
            topk[start:stop, :width] = items.numpy()
            valid[start:stop, :width] = True  # a row that passed has k candidates, none excluded (bad rows:
            # placeholders, overwritten below)
            redo.append(start + np.flatnonzero(bad.numpy()))
        redo = np.concatenate(redo) if redo else np.zeros(0, dtype=np.int64)
        for start in range(0, len(redo), float32_batch):
            rank_float32(redo[start : start + float32_batch])
    # metrics once for every user (in slices, so that a million users' queries stay small)
    hit = np.zeros((len(users), max_k), dtype=bool)
    values = {metric_key(m, k): np.zeros(len(users)) for k in ks for m in metrics}
    for start in range(0, len(users), METRIC_USERS):
        stop = min(start + METRIC_USERS, len(users))
        u = users[start:stop]
        hits = target_hits(target, u, torch.from_numpy(topk[start:stop]), torch.from_numpy(valid[start:stop]))
        n_target = torch.from_numpy(_row_counts(target, u))
        for key, v in rank_metrics(hits, n_target, ks, metrics).items():
            values[key][start:stop] = v.numpy()
        hit[start:stop] = hits.numpy()
    return UserMetrics(users=users, n_target=_row_counts(target, users), topk=topk, hits=hit, values=values)


def evaluate(
    scorer: Scorer,
    dataset: Dataset,
    split: str = "valid",
    ks: Sequence[int] = (20,),
    metrics: Sequence[str] = METRICS,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    users: np.ndarray | None = None,
    per_user: bool = False,
    cold_users: str = "drop",
    candidate_pass: bool | None = None,
):
    """Full-ranking metrics on ``split`` ("valid" or "test"), averaged over users.

    ``scorer(users LongTensor) -> (B, n_items)`` scores. Users evaluated: those
    (of ``users``, default all) with at least one item in ``split``; others are
    skipped. Returns ``{"recall@20": ..., "ndcg@20": ..., ...}`` (one key per
    metric and K; definitions in ``dslrec.evaluate.metrics``). With
    ``per_user=True`` returns ``(summary, UserMetrics)`` for group breakdowns.
    ``batch_size`` users are scored at a time (default: ``default_batch_size``, as many
    as fit 8 MiB of scores per thread on CPU, at most 32 MiB; 2 GiB on accelerators;
    ``candidate_batch_size`` for the candidate pass: 16 MiB of bfloat16 scores per thread).
    Works for every protocol: under ``"users"`` the held-out users' fold-in
    rows live in ``train`` and are excluded like any training items.
    ``cold_users``: users with items in ``split`` but none in training are
    left out (``"drop"``) or ranked by training item popularity (``"popular"``).
    ``candidate_pass``: rank a ``DotScorer``'s users by a bfloat16 pass whose answer is
    checked against float32 scores (``ReducedItems``; rows the check cannot vouch for are
    ranked again in float32). The top lists are those of float32 scores either way, up to
    the last bit: the candidates' scores are float32 dot products one pair at a time, the
    float32 route's a matrix product, and the two can round differently (as two batch
    sizes can), swapping items whose scores differ by one unit in the last place.
    Default: where it pays (``ReducedItems.suits``); True: whenever the scorer is a
    ``DotScorer`` with a float32 table on the CPU.
    """
    result = rank_users(scorer, dataset, split, ks, metrics, batch_size, device, users, cold_users, candidate_pass)
    summary = result.summary()
    return (summary, result) if per_user else summary
