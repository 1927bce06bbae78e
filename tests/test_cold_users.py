"""Users with valid/test items but no training items ("cold users"): counted, dropped or ranked by popularity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dslrec.cli import main
from dslrec.data import Dataset, csr_from_pairs
from dslrec.errors import DslrecError
from dslrec.evaluate import evaluate, rank_users
from dslrec.settings import resolve_settings


def pairs_dataset(train, valid, test, n_users, n_items) -> Dataset:
    def m(pairs):
        u, i = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0), np.zeros(0))
        return csr_from_pairs(u, i, (n_users, n_items))

    return Dataset(name="hand", user_ids=np.arange(n_users).astype(str), item_ids=np.arange(n_items).astype(str),
                   train=m(train), valid=m(valid), test=m(test))


def hand_case() -> tuple[Dataset, np.ndarray]:
    # train: u0 {0, 1}, u1 {0, 2}, u2 nothing (cold) -> item popularity [2, 1, 1, 0, 0]
    # test:  u0 {3},    u1 {1},    u2 {0, 4}
    ds = pairs_dataset(train=[(0, 0), (0, 1), (1, 0), (1, 2)], valid=[],
                       test=[(0, 3), (1, 1), (2, 0), (2, 4)], n_users=3, n_items=5)
    scores = np.array([[5, 4, 0, 3, 1],    # u0: candidates 3 > 4 > 2 -> top 2 [3, 4], hit at rank 1
                       [0, 0, 9, 0, 1],    # u1: candidates 4 > 1 = 3 (lower index first) -> [4, 1], hit at rank 2
                       [0, 0, 0, 0, 9]],   # u2: the model would put 4 first; popularity ranks 0, then 1 = 2 (tie)
                      dtype=np.float32)
    return ds, scores


def scorer_of(scores: np.ndarray):
    table = torch.from_numpy(scores)
    return lambda users: table[users]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_popular_ranks_cold_users_by_item_popularity(batch_size):
    ds, scores = hand_case()
    assert ds.cold_users("test").tolist() == [2] and ds.cold_counts() == {"valid": 0, "test": 1}
    r2 = 1 / math.log2(3)  # DCG of a hit at the 2nd position
    u0 = {"recall@2": 1.0, "precision@2": 0.5, "hitrate@2": 1.0, "ndcg@2": 1.0, "mrr@2": 1.0}
    u1 = {"recall@2": 1.0, "precision@2": 0.5, "hitrate@2": 1.0, "ndcg@2": r2, "mrr@2": 0.5}
    # u2 by popularity: top 2 = [0, 1] (1 and 2 tie at popularity 1: the lower index wins); 0 is a hit, 4 is not
    u2 = {"recall@2": 0.5, "precision@2": 0.5, "hitrate@2": 1.0, "ndcg@2": 1 / (1 + r2), "mrr@2": 1.0}

    dropped = evaluate(scorer_of(scores), ds, "test", ks=(2,), batch_size=batch_size)
    for key in u0:
        assert dropped[key] == pytest.approx((u0[key] + u1[key]) / 2, abs=1e-12), key
    popular = evaluate(scorer_of(scores), ds, "test", ks=(2,), batch_size=batch_size, cold_users="popular")
    for key in u0:
        assert popular[key] == pytest.approx((u0[key] + u1[key] + u2[key]) / 3, abs=1e-12), key

    per_user = rank_users(scorer_of(scores), ds, "test", ks=(2,), batch_size=batch_size, cold_users="popular")
    assert per_user.users.tolist() == [0, 1, 2]
    assert per_user.topk.tolist() == [[3, 4], [4, 1], [0, 1]]
    assert rank_users(scorer_of(scores), ds, "test", ks=(2,)).users.tolist() == [0, 1]


def test_cold_users_in_valid_and_all_cold_errors():
    # u2 is cold in valid, u3 cold in test; u0/u1 are warm
    ds = pairs_dataset(train=[(0, 0), (1, 1)], valid=[(0, 1), (2, 2)], test=[(1, 2), (3, 0)], n_users=4, n_items=3)
    assert ds.cold_counts() == {"valid": 1, "test": 1} and ds.sizes()["cold_users"] == {"valid": 1, "test": 1}
    with pytest.warns(UserWarning, match=r"^2 users have test/valid interactions but no training interactions "
                                         r"\(valid 1, test 1\); they are left out of evaluation \(--cold-users popular"):
        ds.check_usable()
    with pytest.warns(UserWarning, match="they are ranked by item popularity"):
        ds.check_usable(cold_users="popular")
    scores = np.zeros((4, 3), dtype=np.float32)
    assert rank_users(scorer_of(scores), ds, "valid", ks=(1,), cold_users="popular").users.tolist() == [0, 2]
    assert rank_users(scorer_of(scores), ds, "valid", ks=(1,)).users.tolist() == [0]

    only_cold = pairs_dataset(train=[(0, 0)], valid=[(0, 1)], test=[(1, 1)], n_users=2, n_items=2)
    with pytest.raises(DslrecError, match="every user with test interactions .* --cold-users popular"):
        only_cold.check_usable()
    with pytest.raises(DslrecError, match=r"every user with items in the test split \(1\) has no training items.*--cold-users popular"):
        evaluate(scorer_of(np.zeros((2, 2), np.float32)), only_cold, "test")
    with pytest.raises(DslrecError, match="unknown cold_users 'warm'"):
        evaluate(scorer_of(np.zeros((2, 2), np.float32)), only_cold, "test", cold_users="warm")
    with pytest.raises(DslrecError, match="unknown cold_users 'warm'; choose drop"):
        resolve_settings(cold_users="warm")
    assert resolve_settings(cold_users="popular").cold_users == "popular" and resolve_settings().cold_users == "drop"


def write_cold_folder(folder):
    """Warm users 0..5 train on items 0..(5-u) (item j has popularity 6 - j), hold out items 6..9.
    Users 6 and 7 appear only in test.txt, user 8 has an empty train.txt line, user 9 is only in valid.txt."""
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} {' '.join(map(str, range(6 - u)))}\n" for u in range(6)) + "8\n")
    (folder / "valid.txt").write_text("".join(f"{u} {6 + (u + 1) % 4}\n" for u in range(6)) + "9 3\n")
    (folder / "test.txt").write_text("".join(f"{u} {6 + u % 4}\n" for u in range(6)) + "6 0\n7 2 9\n8 5\n")
    return folder


def test_cli_lightgcn_folder_with_cold_users(tmp_path, capsys):
    folder = write_cold_folder(tmp_path / "cold")
    assert main(["data", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cold users (test, no training): 3" in out and "cold users (valid, no training): 1" in out

    summaries = {}
    for policy in ("drop", "popular"):
        argv = ["train", "--model", "mf", "--dataset", str(folder), "--epochs", "1", "--quiet",
                "--out", str(tmp_path / policy), "--ks", "3", "--metric", "recall@3", "--cold-users", policy]
        what = ("left out of evaluation" if policy == "drop" else "ranked by item popularity")
        with pytest.warns(UserWarning, match=rf"^4 users have test/valid interactions but no training "
                                             rf"interactions \(valid 1, test 3\); they are {what}"):
            assert main(argv) == 0
        summaries[policy] = json.loads((tmp_path / policy / "summary.json").read_text())
    capsys.readouterr()
    drop, popular = summaries["drop"], summaries["popular"]
    assert drop["dataset"]["cold_users"] == {"valid": 1, "test": 3} and drop["dataset"]["users"] == 10
    assert drop["dataset"]["cold_users_policy"] == "drop" and popular["dataset"]["cold_users_policy"] == "popular"

    # Popularity ranks items 0 > 1 > 2 > 3 > 4 > 5 > 6..9 (nothing held out is excluded for cold users):
    # user 6 {0}: hit at rank 1; user 7 {2, 9}: 2 at rank 3; user 8 {5}: outside the top 3.
    cold = {"recall@3": 1 + 1 / 2 + 0, "hitrate@3": 1 + 1 + 0,
            "ndcg@3": 1 + (1 / math.log2(4)) / (1 + 1 / math.log2(3)) + 0}
    n_warm = 6  # warm users with test items: their metrics are the same under both policies
    for key, cold_sum in cold.items():
        expected = (drop["test"][key] * n_warm + cold_sum) / (n_warm + 3)
        assert popular["test"][key] == pytest.approx(expected, abs=1e-9), key
    assert popular["test"]["recall@3"] != pytest.approx(drop["test"]["recall@3"])
