"""Filtering and splitting: ``InteractionLog`` -> ``Dataset`` (seeded, vectorised).

Pipeline of :func:`prepare`: minimum rating -> de-duplication -> (files' own
split) held-out pairs already in training dropped -> k-core -> drop
users/items left without interactions -> split -> checks. Dropping
duplicates or held-out pairs is reported by a one-line warning with the count.

Users with valid/test items but no training items ("cold users", possible
with the files' own split) are kept and counted (``Dataset.cold_users``);
evaluation leaves them out or ranks them by popularity (``cold_users`` setting).

Split methods (``split=``):

``given``     the files' own split (LightGCN ``train.txt``/``test.txt``);
              without a ``valid.txt`` a validation set is carved from the
              training interactions (below). Protocol ``"fixed"``.
``ratio``     per user at random: test and valid get ``test_ratio`` and
              ``valid_ratio`` of the user's interactions. Protocol ``"fixed"``.
``temporal``  as ``ratio`` but the latest interactions go to test, the ones
              before them to valid (ties keep file order). Protocol ``"fixed"``.
``loo``       leave one out: latest interaction = test, the one before =
              valid (by timestamp, else at random). Protocol ``"loo"``.
``users``     strong generalisation: users are split into train / valid /
              test users by ratio; a held-out user's interactions are split
              ``fold_in`` (given, stored in ``train``) / rest (ranked, in
              ``valid`` or ``test``); ``train_users`` marks training users.
              Protocol ``"users"``.

Held-out counts per user with n interactions (the one rule for ``ratio``,
``temporal`` and carving valid): a held-out part with ratio r > 0 gets
``max(1, round(n * r))`` interactions (half rounds up), test first, then
valid, but only while at least one interaction stays in train. So users with
one interaction are train-only, a user with 2 gives 1 to test, with 3 one to
each, and every user keeps at least one training interaction.
"""

from __future__ import annotations


import numpy as np

from dslrec.data.dataset import SPLITS, Dataset, csr_from_pairs
from dslrec.data.readers import TEST, TRAIN, VALID, InteractionLog
from dslrec.errors import DslrecError, warn

METHODS = ("given", "ratio", "temporal", "loo", "users")
_ALIASES = {"fixed": "given", "random": "ratio", "leave-one-out": "loo", "strong": "users"}
PROTOCOL = {"given": "fixed", "ratio": "fixed", "temporal": "fixed", "loo": "loo", "users": "users"}


def split_method(name: str) -> str:
    """Canonical split method name (accepts a few aliases)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise DslrecError(f"unknown split {name!r}; choose one of {', '.join(METHODS)}")
    return key


# ---------------------------------------------------------------- filters


def filter_min_rating(log: InteractionLog, min_rating: float) -> InteractionLog:
    """Keep interactions rated at least ``min_rating`` (implicit feedback from ratings)."""
    if log.ratings is None:
        raise DslrecError(
            f"min_rating={min_rating} needs ratings but {log.source or 'the data'} has none; drop min_rating"
        )
    kept = log.select(log.ratings >= min_rating)
    if len(kept) == 0:
        raise DslrecError(f"min_rating={min_rating} removes every interaction; use a lower threshold")
    return kept


def _pair_keys(log: InteractionLog, with_split: bool = False, where: np.ndarray | None = None) -> np.ndarray:
    """int64 ``user * n_items + item`` per interaction (of the rows ``where`` holds; ``* 3 + split``
    with ``with_split``), built in place: one array of that size, no temporaries."""
    key = (log.users if where is None else log.users[where]).astype(np.int64)
    key *= log.n_items
    key += log.items if where is None else log.items[where]
    if with_split:
        key *= 3
        key += log.split if where is None else log.split[where]
    return key


def _repeats(sorted_keys: np.ndarray) -> bool:
    return len(sorted_keys) > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any())


def dedupe(log: InteractionLog) -> InteractionLog:
    """One interaction per (user, item) and split label; the latest by timestamp wins, else the first."""
    key = _pair_keys(log, with_split=log.split is not None)
    # Fast check first: files are mostly in (user, item) order, and a stable (merge) sort of
    # sorted runs is linear. np.unique below is slow on big arrays (numpy 2.x).
    key.sort(kind="stable")
    if not _repeats(key):
        return log
    key = _pair_keys(log, with_split=log.split is not None)
    n = len(key)
    # Preferred row first: latest timestamp, then earliest position in the file.
    perm = np.lexsort((np.arange(n), -log.timestamps)) if log.timestamps is not None else np.arange(n)
    _, first = np.unique(key[perm], return_index=True)
    if len(first) == n:
        return log
    return log.select(np.sort(perm[first]))


def drop_seen_heldout(log: InteractionLog) -> tuple[InteractionLog, dict[str, int]]:
    """Drop valid rows whose (user, item) is in train, and test rows whose pair is in train or valid.

    Evaluation excludes the user's training (and, for test, validation) items
    from the ranking, so such a held-out interaction could never be a hit and
    would only lower the metrics. Returns the log and the count dropped per split.
    """
    seen = _pair_keys(log, where=log.split == TRAIN)
    seen.sort(kind="stable")  # (np.isin is slow on big arrays in numpy 2.x: sorted keys are searched)
    drop = np.zeros(len(log), dtype=bool)
    counts = {}
    for code, name in ((VALID, "valid"), (TEST, "test")):
        rows = log.split == code
        query = _pair_keys(log, where=rows)
        hit = _in_sorted(seen, query)
        drop[np.flatnonzero(rows)[hit]] = True
        counts[name] = int(hit.sum())
        if code == VALID and len(query):  # test items are ranked without valid ones too
            seen = np.concatenate([seen, query])
            seen.sort(kind="stable")
    return (log.select(~drop) if drop.any() else log), counts


def _in_sorted(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Bool mask: is each ``query`` value among the sorted ``keys``?"""
    if len(keys) == 0:
        return np.zeros(len(query), dtype=bool)
    pos = np.searchsorted(keys, query)
    np.minimum(pos, len(keys) - 1, out=pos)
    return keys[pos] == query


def k_core(log: InteractionLog, k: int | tuple[int, int]) -> InteractionLog:
    """Drop users with fewer than k_user and items with fewer than k_item interactions, until stable."""
    k_user, k_item = (k, k) if np.isscalar(k) else k
    if min(k_user, k_item) < 1:
        raise DslrecError(f"k_core must be at least 1, got {k}")
    keep = np.ones(len(log), dtype=bool)
    while True:
        du = np.bincount(log.users[keep], minlength=log.n_users)
        di = np.bincount(log.items[keep], minlength=log.n_items)
        new = keep & (du[log.users] >= k_user) & (di[log.items] >= k_item)
        if new.sum() == keep.sum():
            break
        keep = new
    if not keep.any():
        raise DslrecError(f"k_core={k} removes every interaction; use a smaller k")
    return log.select(keep)


def compact(log: InteractionLog) -> InteractionLog:
    """Re-index so that every user and item has at least one interaction."""
    used_u = np.bincount(log.users, minlength=log.n_users) > 0
    used_i = np.bincount(log.items, minlength=log.n_items) > 0
    if used_u.all() and used_i.all():
        return log
    new_u = np.cumsum(used_u) - 1
    new_i = np.cumsum(used_i) - 1
    out = log.select(slice(None))
    out.users, out.items = new_u[log.users], new_i[log.items]
    out.user_ids, out.item_ids = log.user_ids[used_u], log.item_ids[used_i]
    return out


# ---------------------------------------------------------------- split helpers


def _rank_from_end(users: np.ndarray, n_users: int, key: np.ndarray | None = None,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each interaction: its rank within its user counted from the end (0 = last) when
    ordered by ``key`` (ties keep file order: later in the file = later), or in a random order
    from ``rng`` when ``key`` is None; and the interaction count of each user (per user, so
    that per-user quantities are computed once per user and gathered)."""
    n = len(users)
    if key is None:
        within = rng.permutation(n)
    else:
        within = np.empty(n, dtype=np.int64)
        within[np.argsort(key, kind="stable")] = np.arange(n)
    # One unique int64 key per interaction, so any sort gives the same order; the stable one
    # (timsort) is several times faster when the users come grouped, as files list them.
    # (Built in place, a block at a time, and positions in int32 when they fit: big logs stay
    # within memory.)
    unique = within
    for start in range(0, n, 1 << 20):
        unique[start : start + (1 << 20)] += users[start : start + (1 << 20)].astype(np.int64) * n
    del within
    order = np.argsort(unique, kind="stable")
    del unique
    small = np.int32 if n < 2**31 else np.int64
    counts = np.bincount(users, minlength=n_users).astype(small)
    offsets = np.cumsum(counts, dtype=small) - counts
    pos = np.empty(n, dtype=small)
    pos[order] = np.arange(n, dtype=small)  # sorted position of each interaction
    del order
    pos -= offsets[users]  # its position within its user
    np.subtract(counts[users] - 1, pos, out=pos)
    return pos, counts


def _take(n: np.ndarray, avail: np.ndarray, ratio: float) -> np.ndarray:
    """Held-out count: max(1, round-half-up(n * ratio)) while one interaction stays in train."""
    if ratio <= 0:
        return np.zeros_like(n)
    want = np.maximum(1, np.floor(n * ratio + 0.5).astype(np.int64))
    return np.where(avail >= 2, np.minimum(want, avail - 1), 0)


def _check_ratios(valid_ratio: float, test_ratio: float) -> None:
    if not (0 <= valid_ratio < 1 and 0 < test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise DslrecError(
            f"valid_ratio={valid_ratio}, test_ratio={test_ratio}: need 0 <= valid, 0 < test "
            "and valid + test < 1"
        )


def _holdout_labels(rank: np.ndarray, users: np.ndarray, n_test: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Labels from each interaction's rank from the end and its user's (per user) held-out counts."""
    label = np.full(len(rank), TRAIN, dtype=np.int8)
    label[rank < (n_test + n_valid)[users]] = VALID
    label[rank < n_test[users]] = TEST
    return label


def carve_valid(log: InteractionLog, valid_ratio: float, seed: int) -> np.ndarray:
    """Split labels with a random per-user ``valid_ratio`` of the given training rows moved to valid."""
    label = log.split.copy()
    train = label == TRAIN
    rng = np.random.default_rng(seed)
    users = log.users[train]
    rank, n = _rank_from_end(users, log.n_users, rng=rng)
    label[train] = np.where(rank < _take(n, n, valid_ratio)[users], VALID, TRAIN)
    return label


def ratio_labels(log: InteractionLog, valid_ratio: float, test_ratio: float, seed: int,
                 temporal: bool = False) -> np.ndarray:
    """Per-user random (or, with ``temporal``, latest-last) ratio split labels."""
    if temporal and log.timestamps is None:
        raise DslrecError(
            f"split='temporal' needs timestamps but {log.source or 'the data'} has none; use split='ratio'"
        )
    key = log.timestamps if temporal else None
    rank, n = _rank_from_end(log.users, log.n_users, key, np.random.default_rng(seed))
    n_test = _take(n, n, test_ratio)
    return _holdout_labels(rank, log.users, n_test, _take(n, n - n_test, valid_ratio))


def loo_labels(log: InteractionLog, seed: int) -> np.ndarray:
    """Leave one out: latest = test (users with >= 2), the one before = valid (users with >= 3)."""
    rank, n = _rank_from_end(log.users, log.n_users, log.timestamps, np.random.default_rng(seed))
    return _holdout_labels(rank, log.users, (n >= 2).astype(np.int64), (n >= 3).astype(np.int64))


def user_split_labels(log: InteractionLog, valid_ratio: float, test_ratio: float, fold_in: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Strong generalisation labels and the ``train_users`` mask."""
    if not 0 < fold_in < 1:
        raise DslrecError(f"fold_in={fold_in}: the fold-in share of a held-out user's items must be in (0, 1)")
    rng = np.random.default_rng(seed)
    users = rng.permutation(log.n_users)  # every user has interactions after compact()
    n_test = max(1, int(np.floor(log.n_users * test_ratio + 0.5)))
    n_valid = int(np.floor(log.n_users * valid_ratio + 0.5)) if valid_ratio > 0 else 0
    n_valid = max(n_valid, 1) if valid_ratio > 0 else 0
    if n_test + n_valid >= log.n_users:
        raise DslrecError(
            f"split='users' with {log.n_users} users leaves no training users; lower valid_ratio/test_ratio"
        )
    role = np.full(log.n_users, TRAIN, dtype=np.int8)
    role[users[:n_test]] = TEST
    role[users[n_test : n_test + n_valid]] = VALID
    rank, n = _rank_from_end(log.users, log.n_users, rng=rng)
    target = rank < _take(n, n, 1 - fold_in)[log.users]
    r = role[log.users]
    label = np.where(target, r, TRAIN).astype(np.int8)
    return label, role == TRAIN


# ---------------------------------------------------------------- assembly


def assemble(log: InteractionLog, label: np.ndarray, protocol: str, name: str,
             train_users: np.ndarray | None = None, source: str = "") -> Dataset:
    """Build the ``Dataset``; side arrays follow each split's CSR data order (user, then item)."""
    shape = (log.n_users, log.n_items)
    mats, ratings, times = {}, {}, {}
    for code, split in zip((TRAIN, VALID, TEST), SPLITS):
        rows = label == code
        u, i = log.users[rows], log.items[rows]
        mats[split] = csr_from_pairs(u, i, shape)
        if mats[split].nnz != len(u):  # dedupe() makes pairs unique within a split
            raise DslrecError(f"dataset {name!r}: duplicate interactions in split {split}; this is a bug")
        if log.ratings is None and log.timestamps is None:
            continue
        idx = np.flatnonzero(rows)
        order = idx[np.argsort(u * np.int64(log.n_items) + i)]  # CSR data order; keys are unique
        if log.ratings is not None:
            ratings[split] = log.ratings[order]
        if log.timestamps is not None:
            times[split] = log.timestamps[order]
    return Dataset(
        name=name, user_ids=log.user_ids, item_ids=log.item_ids, protocol=protocol,
        train_users=train_users, ratings=ratings, timestamps=times, source=source or log.source, **mats,
    )


def check_evaluable(ds: Dataset, need_valid: bool) -> None:
    """Errors for splits that make training or evaluation impossible."""
    def empty(split: str) -> DslrecError:
        fix = ("use valid_ratio=0 or a larger valid_ratio" if split == "valid"
               else "users need at least 2 interactions to hold one out: use fewer filters or another split")
        total = ds.train.nnz + ds.valid.nnz + ds.test.nnz
        return DslrecError(
            f"dataset {ds.name!r}: the {split} split is empty ({ds.n_users:,} users, {total:,} interactions); {fix}"
        )

    for split in ("train", "test"):
        if ds.split(split).nnz == 0:
            raise empty(split)
    # users with valid/test items but no training ones are allowed: see Dataset.cold_users
    if need_valid and ds.valid.nnz == 0:
        raise empty("valid")


def prepare(
    log: InteractionLog,
    *,
    name: str = "dataset",
    split: str | None = None,
    seed: int = 0,
    min_rating: float | None = None,
    k_core: int | tuple[int, int] | None = None,
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    fold_in: float = 0.8,
) -> Dataset:
    """Filter and split a log into a ``Dataset``.

    ``split=None`` keeps the files' own split when there is one, else splits
    by ``ratio``. ``valid_ratio=0`` is allowed with ``given``/``ratio``/
    ``temporal`` (no validation set); with a positive ratio an empty
    validation split is an error, as is an empty train or test split.
    """
    method = split_method(split) if split else ("given" if log.split is not None else "ratio")
    if method == "given" and log.split is None:
        raise DslrecError(
            f"{log.source or 'the data'} comes unsplit; choose split='ratio', 'temporal', 'loo' or 'users'"
        )
    if method != "given":
        log = log.select(slice(None))
        log.split = None  # re-splitting pools the files' splits
    if min_rating is not None:
        log = filter_min_rating(log, min_rating)
    n_read = len(log)
    log = dedupe(log)
    if len(log) < n_read:
        same = "user, item and split file" if log.split is not None else "user and item"
        kept = "the latest by timestamp" if log.timestamps is not None else "the first"
        warn(f"{n_read - len(log):,} duplicate interaction(s) (same {same}) dropped from "
                      f"{log.source or name}; {kept} of each is kept")
    if method == "given":
        log, dropped = drop_seen_heldout(log)
        for split_name, n in dropped.items():
            if n:
                where = "training" if split_name == "valid" else "training or validation"
                warn(f"{n:,} {split_name} interaction(s) of {log.source or name} repeat a (user, item) "
                              f"pair of the {where} data; they are dropped from the {split_name} split (items "
                              "a user trained on are never ranked, so they could never be hits)")
    if k_core:
        log = k_core_filter(log, k_core)
    log = compact(log)

    train_users = None
    if method == "given":
        if not 0 <= valid_ratio < 1:
            raise DslrecError(f"valid_ratio={valid_ratio} must be in [0, 1)")
        if (log.split == VALID).any():
            label, note = log.split, "valid from the files"
        else:
            label = carve_valid(log, valid_ratio, seed)
            note = (f"valid carved from the training file: {valid_ratio * 100:g}% of each user's training "
                    f"interactions, at least 1 for users with >= 2 (seed {seed})" if valid_ratio > 0
                    else "no valid split")
    elif method in ("ratio", "temporal"):
        _check_ratios(valid_ratio, test_ratio)
        label = ratio_labels(log, valid_ratio, test_ratio, seed, temporal=method == "temporal")
        how = "latest last" if method == "temporal" else f"random, seed {seed}"
        note = f"{method} split per user ({1 - valid_ratio - test_ratio:g}/{valid_ratio:g}/{test_ratio:g}, {how})"
    elif method == "loo":
        label = loo_labels(log, seed)
        note = "leave one out " + ("by timestamp" if log.timestamps is not None else f"(random order, seed {seed})")
    else:
        _check_ratios(valid_ratio, test_ratio)
        label, train_users = user_split_labels(log, valid_ratio, test_ratio, fold_in, seed)
        note = (f"held-out users ({1 - valid_ratio - test_ratio:g}/{valid_ratio:g}/{test_ratio:g} of users, "
                f"fold-in {fold_in:g}, seed {seed})")
    filters = []
    if min_rating is not None:
        filters.append(f"rating >= {min_rating:g}")
    if k_core:
        filters.append(f"{k_core}-core")
    source = "; ".join([log.source, *filters, note])
    ds = assemble(log, label, PROTOCOL[method], name, train_users, source)
    check_evaluable(ds, need_valid=valid_ratio > 0 or method == "loo")
    return ds


k_core_filter = k_core  # prepare() has a parameter called k_core
