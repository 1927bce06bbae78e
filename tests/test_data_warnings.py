"""Data that used to give silently wrong results now warns with counts (and held-out repeats are dropped)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dslrec.data import load
from dslrec.evaluate import evaluate


def pairs(ds, split: str) -> set[tuple[str, str]]:
    m = ds.split(split).tocoo()
    return set(zip(ds.user_ids[m.row].tolist(), ds.item_ids[m.col].tolist()))


def test_heldout_pairs_already_in_training_are_dropped_with_a_warning(tmp_path):
    # test.txt repeats (0, 1) and (1, 3) of train.txt and (2, 6) of valid.txt; valid.txt repeats (0, 2)
    (tmp_path / "train.txt").write_text("0 0 1 2\n1 3 4\n2 5 0\n")
    (tmp_path / "valid.txt").write_text("0 2 7\n1 5\n2 6\n")
    (tmp_path / "test.txt").write_text("0 1 6\n1 3 7\n2 6 1\n")
    with pytest.warns(UserWarning) as caught:
        ds = load(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("1 valid interaction(s) of ") and "repeat a (user, item) pair of the training data; "
               "they are dropped from the valid split" in m for m in messages), messages
    assert any(m.startswith("3 test interaction(s) of ") and "pair of the training or validation data; "
               "they are dropped from the test split" in m for m in messages), messages
    assert all("\n" not in m for m in messages)
    assert pairs(ds, "valid") == {("0", "7"), ("1", "5"), ("2", "6")}
    assert pairs(ds, "test") == {("0", "6"), ("1", "7"), ("2", "1")}

    # every remaining test item can be hit: a scorer that ranks the test items first gets recall 1
    truth = torch.from_numpy(ds.test.toarray())
    assert evaluate(lambda users: truth[users], ds, "test", ks=(1,))["hitrate@1"] == 1.0


def test_files_without_repeats_load_silently(tmp_path):
    (tmp_path / "train.txt").write_text("0 0 1\n1 1 2\n")
    (tmp_path / "test.txt").write_text("0 2\n1 0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(tmp_path, valid_ratio=0)
    assert ds.test.nnz == 2


def test_duplicate_interactions_are_counted(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user,item,timestamp\na,x,1\na,x,5\na,w,2\nb,y,2\nb,y,3\nb,y,4\nc,z,1\n")
    with pytest.warns(UserWarning, match=r"^3 duplicate interaction\(s\) \(same user and item\) dropped from .*log\.csv "
                                         r".*; the latest by timestamp of each is kept$"):
        ds = load(csv, split="ratio", valid_ratio=0.0, test_ratio=0.5)
    assert ds.train.nnz + ds.test.nnz == 4

    folder = tmp_path / "lgcn"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1 1 2\n1 0 0\n")  # (0, 1) and (1, 0) twice in train.txt
    (folder / "test.txt").write_text("0 3\n1 2\n")
    with pytest.warns(UserWarning, match=r"^2 duplicate interaction\(s\) \(same user, item and split file\) dropped "
                                         r"from .*; the first of each is kept$"):
        ds = load(folder, valid_ratio=0)
    assert ds.train.nnz == 4 and np.diff(ds.train.indptr).tolist() == [3, 1]
