"""Readers: each format on small files (exact contents) and on the real copies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dslrec.data import load
from dslrec.data.readers import TEST, TRAIN, VALID, detect, read, read_citeulike, read_csv, read_inter, read_lightgcn
from dslrec.errors import DslrecError

SHARED = Path(os.environ.get("DSLREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "gowalla").is_dir(), reason=f"no dataset copies at {SHARED}")


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def pairs(log, label=None):
    """Set of (raw user, raw item) of a log, optionally of one split label."""
    m = np.ones(len(log), bool) if label is None else log.split == label
    return set(zip(log.user_ids[log.users[m]], log.item_ids[log.items[m]]))


# ---------------------------------------------------------------- LightGCN text


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_lightgcn_folder(tmp_path, newline):
    write(tmp_path / "train.txt", "0 1 2\n1 2 10\n2\n3 9\n", newline)  # user 2 has a line but no items
    write(tmp_path / "test.txt", "0 9\n1 1\n3 10\n", newline)
    log = read_lightgcn(tmp_path)
    assert list(log.user_ids) == ["0", "1", "2", "3"]
    assert list(log.item_ids) == ["1", "2", "9", "10"]  # numeric order, not string order
    assert pairs(log, TRAIN) == {("0", "1"), ("0", "2"), ("1", "2"), ("1", "10"), ("3", "9")}
    assert pairs(log, TEST) == {("0", "9"), ("1", "1"), ("3", "10")}
    assert not (log.split == VALID).any()


def test_lightgcn_valid_file_and_sparse_ids(tmp_path):
    write(tmp_path / "train.txt", "7 100 200\n  9   300\n\n")  # extra spaces and a blank line
    write(tmp_path / "valid.txt", "7 300\n")
    write(tmp_path / "test.txt", "9 100\n")
    log = read(tmp_path)
    assert list(log.user_ids) == ["7", "9"] and list(log.item_ids) == ["100", "200", "300"]
    assert pairs(log, VALID) == {("7", "300")}
    assert np.bincount(log.split, minlength=3).tolist() == [3, 1, 1]


def test_lightgcn_non_integer_id_names_file_and_line(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 2\n2 3 x7 4\n")
    write(tmp_path / "test.txt", "0 3\n")
    with pytest.raises(DslrecError, match=r"train\.txt:3: 'x7' is not an integer id"):
        read_lightgcn(tmp_path)


def test_lightgcn_negative_id_is_rejected(tmp_path):
    write(tmp_path / "train.txt", "0 1\n")
    write(tmp_path / "test.txt", "0 1\n1 -2\n")
    with pytest.raises(DslrecError, match=r"test\.txt:2: '-2'"):
        read_lightgcn(tmp_path)


def test_lightgcn_missing_and_empty_files(tmp_path):
    write(tmp_path / "train.txt", "0 1\n")
    with pytest.raises(DslrecError, match=r"test\.txt does not exist"):
        read_lightgcn(tmp_path)
    write(tmp_path / "test.txt", "")
    with pytest.raises(DslrecError, match=r"test\.txt is empty"):
        read_lightgcn(tmp_path)
    write(tmp_path / "test.txt", "0\n1\n")  # users without items: an empty split
    with pytest.raises(DslrecError, match=r"test split is empty"):
        read_lightgcn(tmp_path)


# ---------------------------------------------------------------- RecBole .inter and CSV


def test_inter_typed_header(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       "u1\ti9\t4\t100\nu2\ti9\t2.5\t50\nu1\ti3\t5\t70\n")
    log = read_inter(path)
    assert list(log.user_ids) == ["u1", "u2"] and list(log.item_ids) == ["i3", "i9"]
    assert log.users.tolist() == [0, 1, 0] and log.items.tolist() == [1, 1, 0]
    assert log.ratings.tolist() == [4.0, 2.5, 5.0] and log.timestamps.tolist() == [100.0, 50.0, 70.0]


def test_inter_custom_columns(tmp_path):
    path = write(tmp_path / "x.inter", "uid:token\tbook:token\tstars:float\n1\t2\t3\n")
    with pytest.raises(DslrecError, match="no item column in the header"):
        read_inter(path)
    log = read_inter(path, columns={"item": "book", "rating": "stars"})
    assert log.item_ids.tolist() == ["2"] and log.ratings.tolist() == [3.0] and log.timestamps is None


@pytest.mark.parametrize("name,sep", [("d.csv", ","), ("d.tsv", "\t"), ("d.txt", ";")])
def test_csv_delimiters(tmp_path, name, sep):
    rows = ["user,item,rating,timestamp", "a,x,5,3", "b,x,1,2", "a,y,3,1"]
    path = write(tmp_path / name, "\n".join(r.replace(",", sep) for r in rows) + "\n")
    log = read(path)
    assert pairs(log) == {("a", "x"), ("b", "x"), ("a", "y")}
    assert log.ratings.tolist() == [5, 1, 3] and log.timestamps.tolist() == [3, 2, 1]


def test_csv_blank_lines_are_skipped(tmp_path):
    log = read_csv(write(tmp_path / "d.csv", "user,item\n1,2\n\n3,4\n"))
    assert pairs(log) == {("1", "2"), ("3", "4")}


def test_csv_without_rating_and_with_iso_dates(tmp_path):
    path = write(tmp_path / "d.csv", "userId,movieId,time\n1,2,2020-01-01T00:00:00Z\n1,3,2020-01-02T00:00:00Z\n")
    log = read_csv(path)
    assert log.ratings is None
    assert np.diff(log.timestamps).tolist() == [86400.0]


def test_csv_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.csv", "user,item,rating\n1,2,3\n4,5,6\n7,8,9,10\n")
    with pytest.raises(DslrecError, match=r"d\.csv:4: expected 3 fields, found 4"):
        read_csv(path)


def test_csv_bad_values_name_their_line(tmp_path):
    path = write(tmp_path / "d.csv", "user,item,rating\n1,2,3\n\n4,5,good\n")
    with pytest.raises(DslrecError, match=r"d\.csv:4: rating 'good'"):
        read_csv(path)
    path = write(tmp_path / "e.csv", "user,item\n1,2\n3\n")
    with pytest.raises(DslrecError, match=r"e\.csv:3: missing item id"):
        read_csv(path)
    path = write(tmp_path / "f.csv", "who,what\n1,2\n")
    with pytest.raises(DslrecError, match=r"no user column in the header \(who, what\)"):
        read_csv(path)
    path = write(tmp_path / "g.csv", "user,item\n")
    with pytest.raises(DslrecError, match="no interactions"):
        read_csv(path)


# ---------------------------------------------------------------- users.dat


def test_citeulike_users_dat(tmp_path):
    path = write(tmp_path / "users.dat", "2 5 7\n1 7\n3 0 5 9")  # no final newline
    log = read_citeulike(path)
    assert list(log.user_ids) == ["0", "1", "2"] and list(log.item_ids) == ["0", "5", "7", "9"]
    assert pairs(log) == {("0", "5"), ("0", "7"), ("1", "7"), ("2", "0"), ("2", "5"), ("2", "9")}


def test_citeulike_count_mismatch_names_line(tmp_path):
    path = write(tmp_path / "users.dat", "2 5 7\n1 7\n3 0 5\n")
    with pytest.raises(DslrecError, match=r"users\.dat:3: the count says 3 items but the line lists 2"):
        read_citeulike(path)
    path = write(tmp_path / "users.dat", "2 5 7\n\n1 7\n")
    with pytest.raises(DslrecError, match=r"users\.dat:2: empty line"):
        read_citeulike(path)


# ---------------------------------------------------------------- detection


def test_detect(tmp_path):
    write(tmp_path / "a" / "train.txt", "0 1\n")
    assert detect(tmp_path / "a") == ("lightgcn", tmp_path / "a")
    assert detect(tmp_path / "a" / "train.txt") == ("lightgcn", tmp_path / "a")
    inter = write(tmp_path / "b" / "ml.inter", "user_id:token\titem_id:token\n1\t2\n")
    write(tmp_path / "b" / ".ml.inter.123.part", "junk")  # hidden temp files are ignored
    assert detect(tmp_path / "b") == ("inter", inter)
    assert detect(write(tmp_path / "c" / "users.dat", "1 1\n")) == ("citeulike", tmp_path / "c" / "users.dat")
    assert detect(write(tmp_path / "lines.txt", "0 1 2\n"))[0] == "lines"
    assert detect(write(tmp_path / "typed.log", "user_id:token\titem_id:token\n"))[0] == "inter"
    write(tmp_path / "d" / "x.csv", "user,item\n")
    write(tmp_path / "d" / "y.csv", "user,item\n")
    with pytest.raises(DslrecError, match="several dataset files"):
        detect(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(DslrecError, match="no dataset file found"):
        detect(tmp_path / "e")
    with pytest.raises(DslrecError, match="does not exist"):
        detect(tmp_path / "missing")


# ---------------------------------------------------------------- the real files


@needs_shared
def test_real_lightgcn_files():
    for name, counts in {"gowalla": (29_858, 40_981, 810_128, 217_242), "ml-1m": (6_022, 3_043, 796_244, 99_455),
                         "amazon-book-kgat": (70_679, 24_915, 652_514, 193_920)}.items():
        log = read(SHARED / name)
        got = (log.n_users, log.n_items, int((log.split == TRAIN).sum()), int((log.split == TEST).sum()))
        assert got == counts, name


@needs_shared
def test_real_unsplit_files():
    log = read(SHARED / "ml-100k")
    assert (log.n_users, log.n_items, len(log)) == (943, 1_682, 100_000)
    assert log.ratings.min() == 1 and log.ratings.max() == 5 and log.timestamps.min() > 8e8
    log = read(SHARED / "citeulike-t")
    assert (log.n_users, log.n_items, len(log)) == (7_947, 25_584, 134_860)
    assert log.item_ids[-1] == "25974"  # ids run to 25,974; only the 25,584 that occur are items


@needs_shared
def test_gowalla_loads_with_its_split(monkeypatch):
    # speed is measured in benchmarks/bench_load.py, not asserted here
    monkeypatch.setenv("DSLREC_DATA_DIR", str(SHARED))
    ds = load("gowalla")
    assert ds.train.nnz + ds.valid.nnz == 810_128 and ds.test.nnz == 217_242


# ---------------------------------------------------------------- block-wise parsing: edge cases


def reference_lines(text: str) -> list[tuple[int, list[int]]]:
    """(user, items) per non-blank line, the plain-Python way."""
    out = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens:
            out.append((int(tokens[0]), [int(t) for t in tokens[1:]]))
    return out


def parsed_lines(path: Path) -> list[tuple[int, list[int]]]:
    from dslrec.data.readers import _read_user_lines

    heads, counts, items = _read_user_lines(path)
    starts = np.r_[0, np.cumsum(counts)]
    return [(int(h), items[a:b].tolist()) for h, a, b in zip(heads, starts[:-1], starts[1:])]


TRICKY = [
    "0 1 2\n1 2 10\n",
    "0 1 2\n1 2 10",  # no final newline
    "0 1 2\r\n1 2 10\r\n",  # CRLF
    "  7\t100   200 \n\n\n 9 300\t\n",  # tabs, runs of spaces, blank lines, leading and trailing blanks
    "5\n6 1\n5\n",  # lines without items, a user listed twice
    "1 " + " ".join(str(i) for i in range(300)) + "\n2 3\n",  # a line longer than a block
    "123456789012345678 999999999999999999\n0 0\n",  # 18-digit ids
    "\n\n0 1\n",  # leading blank lines
]


@pytest.mark.parametrize("block", [1, 3, 8, 64, 1 << 21])
@pytest.mark.parametrize("text", TRICKY)
def test_user_lines_match_a_plain_parser_for_any_block_size(tmp_path, monkeypatch, block, text):
    import dslrec.data.readers as readers

    monkeypatch.setattr(readers, "BLOCK_BYTES", block)
    path = tmp_path / "train.txt"
    path.write_bytes(text.encode())
    assert parsed_lines(path) == reference_lines(text)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.tuples(st.integers(0, 10**6), st.lists(st.integers(0, 10**12), max_size=8)), max_size=30),
       seps=st.lists(st.sampled_from([" ", "  ", "\t", " \t "]), min_size=1, max_size=4),
       ends=st.sampled_from(["\n", "\r\n", " \n", "\n\n"]), last=st.booleans(), block=st.integers(1, 40))
def test_user_lines_property(tmp_path_factory, lines, seps, ends, last, block):
    import dslrec.data.readers as readers

    text = ends.join(seps[k % len(seps)].join(map(str, [u, *items])) for k, (u, items) in enumerate(lines))
    if last and text:
        text += ends
    if not text.strip():
        return
    path = tmp_path_factory.mktemp("lines") / "train.txt"
    path.write_bytes(text.encode())
    old = readers.BLOCK_BYTES
    readers.BLOCK_BYTES = block
    try:
        assert parsed_lines(path) == reference_lines(text)
    finally:
        readers.BLOCK_BYTES = old


@pytest.mark.parametrize("block", [4, 1 << 21])
def test_errors_name_the_line_in_any_block(tmp_path, monkeypatch, block):
    import dslrec.data.readers as readers

    monkeypatch.setattr(readers, "BLOCK_BYTES", block)
    lines = [f"{u} {u + 1} {u + 2}" for u in range(50)]
    write(tmp_path / "test.txt", "0 1\n")
    write(tmp_path / "train.txt", "\n".join(lines[:40] + ["40 41 4x2"] + lines[41:]) + "\n")
    with pytest.raises(DslrecError, match=r"train\.txt:41: '4x2' is not an integer id"):
        read_lightgcn(tmp_path)
    write(tmp_path / "train.txt", "\n".join(lines[:30] + ["30 " + "9" * 19] + lines[31:]) + "\n")
    with pytest.raises(DslrecError, match=r"train\.txt:31: id 9999999999999999999\.\.\. has too many digits"):
        read_lightgcn(tmp_path)
    write(tmp_path / "train.txt", " \n\t\n\n")
    with pytest.raises(DslrecError, match=r"train\.txt is empty"):
        read_lightgcn(tmp_path)


def test_big_ids_keep_their_values_and_small_ones_int32_codes(tmp_path):
    write(tmp_path / "train.txt", "123456789012345678 999999999999999999 5\n3 5\n")
    write(tmp_path / "test.txt", "3 999999999999999999\n")
    log = read_lightgcn(tmp_path)
    assert list(log.user_ids) == ["3", "123456789012345678"]
    assert list(log.item_ids) == ["5", "999999999999999999"]
    assert log.users.dtype == np.int32 and log.items.dtype == np.int32
    assert pairs(log, TEST) == {("3", "999999999999999999")}


@pytest.mark.parametrize("block", [2, 1 << 21])
def test_citeulike_across_blocks(tmp_path, monkeypatch, block):
    import dslrec.data.readers as readers

    monkeypatch.setattr(readers, "BLOCK_BYTES", block)
    path = write(tmp_path / "users.dat", "2 5 7\n1 7\n0\n3 0 5 9")
    log = read_citeulike(path)
    assert list(log.user_ids) == ["0", "1", "2", "3"]
    assert pairs(log) == {("0", "5"), ("0", "7"), ("1", "7"), ("3", "0"), ("3", "5"), ("3", "9")}
    write(tmp_path / "users.dat", "2 5 7\n1 7\n1 3\n\n1 7\n")
    with pytest.raises(DslrecError, match=r"users\.dat:4: empty line"):
        read_citeulike(path)
    write(tmp_path / "users.dat", "2 5 7\n1 7\n1 3\n1 4\n2 7\n")
    with pytest.raises(DslrecError, match=r"users\.dat:5: the count says 2 items but the line lists 1"):
        read_citeulike(path)


def test_int_strings_match_numpy():
    from dslrec.data.readers import int_strings

    for values in ([0], [0, 9, 10, 99, 100, 5_000_000], [7, 123456789012345678], [3, 1, 20], list(range(1200))):
        a = np.array(values, dtype=np.int64)
        got = int_strings(a)
        assert got.tolist() == a.astype(str).tolist()
        assert got.dtype == np.dtype(f"<U{len(str(max(values)))}")  # exact width, not <U21
    assert len(int_strings(np.zeros(0, dtype=np.int64))) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), max_size=40))
def test_csr_from_pairs_matches_scipy(pairs_):
    import scipy.sparse as sp

    from dslrec.data.dataset import csr_from_pairs

    users = np.array([p[0] for p in pairs_], dtype=np.int64)
    items = np.array([p[1] for p in pairs_], dtype=np.int32)
    m = csr_from_pairs(users, items, (7, 5))
    ref = sp.csr_matrix((np.ones(len(users), np.float32), (users, items.astype(np.int64))), shape=(7, 5))
    ref.sum_duplicates()
    assert m.shape == (7, 5) and m.has_sorted_indices and m.dtype == np.float32
    assert np.array_equal(m.toarray(), (ref.toarray() > 0).astype(np.float32))
    assert np.array_equal(m.indptr, ref.indptr) and np.array_equal(m.indices, ref.indices)
    assert (m.data == 1).all()


def test_csr_from_pairs_refuses_indices_outside_the_shape():
    from dslrec.data.dataset import csr_from_pairs

    with pytest.raises(ValueError, match="outside the shape"):
        csr_from_pairs([0, 3], [1, 1], (3, 2))


def test_synthetic_lightgcn_folder_is_long_tailed_and_reads_back(tmp_path):
    from dslrec.data.synthetic import write_lightgcn_folder

    counts = write_lightgcn_folder(tmp_path, n_users=3000, n_items=2000, per_user=6, seed=1)
    again = write_lightgcn_folder(tmp_path / "again", n_users=3000, n_items=2000, per_user=6, seed=1)
    assert counts == again and (tmp_path / "train.txt").read_bytes() == (tmp_path / "again/train.txt").read_bytes()
    log = read_lightgcn(tmp_path)
    assert (int((log.split == TRAIN).sum()), int((log.split == TEST).sum())) == (counts["train"], counts["test"])
    assert log.n_users == 3000 and 5.5 < len(log) / 3000 < 6.5
    assert len({(u, i) for u, i in zip(log.users.tolist(), log.items.tolist())}) == len(log)  # distinct per user
    for line in (tmp_path / "train.txt").read_text().splitlines()[:50]:  # items in increasing order
        items = [int(t) for t in line.split()[1:]]
        assert items == sorted(items)
    popularity = np.sort(np.bincount(log.items))[::-1]
    assert popularity[: len(popularity) // 100].sum() > 0.15 * len(log)  # the top 1% of items: a long tail
