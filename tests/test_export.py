"""The compact model file and serving from it: equivalence, size, damage, ids, CLI."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import dslrec
from dslrec import cli, models
from dslrec.data import Dataset, synthetic_dataset
from dslrec.errors import DslrecError
from dslrec.evaluate import topk_ordered
from dslrec.export import Recommender, cost_of_run, export, load, to_module, write_compact
from dslrec import rundir
from dslrec.settings import resolve_settings

K = 20
OPTIONS = {  # small networks keep the file fast; the structure is the paper's
    "mf": {},
    "lightgcn": {"n_layers": 2},
    "neumf": {"lr": 1e-2},  # paper lr 1e-4 barely moves in one epoch: scores would all tie
    "multvae": {"hidden": 64, "latent": 16},
}


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n_users=120, n_items=90, seed=3)


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    """One DSL run at density 0.2 (1 epoch) per backbone on the small dataset."""
    out = {}
    for name, options in OPTIONS.items():
        run_dir = tmp_path_factory.mktemp(f"run-{name}")
        dslrec.train(dict(model=name, epochs=1, method="dsl", density=0.2, **options), dataset=small,
                     out=run_dir, progress=False)
        out[name] = run_dir
    return out


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """MF, dim 64, density 0.2 on the default synthetic data (2000 users x 1000 items), re-loadable by name."""
    run_dir = tmp_path_factory.mktemp("run-big")
    dslrec.train(dict(model="mf", dataset="synthetic", epochs=1, method="dsl", density=0.2, dim=64),
                 out=run_dir, progress=False)
    return run_dir


def trained_model(run_dir, dataset):
    cfg = resolve_settings(config_file=run_dir / rundir.CONFIG)
    model = models.build(cfg.model, dataset, **cfg.model_options)
    model.load_state_dict(rundir.load_weights(run_dir / rundir.BEST))
    return model.eval()


def reference_scores(model, dataset) -> torch.Tensor:
    """The trained model's scores for every user, training items at -inf."""
    with torch.no_grad():
        scores = model.scorer()(torch.arange(dataset.n_users)).clone()
    rows = np.repeat(np.arange(dataset.n_users), np.diff(dataset.train.indptr))
    scores[torch.from_numpy(rows), torch.from_numpy(dataset.train.indices.astype(np.int64))] = float("-inf")
    return scores


def assert_same_top_lists(ref: torch.Tensor, got, k: int, tol: float) -> None:
    """Same top-k as the reference: scores equal to ``tol``; items equal wherever the
    reference score is not within ``tol`` of a neighbour in the ranking (a near tie that
    rounding may flip). Exact ties (items whose active weights give them the same inputs,
    common for a barely trained sparse NeuMF) are compared: both sides break them by index."""
    vals, items = topk_ordered(ref, k + 1)
    vals, items = vals.numpy(), items.numpy()
    scale = np.abs(vals[np.isfinite(vals)]).max()
    np.testing.assert_allclose(got.scores, vals[:, :k], rtol=0, atol=tol * scale)
    # the recommender's items really have the scores it reports
    at = np.take_along_axis(ref.numpy(), got.items, axis=1)
    np.testing.assert_allclose(got.scores, at, rtol=0, atol=tol * scale)
    diff = np.abs(np.diff(vals, axis=1))  # gap between rank j and j + 1
    gaps = (diff > tol * scale) | (diff == 0)
    distinct = gaps[:, :k] & np.concatenate([np.ones((len(vals), 1), bool), gaps[:, : k - 1]], axis=1)
    assert distinct.mean() > 0.9  # the comparison below is not vacuous
    assert np.array_equal(got.items[distinct], items[:, :k][distinct])


# --- equivalence ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(OPTIONS))
def test_compact_top_lists_equal_the_trained_model_for_every_user(name, runs, small, tmp_path):
    path = tmp_path / "model.dslrec"
    export(runs[name], path, dataset=small)
    rec = Recommender.load(path)
    got = rec.recommend(small.user_ids, k=K)
    assert got.ids.shape == (small.n_users, K) and got.known.all()
    ref = reference_scores(trained_model(runs[name], small), small)
    assert_same_top_lists(ref, got, K, tol=1e-6)
    assert np.array_equal(got.ids, small.item_ids[got.items])
    if rec.items.raw is None:  # ids "0".."n-1" made on the fly: as wide as the longest, not 21 characters
        assert got.ids.dtype == np.dtype(f"U{len(str(small.n_items - 1))}")
    # the stored weights are the active ones: zero where the mask says inactive
    compact = load(path)
    masks = rundir.load_weights(runs[name] / rundir.BEST_MASKS)
    for tensor, mask in masks.items():
        assert compact.is_sparse(tensor)
        assert compact.header["weights"][tensor]["nnz"] == int(mask.sum())
        assert np.array_equal(compact.mask(tensor), mask.numpy().astype(bool))
    # to_module rebuilds the same network
    module = to_module(compact)
    with torch.no_grad():
        again = module.scorer()(torch.arange(small.n_users))
        first = trained_model(runs[name], small).scorer()(torch.arange(small.n_users))
    torch.testing.assert_close(again, first)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_export_keeps_rankings_close(runs, small, tmp_path, dtype):
    path = tmp_path / "half.dslrec"
    export(runs["mf"], path, dtype=dtype, dataset=small)
    compact = load(path)
    assert compact.tensors["w/user.weight/values"].dtype == getattr(torch, dtype)
    got = Recommender(compact).recommend(small.user_ids, k=K)
    ref = reference_scores(trained_model(runs["mf"], small), small)
    at = np.take_along_axis(ref.numpy(), got.items, axis=1)
    scale = np.abs(at).max()
    tol = 1e-2 if dtype == "float16" else 4e-2  # bfloat16 keeps 8 bits of mantissa
    assert np.abs(at - got.scores).max() < tol * scale  # rounding, not a different model
    vals, _ = topk_ordered(ref, K)
    assert np.abs(vals.numpy() - at).max() < tol * scale


def test_int8_top_lists_agree_with_float32(big_run, runs, small, tmp_path):
    """int8 (per-row scales) keeps a trained MF's top-20 lists: most items agree with the float32
    export's; and every backbone serves from an int8 file with scores close to float32's."""
    f32, q = tmp_path / "f32.dslrec", tmp_path / "q.dslrec"
    export(big_run, f32)
    export(big_run, q, dtype="int8")
    a, b = Recommender.load(f32), Recommender.load(q)
    users = a.user_ids()
    top_a, top_b = a.recommend(users, k=K).items, b.recommend(users, k=K).items
    overlap = np.mean([len(set(x) & set(y)) / K for x, y in zip(top_a.tolist(), top_b.tolist())])
    assert overlap >= 0.9, overlap
    assert not np.array_equal(top_a, top_b)  # int8 really was served, not float32
    for name in OPTIONS:
        export(runs[name], f32, dataset=small)
        export(runs[name], q, dtype="int8", dataset=small)
        ref = Recommender.load(f32).scores(np.arange(small.n_users))
        got = Recommender.load(q).scores(np.arange(small.n_users))
        assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max(), name


# --- size -----------------------------------------------------------------------

def test_weights_section_is_small_against_the_dense_checkpoint(big_run, tmp_path):
    """Compared: the tensor bytes of the compact file's weights section (values + column indices +
    row counts) and the whole compact file without the seen section, against the size of
    best.safetensors (the dense float32 checkpoint, dim 64, 2000 users + 1000 items)."""
    dense = (big_run / rundir.BEST).stat().st_size
    f32 = export(big_run, tmp_path / "f32.dslrec")
    f16 = export(big_run, tmp_path / "f16.dslrec", dtype="float16", with_seen=False)
    assert f32["dense_bytes"] == dense
    assert f32["sizes"]["weights"] <= 0.3 * dense
    assert f16["sizes"]["weights"] <= 0.17 * dense
    assert f16["sizes"]["file"] <= 0.17 * dense  # header and ids are negligible here
    assert f16["sizes"]["seen"] == 0 and f32["sizes"]["seen"] > 0
    for result in (f32, f16):
        s = result["sizes"]
        assert s["weights"] + s["seen"] + s["ids"] + s["popularity"] + s["header"] == s["file"]
    cost = cost_of_run(big_run)
    assert cost["parameters"]["compact_bytes_float32"] == f32["sizes"]["weights"]
    assert cost["parameters"]["compact_bytes_float16"] == f16["sizes"]["weights"]
    # 64 columns at density 0.2: a bitmap (8 bytes a row) is cheaper than uint8 indices (12.8 + 1)
    compact = load(tmp_path / "f32.dslrec")
    assert compact.tensors["w/user.weight/bitmap"].shape == (2000, 8)
    assert "w/user.weight/indices" not in compact.tensors and "w/user.weight/row_counts" not in compact.tensors
    # int8: one byte a value, a float32 scale a row
    q = export(big_run, tmp_path / "q.dslrec", dtype="int8")
    assert q["sizes"]["weights"] <= 0.15 * dense
    assert cost["parameters"]["compact_bytes_int8"] == q["sizes"]["weights"]
    assert load(tmp_path / "q.dslrec").tensors["w/item.weight/scales"].shape == (1000,)
    # the whole float32 file (training items included) against the dense checkpoint plus the same items
    assert f32["sizes"]["file"] <= 0.3 * (dense + f32["sizes"]["seen"])


def test_positions_take_the_cheaper_form_and_round_trip(tmp_path, monkeypatch):
    """Column indices at low density, a bitmap at high density; both give back the exact mask and
    weights, and the seen section's gaps give back every training item."""
    from dslrec import encoding
    from dslrec.export.compact import encode_csr

    rng = np.random.default_rng(0)
    w = torch.randn(50, 64)
    for density, form in ((0.05, "indices"), (0.5, "bitmap")):
        mask = torch.from_numpy(rng.random((50, 64)) < density)
        mask[7] = False  # an empty row
        parts = encode_csr(w, mask, "float32")
        assert form in parts and ({"indices", "bitmap"} - {form}).isdisjoint(parts)
        d = synthetic_dataset(n_users=50, n_items=64, seed=1)
        path = tmp_path / f"{form}.dslrec"
        write_compact(path, backbone="mf", model_config={}, state={"user.weight": w, "item.weight": w},
                      masks={"user.weight": mask}, dataset=d)
        c = load(path)
        assert np.array_equal(c.mask("user.weight"), mask.numpy())
        assert np.array_equal(c.dense("user.weight"), (w * mask).numpy())
        got = c.seen()
        assert (got != sp.csr_matrix(d.train != 0)).nnz == 0
        monkeypatch.setattr(encoding, "DECODE_CHUNK", 7)  # decoded a few rows at a time: the same items
        assert (c.seen() != sp.csr_matrix(d.train != 0)).nnz == 0
        monkeypatch.undo()
        rows = torch.tensor([7, 3, 3, 49])
        assert torch.equal(c.rows("user.weight").dense(rows), (w * mask)[rows])


@pytest.mark.parametrize("name", ["mf", "neumf", "multvae"])
def test_scoring_in_blocks_equals_one_product(name, runs, small, tmp_path, monkeypatch):
    """A tiny score budget (many item blocks, many batches of users, tables widened a few rows at a
    time) gives the same lists as one block for everyone."""
    from dslrec.evaluate import ranking
    from dslrec.export import rows

    path = tmp_path / f"{name}.dslrec"
    export(runs[name], path, dataset=small)
    whole = Recommender.load(path).recommend(small.user_ids, k=K)
    monkeypatch.setattr(rows, "BLOCK_ELEMENTS", 100)
    monkeypatch.setattr(ranking, "MIN_BLOCK", 13)
    assert ranking.plan_blocks(small.n_users, small.n_items, 4 * 7 * 13) == (7, 13)
    assert ranking.plan_blocks(3, small.n_items, 4 * 7 * 13, max_block=20) == (3, 20)  # few users: capped block
    tiny = Recommender(load(path), score_bytes=4 * 7 * 13)  # 7 users x 13 items
    blocked = tiny.recommend(small.user_ids, k=K, batch_size=None)
    assert np.array_equal(blocked.items, whole.items)
    np.testing.assert_allclose(blocked.scores, whole.scores, rtol=1e-5, atol=1e-6)
    x = torch.randn(10, 64)
    item = load(path).rows("item.weight" if name == "mf" else "gmf_item.weight" if name == "neumf" else "decoder_out.weight")
    dense = item.block(0, item.shape[0])
    torch.testing.assert_close(item.times_t(x[:, : item.shape[1]]), x[:, : item.shape[1]] @ dense.T)


def test_a_call_that_fills_score_blocks_hands_its_memory_back(mf_file, small, monkeypatch):
    """After a call big enough to fill a block of scores the freed heap goes back to the system (a
    server stays at the model's size between calls); a call smaller than one block skips it."""
    from dslrec.export import recommender

    calls = []
    monkeypatch.setattr(recommender, "release_freed_memory", lambda: calls.append(1))
    rec = Recommender(load(mf_file), score_bytes=4 * small.n_items * 10)  # 10 users' scores per block
    calls.clear()  # loading hands back its own transients
    rec.recommend(small.user_ids[:9], k=K)
    rec.recommend([f"new{i}" for i in range(10)], k=K, unknown="popular")  # not scored: no blocks filled
    assert calls == []
    rec.recommend(small.user_ids[:10], k=K)
    assert calls == [1]


# --- damaged and foreign files ----------------------------------------------------

@pytest.fixture()
def mf_file(runs, small, tmp_path):
    path = tmp_path / "mf.dslrec"
    export(runs["mf"], path, dataset=small)
    return path


def test_truncated_file_fails_clearly(mf_file):
    data = mf_file.read_bytes()
    for cut in (len(data) // 2, 100, 12, len(data) - 1):  # in the tensors, in the header, at the end
        mf_file.write_bytes(data[:cut])
        with pytest.raises(DslrecError, match=r"damaged.*re-export"):
            load(mf_file)


def test_flipped_byte_fails_checksum(mf_file):
    data = bytearray(mf_file.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    with safe_open(str(mf_file), framework="pt") as f:
        assert "w/user.weight/values" in f.keys()
    data[8 + header_len + 5] ^= 0xFF  # inside the first tensor's bytes
    mf_file.write_bytes(bytes(data))
    with pytest.raises(DslrecError, match=r"damaged \(checksum mismatch\); re-export it"):
        Recommender.load(mf_file)


def test_altered_header_fails_checksum(mf_file):
    data = mf_file.read_bytes()
    pos = data.index(b'\\"backbone\\":\\"mf\\"')  # inside the JSON header string
    altered = data[:pos] + b'\\"backbone\\":\\"mg\\"' + data[pos + len(b'\\"backbone\\":\\"mf\\"'):]
    mf_file.write_bytes(altered)
    with pytest.raises(DslrecError, match="checksum mismatch"):
        load(mf_file)


def test_foreign_and_wrong_version_files(runs, mf_file, tmp_path):
    with pytest.raises(DslrecError, match="not a dslrec model"):
        load(runs["mf"] / rundir.BEST)  # a plain safetensors file
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model at all")
    with pytest.raises(DslrecError, match="not a dslrec model"):
        load(text)
    with pytest.raises(DslrecError, match="no model file"):
        load(tmp_path / "missing.dslrec")
    with safe_open(str(mf_file), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "99"
    save_file(tensors, str(tmp_path / "v99.dslrec"), metadata=meta)
    with pytest.raises(DslrecError, match="version 99.*re-export"):
        load(tmp_path / "v99.dslrec")


# --- users, ids, seen items -----------------------------------------------------------

def test_unknown_users_error_or_popular(mf_file, small):
    rec = Recommender.load(mf_file)
    with pytest.raises(DslrecError, match="unknown user id 'nobody'"):
        rec.recommend(["3", "nobody"], k=5)
    out = rec.recommend(["3", "nobody"], k=5, unknown="popular")
    assert out.known.tolist() == [True, False]
    counts = small.item_popularity()
    order = np.lexsort((np.arange(small.n_items), -counts))[:5]
    assert np.array_equal(out.items[1], order)
    assert np.allclose(out.scores[1], counts[order])
    assert np.array_equal(out.items[0], rec.recommend(["3"], k=5).items[0])
    with pytest.raises(DslrecError, match="unknown="):
        rec.recommend(["3"], unknown="ignore")
    # a "range" id map ("0".."n-1") is parsed, not stored: only canonical in-range decimals match
    assert rec.header["user_ids"]["kind"] == "range"
    n = small.n_users
    assert rec.user_index(["07", "7", 7, "-1", str(n), str(n - 1), "1e2", " 7"]).tolist() == [
        -1, 7, 7, -1, -1, n - 1, -1, -1]
    assert np.array_equal(rec.user_ids(), small.user_ids) and np.array_equal(rec.item_ids(), small.item_ids)
    assert np.array_equal(rec.user_ids([n - 1, 3]), small.user_ids[[n - 1, 3]])  # a range map: only those made
    assert rec.user_ids([]).shape == (0,)
    for bad, says in ([n], "out of range"), ([-1], "out of range"), ([1.0], "integers"), ([True], "integers"):
        with pytest.raises(DslrecError, match=says):
            rec.user_ids(bad)
    with pytest.raises(DslrecError, match=r"item index .*out of range"):
        rec.item_ids([small.n_items])
    with pytest.raises(DslrecError, match=r"user index -1 is out of range"):
        rec.scores([-1])  # not the last user's scores


def test_exclude_seen_and_no_seen(runs, small, tmp_path):
    full = tmp_path / "full.dslrec"
    export(runs["mf"], full, dataset=small)
    rec = Recommender.load(full)
    user = int(np.argmax(np.diff(small.train.indptr)))
    seen = set(small.train[user].indices.tolist())
    excluded = rec.recommend([small.user_ids[user]], k=small.n_items).items[0]
    kept = excluded[excluded >= 0]
    assert not seen & set(kept.tolist()) and len(kept) == small.n_items - len(seen)
    included = rec.recommend([small.user_ids[user]], k=K, exclude_seen=False)
    scores = rec.scores(np.array([user]))[0]
    assert np.array_equal(included.items[0], np.lexsort((np.arange(small.n_items), -scores))[:K])
    assert seen & set(included.items[0].tolist())

    lean = tmp_path / "lean.dslrec"
    result = export(runs["mf"], lean, dataset=small, with_seen=False)
    assert result["sizes"]["seen"] == 0
    rec = Recommender.load(lean)
    with pytest.raises(DslrecError, match="--no-seen.*exclude_seen=False"):
        rec.recommend(["0"], k=5)
    same = Recommender.load(full).recommend(["0"], k=5, exclude_seen=False)
    assert np.array_equal(rec.recommend(["0"], k=5, exclude_seen=False).items, same.items)
    with pytest.raises(DslrecError, match="needs its training interactions"):
        export(runs["lightgcn"], tmp_path / "g.dslrec", dataset=small, with_seen=False)


def test_raw_ids_round_trip_in_every_kind(small, tmp_path):
    ids_users = np.array([f"u{i}" for i in range(small.n_users)])  # strings: a JSON list
    ids_items = (np.arange(small.n_items) * 7 + 1000).astype(str)  # integers: a tensor
    ds = Dataset(name="ids", user_ids=ids_users, item_ids=ids_items, train=small.train, valid=small.valid,
                 test=small.test)
    model = models.build("mf", ds, dim=8)
    path = tmp_path / "ids.dslrec"
    write_compact(path, backbone="mf", model_config=model.config, state=model.state_dict(), masks=None, dataset=ds)
    compact = load(path)
    assert compact.header["user_ids"]["kind"] == "list"
    # integers: the smallest unsigned type that holds them (up to 1000 + 7 * 89: uint16)
    assert compact.header["item_ids"]["kind"] == "int" and compact.tensors["ids/items"].dtype == torch.uint16
    assert np.array_equal(compact.user_ids(), ids_users) and np.array_equal(compact.item_ids(), ids_items)
    assert not compact.is_sparse("user.weight")  # no masks: stored dense
    rec = Recommender(compact)
    out = rec.recommend(["u7", "u0"], k=3)
    assert out.ids.dtype.kind == "U" and set(out.ids.ravel()) <= set(ids_items)
    assert rec.user_ids([7, 0]).tolist() == ["u7", "u0"] and rec.item_ids([2]).tolist() == [str(1014)]
    int_ids = Dataset(name="ints", user_ids=np.arange(small.n_users) + 5, item_ids=np.arange(small.n_items),
                      train=small.train, valid=small.valid, test=small.test)
    write_compact(path, backbone="mf", model_config=model.config, state=model.state_dict(), masks=None,
                  dataset=int_ids)
    compact = load(path)
    assert compact.header["item_ids"] == {"kind": "range", "type": "int", "n": small.n_items}
    rec = Recommender(compact)
    assert np.array_equal(rec.recommend([5, "6"], k=3).known, [True, True])  # ints or their text
    assert rec.recommend([5], k=3).ids.dtype == np.int64
    assert rec.user_ids(np.array([[2], [0]])).tolist() == [[7], [5]]  # any shape, as the dataset's type


def test_export_checks_the_dataset_matches_the_run(runs, tmp_path):
    other = synthetic_dataset(n_users=50, n_items=40, seed=9)
    with pytest.raises(DslrecError, match="not the one the run trained on"):
        export(runs["mf"], tmp_path / "x.dslrec", dataset=other)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["mf"], unfinished)
    (unfinished / rundir.SUMMARY).unlink()
    with pytest.raises(DslrecError, match="has no summary.json: the run has not finished"):
        export(unfinished, tmp_path / "x.dslrec")
    with pytest.raises(DslrecError, match="does not exist"):
        export(tmp_path / "nowhere", tmp_path / "x.dslrec")


# --- command line -----------------------------------------------------------------------

def test_cli_export_and_recommend_round_trip(big_run, tmp_path, capsys):
    path = tmp_path / "cli.dslrec"
    assert cli.main(["export", str(big_run), "--out", str(path), "--dtype", "float16"]) == 0
    printed = capsys.readouterr().out
    assert "x the dense weights" in printed and "weights" in printed and "seen items" in printed
    assert load(path).header["dtype"] == "float16"
    assert cli.main(["recommend", "--model", str(path), "--users", "0,17", "--k", "5", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    api = Recommender.load(path).recommend(["0", "17"], k=5)
    assert [r["user"] for r in records] == ["0", "17"]
    assert [r["items"] for r in records] == api.ids.tolist()
    assert cli.main(["recommend", "--model", str(path), "--users", "17", "--k", "3", "--include-seen"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[1].split()[:2] == ["17", "1"]
    assert cli.main(["recommend", "--model", str(path), "--users", "nobody", "--k", "3"]) == 2
    assert "unknown user id 'nobody'" in capsys.readouterr().err
    assert cli.main(["recommend", "--model", str(path), "--users", "nobody", "--k", "3",
                     "--unknown", "popular", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["known"] is False


def test_cli_include_seen_returns_seen_items_and_no_seen_export_leaves_them_out(big_run, tmp_path, capsys):
    data, _ = rundir.read_data(big_run)
    user = int(np.argmax(np.diff(data.train.indptr)))  # the user with the most training items
    uid, seen = str(data.user_ids[user]), {str(data.item_ids[i]) for i in data.train[user].indices}
    full, lean = tmp_path / "full.dslrec", tmp_path / "lean.dslrec"
    assert cli.main(["export", str(big_run), "--out", str(full)]) == 0
    capsys.readouterr()
    scores = Recommender.load(full).scores(np.array([user]))[0]
    ranked = [str(data.item_ids[i]) for i in np.lexsort((np.arange(data.n_items), -scores))]
    by_score = ranked[:50]

    def recommend(path, *extra):
        code = cli.main(["recommend", "--model", str(path), "--users", uid, "--k", "50", "--json", *extra])
        out = capsys.readouterr()
        return code, ([str(i) for i in json.loads(out.out)[0]["items"]] if code == 0 else out.err)

    # --include-seen: the top 50 by score, the user's own training items among them
    assert recommend(full, "--include-seen") == (0, by_score)
    assert seen & set(by_score)
    # the default leaves them out: the unseen items in score order
    code, unseen = recommend(full)
    assert code == 0 and unseen == [i for i in ranked if i not in seen][:50]

    # --no-seen: the file holds no training interactions, so only --include-seen can serve from it
    assert cli.main(["export", str(big_run), "--out", str(lean), "--no-seen"]) == 0
    assert "left out: --no-seen" in capsys.readouterr().out
    assert load(lean).header["seen"] is None and not any(k.startswith("seen/") for k in load(lean).tensors)
    assert load(full).header["seen"]["nnz"] == data.train.nnz
    assert lean.stat().st_size < full.stat().st_size
    code, err = recommend(lean)
    assert code == 2 and "--no-seen" in err and "Traceback" not in err
    assert recommend(lean, "--include-seen") == (0, by_score)
