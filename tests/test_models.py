"""Backbones: shapes, gradients, reference computations, and that each one learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dslrec import models
from dslrec.data.dataset import Dataset, csr_from_pairs
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError
from dslrec.models import graph as graph_mod
from dslrec.models import neumf as neumf_mod

N_USERS, N_ITEMS = 300, 200
SMALL = {  # small configs keep the test fast; the code paths are the same
    "mf": {"dim": 32},
    "lightgcn": {"dim": 32, "n_layers": 2},
    "neumf": {"gmf_dim": 8, "layers": [16, 16, 8]},
    "multvae": {"hidden": 64, "latent": 16, "total_anneal_steps": 50},
}


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return synthetic_dataset(n_users=N_USERS, n_items=N_ITEMS, seed=0)


# ---- inline sampling (the library's own sampler is tested on its own) ----


def train_pairs(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    m = ds.train.tocoo()
    return m.row.astype(np.int64), m.col.astype(np.int64)


def make_batch(kind: str, ds: Dataset, rng: np.random.Generator, size: int) -> dict:
    users, items = train_pairs(ds)
    if kind == "rows":
        u = rng.choice(ds.n_users, size=size, replace=False)
        return {"users": torch.from_numpy(u), "rows": torch.from_numpy(ds.train[u].toarray())}
    pick = rng.integers(0, len(users), size)
    u, i = users[pick], items[pick]
    neg = rng.integers(0, ds.n_items, size)  # uniform; rare false negatives are harmless here
    if kind == "pairwise":
        return {"users": torch.from_numpy(u), "pos": torch.from_numpy(i), "neg": torch.from_numpy(neg)}
    labels = np.concatenate([np.ones(size), np.zeros(size)]).astype(np.float32)
    return {
        "users": torch.from_numpy(np.concatenate([u, u])),
        "items": torch.from_numpy(np.concatenate([i, neg])),
        "labels": torch.from_numpy(labels),
    }


def recall_at(scores: np.ndarray, ds: Dataset, k: int = 20) -> tuple[float, float]:
    """(model recall@k, expected recall@k of a random ranking) on the validation split."""
    scores = scores.copy()
    scores[ds.train.toarray() > 0] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    valid = ds.valid.toarray() > 0
    n_valid = valid.sum(1)
    users = n_valid > 0
    hits = np.take_along_axis(valid, top, axis=1).sum(1)
    recall = (hits[users] / np.minimum(n_valid[users], k)).mean()
    candidates = N_ITEMS - np.diff(ds.train.indptr)
    random = (np.minimum(k / candidates, 1.0) * n_valid / np.minimum(n_valid, k))[users].mean()
    return float(recall), float(random)


def all_scores(model, n_users: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        score = model.scorer()
        return torch.cat([score(u) for u in torch.arange(n_users).split(128)])


# ---- registry ----


def test_registry_lists_and_rejects(ds):
    assert set(models.BACKBONES) == {"mf", "lightgcn", "neumf", "multvae"}
    with pytest.raises(DslrecError, match="choose one of mf, lightgcn"):
        models.build("gru4rec", ds)
    with pytest.raises(DslrecError, match="no option 'depth'.*valid options: dim, n_layers, l2"):
        models.build("lightgcn", ds, depth=2)
    with pytest.raises(DslrecError, match="dim must be an integer"):
        models.build("mf", ds, dim=0)
    with pytest.raises(DslrecError, match="dropout"):
        models.build("neumf", ds, dropout=1.5)
    assert models.model_kwargs("neumf")["layers"] == [32, 32, 16, 8]
    s = models.paper_settings("lightgcn")
    assert (s["lr"], s["lr_end"], s["schedule"], s["batch_size"], s["delta_t"]) == (1e-2, 1e-4, "cosine", 1024, 3000)
    s["lr"] = 5.0  # a copy: editing it must not change the registry
    assert models.paper_settings("lightgcn")["lr"] == 1e-2
    for name in models.BACKBONES:
        ps = models.paper_settings(name)
        assert {"lr", "lr_end", "schedule", "batch_size", "epochs", "l2", "delta_t", "optimizer"} <= set(ps)
        assert ps["l2"] == models.model_kwargs(name)["l2"]


# ---- per-backbone contract ----


@pytest.mark.parametrize("name", list(models.BACKBONES))
def test_scores_loss_and_gradients(name, ds):
    torch.manual_seed(0)
    model = models.build(name, ds, **SMALL[name])
    assert model.config == {**models.model_kwargs(name), **SMALL[name]}
    # Contract with the sparse engine: ordinary dense parameters only.
    for mod in model.modules():
        if isinstance(mod, torch.nn.Embedding):
            assert not mod.sparse
    scores = all_scores(model, 7)
    assert scores.shape == (7, N_ITEMS) and torch.isfinite(scores).all()

    model.train()
    batch = make_batch(model.sampling, ds, np.random.default_rng(0), 64)
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_mf_loss_matches_formula(ds):
    torch.manual_seed(0)
    model = models.build("mf", ds, dim=8, l2=0.5)
    batch = make_batch("pairwise", ds, np.random.default_rng(1), 16)
    u = model.user.weight[batch["users"]]
    i, j = model.item.weight[batch["pos"]], model.item.weight[batch["neg"]]
    bpr = -torch.nn.functional.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
    reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / 2 / 16
    torch.testing.assert_close(model.loss(batch), bpr + 0.5 * reg)


# ---- LightGCN against dense references ----


def dense_norm_adj(r: np.ndarray) -> np.ndarray:
    nu, ni = r.shape
    a = np.block([[np.zeros((nu, nu)), r], [r.T, np.zeros((ni, ni))]])
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg**-0.5, 0.0)
    return d[:, None] * a * d[None, :]


def tiny_dataset() -> Dataset:
    # user 3 and item 4 have no interactions (degree 0).
    users = np.array([0, 0, 1, 1, 1, 2, 4])
    items = np.array([0, 1, 1, 2, 3, 0, 2])
    shape = (5, 5)
    empty = sp.csr_matrix(shape, dtype=np.float32)
    return Dataset("tiny", np.arange(5).astype(str), np.arange(5).astype(str),
                   csr_from_pairs(users, items, shape), empty, empty)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_normalized_adjacency_matches_dense(layout):
    t = tiny_dataset()
    adj = graph_mod.normalized_adjacency(t.train, layout=layout)
    want = dense_norm_adj(t.train.toarray())
    got = adj.to_dense().numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[3].sum() == 0 and got[:, 5 + 4].sum() == 0  # isolated user 3, item 4
    with pytest.raises(DslrecError, match="layout"):
        graph_mod.normalized_adjacency(t.train, layout="bsr")


def test_lightgcn_matches_dense_propagation(ds):
    torch.manual_seed(0)
    model = models.build("lightgcn", ds, dim=16, n_layers=3)
    a = torch.from_numpy(dense_norm_adj(ds.train.toarray())).double()
    e = model.embedding.weight.detach().double()
    layers = [e]
    for _ in range(3):
        layers.append(a @ layers[-1])
    final = torch.stack(layers).mean(0)
    want = final[:N_USERS] @ final[N_USERS:].T
    got = all_scores(model, N_USERS).double()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    # Gradient through the symmetric spmm equals the dense one.
    w = model.embedding.weight
    out = graph_mod.propagate(model.graph, w, 3)
    (g_sparse,) = torch.autograd.grad(out.pow(2).sum(), w)
    wd = w.detach().double().requires_grad_()
    layer, acc = wd, wd
    for _ in range(3):
        layer = a @ layer
        acc = acc + layer
    (g_dense,) = torch.autograd.grad((acc / 4).pow(2).sum(), wd)
    torch.testing.assert_close(g_sparse.double(), g_dense, rtol=1e-4, atol=1e-6)


def test_lightgcn_graph_is_a_moving_non_persistent_buffer(ds):
    model = models.build("lightgcn", ds, dim=8)
    assert list(model.state_dict()) == ["embedding.weight"]
    assert model.graph.layout == torch.sparse_csr
    model.to(torch.float64)  # _apply reaches the graph like any buffer (as .to("cuda") would)
    assert model.graph.dtype == torch.float64
    clone = copy.deepcopy(model)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(all_scores(clone, 4), all_scores(model, 4))


# ---- NeuMF and MultVAE specifics ----


def test_neumf_scorer_equals_pairwise_forward(ds, monkeypatch):
    torch.manual_seed(0)
    model = models.build("neumf", ds)
    model.eval()
    users = torch.tensor([0, 5, 17, 299])
    with torch.no_grad():
        pairs = model(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(len(users)))
        full = model.scorer()(users)
        monkeypatch.setattr(neumf_mod, "SCORE_CHUNK_ELEMENTS", 1000)  # forces several item chunks
        chunked = model.scorer()(users)
    torch.testing.assert_close(full, pairs.view(len(users), N_ITEMS))
    torch.testing.assert_close(chunked, full)


def test_multvae_anneals_and_scores_fold_in(ds):
    torch.manual_seed(0)
    model = models.build("multvae", ds, total_anneal_steps=100, anneal_cap=0.2)
    batch = make_batch("rows", ds, np.random.default_rng(0), 8)
    model.train()
    assert model.beta() == 0.0
    for _ in range(3):
        model.loss(batch)
    assert int(model.update_count) == 3 and model.beta() == pytest.approx(0.03)
    model.update_count.fill_(1000)
    assert model.beta() == pytest.approx(0.2)  # capped
    model.update_count.fill_(3)
    model.eval()
    model.loss(batch)
    assert int(model.update_count) == 3  # evaluation does not advance the schedule
    assert "update_count" in model.state_dict()
    # Scores are the decoder logits of the mean encoding of the user's training row.
    with torch.no_grad():
        users = torch.tensor([1, 2, 3])
        mu, _ = model.encode(torch.from_numpy(ds.train[[1, 2, 3]].toarray()))
        torch.testing.assert_close(model.scorer()(users), model.decode(mu))


# ---- each backbone learns ----

TRAIN = {  # lr, steps, batch size: a few epochs on 300 x 200
    "mf": (0.05, 150, 256),
    "lightgcn": (0.05, 150, 256),
    "neumf": (0.01, 250, 256),
    "multvae": (0.003, 250, 32),
}


@pytest.mark.parametrize("name", list(models.BACKBONES))
def test_training_beats_random_ranking(name, ds):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.build(name, ds, **SMALL[name])
    lr, steps, size = TRAIN[name]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    before, random = recall_at(all_scores(model, N_USERS).numpy(), ds)
    model.train()
    for _ in range(steps):
        loss = model.loss(make_batch(model.sampling, ds, rng, size))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, _ = recall_at(all_scores(model, N_USERS).numpy(), ds)
    assert after > 2 * random and after > before, (name, before, after, random)
