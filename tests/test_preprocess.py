"""Filtering and splitting: invariants checked against plain-Python references on small logs."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dslrec.data.preprocess import dedupe, filter_min_rating, k_core, prepare
from dslrec.data.readers import TEST, TRAIN, VALID, InteractionLog
from dslrec.data.synthetic import synthetic_log
from dslrec.errors import DslrecError


def make_log(users, items, ratings=None, timestamps=None, split=None) -> InteractionLog:
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    arr = lambda a, t: None if a is None else np.asarray(a, t)  # noqa: E731
    return InteractionLog(
        users=users, items=items,
        user_ids=np.array([f"u{i}" for i in range(users.max() + 1)]),
        item_ids=np.array([f"i{i}" for i in range(items.max() + 1)]),
        ratings=arr(ratings, np.float64), timestamps=arr(timestamps, np.float64), split=arr(split, np.int8),
    )


def synth(n_users=120, n_items=80, seed=0, stamps=False) -> InteractionLog:
    users, items = synthetic_log(n_users=n_users, n_items=n_items, mean_items_per_user=8, seed=seed)
    rng = np.random.default_rng(seed)
    ts = rng.integers(0, 50, len(users)) if stamps else None  # few values: many ties
    return make_log(users, items, ratings=rng.integers(1, 6, len(users)), timestamps=ts)


def triples(ds, split):
    """{(raw user, raw item)} of one split of a Dataset."""
    m = ds.split(split).tocoo()
    return set(zip(ds.user_ids[m.row], ds.item_ids[m.col]))


def triples_list(ds, split):
    m = ds.split(split).tocoo()  # CSR order = the order of the side arrays
    return list(zip(ds.user_ids[m.row], ds.item_ids[m.col]))


def per_user(ds, split):
    return np.diff(ds.split(split).indptr)


def held_out_rule(n, ratio, avail):
    """The documented rule, one user at a time."""
    if ratio <= 0 or avail < 2:
        return 0
    return min(max(1, int(np.floor(n * ratio + 0.5))), avail - 1)


# ---------------------------------------------------------------- filters


def test_k_core_matches_reference():
    log = synth(seed=3)
    out = k_core(log, 5)
    # reference: repeat the two filters in plain Python until nothing changes
    edges = list(zip(log.users.tolist(), log.items.tolist()))
    while True:
        du, di = Counter(u for u, _ in edges), Counter(i for _, i in edges)
        kept = [(u, i) for u, i in edges if du[u] >= 5 and di[i] >= 5]
        if len(kept) == len(edges):
            break
        edges = kept
    assert sorted(zip(out.users.tolist(), out.items.tolist())) == sorted(edges)
    assert np.bincount(out.users)[np.unique(out.users)].min() >= 5
    assert np.bincount(out.items)[np.unique(out.items)].min() >= 5
    assert len(k_core(out, 5)) == len(out)  # stable
    assert len(k_core(log, (1, 30))) < len(log)


def test_k_core_too_large_is_an_error():
    with pytest.raises(DslrecError, match="removes every interaction"):
        k_core(synth(), 1000)


def test_min_rating_and_dedupe():
    log = make_log([0, 0, 1, 1, 0], [0, 1, 0, 1, 0], ratings=[5, 2, 4, 3, 1], timestamps=[1, 2, 3, 4, 9])
    assert filter_min_rating(log, 4).ratings.tolist() == [5, 4]
    d = dedupe(log)  # (0, 0) twice: the latest (t=9, rating 1) stays
    assert len(d) == 4 and d.ratings[(d.users == 0) & (d.items == 0)].tolist() == [1]
    with pytest.raises(DslrecError, match="needs ratings"):
        filter_min_rating(make_log([0], [0]), 4)


# ---------------------------------------------------------------- splits


def check_partition(log, ds):
    """Splits are disjoint, cover every (deduplicated) interaction, and every user trains."""
    sets = [triples(ds, s) for s in ("train", "valid", "test")]
    all_pairs = set(zip(log.user_ids[log.users], log.item_ids[log.items]))
    assert set.union(*sets) == all_pairs and sum(map(len, sets)) == len(all_pairs)
    assert (per_user(ds, "train") > 0).all()


def test_ratio_split_counts_follow_the_rule():
    log = synth(seed=1)
    ds = prepare(log, split="ratio", seed=4, valid_ratio=0.1, test_ratio=0.2)
    check_partition(log, ds)
    n = per_user(ds, "train") + per_user(ds, "valid") + per_user(ds, "test")
    want_test = np.array([held_out_rule(k, 0.2, k) for k in n])
    want_valid = np.array([held_out_rule(k, 0.1, k - t) for k, t in zip(n, want_test)])
    assert (per_user(ds, "test") == want_test).all() and (per_user(ds, "valid") == want_valid).all()
    assert ds.protocol == "fixed"
    again = prepare(log, split="ratio", seed=4, valid_ratio=0.1, test_ratio=0.2)
    other = prepare(log, split="ratio", seed=5, valid_ratio=0.1, test_ratio=0.2)
    assert (again.test != ds.test).nnz == 0 and (other.test != ds.test).nnz > 0


@pytest.mark.filterwarnings("ignore:.*duplicate interaction")  # random edges repeat pairs on purpose
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 14)), min_size=30, max_size=120),
       st.integers(0, 3))
def test_ratio_split_partitions_any_log(edges, seed):
    users, items = np.array(edges).T
    log = make_log(users, items)
    try:
        ds = prepare(log, split="ratio", seed=seed)
    except DslrecError as e:  # only allowed when a split really is empty
        assert "split is empty" in str(e)
        return
    check_partition(dedupe(log), ds)


def test_temporal_split_puts_latest_last_and_breaks_ties_by_file_order():
    # user 0: times 5, 1, 5, 3, 2 -> order 1,2,3,5(first),5(second): the later file row is latest
    log = make_log([0] * 5 + [1] * 2, [0, 1, 2, 3, 4, 0, 1], timestamps=[5, 1, 5, 3, 2, 7, 8])
    ds = prepare(log, split="temporal", valid_ratio=0.2, test_ratio=0.2)
    assert triples(ds, "test") == {("u0", "i2"), ("u1", "i1")}
    assert triples(ds, "valid") == {("u0", "i0")}
    log = synth(stamps=True)
    ds = prepare(log, split="temporal")
    t = {s: dict(zip(triples_list(ds, s), ds.timestamps[s])) for s in ("train", "test")}
    last_train = defaultdict(float)
    for (u, _), ts in t["train"].items():
        last_train[u] = max(last_train[u], ts)
    assert all(ts >= last_train[u] for (u, _), ts in t["test"].items())


def test_side_arrays_follow_csr_order():
    log = dedupe(synth(stamps=True))
    ref = {(log.user_ids[u], log.item_ids[i]): (r, t)
           for u, i, r, t in zip(log.users, log.items, log.ratings, log.timestamps)}
    ds = prepare(log, split="ratio", seed=2)
    for s in ("train", "valid", "test"):
        assert list(zip(ds.ratings[s], ds.timestamps[s])) == [ref[p] for p in triples_list(ds, s)]


def test_leave_one_out():
    log = synth(stamps=False, seed=2)
    ts = np.random.default_rng(0).permutation(len(log)).astype(float)  # distinct times
    log.timestamps = ts
    ds = prepare(log, split="loo")
    check_partition(log, ds)
    assert ds.protocol == "loo"
    n = per_user(ds, "train") + per_user(ds, "valid") + per_user(ds, "test")
    assert (per_user(ds, "test") == (n >= 2)).all() and (per_user(ds, "valid") == (n >= 3)).all()
    latest = {}
    for u, i, t in zip(log.users, log.items, log.timestamps):
        if t > latest.get(u, (-1, None))[0]:
            latest[u] = (t, i)
    want = {(log.user_ids[u], log.item_ids[i]) for u, (t, i) in latest.items() if (log.users == u).sum() >= 2}
    assert triples(ds, "test") == want
    # without timestamps the order is random but seeded
    log.timestamps = None
    a, b = prepare(log, split="loo", seed=1), prepare(log, split="loo", seed=1)
    assert (a.test != b.test).nnz == 0 and (prepare(log, split="loo", seed=2).test != a.test).nnz > 0


def test_held_out_users():
    log = synth(n_users=200, seed=4)
    ds = prepare(log, split="users", seed=0, valid_ratio=0.1, test_ratio=0.1, fold_in=0.8)
    check_partition(log, ds)
    assert ds.protocol == "users" and ds.train_users.dtype == bool
    assert ds.train_users.sum() == 200 - 20 - 20
    held = ~ds.train_users
    target = per_user(ds, "valid") + per_user(ds, "test")
    assert (target[ds.train_users] == 0).all()  # training users are never evaluated
    assert ((per_user(ds, "valid") > 0) & (per_user(ds, "test") > 0)).sum() == 0
    n = per_user(ds, "train") + target
    want = np.array([held_out_rule(k, 0.2, k) for k in n])
    assert (target[held] == want[held]).all()
    assert set(ds.trained_users()) == set(np.flatnonzero(ds.train_users))


def test_given_split_carves_valid_from_train():
    users = np.repeat(np.arange(6), [1, 2, 3, 10, 20, 5])
    items = np.concatenate([np.arange(k) for k in [1, 2, 3, 10, 20, 5]])
    split = np.where(items == 0, TEST, TRAIN)  # each user's item 0 is its test item
    split[users == 0] = TRAIN  # user 0's test item is item 7, added below
    log = make_log(np.r_[users, 0], np.r_[items, 7], split=np.r_[split, TEST])
    ds = prepare(log, seed=0, valid_ratio=0.1)
    assert ds.protocol == "fixed"
    assert triples(ds, "test") == {(f"u{u}", "i0") for u in range(1, 6)} | {("u0", "i7")}
    n_train_file = per_user(ds, "train") + per_user(ds, "valid")
    assert per_user(ds, "valid").tolist() == [held_out_rule(k, 0.1, k) for k in n_train_file]
    assert ds.valid.multiply(ds.test).nnz == 0 and ds.valid.multiply(ds.train).nnz == 0
    no_valid = prepare(log, valid_ratio=0.0)
    assert no_valid.valid.nnz == 0 and no_valid.train.nnz == n_train_file.sum()
    file_valid = make_log([0, 0, 1, 1], [0, 1, 0, 1], split=[TRAIN, VALID, TRAIN, TEST])
    ds = prepare(file_valid)
    assert triples(ds, "valid") == {("u0", "i1")} and triples(ds, "test") == {("u1", "i1")}


def test_errors_for_unusable_splits():
    log = make_log(np.arange(10), np.arange(10))  # one interaction per user: nothing to hold out
    with pytest.raises(DslrecError, match="test split is empty"):
        prepare(log, split="ratio")
    orphan = make_log([0, 0, 1], [0, 1, 1], split=[TRAIN, TEST, TEST])  # user 1 only in test: a cold user
    assert prepare(orphan, valid_ratio=0).cold_users("test").tolist() == [1]  # counted, not an error
    with pytest.raises(DslrecError, match="needs timestamps"):
        prepare(synth(), split="temporal")
    with pytest.raises(DslrecError, match="unknown split"):
        prepare(synth(), split="sideways")
    with pytest.raises(DslrecError, match="comes unsplit"):
        prepare(synth(), split="given")
    with pytest.raises(DslrecError, match="valid \\+ test < 1"):
        prepare(synth(), split="ratio", valid_ratio=0.5, test_ratio=0.5)


def test_filters_then_split_compact_the_index():
    log = synth(seed=6)
    ds = prepare(log, split="ratio", k_core=6, min_rating=2)
    pop = ds.item_popularity() + np.asarray((ds.valid + ds.test).sum(axis=0)).ravel()
    act = per_user(ds, "train") + per_user(ds, "valid") + per_user(ds, "test")
    assert pop.min() >= 1 and act.min() >= 6  # no empty rows/columns after compaction
    assert ds.n_users < log.n_users and "6-core" in ds.source and "rating >= 2" in ds.source
