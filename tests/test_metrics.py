"""Evaluation against slow, obviously-correct pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dslrec.data.dataset import Dataset, csr_from_pairs
from dslrec.errors import DslrecError
from dslrec.evaluate import (
    evaluate,
    group_counts,
    item_group_metrics,
    item_groups,
    popularity_groups,
    sampled_evaluate,
    sampled_negatives,
    topk_ordered,
    user_group_metrics,
    user_groups,
)
from dslrec.evaluate.ranking import rank_users

# ---------------------------------------------------------------- fixtures


def random_dataset(seed=0, n_users=40, n_items=30, overlap=False, train_users=None) -> Dataset:
    """Random splits; some users have no valid/test items, some fewer test items than K."""
    rng = np.random.default_rng(seed)
    cell = rng.random((n_users, n_items))
    train = cell < 0.25
    valid = (cell >= 0.25) & (cell < 0.30)
    test = (cell >= 0.30) & (cell < 0.40)
    test[: n_users // 5] = False  # users without test items are skipped
    valid[-3:] = False
    if overlap:  # a test item also in train: excluded, so never a hit, still counted in n_target
        test[n_users // 5, np.flatnonzero(train[n_users // 5])[:1]] = True
    shape = (n_users, n_items)

    def m(mask):
        u, i = np.nonzero(mask)
        return csr_from_pairs(u, i, shape)

    return Dataset(
        name="rand",
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
        train=m(train),
        valid=m(valid),
        test=m(test),
        protocol="users" if train_users is not None else "fixed",
        train_users=train_users,
    )


def score_matrix(n_users, n_items, ties: bool, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n_users, n_items)).astype(np.float32)
    return np.round(s).astype(np.float32) if ties else s  # rounding: many exact ties


def matrix_scorer(s: np.ndarray):
    t = torch.from_numpy(s)
    return lambda users: t[users]


def row_set(m, u):
    return set(m.indices[m.indptr[u] : m.indptr[u + 1]].tolist())


# ---------------------------------------------------------------- reference


def ref_ranked(scores, excluded, k):
    """Top-k candidates: not excluded, score descending, lower item index first on ties."""
    key = [(-(float("-inf") if math.isnan(s) else s), i) for i, s in enumerate(scores)]
    cand = sorted(x for x in key if x[1] not in excluded)
    return [i for _, i in cand[:k]]


def ref_metrics(ranked, targets, k):
    hits = [1 if i in targets else 0 for i in ranked[:k]]
    n_hit = sum(hits)
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(targets), k)))
    first = next((r for r, h in enumerate(hits) if h), None)
    return {
        f"recall@{k}": n_hit / len(targets),
        f"precision@{k}": n_hit / k,
        f"hitrate@{k}": float(n_hit > 0),
        f"ndcg@{k}": dcg / idcg,
        f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
    }


def ref_evaluate(s, d, split, ks):
    target = d.split(split)
    per_user = {}
    for u in range(d.n_users):
        targets = row_set(target, u)
        if not targets or not row_set(d.train, u):  # cold users are left out (cold_users="drop")
            continue
        excluded = row_set(d.train, u) | (row_set(d.valid, u) if split == "test" else set())
        ranked = ref_ranked(s[u].tolist(), excluded, max(ks))
        per_user[u] = {}
        for k in ks:
            per_user[u].update(ref_metrics(ranked, targets, k))
    keys = per_user[next(iter(per_user))].keys()
    means = {key: sum(v[key] for v in per_user.values()) / len(per_user) for key in keys}
    return means, per_user


# ---------------------------------------------------------------- full ranking


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_full_ranking_matches_reference(ties, split):
    d = random_dataset(seed=3, overlap=True)
    s = score_matrix(d.n_users, d.n_items, ties)
    ks = (1, 3, 5, 20)
    summary, result = evaluate(
        matrix_scorer(s), d, split, ks=ks, batch_size=7, per_user=True
    )
    ref_means, ref_users = ref_evaluate(s, d, split, ks)
    assert summary.keys() == ref_means.keys()
    for key, value in ref_means.items():
        assert summary[key] == pytest.approx(value, abs=1e-12), key
    assert result.users.tolist() == sorted(ref_users)
    for row, u in enumerate(result.users):
        for key, value in ref_users[u].items():
            assert result.values[key][row] == pytest.approx(value, abs=1e-12), (u, key)


@pytest.mark.parametrize("ties", [True, False])
def test_chunked_candidate_pass_matches_reference(ties, monkeypatch):
    # small chunks so the chunk-maxima path runs on tiny data; 403 items leave a tail chunk
    monkeypatch.setattr("dslrec.evaluate.ranking.CHUNK", 4)
    d = random_dataset(seed=16, n_users=25, n_items=403)
    s = score_matrix(d.n_users, d.n_items, ties)
    s[3, :] = 0.0  # a row of equal scores
    ks = (1, 5, 20)
    ref_means, ref_users = ref_evaluate(s, d, "test", ks)
    _, result = evaluate(matrix_scorer(s), d, "test", ks=ks, batch_size=8, per_user=True)
    for row, u in enumerate(result.users):
        for key, value in ref_users[u].items():
            assert result.values[key][row] == pytest.approx(value, abs=1e-12), (u, key)
        excluded = row_set(d.train, u) | row_set(d.valid, u)
        assert result.topk[row].tolist() == ref_ranked(s[u].tolist(), excluded, 20)


def test_model_minus_inf_scores_rank_before_excluded_items():
    d = random_dataset(seed=17)
    s = score_matrix(d.n_users, d.n_items, ties=False)
    s[:, 1::2] = -np.inf  # fewer than K finite candidates for every user
    s[::3, ::5] = np.nan
    ks = (10, 25, 40)  # 40 > n_items: every item is listed, order still matters
    ref_means, ref_users = ref_evaluate(s, d, "valid", ks)
    _, result = evaluate(matrix_scorer(s), d, "valid", ks=ks, per_user=True)
    for row, u in enumerate(result.users):
        for key, value in ref_users[u].items():
            assert result.values[key][row] == pytest.approx(value, abs=1e-12), (u, key)


def test_topk_items_follow_tie_rule_and_exclusions():
    d = random_dataset(seed=4)
    s = score_matrix(d.n_users, d.n_items, ties=True, seed=5)
    result = rank_users(matrix_scorer(s), d, "test", ks=(10,), batch_size=5)
    for row, u in enumerate(result.users):
        excluded = row_set(d.train, u) | row_set(d.valid, u)
        assert result.topk[row].tolist() == ref_ranked(s[u].tolist(), excluded, 10)
        assert not excluded & set(result.topk[row].tolist())


def test_scorer_favouring_training_items_never_ranks_them():
    d = random_dataset(seed=6)
    dense_train = torch.from_numpy(d.train.toarray())
    scorer = lambda u: dense_train[u] * 100 + 0.01 * torch.arange(d.n_items)  # noqa: E731
    result = rank_users(scorer, d, "valid", ks=(5,))
    for row, u in enumerate(result.users):
        assert not row_set(d.train, u) & set(result.topk[row].tolist())


def test_only_users_with_targets_and_requested_users():
    d = random_dataset(seed=7)
    s = score_matrix(d.n_users, d.n_items, ties=False)
    has = np.flatnonzero(np.diff(d.test.indptr) > 0)
    assert evaluate(matrix_scorer(s), d, "test", per_user=True)[1].users.tolist() == has.tolist()
    pick = np.array([0, 1, has[0], has[3]])  # 0 and 1 have no test items
    _, res = evaluate(matrix_scorer(s), d, "test", users=pick, per_user=True)
    assert res.users.tolist() == [has[0], has[3]]


def test_k_beyond_candidates_and_items():
    d = random_dataset(seed=8, n_items=12)
    s = score_matrix(d.n_users, d.n_items, ties=True)
    ks = (12, 15)
    ref_means, _ = ref_evaluate(s, d, "test", ks)
    got = evaluate(matrix_scorer(s), d, "test", ks=ks)
    for key, value in ref_means.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_views_are_not_written_and_nan_ranks_last():
    d = random_dataset(seed=9)
    pop = torch.arange(d.n_items, dtype=torch.float32)
    before = pop.clone()
    evaluate(lambda u: pop.expand(len(u), -1), d, "valid")
    assert torch.equal(pop, before)
    s = score_matrix(d.n_users, d.n_items, ties=False)
    s[:, ::2] = np.nan
    ref_means, _ = ref_evaluate(s, d, "test", (5,))
    got = evaluate(matrix_scorer(s), d, "test", ks=(5,))
    assert got["ndcg@5"] == pytest.approx(ref_means["ndcg@5"], abs=1e-12)


def test_strong_generalisation_excludes_fold_in():
    mask = np.zeros(40, dtype=bool)
    mask[:20] = True
    d = random_dataset(seed=10, train_users=mask)
    s = score_matrix(d.n_users, d.n_items, ties=False)
    ref_means, _ = ref_evaluate(s, d, "test", (20,))
    got = evaluate(matrix_scorer(s), d, "test")
    assert got["recall@20"] == pytest.approx(ref_means["recall@20"], abs=1e-12)


def test_bad_arguments():
    d = random_dataset()
    sc = matrix_scorer(score_matrix(d.n_users, d.n_items, ties=False))
    with pytest.raises(DslrecError, match="split"):
        evaluate(sc, d, "train")
    with pytest.raises(DslrecError, match="metric"):
        evaluate(sc, d, metrics=("auc",))
    with pytest.raises(DslrecError, match="positive"):
        evaluate(sc, d, ks=(0,))
    with pytest.raises(DslrecError, match="user indices"):
        evaluate(sc, d, users=np.array([d.n_users]))
    with pytest.raises(DslrecError, match="nothing to evaluate"):
        evaluate(sc, d, "test", users=np.array([0]))  # user 0 has no test items


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 4),
    cols=st.integers(1, 80),
    k=st.integers(1, 14),
    chunk=st.sampled_from([1, 2, 3, 64]),
    data=st.data(),
)
def test_topk_ordered_is_a_stable_sort(rows, cols, k, chunk, data):
    import dslrec.evaluate.ranking as ranking

    vals = data.draw(
        st.lists(st.integers(-2, 2), min_size=rows * cols, max_size=rows * cols)
    )
    s = torch.tensor(vals, dtype=torch.float32).view(rows, cols)
    old, ranking.CHUNK = ranking.CHUNK, chunk
    try:
        v, idx = topk_ordered(s, k)
    finally:
        ranking.CHUNK = old
    for r in range(rows):
        expected = sorted(range(cols), key=lambda i: (-vals[r * cols + i], i))[: min(k, cols)]
        assert idx[r].tolist() == expected
        assert v[r].tolist() == [vals[r * cols + i] for i in expected]


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 4),
    cols=st.integers(1, 60),
    k=st.integers(1, 12),
    block=st.integers(1, 70),
    batch=st.integers(1, 5),
    data=st.data(),
)
def test_block_kernel_equals_one_stable_sort(rows, cols, k, block, batch, data):
    """rank_batch over blocks of any size = one stable sort of the whole row, with NaN / -inf model
    scores as the lowest finite value and excluded pairs last (returned as -inf)."""
    from dslrec.evaluate.ranking import rank_batch

    vals = data.draw(st.lists(st.sampled_from([-2.0, 0.0, 1.0, 2.0, float("nan"), float("-inf")]),
                              min_size=rows * cols, max_size=rows * cols))
    s = torch.tensor(vals, dtype=torch.float32).view(rows, cols)
    excl = data.draw(st.lists(st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1)), max_size=rows * cols))
    excl = sorted(set(excl))
    pairs = (np.array([r for r, _ in excl], dtype=np.int64), np.array([c for _, c in excl], dtype=np.int64))
    calls = []

    def block_scores(picked, start, stop):
        calls.append((start, stop))
        out = s[:, start:stop].clone()
        return out if picked is None else out[picked]

    v, idx = rank_batch(block_scores, rows, cols, k, pairs, block=block, batch=batch)
    assert {c for c in calls} <= {(a, min(a + block, cols)) for a in range(0, cols, block)}
    low = torch.finfo(torch.float32).min
    banned = set(excl)
    for r in range(rows):
        def key(i, r=r):  # excluded last, by index; NaN / -inf as the lowest finite score
            x = vals[r * cols + i]
            return ((r, i) in banned, 0.0 if (r, i) in banned else -(low if math.isnan(x) or x == float("-inf") else x), i)

        expected = sorted(range(cols), key=key)[: min(k, cols)]
        assert idx[r].tolist() == expected
        got = v[r].tolist()
        for j, i in enumerate(expected):
            assert got[j] == (float("-inf") if (r, i) in banned else -key(i)[1])


# ---------------------------------------------------------------- sampled protocol


def test_sampled_protocol_matches_reference():
    d = random_dataset(seed=11, n_users=30, n_items=300)
    s = score_matrix(d.n_users, d.n_items, ties=True, seed=12)
    users, negs = sampled_negatives(d, "test", n_neg=100, seed=3)
    assert negs.shape == (len(users), 100)
    for row, u in enumerate(users):
        positives = row_set(d.train, u) | row_set(d.valid, u) | row_set(d.test, u)
        assert len(set(negs[row].tolist())) == 100
        assert not positives & set(negs[row].tolist())
    got = sampled_evaluate(matrix_scorer(s), d, "test", ks=(10, 20), negatives=(users, negs), batch_size=4)
    ref = {}
    for row, u in enumerate(users):
        per_pair = []
        for p in sorted(row_set(d.test, u)):
            cand = [p] + negs[row].tolist()
            ranked = sorted(cand, key=lambda i: (-s[u, i], i))
            r = ranked.index(p)
            per_pair.append({
                **{f"sampled_hitrate@{k}": float(r < k) for k in (10, 20)},
                **{f"sampled_ndcg@{k}": (1 / math.log2(r + 2)) if r < k else 0.0 for k in (10, 20)},
                **{f"sampled_mrr@{k}": (1 / (r + 1)) if r < k else 0.0 for k in (10, 20)},
            })
        for key in per_pair[0]:
            ref.setdefault(key, []).append(sum(x[key] for x in per_pair) / len(per_pair))
    assert got.keys() == ref.keys()
    for key, values in ref.items():
        assert got[key] == pytest.approx(sum(values) / len(values), abs=1e-12), key


def test_sampled_negatives_deterministic_and_need_room():
    d = random_dataset(seed=13, n_users=20, n_items=200)
    a = sampled_negatives(d, "test", 50, seed=1)[1]
    assert np.array_equal(a, sampled_negatives(d, "test", 50, seed=1)[1])
    assert not np.array_equal(a, sampled_negatives(d, "test", 50, seed=2)[1])
    with pytest.raises(DslrecError, match="sampled protocol"):
        sampled_negatives(random_dataset(seed=13, n_items=60), "test", 100)


# ---------------------------------------------------------------- popularity groups


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=300), n_groups=st.integers(1, 10))
def test_popularity_groups_equal_totals(counts, n_groups):
    counts = np.array(counts)
    g = popularity_groups(counts, n_groups)
    assert g.min() >= 0 and g.max() < n_groups
    totals = group_counts(counts, g, n_groups)
    assert totals.sum() == counts.sum()
    share = counts.sum() / n_groups
    # each group's total is off its share by at most one entity at each cut
    assert np.all(np.abs(totals - share) <= 2 * counts.max() + 1e-9)
    # groups are ordered by popularity: every member of group g+1 is at least as popular
    for a in range(n_groups - 1):
        lo, hi = counts[g == a], counts[g > a]
        if lo.size and hi.size:
            assert lo.max() <= hi.min()


def test_groups_on_dataset_and_group_counts_torch():
    d = random_dataset(seed=14, n_users=200, n_items=80)
    ug, ig = user_groups(d), item_groups(d)
    assert group_counts(d.user_activity(), ug).sum() == d.train.nnz
    assert group_counts(d.item_popularity(), ig).sum() == d.train.nnz
    t = group_counts(torch.ones(d.n_users), torch.from_numpy(ug), 10)
    assert torch.equal(t, torch.from_numpy(np.bincount(ug, minlength=10)).float())


def test_group_metrics_match_reference():
    d = random_dataset(seed=15, n_users=120, n_items=60)
    s = score_matrix(d.n_users, d.n_items, ties=True)
    _, result = evaluate(matrix_scorer(s), d, "test", ks=(5, 10), per_user=True)
    ug, ig = user_groups(d, 4), item_groups(d, 4)
    _, ref_users = ref_evaluate(s, d, "test", (5, 10))
    by_user = user_group_metrics(result, ug, 4)
    for gi in range(4):
        members = [u for u in ref_users if ug[u] == gi]
        assert by_user["users"][gi] == len(members)
        if members:
            want = sum(ref_users[u]["recall@10"] for u in members) / len(members)
            assert by_user["recall@10"][gi] == pytest.approx(want, abs=1e-12)
    by_item = item_group_metrics(result, d.test, ig, ks=(5, 10), n_groups=4)
    for gi in range(4):
        recalls, n_hits = [], 0
        for u in ref_users:
            excluded = row_set(d.train, u) | row_set(d.valid, u)
            top = set(ref_ranked(s[u].tolist(), excluded, 10))
            tg = {i for i in row_set(d.test, u) if ig[i] == gi}
            if tg:
                recalls.append(len(tg & top) / len(tg))
                n_hits += len(tg & top)
        assert by_item["hits@10"][gi] == n_hits
        if recalls:
            assert by_item["recall@10"][gi] == pytest.approx(sum(recalls) / len(recalls), abs=1e-12)
    assert sum(by_item["targets"]) == sum(len(row_set(d.test, u)) for u in ref_users)


def test_default_evaluation_batch_follows_threads_and_is_bounded():
    """8 MiB of float32 scores per thread on CPU (the block stays in cache), at most 32 MiB (bigger
    blocks are mapped afresh per batch), at least 16 users (a huge catalogue)."""
    from dslrec.evaluate.ranking import default_batch_size

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert default_batch_size("cpu", 40_981) == 2**23 // (4 * 40_981) == 51
        assert default_batch_size("cpu", 500_000) == 16
        torch.set_num_threads(2)
        assert default_batch_size("cpu", 40_981) == 102
        torch.set_num_threads(8)
        assert default_batch_size("cpu", 40_981) == 2**25 // (4 * 40_981)
    finally:
        torch.set_num_threads(threads)
    assert default_batch_size("cuda", 40_981) == 2**31 // (4 * 40_981)


# ---------------------------------------------------------------- bfloat16 candidate pass


def dot_case(seed=21, n_users=30, n_items=2000, dim=16, grid=False):
    """A dataset and a DotScorer on it; ``grid``: factors on a coarse grid, exact in bfloat16, so
    the bfloat16 scores equal the float32 ones and ties abound."""
    from dslrec.models.base import DotScorer

    d = random_dataset(seed=seed, n_users=n_users, n_items=n_items)
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, dim, generator=g)
    items = torch.randn(n_items, dim, generator=g) * torch.rand(n_items, 1, generator=g) * 3  # uneven norms
    if grid:
        users, items = torch.round(users * 2) / 2, torch.round(items * 2) / 2
    return d, DotScorer(lambda u: users[u], items.T), users, items


def check_like_reference(d, scorer, split="test", ks=(1, 5, 20), **kw):
    s = scorer(torch.arange(d.n_users)).numpy()
    ref_means, ref_users = ref_evaluate(s, d, split, ks)
    summary, result = evaluate(scorer, d, split, ks=ks, per_user=True, candidate_pass=True, **kw)
    for row, u in enumerate(result.users):
        excluded = row_set(d.train, u) | (row_set(d.valid, u) if split == "test" else set())
        assert result.topk[row].tolist() == ref_ranked(s[u].tolist(), excluded, max(ks)), u
        for key, value in ref_users[u].items():
            assert result.values[key][row] == pytest.approx(value, abs=1e-12), (u, key)
    return result


def count_redone(monkeypatch):
    """Patch ``ReducedItems.top`` to count the rows it leaves to float32; returns the counter."""
    from dslrec.evaluate.ranking import ReducedItems

    top, seen = ReducedItems.top, {"rows": 0, "bad": 0}

    def counting(self, u, k, excluded):
        vals, items, bad = top(self, u, k, excluded)
        seen["rows"] += len(bad)
        seen["bad"] += int(bad.sum())
        return vals, items, bad

    monkeypatch.setattr(ReducedItems, "top", counting)
    return seen


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("grid", [False, True])
def test_candidate_pass_ranks_as_float32_scores_do(split, grid, monkeypatch):
    """Top lists and metrics of the bfloat16 candidate pass equal the reference's on the float32 scores,
    ties at the cut (grid factors) included; most rows pass the check and are not redone."""
    seen = count_redone(monkeypatch)
    d, scorer, _, _ = dot_case(grid=grid)
    check_like_reference(d, scorer, split, batch_size=7)
    assert seen["rows"] == len(eval_users_of(d, split))
    assert seen["bad"] < seen["rows"] / 2


def eval_users_of(d, split):
    from dslrec.evaluate.ranking import eval_users

    return eval_users(d, split)


def test_rows_the_check_rejects_are_ranked_in_float32(monkeypatch):
    """With no margin above K (C = K + 1) the check fails for many rows; they are ranked again from
    float32 scores and the answer is still the reference's."""
    monkeypatch.setattr("dslrec.evaluate.ranking.candidates_for", lambda k: k + 1)
    seen = count_redone(monkeypatch)
    d, scorer, _, _ = dot_case(seed=22)
    check_like_reference(d, scorer, batch_size=5)
    assert seen["bad"] > 0


def test_candidate_pass_with_nan_and_infinite_factors():
    """A NaN user vector, a NaN item and an item scoring +inf: rows with them are ranked from float32
    scores (NaN as the lowest finite score, after every candidate, before excluded items)."""
    d, scorer, users, items = dot_case(seed=23)
    users[2] = float("nan")
    items[7] = float("nan")
    items[11] = float("inf")
    s = scorer(torch.arange(d.n_users))
    _, result = evaluate(scorer, d, "test", ks=(20,), per_user=True, candidate_pass=True)
    _, exact = evaluate(lambda u: s[u], d, "test", ks=(20,), per_user=True)
    assert np.array_equal(result.topk, exact.topk)
    assert np.array_equal(result.hits, exact.hits)


def test_candidate_pass_on_a_trained_model_equals_float32_ranking(monkeypatch):
    """MF trained a few epochs: the candidate pass gives the float32 path's top lists and metrics, and
    vouches for most users itself."""
    seen = count_redone(monkeypatch)
    from dslrec.data.synthetic import synthetic_dataset
    from dslrec.models import build

    d = synthetic_dataset(n_users=300, n_items=1200, seed=0)
    torch.manual_seed(0)
    model = build("mf", d, dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users, items = d.train.nonzero()
    for _ in range(20):
        neg = torch.randint(0, d.n_items, (len(users),))
        loss = model.loss({"users": torch.from_numpy(users), "pos": torch.from_numpy(items), "neg": neg})
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scorer = model.scorer()
        fast, a = evaluate(scorer, d, "test", ks=(10, 20), per_user=True, candidate_pass=True)
        slow, b = evaluate(scorer, d, "test", ks=(10, 20), per_user=True, candidate_pass=False)
    assert np.array_equal(a.topk, b.topk)
    assert fast == slow
    assert fast["recall@20"] > 0.05  # it learned something, so the top lists are not noise
    assert seen["bad"] < seen["rows"] / 4, seen


def test_bfloat16_product_error_stays_within_the_bound():
    """The error model the check relies on holds on this machine: bfloat16 scores differ from float32
    ones by at most the output's rounding plus err_per_norm * |u| |v| (wide dynamic range)."""
    from dslrec.evaluate.ranking import OUTPUT_ROUNDING, ReducedItems

    g = torch.Generator().manual_seed(5)
    items = torch.randn(3000, 64, generator=g) * torch.logspace(-3, 3, 3000)[:, None]
    u = torch.randn(50, 64, generator=g) * torch.logspace(-2, 2, 50)[:, None]
    reduced = ReducedItems(items.T, 20)
    approx = (u.to(torch.bfloat16) @ reduced.reduced_t)[:, :3000].double()
    exact = (u.double() @ items.double().T)
    err = reduced.err_per_norm * u.double().norm(dim=1)[:, None] * items.double().norm(dim=1)[None, :]
    # the product before its output's rounding lies within OUTPUT_ROUNDING of approx
    before = approx / (1 - OUTPUT_ROUNDING * torch.sign(approx))
    assert bool(((exact - before).abs() <= err + (before - approx).abs() + 1e-300).all())
    assert bool(((exact - approx).abs() <= err + OUTPUT_ROUNDING * approx.abs() * 2).all())


def test_candidate_pass_is_chosen_only_where_it_pays():
    from dslrec.evaluate.ranking import ReducedItems, native_bfloat16_matmul

    d, scorer, _, _ = dot_case(n_items=2000)
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        assert native_bfloat16_matmul() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    except (OSError, StopIteration):
        assert native_bfloat16_matmul() is False
    assert not ReducedItems.suits(lambda u: scorer(u), 10_000, 20, "cpu")  # not a DotScorer
    assert not ReducedItems.suits(scorer, 10_000, 20, "cpu")  # 2,000 items: float32 is cheap there
    assert not ReducedItems.suits(scorer, 10_000, 20, "cuda")
    big = type(scorer)(scorer.user_vectors, torch.zeros(64, 50_000))
    assert ReducedItems.suits(big, 10_000, 20, "cpu") == native_bfloat16_matmul()
    assert not ReducedItems.suits(big, 10, 20, "cpu")  # too few users to pay for the copy
    huge = type(scorer)(scorer.user_vectors, torch.zeros(64, 500_000))
    assert not ReducedItems.suits(huge, 10_000, 20, "cpu")  # a 64 MB copy: over the memory cap


def test_candidate_pass_batch_follows_threads_and_is_bounded():
    """16 MiB of bfloat16 scores per thread (at most 64 MiB, at least 16 users)."""
    from dslrec.evaluate.ranking import candidate_batch_size

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert candidate_batch_size(40_981) == 2**24 // (2 * 40_981) == 204
        assert candidate_batch_size(2_000_000) == 16
        torch.set_num_threads(2)
        assert candidate_batch_size(40_981) == 409
        torch.set_num_threads(8)
        assert candidate_batch_size(40_981) == 2**26 // (2 * 40_981)
    finally:
        torch.set_num_threads(threads)


def one_user_case(user: torch.Tensor, items: torch.Tensor):
    """One user and ``len(items)`` items: the next-to-last item in training (so the user is not cold),
    the last one the validation target; the dataset and the scorer."""
    from dslrec.models.base import DotScorer

    n = len(items)
    d = Dataset(name="one", user_ids=np.array(["0"]), item_ids=np.arange(n).astype(str),
                train=csr_from_pairs([0], [n - 2], (1, n)), valid=csr_from_pairs([0], [n - 1], (1, n)),
                test=csr_from_pairs([], [], (1, n)), protocol="fixed")
    return d, DotScorer(lambda u: user[None].expand(len(u), -1), items.T)


def both_routes(d, scorer, ks=(1, 5)):
    _, a = evaluate(scorer, d, "valid", ks=ks, per_user=True, candidate_pass=True)
    _, b = evaluate(scorer, d, "valid", ks=ks, per_user=True, candidate_pass=False)
    return a.topk, b.topk


def test_candidate_pass_with_tiny_scores_has_an_absolute_error_term():
    """Scores below float32's smallest normal (subnormal; the bfloat16 product flushes them to 0): the
    relative bound alone would vouch for a wrong top item; the absolute term sends the row to float32."""
    items = torch.zeros(200, 2)
    items[:, 0] = 0.5 * 2.0**-64
    items[5, 0] = 0.9 * 2.0**-64  # item 5 scores highest, at 0.9 * 2**-134
    d, scorer = one_user_case(torch.tensor([2.0**-70, 0.0]), items)
    fast, slow = both_routes(d, scorer)
    assert slow[0, 0] == 5
    assert np.array_equal(fast, slow)


def test_tables_beyond_bfloat16_range_and_other_dtypes_take_their_own_route():
    """An item entry that overflows bfloat16 (-3.4e38 becomes -inf) sends the table to float32; a user
    vector that overflows does the same for its row; float64 and bfloat16 tables rank by their own
    precision (the pass is for float32 tables)."""
    items = torch.zeros(200, 2)
    items[:, 1] = 1e37
    items[0, 1] = 5e37
    items[5] = torch.tensor([-3.4e38, 3e38])  # the best item: 3e35 for this user
    d, scorer = one_user_case(torch.tensor([2e-38, 1e-3]), items)  # scores far from overflowing a sum
    fast, slow = both_routes(d, scorer, ks=(1,))  # at K = 1 the check would vouch for item 0
    assert slow[0, 0] == 5 and np.array_equal(fast, slow)

    items = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) + 1
    d, scorer = one_user_case(torch.tensor([3.39e38, 1e-3]), items / 10)  # the user's entry overflows
    fast, slow = both_routes(d, scorer)
    assert np.array_equal(fast, slow)

    items = torch.ones(200, 2, dtype=torch.float64)
    items[1, 0] += 1e-12  # a float64 difference float32 cannot hold
    d, scorer = one_user_case(torch.tensor([1.0, 0.0], dtype=torch.float64), items)
    fast, slow = both_routes(d, scorer)
    assert slow[0, 0] == 1 and np.array_equal(fast, slow)


def test_candidate_pass_with_scores_below_zero_and_padding(monkeypatch):
    """Scores below zero for every user (such rows go to float32: the integer maxima order only
    non-negative values), and scores mostly exactly zero on a padded catalogue (2,003 items in
    groups of 20): the padding's zero vectors would tie with real items if they were not -inf."""
    seen = count_redone(monkeypatch)
    d, scorer, users, items = dot_case(seed=24, n_items=2003)
    users.abs_()
    items.abs_().neg_()
    assert bool((scorer(torch.arange(d.n_users)) < 0).all())
    check_like_reference(d, scorer, batch_size=9)
    assert seen["bad"] == seen["rows"] > 0

    d, scorer, users, items = dot_case(seed=25, n_items=2003, grid=True)
    users[:, 1:] = 0
    users[:, 0] = 1
    items[:, 0] = 0
    items[::97, 0] = 1  # 21 items score 1, every other item 0
    check_like_reference(d, scorer, batch_size=9)


def test_left_out_items_never_score_above_the_bound():
    """The bound ``top`` uses, taken at each item's own bfloat16 score, lies above that item's float32
    score, for vectors spanning twelve orders of magnitude, both signs, and dims 1 to 100."""
    from dslrec.evaluate.ranking import OUTPUT_ROUNDING, TINY, ReducedItems

    g = torch.Generator().manual_seed(6)
    for dim in (1, 7, 64, 100):
        items = torch.randn(4000, dim, generator=g) * torch.logspace(-6, 6, 4000)[torch.randperm(4000, generator=g), None]
        u = torch.randn(40, dim, generator=g) * torch.logspace(-3, 3, 40)[:, None]
        reduced = ReducedItems(items.T, 20)
        approx = (u.to(torch.bfloat16) @ reduced.reduced_t)[:, :4000].double()
        exact = torch.linalg.vecdot(u[:, None, :], items[None]).double()
        before = torch.where(approx >= 0, approx / (1 - OUTPUT_ROUNDING), approx / (1 + OUTPUT_ROUNDING))
        norms = u.double().norm(dim=1)[:, None]
        bound = (before + reduced.err_per_norm * reduced.max_norm * norms
                 + 4 * dim * TINY * (1 + norms + reduced.max_norm) + approx.abs() * 2**-20)
        assert bool((exact <= bound).all()), dim
