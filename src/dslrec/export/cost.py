"""Static cost of a model: parameters, bytes, multiply-accumulates (``summary.json``'s ``cost``).

Parameters
    ``total`` (all parameters), ``active`` (dense parameters + active weights of
    the masked ones), bytes of the dense form (float32, 4 bytes per parameter)
    and of the compact form exactly as ``dslrec export`` stores it (values +
    the cheaper of smallest-type column indices with row counts or a per-row
    bitmap, see ``compact.py``), at float32, float16 and int8 (with its row
    scales). Buffers (MultVAE's step counter)
    are not parameters and are left out.

MACs (multiply-accumulates). Counted: the products of two operands in dot
products, matrix products and sparse-dense products (GMF's element-wise
product too). Not counted: element-wise ops, activations, normalisation,
softmax, losses, regularisers, embedding lookups (memory reads). Two columns:

- ``dense``: the model as implemented, every weight dense.
- ``sparse``: only products whose weight is active (by the masks, never by
  value) *and* whose other operand is structurally nonzero (a sparse
  embedding row, a user's item row). This is what a sparse kernel executes;
  the masked-dense training of this project executes the ``dense`` count.

Backward = forward x (number of operands that need a gradient): 2x for dot
products and Linear layers (input and weight gradients), 1x for graph
propagation (the adjacency is a constant) and for MultVAE's first layer (its
input is data). So one training step costs 3x forward, except as noted.
Sparse backward computes gradients of active weights only; DSL's growth
needs one dense gradient every ``delta_t`` steps: the ``exploration``
component adds one dense backward of a batch per mask update.

An epoch's examples follow ``dslrec.data.sampling``: pairwise backbones one
BPR triple per training interaction of a trained user (or as many uniform
user draws with ``per_user_sampling``), NeuMF each positive with ``n_neg``
uniform negatives, MultVAE one row per trained user. Negatives are uniform
over the user's non-training items, so their sparse cost is an exact
*expectation* (mean over those items); positives are exact.

Per backbone (d = dim, T = triples per epoch, P = pairs, B = batches):

- MF: full ranking ``n_users*n_items*d`` dense; sparse ``sum_k U_k * I_k`` with
  ``U_k``/``I_k`` the users/items whose dimension k is active (exact). Training:
  two dot products per triple, sparse = overlap of the active dimensions of
  (u, i) and (u, j), summed over the epoch's triples.
- LightGCN: a layer is ``nnz(A)*d`` dense; sparse, layer l multiplies only the
  nonzero entries of the previous layer: ``sum_w deg(w)*|S_{l-1}(w)|`` with
  ``S_0`` the mask and ``S_l`` the structural support of ``A^l E`` (exact up to
  numerical cancellation; after a hop or two embeddings are dense). Scores use
  the support of the final (mean) embeddings. Training propagates the whole
  graph every batch (B times per epoch). Its sparse backward is an *estimate*:
  layers 2..K at the dense cost (gradients spread over the graph), layer 1 only
  at active positions.
- NeuMF: per pair, GMF ``gmf_dim`` (sparse: overlap of the user's and item's
  active dims), MLP layer 0 ``in*out`` (sparse: active weights whose input
  dimension is active for the pair, exact), later layers and the final layer
  ``in*out`` (sparse: their active weights; inputs after ReLU are treated as
  dense). Full ranking scores all ``n_users*n_items`` pairs through the MLP.
- MultVAE: per user ``n_items*h + h*2l + l*h + h*n_items``. The first layer's
  input is the user's item row: ``dense`` counts the dense product as torch
  runs it; ``sparse`` counts only the user's items' columns of the active
  encoder weights (exact; training: times the keep probability of input
  dropout, an expectation); the component also reports ``dense_sparse_input``
  (all weights, sparse input: ``nnz(R)*h``). Scoring all users covers every
  user's fold-in row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from dslrec.export.compact import csr_nbytes, dense_nbytes

COMPACT_DTYPES = ("float32", "float16", "int8")  # the file sizes the cost section predicts

CONVENTION = (
    "MACs of two-operand products (dot products, matmuls, sparse-dense products; element-wise ops, "
    "activations, losses, regularisers and lookups not counted); backward = forward x operands needing a "
    "gradient (2x layers/dot products, 1x graph propagation and MultVAE's data-fed first layer); "
    "'sparse' counts active weights times structurally nonzero inputs"
)


# --- parameters -------------------------------------------------------------------

def parameter_cost(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Parameter counts and bytes, dense and compact (see module doc)."""
    per_tensor = {}
    total = active = 0
    compact = {dtype: 0 for dtype in COMPACT_DTYPES}
    for name, p in model.named_parameters():
        numel = p.numel()
        if name in masks:
            m = masks[name].reshape(p.shape[0], -1) if p.ndim else masks[name].reshape(1, 1)
            nnz = int(m.sum())
            max_row = int(m.sum(1).max()) if m.numel() else 0
            sizes = {dtype: csr_nbytes(tuple(p.shape), nnz, max_row, dtype) for dtype in COMPACT_DTYPES}
        else:
            nnz = numel
            sizes = {dtype: dense_nbytes(tuple(p.shape), dtype) for dtype in COMPACT_DTYPES}
        per_tensor[name] = {"shape": list(p.shape), "numel": numel, "active": nnz, "sparse": name in masks,
                            **{f"compact_bytes_{dtype}": b for dtype, b in sizes.items()}}
        total += numel
        active += nnz
        for dtype, b in sizes.items():
            compact[dtype] += b
    sparsified = [v for v in per_tensor.values() if v["sparse"]]
    return {
        "total": total,
        "active": active,
        "density": active / max(total, 1),
        "sparsified_total": sum(v["numel"] for v in sparsified),
        "sparsified_active": sum(v["active"] for v in sparsified),
        "dense_bytes_float32": 4 * total,
        **{f"compact_bytes_{dtype}": b for dtype, b in compact.items()},
        "per_tensor": per_tensor,
    }


# --- pairs scored in an epoch -----------------------------------------------------

@dataclass
class EpochPairs:
    """Which (user, item) pairs an epoch scores: weighted positives and uniform negatives."""

    pos: sp.csr_matrix  # expected times each training pair is scored as a positive
    neg: np.ndarray  # expected number of uniform negatives per user
    train: sp.csr_matrix  # binary training matrix (negatives avoid these)
    examples: int  # triples (pairwise) or pairs (pointwise) per epoch


def epoch_pairs(dataset, kind: str, per_user: bool = False, n_neg: int = 4) -> EpochPairs:
    r = sp.csr_matrix(dataset.train, dtype=np.float64)
    r.data[:] = 1.0
    trained = np.zeros(dataset.n_users, dtype=bool)
    trained[dataset.trained_users()] = True
    rt = sp.diags(trained.astype(np.float64)) @ r
    rt.eliminate_zeros()
    deg = np.diff(rt.indptr).astype(np.float64)
    t = int(rt.nnz)
    if kind == "pairwise":
        if per_user:  # a uniform trained user, then a uniform positive of that user
            n_t = max(int(trained.sum()), 1)
            scale = np.where(deg > 0, t / n_t / np.maximum(deg, 1), 0.0)
            return EpochPairs(sp.diags(scale) @ rt, trained * (t / n_t), r, t)
        return EpochPairs(rt, deg, r, t)
    return EpochPairs(rt, deg * n_neg, r, t * (1 + n_neg))


def all_pairs(a: np.ndarray, b: np.ndarray) -> float:
    """Sum over every (user, item) of ``a[u] . b[i]``."""
    return float(a.sum(0) @ b.sum(0))


def epoch_pair_sum(a: np.ndarray, b: np.ndarray, pairs: EpochPairs) -> float:
    """Sum of ``a[u] . b[i]`` over an epoch's pairs (negatives: exact expectation)."""
    pos = float(np.asarray((pairs.pos @ b) * a).sum())
    free = pairs.train.shape[1] - np.diff(pairs.train.indptr)
    per_neg = np.asarray(a * (b.sum(0)[None, :] - pairs.train @ b)).sum(1) / np.maximum(free, 1)
    return pos + float((pairs.neg * per_neg).sum())


# --- per backbone ---------------------------------------------------------------

def _mask(masks: dict, name: str, shape) -> np.ndarray:
    if name in masks:
        return masks[name].reshape(tuple(shape)).cpu().numpy().astype(np.float64)
    return np.ones(tuple(shape), dtype=np.float64)


def _active(masks: dict, name: str, shape) -> int:
    """Active weights of a tensor (all of them when it has no mask)."""
    return int(masks[name].sum()) if name in masks else int(np.prod(tuple(shape)))


def _comp(dense: float, sparse: float, note: str | None = None) -> dict:
    out = {"dense": int(round(dense)), "sparse": int(round(sparse))}
    if note:
        out["note"] = note
    return out


def _mf(model, dataset, masks, pairs):
    mu, mi = _mask(masks, "user.weight", model.user.weight.shape), _mask(masks, "item.weight", model.item.weight.shape)
    ou, oi = np.ones_like(mu), np.ones_like(mi)
    fwd_d, fwd_s = epoch_pair_sum(ou, oi, pairs), epoch_pair_sum(mu, mi, pairs)
    train = {"scores": _comp(3 * fwd_d, 3 * fwd_s, "2 dot products per triple, fwd + 2x bwd")}
    infer = {"scores": _comp(all_pairs(ou, oi), all_pairs(mu, mi))}
    return train, infer


def _supports(r: sp.csr_matrix, s0: np.ndarray, n_layers: int):
    """Per-layer sparse MACs of propagation and the support of the final (mean) embeddings."""
    n_users = r.shape[0]
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.diff(adj.indptr).astype(np.float64)
    s = s0.astype(np.float32)
    final = s > 0
    layers = []
    for _ in range(n_layers):
        layers.append(float(deg @ s.sum(1, dtype=np.float64)))
        s = (np.asarray(adj @ s) > 0).astype(np.float32)
        final |= s > 0
    return layers, final[:n_users], final[n_users:], int(adj.nnz)


def _lightgcn(model, dataset, masks, pairs, n_batches):
    w = model.embedding.weight
    d, k = w.shape[1], model.n_layers
    r = sp.csr_matrix(dataset.train != 0, dtype=np.float32)
    layers, fu, fi, nnz_a = _supports(r, _mask(masks, "embedding.weight", w.shape), k)
    dense_layer = float(nnz_a) * d
    prop_d, prop_s = k * dense_layer, sum(layers)
    bwd_s = (k - 1) * dense_layer + layers[0] if k else 0.0
    ou, oi = np.ones((model.n_users, d)), np.ones((model.n_items, d))
    fu, fi = fu.astype(np.float64), fi.astype(np.float64)
    train = {
        "propagation": _comp(n_batches * 2 * prop_d, n_batches * (prop_s + bwd_s),
                             "whole graph every batch; sparse backward is an estimate (layers 2..K dense)"),
        "scores": _comp(3 * epoch_pair_sum(ou, oi, pairs), 3 * epoch_pair_sum(fu, fi, pairs)),
    }
    infer = {
        "propagation": _comp(prop_d, prop_s, "once; per layer: " + ", ".join(f"{x:.0f}" for x in layers)),
        "scores": _comp(all_pairs(ou, oi), all_pairs(fu, fi), "on the final (mean) embeddings"),
    }
    return train, infer


def _linear_names(model) -> list[tuple[str, torch.nn.Linear]]:
    return [(f"mlp.{i}", m) for i, m in enumerate(model.mlp) if isinstance(m, torch.nn.Linear)]


def _neumf(model, dataset, masks, pairs):
    n_pairs_train = float(pairs.pos.sum() + pairs.neg.sum())
    n_pairs_all = float(model.n_users) * model.n_items
    gu = _mask(masks, "gmf_user.weight", model.gmf_user.weight.shape)
    gi = _mask(masks, "gmf_item.weight", model.gmf_item.weight.shape)
    mu = _mask(masks, "mlp_user.weight", model.mlp_user.weight.shape)
    mi = _mask(masks, "mlp_item.weight", model.mlp_item.weight.shape)
    half = mu.shape[1]
    train, infer = {}, {}

    def both(name, a_d, b_d, a_s, b_s, note=None):
        train[name] = _comp(3 * epoch_pair_sum(a_d, b_d, pairs), 3 * epoch_pair_sum(a_s, b_s, pairs), note)
        infer[name] = _comp(all_pairs(a_d, b_d), all_pairs(a_s, b_s), note)

    both("gmf", np.ones_like(gu), np.ones_like(gi), gu, gi, "element-wise product")
    layers = _linear_names(model)
    for idx, (name, layer) in enumerate(layers):
        w = _mask(masks, f"{name}.weight", layer.weight.shape)
        if idx == 0:  # inputs: the user's and item's MLP embeddings, sparse
            per_col = w.sum(0)
            ones_u, ones_i = np.ones((model.n_users, 1)), np.ones((model.n_items, 1))
            a_d = np.hstack([np.full((model.n_users, 1), half * w.shape[0]), ones_u])
            b_d = np.hstack([ones_i, np.full((model.n_items, 1), half * w.shape[0])])
            a_s = np.hstack([(mu @ per_col[:half])[:, None], ones_u])
            b_s = np.hstack([ones_i, (mi @ per_col[half:])[:, None]])
            both(name, a_d, b_d, a_s, b_s, "active weights x active input dims")
        else:
            dense, active = w.size, w.sum()
            train[name] = _comp(3 * n_pairs_train * dense, 3 * n_pairs_train * active)
            infer[name] = _comp(n_pairs_all * dense, n_pairs_all * active)
    w = _mask(masks, "predict.weight", model.predict.weight.shape)
    train["predict"] = _comp(3 * n_pairs_train * w.size, 3 * n_pairs_train * w.sum())
    infer["predict"] = _comp(n_pairs_all * w.size, n_pairs_all * w.sum())
    return train, infer


def _multvae(model, dataset, masks):
    r = sp.csr_matrix(dataset.train != 0, dtype=np.float64)
    trained = dataset.trained_users()
    rt = r[trained]
    keep = 1.0 - float(model.config.get("dropout", 0.0))
    n_all, n_t = r.shape[0], len(trained)
    h = model.encoder.weight.shape[0]
    if "encoder.weight" in masks:  # active encoder weights of each input item (counts, no dense copy)
        per_item = masks["encoder.weight"].sum(0).numpy().astype(np.float64)
    else:
        per_item = np.full(model.n_items, float(h))
    n_items = model.n_items
    train = {"encoder": _comp(2 * n_t * n_items * h, 2 * keep * float((rt @ per_item).sum()),
                              "input is data: backward = weight gradient only; sparse input x keep prob")}
    train["encoder"]["dense_sparse_input"] = int(round(2 * keep * rt.nnz * h))
    infer = {"encoder": _comp(n_all * n_items * h, float((r @ per_item).sum()), "sparse input rows")}
    infer["encoder"]["dense_sparse_input"] = int(r.nnz * h)
    for name in ("encoder_out", "decoder", "decoder_out"):
        layer = getattr(model, name)
        size, active = layer.weight.numel(), _active(masks, f"{name}.weight", layer.weight.shape)
        train[name] = _comp(3 * n_t * size, 3 * n_t * active)
        infer[name] = _comp(n_all * size, n_all * active)
    return train, infer, n_t


def _total(components: dict) -> dict:
    dense = sum(c["dense"] for c in components.values())
    sparse = sum(c["sparse"] for c in components.values())
    return {"dense": dense, "sparse": sparse, "ratio": sparse / dense if dense else None,
            "components": components}


def mac_cost(model: torch.nn.Module, dataset, masks: dict[str, torch.Tensor], config=None) -> dict[str, Any]:
    """Training MACs per epoch and full-ranking inference MACs, dense and sparse, per component."""
    from dslrec.models.lightgcn import LightGCN
    from dslrec.models.mf import MF
    from dslrec.models.multvae import MultVAE
    from dslrec.models.neumf import NeuMF

    get = (lambda k, d: getattr(config, k, d)) if not isinstance(config, dict) else config.get
    batch_size = int(get("batch_size", 2048) or 2048)
    per_user = bool(get("per_user_sampling", False))
    n_neg = int(get("n_neg", 4))
    if isinstance(model, MultVAE):
        train, infer, examples = _multvae(model, dataset, masks)
    elif isinstance(model, (MF, LightGCN, NeuMF)):
        pairs = epoch_pairs(dataset, model.sampling, per_user=per_user, n_neg=n_neg)
        examples = pairs.examples
        if isinstance(model, MF):
            train, infer = _mf(model, dataset, masks, pairs)
        elif isinstance(model, LightGCN):
            train, infer = _lightgcn(model, dataset, masks, pairs, math.ceil(examples / batch_size))
        else:
            train, infer = _neumf(model, dataset, masks, pairs)
    else:
        return {"convention": CONVENTION, "note": f"no MAC model for {type(model).__name__}"}
    n_batches = math.ceil(examples / batch_size)
    if get("method", "dense") == "dsl" and masks:
        # one dense gradient of a batch per mask update (DSL's growth criterion)
        delta_t = max(int(get("delta_t", 100) or 100), 1)
        dense_bwd_per_batch = sum(c["dense"] for c in train.values()) * 2 / 3 / max(n_batches, 1)
        train["exploration"] = _comp(0, (n_batches / delta_t) * dense_bwd_per_batch,
                                     "dense backward of one batch every delta_t steps (average per epoch)")
    return {
        "convention": CONVENTION,
        "train_epoch": {**_total(train), "examples": int(examples), "batches": n_batches},
        "inference": {**_total(infer), "users": int(dataset.n_users), "items": int(dataset.n_items)},
    }


def cost_section(model: torch.nn.Module, dataset, masks: dict[str, torch.Tensor] | None = None,
                 config=None) -> dict[str, Any]:
    """The static part of ``summary.json``'s ``cost``: parameters, bytes and MACs (formulas: module doc).

    ``masks`` maps sparsified parameter names to bool/uint8 masks (None: a
    dense model); ``config`` is the run's ``RunConfig`` or a dict (reads
    ``batch_size``, ``per_user_sampling``, ``n_neg``, ``method``, ``delta_t``).
    """
    masks = {n: torch.as_tensor(m).bool().cpu() for n, m in (masks or {}).items()}
    with torch.no_grad():
        return {"parameters": parameter_cost(model, masks), "macs": mac_cost(model, dataset, masks, config)}


def cost_of_run(run_dir, dataset=None) -> dict[str, Any]:
    """``cost_section`` for a finished run directory (re-loads its dataset unless given)."""
    from pathlib import Path

    from dslrec import models
    from dslrec import rundir
    from dslrec.settings import load_dataset, resolve_settings

    run_dir = Path(run_dir)
    cfg = resolve_settings(config_file=run_dir / rundir.CONFIG)
    if dataset is None:
        dataset = load_dataset(cfg)
    model = models.build(cfg.model, dataset, **cfg.model_options)
    masks_path = run_dir / rundir.BEST_MASKS
    masks = rundir.load_weights(masks_path) if masks_path.is_file() else None
    return cost_section(model, dataset, masks, cfg)
