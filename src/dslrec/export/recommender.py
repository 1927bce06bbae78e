"""Serving recommendations from a compact model file (CPU, numpy/scipy/torch).

    rec = dslrec.Recommender.load("model.dslrec")
    out = rec.recommend(["12", "40"], k=20)     # out.ids (2, 20) raw item ids, out.scores

How each backbone scores, and what stays in memory:

- MF: both tables stay sparse. The user table keeps its stored small index
  type (a batch's rows are gathered and densified: batch x dim, small); the
  item table is scipy CSR (float32 values + int32 indices, 8 bytes per active
  weight) and scores are ``item_csr @ users.T`` (64 users at a time, transposed
  into the output), so the item table is never densified.
- NeuMF: the four embedding tables stay sparse. GMF is the same sparse product
  with the final layer's GMF weights folded into the user rows; the first MLP
  layer is split into a user part and an item part (``W [u; i] = W_u u +
  W_i i``, the item part computed from the sparse table per batch); the rest
  of the MLP (small) is dense, inactive weights as zeros, evaluated over
  chunks of items.
- LightGCN: at load, the graph is rebuilt from the stored training
  interactions and propagated once; the final dense user and item embeddings
  (``(n_users + n_items) x dim`` float32, the size of a dense table) are kept
  in memory, the sparse layer-0 table and the graph are not.
- MultVAE: the four weight matrices stay sparse (scipy CSR; the encoder
  transposed, so a user's item row picks its rows); the encoder's input is
  the user's stored item row (sparse), only the posterior mean is computed.

The seen section stays in its stored types (uint16 item indices up to 65,536
items) and serves both exclusion and MultVAE's fold-in rows. Values stored
as float16/bfloat16 are widened to float32 at load (the file is smaller;
compute is float32). Ranking: highest score first, ties by lower item
index; with ``exclude_seen`` the user's training items are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from dslrec.errors import DslrecError
from dslrec.export.compact import CompactModel, load

UNKNOWN = ("error", "popular")
# NeuMF materialises (users x items x width) activations; one chunk stays under this many floats.
CHUNK_ELEMENTS = 1 << 24


@dataclass
class Recommendations:
    """Top-k lists, one row per requested user.

    ``ids`` (n, k) raw item ids, ``scores`` (n, k) float32, ``items`` (n, k)
    item indices; rows with fewer than k candidates are padded with index -1,
    score -inf and an empty / -1 id. ``known[j]`` is False where user j was not
    in the model and got popular items (``unknown="popular"``).
    """

    user_ids: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    items: np.ndarray
    known: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def to_records(self) -> list[dict]:
        """JSON-friendly: one dict per user with its ranked items and scores."""
        out = []
        for j, user in enumerate(self.user_ids.tolist()):
            keep = self.items[j] >= 0
            out.append({"user": user, "known": bool(self.known[j]), "items": self.ids[j][keep].tolist(),
                        "scores": [float(s) for s in self.scores[j][keep]]})
        return out


@dataclass
class _Rows:
    """A CSR matrix kept with its stored index types (uint8/uint16 indices stay small in memory);
    rows are gathered per batch, vectorised."""

    indptr: np.ndarray  # int64
    indices: np.ndarray  # as stored: the smallest unsigned type
    values: np.ndarray | None  # float32; None for a binary matrix
    n_cols: int

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch row, column, position in ``indices``) of every entry of ``rows``."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        local = np.repeat(np.arange(len(rows)), lengths)
        first = np.cumsum(lengths) - lengths  # output offset of each row's first entry
        pos = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - first, lengths)
        return local, self.indices[pos].astype(np.int64), pos

    def dense(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.n_cols), dtype=np.float32)
        local, cols, pos = self.gather(rows)
        out[local, cols] = 1.0 if self.values is None else self.values[pos]
        return out

    def csr(self, rows: np.ndarray) -> sp.csr_matrix:
        local, cols, pos = self.gather(rows)
        data = np.ones(len(cols), np.float32) if self.values is None else self.values[pos]
        indptr = np.concatenate([[0], np.cumsum(np.diff(self.indptr)[rows])])
        return sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(len(rows), self.n_cols))

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + (0 if self.values is None else self.values.nbytes)


def _table(compact: CompactModel, name: str) -> _Rows | np.ndarray:
    """An embedding table whose rows are gathered per batch: compact rows if sparse, else dense."""
    if compact.is_sparse(name):
        indptr, indices, values = compact.csr_parts(name)
        return _Rows(indptr, indices, values, int(compact.header["weights"][name]["shape"][1]))
    return compact.dense(name).astype(np.float32, copy=False)


class _Sparse:
    """A sparse weight (rows x cols) as scipy CSR. ``x @ W.T`` is computed for a few rows of ``x``
    at a time (scipy gives ``W @ x_part.T``, rows x part) and transposed into the output, so the
    temporary stays ``rows x SUB`` instead of a second full (batch x rows) matrix."""

    SUB = 64  # rows of x per product

    def __init__(self, m: sp.csr_matrix):
        self.m = m
        self.shape = m.shape

    def times_t(self, x: np.ndarray) -> np.ndarray:
        out = torch.empty((x.shape[0], self.shape[0]), dtype=torch.float32)
        for start in range(0, x.shape[0], self.SUB):  # a few slices of the batch
            xt = np.ascontiguousarray(x[start : start + self.SUB].T, dtype=np.float32)
            part = torch.from_numpy(np.asarray(self.m @ xt))  # (rows x part)
            out[start : start + self.SUB].copy_(part.T)  # torch transposes faster than numpy
        return out.numpy()

    @property
    def nbytes(self) -> int:
        return self.m.data.nbytes + self.m.indices.nbytes + self.m.indptr.nbytes


def _weight(compact: CompactModel, name: str, rows: int | None = None) -> _Sparse | np.ndarray:
    """A 2-D weight multiplied as a whole (optionally its first ``rows`` rows): sparse blocks when
    stored sparse, else a dense float32 array."""
    if compact.is_sparse(name):
        m = compact.csr(name)
        return _Sparse(m if rows is None else m[:rows])
    w = compact.dense(name)
    w = w.reshape(w.shape[0], -1).astype(np.float32, copy=False)
    return np.ascontiguousarray(w if rows is None else w[:rows])


def _rows(table: _Rows | np.ndarray, users: np.ndarray) -> np.ndarray:
    """Rows of a table for a batch, dense (batch x dim)."""
    return table.dense(users) if isinstance(table, _Rows) else table[users]


def _times_t(x: np.ndarray, table: _Sparse | np.ndarray) -> np.ndarray:
    """``x @ table.T`` (batch x rows of table) without densifying a sparse table."""
    if isinstance(table, _Sparse):
        return table.times_t(x)
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) @ torch.from_numpy(table).T).numpy()


class _MF:
    def __init__(self, c: CompactModel, seen: _Rows | None):
        self.user, self.item = _table(c, "user.weight"), _weight(c, "item.weight")

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return _times_t(_rows(self.user, users), self.item)


class _LightGCN:
    def __init__(self, c: CompactModel, seen: _Rows | None):
        from dslrec.models.graph import normalized_adjacency, propagate

        emb = torch.from_numpy(c.dense("embedding.weight"))
        with torch.no_grad():
            out = propagate(normalized_adjacency(c.seen()), emb, int(c.header["model_config"]["n_layers"]))
        del emb
        self.user = out[: c.n_users].contiguous()
        self.item_t = out[c.n_users :].T.contiguous()

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return (self.user[torch.from_numpy(users)] @ self.item_t).numpy()


class _NeuMF:
    def __init__(self, c: CompactModel, seen: _Rows | None):
        cfg = c.header["model_config"]
        self.gmf_dim, layers = int(cfg["gmf_dim"]), [int(x) for x in cfg["layers"]]
        self.half = layers[0] // 2
        self.gmf_user, self.gmf_item = _table(c, "gmf_user.weight"), _weight(c, "gmf_item.weight")
        self.mlp_user, self.mlp_item = _table(c, "mlp_user.weight"), _weight(c, "mlp_item.weight")
        linears = sorted((n for n in c.names() if n.startswith("mlp.") and n.endswith(".weight")),
                         key=lambda n: int(n.split(".")[1]))
        dense = lambda n: torch.from_numpy(np.ascontiguousarray(c.dense(n)))  # noqa: E731
        self.layers = [(dense(n), dense(n[: -len("weight")] + "bias")) for n in linears]
        w_pred = dense("predict.weight")[0]
        self.w_gmf, self.w_mlp = w_pred[: self.gmf_dim].numpy(), w_pred[self.gmf_dim :]
        self.b_pred = float(dense("predict.bias")[0])
        w0 = self.layers[0][0].numpy()
        self.w0_user, self.w0_item = np.ascontiguousarray(w0[:, : self.half]), np.ascontiguousarray(w0[:, self.half :])

    def item_part(self) -> torch.Tensor:
        """First MLP layer's item half for every item (n_items x width), from the sparse table.
        Recomputed per batch (nnz x width MACs, small next to the MLP over all pairs) rather than
        kept: it would be larger than the sparse table it comes from."""
        return torch.from_numpy(_times_t(self.w0_item, self.mlp_item)).T

    def __call__(self, users: np.ndarray) -> np.ndarray:
        gmf = _times_t(_rows(self.gmf_user, users) * self.w_gmf[None, :], self.gmf_item)
        user_part = torch.from_numpy(_rows(self.mlp_user, users) @ self.w0_user.T) + self.layers[0][1]
        item_part = self.item_part()
        n_items = item_part.shape[0]
        width = max(w.shape[0] for w, _ in self.layers)
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(users) * width))
        out = torch.from_numpy(gmf)
        for start in range(0, n_items, chunk):  # a few chunks of items, not a loop over items
            h = torch.relu(user_part[:, None, :] + item_part[None, start : start + chunk, :].contiguous())
            for w, b in self.layers[1:]:
                h = torch.relu(h @ w.T + b)
            out[:, start : start + chunk] += h @ self.w_mlp + self.b_pred
        return out.numpy()


class _MultVAE:
    def __init__(self, c: CompactModel, seen: _Rows | None):
        latent = int(c.header["model_config"]["latent"])
        if c.is_sparse("encoder.weight"):
            # transposed so that a user's items select rows: (batch x n_items) @ (n_items x hidden)
            self.enc_t = c.csr("encoder.weight").T.tocsr()
        else:
            self.enc_t = np.ascontiguousarray(c.dense("encoder.weight").T)
        self.layers = [  # only the posterior mean (first `latent` outputs) is needed to score
            (_weight(c, "encoder_out.weight", rows=latent), c.dense("encoder_out.bias")[:latent]),
            (_weight(c, "decoder.weight"), c.dense("decoder.bias")),
            (_weight(c, "decoder_out.weight"), c.dense("decoder_out.bias")),
        ]
        self.enc_b = c.dense("encoder.bias")
        self.seen = seen  # the fold-in rows (shared with the recommender's exclusion)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        x = self.seen.csr(users)
        norm = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
        x = sp.diags((1.0 / np.maximum(norm, 1e-12)).astype(np.float32)) @ x  # F.normalize(p=2)
        h = x @ self.enc_t
        h = np.tanh((h.toarray() if sp.issparse(h) else np.asarray(h)) + self.enc_b)
        mu = _times_t(h.astype(np.float32), self.layers[0][0]) + self.layers[0][1]
        h = np.tanh(_times_t(mu, self.layers[1][0]) + self.layers[1][1])
        return _times_t(h.astype(np.float32), self.layers[2][0]) + self.layers[2][1]


SCORERS = {"mf": _MF, "lightgcn": _LightGCN, "neumf": _NeuMF, "multvae": _MultVAE}


class _IdMap:
    """Raw id <-> index. Ids may be asked for as strings or numbers; a ``range`` map
    ("0".."n-1") is parsed arithmetically and never materialised."""

    def __init__(self, entry: dict, decode):
        self.entry, self.n = entry, int(entry.get("n", 0))
        self.raw = None if entry["kind"] == "range" else decode()
        self._index: pd.Index | None = None

    def index_of(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query).astype(str)
        if self.raw is None:
            # canonical non-negative decimals only ("07" is not "7"), short enough for int64
            ok = np.char.isdigit(q) & (np.char.str_len(q) <= 18)
            ok &= (np.char.str_len(q) == 1) | ~np.char.startswith(q, "0")
            out = np.full(len(q), -1, dtype=np.int64)
            out[ok] = q[ok].astype(np.int64)
            out[out >= self.n] = -1
            return out
        if self._index is None:
            self._index = pd.Index(self.raw.astype(str))
        return self._index.get_indexer(q).astype(np.int64)

    def ids_of(self, indices: np.ndarray) -> np.ndarray:
        """Raw ids of indices (any shape), as the dataset had them (str or int64)."""
        if self.raw is not None:
            return self.raw[indices]
        return indices.astype(str) if self.entry["type"] == "str" else indices.astype(np.int64)

    def all(self) -> np.ndarray:
        return self.ids_of(np.arange(self.n)) if self.raw is None else self.raw


class Recommender:
    """Top-k recommendations from a compact model (``dslrec export``); see the module doc."""

    def __init__(self, compact: CompactModel):
        if compact.backbone not in SCORERS:
            raise DslrecError(f"{compact.path} holds a {compact.backbone!r} model, which dslrec cannot serve; "
                              f"supported: {', '.join(SCORERS)}")
        self.compact = compact
        self.header = compact.header
        self.n_users, self.n_items = compact.n_users, compact.n_items
        self.users = _IdMap(compact.header["user_ids"], compact.user_ids)
        self.items = _IdMap(compact.header["item_ids"], compact.item_ids)
        self.seen = _Rows(*compact.seen_parts(), None, self.n_items) if compact.has_seen else None
        counts = compact.item_counts()
        self.popular = np.lexsort((np.arange(self.n_items), -counts))  # by count, ties by index
        self.popularity = counts.astype(np.float32)
        self.scorer = SCORERS[compact.backbone](compact, self.seen)
        compact.tensors.clear()  # the scorer holds what it needs; drop the file's copy

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load and verify ``path`` (a file written by ``dslrec export``)."""
        return cls(load(path))

    @property
    def backbone(self) -> str:
        return self.compact.backbone

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Raw scores (len(users) x n_items) of user *indices*, nothing excluded."""
        return np.asarray(self.scorer(np.asarray(users, dtype=np.int64)), dtype=np.float32)

    def user_ids(self) -> np.ndarray:
        """Every raw user id, in index order."""
        return self.users.all()

    def item_ids(self) -> np.ndarray:
        """Every raw item id, in index order."""
        return self.items.all()

    def user_index(self, user_ids) -> np.ndarray:
        """Indices of raw user ids; -1 where unknown."""
        return self.users.index_of(np.atleast_1d(np.asarray(user_ids)))

    def recommend(self, user_ids, k: int = 20, exclude_seen: bool = True, unknown: str = "error",
                  batch_size: int = 256) -> Recommendations:
        """Top-``k`` items for each raw user id (a list, an array or one id).

        ``unknown="error"`` raises for ids the model does not know;
        ``"popular"`` gives them the most popular training items instead.
        """
        from dslrec.evaluate import topk_ordered

        if unknown not in UNKNOWN:
            raise DslrecError(f"unknown={unknown!r} is not an option; choose one of {', '.join(UNKNOWN)}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DslrecError(f"k must be a positive integer, got {k!r}")
        if exclude_seen and self.seen is None:
            self.compact.seen()  # raises the clear error
        query = np.atleast_1d(np.asarray(user_ids))
        idx = self.user_index(query)
        missing = query[idx < 0]
        if len(missing) and unknown == "error":
            shown = ", ".join(map(repr, missing[:5].tolist())) + (" ..." if len(missing) > 5 else "")
            raise DslrecError(f"unknown user id {shown} ({len(missing)} of {len(query)} not in the model's "
                              f"{self.n_users} users); use unknown='popular' (--unknown popular) for new users")
        k = min(int(k), self.n_items)
        items = np.full((len(query), k), -1, dtype=np.int64)
        scores = np.full((len(query), k), -np.inf, dtype=np.float32)
        known = np.flatnonzero(idx >= 0)
        for start in range(0, len(known), batch_size):
            rows = known[start : start + batch_size]
            users = idx[rows]
            s = torch.from_numpy(self.scores(users))
            # NaN / -inf model scores rank as the lowest finite score: after every real candidate,
            # before the excluded items (-inf), as in evaluation
            low = float(torch.finfo(s.dtype).min)
            s.nan_to_num_(nan=low, posinf=float("inf"), neginf=low)
            if exclude_seen:
                r, c, _ = self.seen.gather(users)
                s[torch.from_numpy(r), torch.from_numpy(c)] = float("-inf")
            vals, top = topk_ordered(s, k)
            ok = vals > float("-inf")
            items[rows] = torch.where(ok, top, -1).numpy()
            scores[rows] = vals.numpy()
        if len(missing):
            cold = np.flatnonzero(idx < 0)
            items[cold] = self.popular[:k]
            scores[cold] = self.popularity[self.popular[:k]]
        raw = self.items.ids_of(np.maximum(items, 0))
        ids = np.where(items >= 0, raw, "" if raw.dtype.kind == "U" else -1)
        return Recommendations(user_ids=query, ids=ids, scores=scores, items=items, known=idx >= 0)

    def memory_bytes(self) -> int:
        """Bytes of the arrays the scorer and the seen section keep (a lower bound of resident memory)."""
        held = {id(v): v for v in [*vars(self.scorer).values(), self.seen]}  # MultVAE shares seen
        return sum(_nbytes(v) for v in held.values())


def _nbytes(value) -> int:
    if isinstance(value, (_Rows, _Sparse)):
        return value.nbytes
    if sp.issparse(value):
        return value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0
