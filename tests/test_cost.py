"""MAC and byte counts of dslrec.export.cost against brute-force counts on tiny models.

Dense counts are checked with torch's FlopCounterMode (flops = 2 x MACs for
matrix products); sparse counts by enumerating every product with numpy on
models whose inactive weights are zero and active weights nonzero.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dslrec import models
from dslrec.data import synthetic_dataset
from dslrec.data.sampling import dense_rows, pointwise_epoch
from dslrec.export import cost_section, load, write_compact
from dslrec.export.cost import epoch_pairs


@pytest.fixture(scope="module")
def ds():
    return synthetic_dataset(n_users=30, n_items=24, seed=5)


def masked(model, density=0.3, seed=0):
    """Random masks on every >=2-D parameter; inactive weights zeroed, active ones nonzero."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                m = torch.rand(p.shape, generator=gen) < density
                p.copy_(torch.where(m, torch.randn(p.shape, generator=gen).abs() + 0.1, torch.zeros(())))
                masks[name] = m
    return masks


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def comp(cost, phase, name, col):
    return cost["macs"][phase]["components"][name][col]


def brute_pair_sum(cost_of_pair, ds, kind="pairwise", n_neg=1):
    """Sum of cost(u, i) over an epoch: every training pair once, plus n_neg uniform
    negatives per positive counted by averaging over all of the user's non-training items."""
    train = ds.train.toarray() > 0
    total = 0.0
    for u in range(ds.n_users):
        pos = np.flatnonzero(train[u])
        neg = np.flatnonzero(~train[u])
        total += sum(cost_of_pair(u, i) for i in pos)
        if len(pos):
            total += n_neg * len(pos) * np.mean([cost_of_pair(u, j) for j in neg])
    return total


# --- dense counts vs FlopCounterMode -------------------------------------------------

def test_mf_dense_inference_matches_flop_counter(ds):
    model = models.build("mf", ds, dim=8)
    cost = cost_section(model, ds, None, {})
    with torch.no_grad():
        counted = flops(lambda: model.scorer()(torch.arange(ds.n_users)))
    assert counted == 2 * ds.n_users * ds.n_items * 8
    assert cost["macs"]["inference"]["dense"] == counted // 2
    # a dense model: the sparse column equals the dense one
    assert cost["macs"]["inference"]["sparse"] == cost["macs"]["inference"]["dense"]
    assert cost["parameters"]["active"] == cost["parameters"]["total"]


def test_multvae_dense_train_and_inference_match_flop_counter(ds):
    model = models.build("multvae", ds, hidden=12, latent=5)
    cost = cost_section(model, ds, None, {"batch_size": 10**6})
    users = torch.from_numpy(ds.trained_users())
    batch = {"users": users, "rows": dense_rows(ds.train, users.numpy())}
    model.train()
    train_flops = flops(lambda: model.loss(batch).backward())
    assert cost["macs"]["train_epoch"]["dense"] == train_flops // 2
    model.eval()
    with torch.no_grad():
        infer_flops = flops(lambda: model.scorer()(torch.arange(ds.n_users)))
    assert cost["macs"]["inference"]["dense"] == infer_flops // 2


def test_neumf_dense_layers_match_flop_counter(ds):
    model = models.build("neumf", ds, gmf_dim=4, layers=[8, 6, 4])
    cost = cost_section(model, ds, None, {"n_neg": 2, "batch_size": 10**6})
    arrays = pointwise_epoch(ds, 0, n_neg=2)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    layer_names = ["mlp.1", "mlp.4", "predict"]  # the matmuls; GMF is element-wise
    train_flops = flops(lambda: model.loss(batch).backward())
    assert sum(comp(cost, "train_epoch", n, "dense") for n in layer_names) == train_flops // 2
    assert cost["macs"]["train_epoch"]["examples"] == len(arrays["users"])
    model.eval()
    with torch.no_grad():
        infer_flops = flops(lambda: model.scorer()(torch.arange(ds.n_users)))
    assert sum(comp(cost, "inference", n, "dense") for n in layer_names) == infer_flops // 2
    assert comp(cost, "inference", "gmf", "dense") == ds.n_users * ds.n_items * 4


def test_lightgcn_dense_scores_match_flop_counter(ds):
    model = models.build("lightgcn", ds, dim=6, n_layers=2)
    cost = cost_section(model, ds, None, {"batch_size": 64})
    with torch.no_grad():
        scorer = model.scorer()  # propagation (sparse products) happens here
        counted = flops(lambda: scorer(torch.arange(ds.n_users)))
    assert comp(cost, "inference", "scores", "dense") == counted // 2
    nnz_a = 2 * ds.train.nnz
    assert comp(cost, "inference", "propagation", "dense") == 2 * nnz_a * 6
    n_batches = math.ceil(ds.train.nnz / 64)
    assert cost["macs"]["train_epoch"]["batches"] == n_batches
    assert comp(cost, "train_epoch", "propagation", "dense") == n_batches * 2 * (2 * nnz_a * 6)


# --- sparse counts vs enumerating nonzero products -----------------------------------

def test_mf_sparse_counts_match_enumeration(ds):
    model = models.build("mf", ds, dim=8)
    masks = masked(model)
    cost = cost_section(model, ds, masks, {})
    u, i = model.user.weight.detach().numpy() != 0, model.item.weight.detach().numpy() != 0
    products = (u[:, None, :] & i[None, :, :]).sum()
    assert comp(cost, "inference", "scores", "sparse") == products
    overlap = lambda a, b: float((u[a] & i[b]).sum())  # noqa: E731
    expected = 3 * brute_pair_sum(overlap, ds)
    assert comp(cost, "train_epoch", "scores", "sparse") == pytest.approx(expected, abs=1)
    dense = 3 * brute_pair_sum(lambda a, b: 8.0, ds)
    assert comp(cost, "train_epoch", "scores", "dense") == pytest.approx(dense, abs=1)


def test_lightgcn_sparse_propagation_matches_enumeration(ds):
    model = models.build("lightgcn", ds, dim=6, n_layers=3)
    masks = masked(model, density=0.15)
    cost = cost_section(model, ds, masks, {})
    adj = model.graph.to_dense().numpy() != 0
    x = model.embedding.weight.detach().double().numpy()
    a = model.graph.to_dense().double().numpy()
    layers, final = [], x != 0
    for _ in range(3):
        count = int((adj[:, :, None] & (x != 0)[None, :, :]).sum())  # every A[v,w] * x[w,k] != 0
        layers.append(count)
        x = a @ x
        final |= x != 0
    assert comp(cost, "inference", "propagation", "sparse") == sum(layers)
    assert layers[0] < layers[-1]  # sparse at layer 1, denser after propagation
    fu, fi = final[: ds.n_users], final[ds.n_users :]
    assert comp(cost, "inference", "scores", "sparse") == (fu[:, None, :] & fi[None, :, :]).sum()


def test_neumf_sparse_first_layer_and_gmf_match_enumeration(ds):
    model = models.build("neumf", ds, gmf_dim=4, layers=[8, 6, 4])
    masks = masked(model)
    cost = cost_section(model, ds, masks, {"n_neg": 3})
    gu, gi = (model.gmf_user.weight.detach().numpy() != 0), (model.gmf_item.weight.detach().numpy() != 0)
    mu, mi = (model.mlp_user.weight.detach().numpy() != 0), (model.mlp_item.weight.detach().numpy() != 0)
    w0 = model.mlp[1].weight.detach().numpy() != 0
    inputs = np.concatenate([np.repeat(mu[:, None, :], ds.n_items, 1), np.repeat(mi[None, :, :], ds.n_users, 0)], 2)
    layer0 = (w0[None, None, :, :] & inputs[:, :, None, :]).sum()  # active weight x active input
    assert comp(cost, "inference", "mlp.1", "sparse") == layer0
    assert comp(cost, "inference", "gmf", "sparse") == (gu[:, None, :] & gi[None, :, :]).sum()
    n_pairs = ds.n_users * ds.n_items
    assert comp(cost, "inference", "mlp.4", "sparse") == n_pairs * int(masks["mlp.4.weight"].sum())
    pair0 = lambda u, i: float((w0 & np.concatenate([mu[u], mi[i]])[None, :]).sum())  # noqa: E731
    expected = 3 * brute_pair_sum(pair0, ds, n_neg=3)
    assert comp(cost, "train_epoch", "mlp.1", "sparse") == pytest.approx(expected, abs=1)


def test_multvae_sparse_encoder_counts_users_items_only(ds):
    model = models.build("multvae", ds, hidden=12, latent=5)
    masks = masked(model)
    cost = cost_section(model, ds, masks, {})
    enc = model.encoder.weight.detach().numpy() != 0
    rows = ds.train.toarray() != 0
    products = sum(int(enc[:, rows[u]].sum()) for u in range(ds.n_users))
    assert comp(cost, "inference", "encoder", "sparse") == products
    assert cost["macs"]["inference"]["components"]["encoder"]["dense_sparse_input"] == ds.train.nnz * 12
    active_out = int(masks["decoder_out.weight"].sum())
    assert comp(cost, "inference", "decoder_out", "sparse") == ds.n_users * active_out
    keep = 1 - model.config["dropout"]
    trained = ds.trained_users()
    expected = 2 * keep * sum(int(enc[:, rows[u]].sum()) for u in trained)
    assert comp(cost, "train_epoch", "encoder", "sparse") == pytest.approx(expected, abs=1)


def test_per_user_sampling_expectation_keeps_epoch_size(ds):
    pairs = epoch_pairs(ds, "pairwise", per_user=True)
    assert pairs.pos.sum() == pytest.approx(ds.train.nnz)
    assert pairs.neg.sum() == pytest.approx(ds.train.nnz)
    # each trained user gets the same expected number of draws, whatever their degree
    per_user = np.asarray(pairs.pos.sum(1)).ravel()[ds.trained_users()]
    assert np.allclose(per_user, per_user[0])


def test_dsl_exploration_adds_dense_gradient_cost(ds):
    model = models.build("mf", ds, dim=8)
    masks = masked(model)
    plain = cost_section(model, ds, masks, {"method": "static", "batch_size": 16, "delta_t": 2})
    dsl = cost_section(model, ds, masks, {"method": "dsl", "batch_size": 16, "delta_t": 2})
    assert "exploration" not in plain["macs"]["train_epoch"]["components"]
    extra = dsl["macs"]["train_epoch"]["sparse"] - plain["macs"]["train_epoch"]["sparse"]
    batches = dsl["macs"]["train_epoch"]["batches"]
    per_batch_dense_bwd = plain["macs"]["train_epoch"]["dense"] * 2 / 3 / batches
    assert extra == pytest.approx(batches / 2 * per_batch_dense_bwd, abs=1)


# --- bytes ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,key", [("float32", "compact_bytes_float32"), ("float16", "compact_bytes_float16")])
def test_compact_bytes_equal_the_exported_weights_section(ds, tmp_path, dtype, key):
    model = models.build("neumf", ds, gmf_dim=4, layers=[8, 6, 4])
    masks = masked(model)
    cost = cost_section(model, ds, masks, {})
    path = tmp_path / "m.dslrec"
    write_compact(path, backbone="neumf", model_config=model.config, state=model.state_dict(), masks=masks,
                  dataset=ds, dtype=dtype)
    assert load(path).sizes["weights"] == cost["parameters"][key]
    p = cost["parameters"]
    assert p["active"] == sum(int(m.sum()) for m in masks.values()) + sum(
        x.numel() for n, x in model.named_parameters() if n not in masks)
    assert p["dense_bytes_float32"] == 4 * p["total"]
    assert p[key] < p["dense_bytes_float32"]
