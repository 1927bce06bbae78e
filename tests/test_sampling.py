"""Negative sampling and training batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dslrec.data.dataset import Dataset, csr_from_pairs
from dslrec.data.sampling import (
    batches,
    csr_rows,
    dense_rows,
    epoch_batches,
    eval_negatives,
    pairwise_epoch,
    pointwise_epoch,
)
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError


@pytest.fixture(scope="module")
def data() -> Dataset:
    # dense enough (~15% of items per user) that rejection really happens
    return synthetic_dataset(n_users=120, n_items=60, seed=3)


@pytest.fixture(scope="module")
def held_out() -> Dataset:
    """Protocol "users": only the first half of the users are trained on."""
    d = synthetic_dataset(n_users=80, n_items=50, seed=4)
    mask = np.zeros(d.n_users, dtype=bool)
    mask[:40] = True
    return Dataset(d.name, d.user_ids, d.item_ids, d.train, d.valid, d.test, "users", mask)


def positives(m: sp.csr_matrix) -> set[tuple[int, int]]:
    u, i = m.nonzero()
    return set(zip(u.tolist(), i.tolist()))


def is_positive(m, users, items) -> np.ndarray:
    return np.asarray(m[users, items]).ravel() > 0


def test_pairwise_covers_each_interaction_once_with_valid_negatives(data):
    out = pairwise_epoch(data, 0)
    assert len(out["users"]) == data.train.nnz
    assert Counter(zip(out["users"].tolist(), out["pos"].tolist())) == Counter(positives(data.train))
    assert not is_positive(data.train, out["users"], out["neg"]).any()
    assert out["neg"].min() >= 0 and out["neg"].max() < data.n_items
    # shuffled, not in CSR order
    assert not np.all(np.diff(out["users"]) >= 0)


def test_pairwise_deterministic_per_seed(data):
    a, b, c = pairwise_epoch(data, 7), pairwise_epoch(data, 7), pairwise_epoch(data, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["neg"], c["neg"])


def test_per_user_sampler(data):
    out = pairwise_epoch(data, 1, per_user=True)
    assert len(out["users"]) == data.train.nnz
    assert is_positive(data.train, out["users"], out["pos"]).all()
    assert not is_positive(data.train, out["users"], out["neg"]).any()
    # users drawn uniformly, not in proportion to their activity
    counts = np.bincount(out["users"], minlength=data.n_users)
    activity = np.diff(data.train.indptr)
    assert (counts > 0).all()
    assert abs(np.corrcoef(counts, activity)[0, 1]) < 0.3
    assert counts.std() < 0.5 * activity.std()
    assert not np.all(np.diff(out["users"]) >= 0)  # shuffled


def test_pointwise_labels(data):
    out = pointwise_epoch(data, 2, n_neg=3)
    n = data.train.nnz
    assert len(out["users"]) == 4 * n and out["labels"].dtype == np.float32
    pos = out["labels"] == 1
    assert pos.sum() == n and (out["labels"][~pos] == 0).all()
    got = Counter(zip(out["users"][pos].tolist(), out["items"][pos].tolist()))
    assert got == Counter(positives(data.train))
    assert not is_positive(data.train, out["users"][~pos], out["items"][~pos]).any()
    assert np.array_equal(np.bincount(out["users"][~pos]), 3 * np.diff(data.train.indptr))


def test_only_trained_users_are_sampled(held_out):
    trained = set(held_out.trained_users().tolist())
    assert trained == set(range(40))
    for kind in ("pairwise", "pointwise", "rows"):
        for batch in epoch_batches(held_out, kind, 16, 0):
            assert set(batch["users"].tolist()) <= trained


def test_epoch_batches_shapes_and_types(data):
    b = epoch_batches(data, "pairwise", 100, 0)
    got = list(b)
    assert len(got) == len(b) == -(-data.train.nnz // 100)
    assert set(got[0]) == {"users", "pos", "neg"}
    assert all(t.dtype == torch.int64 for t in got[0].values())
    assert sum(len(x["users"]) for x in got) == data.train.nnz
    p = next(iter(epoch_batches(data, "pointwise", 64, 0, n_neg=2)))
    assert set(p) == {"users", "items", "labels"} and p["labels"].dtype == torch.float32
    with pytest.raises(DslrecError, match="sampling kind"):
        epoch_batches(data, "listwise", 10, 0)


def test_epoch_batches_deterministic(data):
    for kind in ("pairwise", "pointwise", "rows"):
        a = list(epoch_batches(data, kind, 50, 5))
        b = list(epoch_batches(data, kind, 50, 5))
        assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_row_batches_are_the_training_rows(held_out):
    seen = []
    dense = held_out.train.toarray()
    for batch in epoch_batches(held_out, "rows", 16, 0):
        assert batch["rows"].dtype == torch.float32
        assert np.array_equal(batch["rows"].numpy(), dense[batch["users"].numpy()])
        seen.extend(batch["users"].tolist())
    assert sorted(seen) == held_out.trained_users().tolist()


def test_batches_shuffle_and_last_partial():
    arrays = {"a": np.arange(10), "b": np.arange(10, dtype=np.float64)}
    got = list(batches(arrays, 4, rng=1))
    assert [len(x["a"]) for x in got] == [4, 4, 2]
    a = torch.cat([x["a"] for x in got])
    assert sorted(a.tolist()) == list(range(10)) and a.tolist() != list(range(10))
    b = torch.cat([x["b"] for x in got])
    assert b.dtype == torch.float32 and torch.equal(b, a.float())  # rows stay aligned


def test_user_with_every_item_is_an_error():
    m = csr_from_pairs([0, 0, 0, 1], [0, 1, 2, 0], (2, 3))
    empty = csr_from_pairs([], [], (2, 3))
    d = Dataset("full", np.array(["a", "b"]), np.array(["x", "y", "z"]), m, empty, empty)
    with pytest.raises(DslrecError, match="user a has 3 of 3"):
        pairwise_epoch(d, 0)


def test_eval_negatives_distinct_and_not_positive(data):
    users = np.arange(0, data.n_users, 3)
    neg = eval_negatives(data, users, 20, 0)
    allpos = (data.train + data.valid + data.test).tocsr()
    assert neg.shape == (len(users), 20)
    assert all(len(set(r)) == 20 for r in neg.tolist())
    assert not is_positive(allpos, np.repeat(users, 20), neg.ravel()).any()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    m=st.integers(1, 8),
    density=st.floats(0, 1),
    seed=st.integers(0, 1000),
    pick=st.lists(st.integers(0, 7), max_size=10),
)
def test_csr_rows_matches_scipy(n, m, density, seed, pick):
    mat = sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float32)
    users = np.array([p % n for p in pick], dtype=np.int64)
    rows, cols, offsets = csr_rows(mat, users)
    dense = mat.toarray()[users]  # sp.random values are > 0, so nonzero == stored
    r, c = np.nonzero(dense)
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(zip(r.tolist(), c.tolist()))
    assert np.array_equal(mat.data[offsets], dense[rows, cols])
    assert np.array_equal(dense_rows(mat, users).numpy(), dense)
