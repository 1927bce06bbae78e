"""Serving recommendations from a compact model file (CPU, numpy/scipy/torch).

    rec = dslrec.Recommender.load("model.dslrec")
    out = rec.recommend(["12", "40"], k=20)     # out.ids (2, 20) raw item ids, out.scores

Ranking is ``dslrec.evaluate.ranking.rank_batch``, the kernel evaluation uses:
the catalogue is scored in blocks of items, a batch of users at a time, both
sized so that one block of float32 scores fits ``score_bytes`` (8 MiB by
default, not a function of the catalogue; blocks of at most 16,384 items, so a
table's block made dense stays small too), and each block's exact top-k is
merged into a running list. Ties go to the lower item index; with
``exclude_seen`` the user's training items are never ranked; NaN / -inf model
scores rank after every real candidate.

What stays in memory (``dslrec.export.rows``): every table as the file stores
it, active values (float32, float16, bfloat16, or int8 with a float32 scale per
row) and their positions (column indices or a per-row bitmap), plus int64 row
pointers. A block of an item table is made dense when the products need it,
once per block for all the batches of a call, and fed to BLAS with the users'
rows (densified per call): on CPU this beats a sparse kernel at DSL's
densities, and no dense copy of a table ever exists.

- MF: user rows per call, item table by blocks.
- NeuMF: the same for GMF, with the final layer's GMF weights folded into the
  user rows; the first MLP layer is split into a user part and an item part
  (``W [u; i] = W_u u + W_i i``, the item part computed from each block); the
  rest of the MLP (small) is dense, inactive weights as zeros, evaluated over
  chunks of items.
- LightGCN: at load, the graph is rebuilt from the stored training
  interactions and propagated once; the final dense user and item embeddings
  (``(n_users + n_items) x dim`` float32, the size of a dense table: that is
  what LightGCN scores with) are kept, the layer-0 table and the graph are not.
- MultVAE: the encoder is kept transposed (a user's items pick its rows,
  summed a block at a time); only the posterior mean is computed; the output
  layer is taken by blocks of items.

The seen section is decoded at load to row pointers and item indices in the
smallest type; it serves exclusion and MultVAE's fold-in rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dslrec.encoding import np_to_torch
from dslrec.errors import DslrecError
from dslrec.memory import release_freed_memory
from dslrec.evaluate.ranking import plan_blocks, rank_batch
from dslrec.export.compact import CompactModel, load
from dslrec.export.rows import BLOCK_ELEMENTS, DenseRows, Rows, SparseRows

UNKNOWN = ("error", "popular")
# NeuMF materialises (users x items x width) activations; one chunk stays under this many floats.
CHUNK_ELEMENTS = 1 << 24
SCORE_BYTES = 8 << 20  # a block of float32 scores (users x items) while ranking; small blocks stay in cache
MAX_BLOCK = 16384  # items per block: a table's block made dense stays small (4 MB at 64 columns)
USERS_PER_CALL = 1 << 16  # users whose dense rows are made at once


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


def _dense(c: CompactModel, name: str) -> torch.Tensor:
    """A small tensor (biases, MLP layers) widened whole, as float32 torch."""
    return torch.from_numpy(np.ascontiguousarray(c.dense(name), dtype=np.float32))


def _rows_of(part: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    return part if rows is None or part is None else part[rows]


class _Memo:
    """The last dense block of an item table: every batch of users asks for the same block in turn."""

    def __init__(self, table: Rows):
        self.table, self.key, self.value = table, None, None

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        if self.key != (start, stop):
            self.key, self.value = (start, stop), self.table.block(start, stop)
        return self.value


class _MF:
    def __init__(self, c: CompactModel, seen: SparseRows | None):
        self.user, self.item = c.rows("user.weight"), c.rows("item.weight")

    def bind(self, users: torch.Tensor):
        u = self.user.dense(users)
        item = _Memo(self.item)
        return lambda rows, start, stop: _rows_of(u, rows) @ item(start, stop).T


class _LightGCN:
    def __init__(self, c: CompactModel, seen: SparseRows | None):
        from dslrec.models.graph import normalized_adjacency, propagate

        emb = torch.from_numpy(c.dense("embedding.weight"))
        with torch.no_grad():
            out = propagate(normalized_adjacency(c.seen()), emb, int(c.header["model_config"]["n_layers"]))
        del emb
        self.user = out[: c.n_users].contiguous()
        self.item = out[c.n_users :].contiguous()

    def bind(self, users: torch.Tensor):
        u = self.user[users]
        return lambda rows, start, stop: _rows_of(u, rows) @ self.item[start:stop].T


class _NeuMF:
    def __init__(self, c: CompactModel, seen: SparseRows | None):
        cfg = c.header["model_config"]
        self.gmf_dim, layers = int(cfg["gmf_dim"]), [int(x) for x in cfg["layers"]]
        half = layers[0] // 2
        self.gmf_user, self.gmf_item = c.rows("gmf_user.weight"), c.rows("gmf_item.weight")
        self.mlp_user, self.mlp_item = c.rows("mlp_user.weight"), c.rows("mlp_item.weight")
        linears = sorted((n for n in c.names() if n.startswith("mlp.") and n.endswith(".weight")),
                         key=lambda n: int(n.split(".")[1]))
        self.layers = [(_dense(c, n), _dense(c, n[: -len("weight")] + "bias")) for n in linears]
        w_pred = _dense(c, "predict.weight")[0]
        self.w_gmf, self.w_mlp = w_pred[: self.gmf_dim], w_pred[self.gmf_dim :]
        self.b_pred = float(_dense(c, "predict.bias")[0])
        w0 = self.layers[0][0]
        self.w0_user, self.w0_item = w0[:, :half].contiguous(), w0[:, half:].contiguous()

    def bind(self, users: torch.Tensor):
        # GMF with the final layer's GMF weights folded into the user rows; the first MLP layer split
        # into a user part (per user) and an item part (per item, from the block): W [u; i] = W_u u + W_i i
        gmf_u = self.gmf_user.dense(users) * self.w_gmf
        user_part = self.mlp_user.dense(users) @ self.w0_user.T + self.layers[0][1]
        gmf_item, mlp_item = _Memo(self.gmf_item), _Memo(self.mlp_item)

        def scores(rows, start, stop):
            up = _rows_of(user_part, rows)
            out = _rows_of(gmf_u, rows) @ gmf_item(start, stop).T
            item_part = mlp_item(start, stop) @ self.w0_item.T
            width = max(w.shape[0] for w, _ in self.layers)
            chunk = max(1, CHUNK_ELEMENTS // max(1, len(up) * width))
            for a in range(0, stop - start, chunk):  # a few chunks of items, not a loop over items
                h = torch.relu(up[:, None, :] + item_part[None, a : a + chunk, :])
                for w, b in self.layers[1:]:
                    h = torch.relu(h @ w.T + b)
                out[:, a : a + chunk] += h @ self.w_mlp + self.b_pred
            return out

        return scores


class _MultVAE:
    def __init__(self, c: CompactModel, seen: SparseRows | None):
        latent = int(c.header["model_config"]["latent"])
        enc = c.rows("encoder.weight")  # hidden x n_items
        # transposed so that a user's items select rows; int8 row scales become column scales of the product
        self.enc_t = enc.transposed() if isinstance(enc, SparseRows) else DenseRows(enc.data.T.contiguous())
        self.enc_scales = enc.scales
        self.enc_b = _dense(c, "encoder.bias")
        # only the posterior mean (the first `latent` outputs) is needed to score
        self.mu = (_dense(c, "encoder_out.weight")[:latent], _dense(c, "encoder_out.bias")[:latent])
        self.dec = (_dense(c, "decoder.weight"), _dense(c, "decoder.bias"))
        self.out, self.out_b = c.rows("decoder_out.weight"), _dense(c, "decoder_out.bias")
        self.seen = seen  # the fold-in rows (shared with the recommender's exclusion)

    def bind(self, users: torch.Tensor):
        local, items, _ = self.seen.entries(users)
        hidden = self.enc_t.shape[1]
        h = torch.zeros((len(users), hidden))
        step = max(1, BLOCK_ELEMENTS // max(hidden, 1))
        for a in range(0, len(items), step):  # the users' items' encoder rows, a block at a time
            h.index_add_(0, local[a : a + step], self.enc_t.dense(items[a : a + step]))
        if self.enc_scales is not None:
            h *= self.enc_scales
        counts = torch.bincount(local, minlength=len(users)).float()
        h = torch.tanh(h / counts.sqrt().clamp_min(1e-12)[:, None] + self.enc_b)  # F.normalize(p=2) of a 0/1 row
        mu = h @ self.mu[0].T + self.mu[1]
        h = torch.tanh(mu @ self.dec[0].T + self.dec[1])
        out = _Memo(self.out)
        return lambda rows, start, stop: _rows_of(h, rows) @ out(start, stop).T + self.out_b[start:stop]


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
        if self.entry["type"] != "str":
            return indices.astype(np.int64)
        # as wide as the longest id, not int64's 21 characters (the top-k ids of many users are large)
        return indices.astype(f"U{len(str(max(self.n - 1, 0)))}")

    def all(self) -> np.ndarray:
        return self.ids_of(np.arange(self.n)) if self.raw is None else self.raw


class Recommender:
    """Top-k recommendations from a compact model (``dslrec export``); see the module doc."""

    def __init__(self, compact: CompactModel, score_bytes: int = SCORE_BYTES):
        if compact.backbone not in SCORERS:
            raise DslrecError(f"{compact.path} holds a {compact.backbone!r} model, which dslrec cannot serve; "
                              f"supported: {', '.join(SCORERS)}")
        self.compact = compact
        self.score_bytes = score_bytes
        self.header = compact.header
        self.n_users, self.n_items = compact.n_users, compact.n_items
        self.users = _IdMap(compact.header["user_ids"], compact.user_ids)
        self.items = _IdMap(compact.header["item_ids"], compact.item_ids)
        self.seen = None
        if compact.has_seen:
            indptr, items = compact.seen_parts()
            self.seen = SparseRows(torch.from_numpy(indptr), self.n_items, indices=np_to_torch(items))
        counts = compact.item_counts(None if self.seen is None else self.seen.indices.numpy())
        self.popular = np.lexsort((np.arange(self.n_items), -counts))  # by count, ties by index
        self.popularity = counts.astype(np.float32)
        self.scorer = SCORERS[compact.backbone](compact, self.seen)
        compact.tensors.clear()  # the scorer holds what it needs; drop the file's copy
        release_freed_memory()  # loading's transients (decoding, popcounts) go back to the system

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load and verify ``path`` (a file written by ``dslrec export``)."""
        return cls(load(path))

    @property
    def backbone(self) -> str:
        return self.compact.backbone

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Raw scores (len(users) x n_items) of user *indices*, nothing excluded."""
        users = torch.from_numpy(_indices(users, self.n_users, "user").ravel())
        return self.scorer.bind(users)(None, 0, self.n_items).numpy()

    def user_ids(self, indices=None) -> np.ndarray:
        """Raw user ids of user indices (any shape; default: every user, in index order)."""
        return self.users.all() if indices is None else self.users.ids_of(_indices(indices, self.n_users, "user"))

    def item_ids(self, indices=None) -> np.ndarray:
        """Raw item ids of item indices (any shape; default: every item, in index order)."""
        return self.items.all() if indices is None else self.items.ids_of(_indices(indices, self.n_items, "item"))

    def user_index(self, user_ids) -> np.ndarray:
        """Indices of raw user ids; -1 where unknown."""
        return self.users.index_of(np.atleast_1d(np.asarray(user_ids)))

    def recommend(self, user_ids, k: int = 20, exclude_seen: bool = True, unknown: str = "error",
                  batch_size: int | None = None) -> Recommendations:
        """Top-``k`` items for each raw user id (a list, an array or one id).

        ``unknown="error"`` raises for ids the model does not know;
        ``"popular"`` gives them the most popular training items instead.
        Users are scored ``batch_size`` at a time against blocks of the catalogue,
        both sized so that a block of scores fits ``score_bytes`` (default: chosen
        from that memory); torch uses as many threads as ``torch.set_num_threads``.
        """
        out = self._recommend(user_ids, k, exclude_seen, unknown, batch_size)
        if out.known.sum() * self.n_items * 4 >= self.score_bytes:
            # a call that filled score blocks hands its transients back once they are all freed: between
            # calls a server stays at the model's size, not at the heap's high-water mark (a call smaller
            # than one block skips the ~ms it costs)
            release_freed_memory()
        return out

    def _recommend(self, user_ids, k: int, exclude_seen: bool, unknown: str,
                   batch_size: int | None) -> Recommendations:
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
        batch, block = plan_blocks(min(len(known), USERS_PER_CALL), self.n_items, self.score_bytes, MAX_BLOCK)
        if batch_size is not None:
            batch = batch_size
        for start in range(0, len(known), USERS_PER_CALL):  # the dense user rows of a call stay small
            rows = known[start : start + USERS_PER_CALL]
            users = torch.from_numpy(idx[rows])
            excluded = None
            if exclude_seen:
                local, cols, _ = self.seen.entries(users)
                excluded = (local.numpy(), cols.numpy())
            vals, top = rank_batch(self.scorer.bind(users), len(rows), self.n_items, k, excluded, block, batch)
            items[rows] = torch.where(vals > float("-inf"), top, -1).numpy()
            scores[rows] = vals.numpy()
        if len(missing):
            cold = np.flatnonzero(idx < 0)
            items[cold] = self.popular[:k]
            scores[cold] = self.popularity[self.popular[:k]]
        raw = self.items.ids_of(np.maximum(items, 0))
        ids = np.where(items >= 0, raw, "" if raw.dtype.kind == "U" else -1)
        return Recommendations(user_ids=query, ids=ids, scores=scores, items=items, known=idx >= 0)

    def memory_bytes(self) -> int:
        """Bytes of the tensors the scorer and the seen section keep (a lower bound of resident memory)."""
        held = {id(v): v for v in [*vars(self.scorer).values(), self.seen]}  # MultVAE shares seen
        return sum(_nbytes(v) for v in held.values())


def _indices(indices, n: int, what: str) -> np.ndarray:
    """``indices`` as int64, checked to be whole numbers in 0..n-1 (a range map would otherwise
    print any number, and a stored one wrap -1 round to the last id)."""
    idx = np.asarray(indices)
    if idx.size == 0:
        return idx.astype(np.int64)
    if idx.dtype.kind not in "iu":
        raise DslrecError(f"{what} indices must be integers, got {idx.dtype} values; pass positions 0..{n - 1}")
    if idx.min() < 0 or idx.max() >= n:
        bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
        raise DslrecError(f"{what} index {bad} is out of range: the model has {n} {what}s (indices 0..{n - 1})")
    return idx.astype(np.int64, copy=False)


def _nbytes(value) -> int:
    if isinstance(value, Rows):
        return value.nbytes
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0
