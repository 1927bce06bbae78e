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
from dslrec.data import sampling
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


# --- lazy epochs: chunks, cut epochs and the sampling properties they keep -----------------------


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 300 examples, so that the epochs of the small fixtures span several."""
    import dslrec.data.sampling as sampling

    monkeypatch.setattr(sampling, "CHUNK_ROWS", 300)
    return 300


def counted_negatives(monkeypatch) -> list[int]:
    """Spy on the sampler's work: the number of negatives drawn, per call."""
    import dslrec.data.sampling as sampling

    calls: list[int] = []
    real = sampling.sample_negatives

    def spy(positives, users, n_items, rng):
        calls.append(int(users.size))
        return real(positives, users, n_items, rng)

    monkeypatch.setattr(sampling, "sample_negatives", spy)
    return calls


@pytest.mark.parametrize("kind,kw", [("pairwise", {}), ("pairwise", {"per_user": True}),
                                     ("pointwise", {"n_neg": 2})])
def test_cut_epoch_samples_only_what_it_trains_on(data, kind, kw, small_chunks, monkeypatch):
    calls = counted_negatives(monkeypatch)
    full = list(epoch_batches(data, kind, 50, 9, **kw))
    n_full = sum(calls)
    assert n_full == (2 if kind == "pointwise" else 1) * data.train.nnz  # the full epoch: every negative once
    calls.clear()
    cut = epoch_batches(data, kind, 50, 9, max_batches=4, **kw)
    assert len(cut) == 4
    got = list(cut)
    assert len(got) == 4
    # one chunk (6 batches of 50) was sampled, not the epoch
    assert len(calls) == 1 and sum(calls) <= 300 < n_full
    # the cut epoch is the start of the full one (chunks do not depend on the cut)
    for a, b in zip(got, full):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a cut epoch whose steps end in the third chunk sampled three chunks
    calls.clear()
    assert len(list(epoch_batches(data, kind, 50, 9, max_batches=13, **kw))) == 13
    assert len(calls) == 3


def test_iterating_is_lazy_and_repeatable(data, small_chunks, monkeypatch):
    calls = counted_negatives(monkeypatch)
    b = epoch_batches(data, "pairwise", 50, 3)
    assert calls == []  # nothing is sampled before iterating
    first = next(iter(b))
    assert len(calls) == 1
    again = next(iter(b))
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_chunked_epochs_keep_the_sampling_properties(data, small_chunks):
    # each training pair once per epoch, no positive as a negative, shuffled across chunks
    for seed in range(3):
        batches_ = list(epoch_batches(data, "pairwise", 64, seed))
        users, pos, neg = (torch.cat([b[k] for b in batches_]).numpy().copy() for k in ("users", "pos", "neg"))
        assert Counter(zip(users.tolist(), pos.tolist())) == Counter(positives(data.train))
        assert not is_positive(data.train, users, neg).any()
        # the first chunk is not a block of low users (the shuffle spans the whole epoch)
        assert users[:300].max() > 0.9 * data.n_users and users[-300:].min() < 0.1 * data.n_users
        assert not np.all(np.diff(users[:300]) >= 0)  # shuffled within the chunk too


def test_chunked_negatives_are_uniform_over_the_non_positives(data, small_chunks):
    """Chi-square test of the negatives' items against their expected counts: a negative of user
    u is uniform over the n_items - deg(u) items u has not trained on."""
    from scipy.stats import chisquare

    dense = data.train.toarray() > 0
    observed = np.zeros(data.n_items)
    expected = np.zeros(data.n_items)
    for seed in range(20):
        out = pairwise_epoch(data, seed)
        observed += np.bincount(out["neg"], minlength=data.n_items)
        per_user = np.bincount(out["users"], minlength=data.n_users)
        p = (~dense) / (~dense).sum(axis=1, keepdims=True)
        expected += per_user @ p
    assert chisquare(observed, expected).pvalue > 1e-3
    # and per-user counts of the per_user sampler stay uniform
    counts = sum(np.bincount(pairwise_epoch(data, s, per_user=True)["users"], minlength=data.n_users)
                 for s in range(20))
    trained = data.trained_users()
    assert chisquare(counts[trained]).pvalue > 1e-3


def test_pointwise_chunks_keep_n_neg_per_positive(data, small_chunks):
    out = pointwise_epoch(data, 4, n_neg=3)
    pos = out["labels"] == 1
    assert Counter(zip(out["users"][pos].tolist(), out["items"][pos].tolist())) == Counter(positives(data.train))
    assert np.array_equal(np.bincount(out["users"][~pos], minlength=data.n_users), 3 * np.diff(data.train.indptr))
    assert not is_positive(data.train, out["users"][~pos], out["items"][~pos]).any()
    assert 0.15 < pos[:300].mean() < 0.35  # positives spread over the epoch (1 in 4)


def test_held_out_users_are_never_sampled_in_chunks(held_out, small_chunks):
    trained = held_out.trained_users()
    for kind, kw in (("pairwise", {}), ("pairwise", {"per_user": True}), ("pointwise", {"n_neg": 1})):
        users = torch.cat([b["users"] for b in epoch_batches(held_out, kind, 40, 0, **kw)]).numpy()
        assert set(users.tolist()) <= set(trained.tolist())
    out = pairwise_epoch(held_out, 0)
    assert len(out["users"]) == held_out.train[trained].nnz


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 39)), max_size=80),
       st.lists(st.tuples(st.integers(0, 11), st.integers(0, 39)), min_size=1, max_size=50), st.booleans())
def test_positives_finds_exactly_the_stored_pairs(n_rows, n_cols, stored, queries, shuffle_rows):
    """The per-row binary search agrees with a set of the stored pairs, rows of any length (empty,
    one entry, full), unsorted indices included."""
    stored = {(r % n_rows, c % n_cols) for r, c in stored}
    rows = np.array([r for r, _ in stored], dtype=np.int64)
    cols = np.array([c for _, c in stored], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(stored), np.float32), (rows, cols)), shape=(n_rows, n_cols))
    if shuffle_rows and m.nnz > 1:  # indices out of order within rows
        m.indices = m.indices.copy()
        for r in range(n_rows):
            a, b = m.indptr[r], m.indptr[r + 1]
            m.indices[a:b] = m.indices[a:b][::-1]
        m.has_sorted_indices = False
    users = np.array([r % n_rows for r, _ in queries], dtype=np.int64)
    items = np.array([c % n_cols for _, c in queries], dtype=np.int64)
    got = sampling.Positives(m).contains(users, items)
    assert got.tolist() == [(u, i) in stored for u, i in zip(users.tolist(), items.tolist())]


# --- data-parallel shares -------------------------------------------------------------------------

def _pairs(batches_: list[dict], key: str) -> list[tuple[int, int]]:
    return sorted(zip(np.concatenate([b["users"].numpy() for b in batches_]).tolist(),
                      np.concatenate([b[key].numpy() for b in batches_]).tolist()))


@pytest.mark.parametrize("world,batch", [(2, 50), (3, 64), (3, 2)])
@pytest.mark.parametrize("kind,kw", [("pairwise", {}), ("pairwise", {"per_user": True}),
                                     ("pointwise", {"n_neg": 2}), ("rows", {})])
def test_each_rank_samples_its_own_share_of_every_global_batch(data, kind, kw, world, batch, small_chunks,
                                                               monkeypatch):
    full = list(epoch_batches(data, kind, batch, 7, **kw))  # one process: the global batches' sizes
    calls = counted_negatives(monkeypatch)
    ranks = [epoch_batches(data, kind, batch, 7, rank=r, world=world, **kw) for r in range(world)]
    got = [list(b) for b in ranks]
    weights = np.stack([b.weights() for b in ranks])
    for j, whole in enumerate(full):  # every rank steps through every global batch
        n = len(whole["users"])
        sizes = [len(g[j]["users"]) for g in got]
        trained = [s if w > 0 else 0 for s, w in zip(sizes, weights[:, j])]
        assert sum(trained) == n and max(trained) - min(trained) <= 1  # disjoint shares, one at most apart
        assert all(s == 1 for s, w in zip(sizes, weights[:, j]) if w == 0)  # a rank left out trains one row
        assert weights[:, j].sum() == pytest.approx(world)  # the weighted shares average to the batch's mean
        np.testing.assert_allclose(weights[:, j], [world * t / n for t in trained])
    if kind != "rows":  # the ranks drew the negatives of their own rows only: the epoch's once in all,
        # plus at most one for each stand-in row of a rank left out of a batch
        epoch, stand_ins = (2 if kind == "pointwise" else 1) * data.train.nnz, int((weights == 0).sum())
        assert epoch <= sum(calls) <= epoch + stand_ins
        assert kind == "pointwise" or sum(calls) == epoch + stand_ins
    kept = [[b for b, w in zip(g, weights[r]) if w > 0] for r, g in enumerate(got)]  # without stand-in rows
    every = [b for g in kept for b in g]
    if kind == "rows":  # every trained user once
        users = np.concatenate([b["users"].numpy() for b in every])
        assert sorted(users.tolist()) == sorted(data.trained_users().tolist())
    elif kind == "pairwise" and not kw:  # every training pair once, each negative not a positive
        train = data.train.tocoo()
        assert _pairs(every, "pos") == sorted(zip(train.row.tolist(), train.col.tolist()))
        for b in every:
            assert not data.train[b["users"].numpy().copy(), b["neg"].numpy().copy()].any()
    elif kind == "pointwise":  # every pair once as a positive, n_neg negatives per pair
        pos = [{k: v[b["labels"] == 1] for k, v in b.items()} for b in every]
        train = data.train.tocoo()
        assert _pairs(pos, "items") == sorted(zip(train.row.tolist(), train.col.tolist()))
        assert sum(int((b["labels"] == 0).sum()) for b in every) == 2 * data.train.nnz
    # the ranks' draws differ (their own generators), and the same rank draws the same again
    again = list(epoch_batches(data, kind, batch, 7, rank=0, world=world, **kw))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(again, got[0]) for k in a)


def test_a_rank_outside_the_world_is_refused(data):
    with pytest.raises(DslrecError, match="rank 2 is not in a world of 2"):
        epoch_batches(data, "pairwise", 50, 0, rank=2, world=2)
