"""The compact model format: one safetensors file holding only the active weights.

Layout (format ``dslrec-compact``, version 2; version 1 files are still read).
Every tensor lives in one safetensors file (no pickle); the safetensors
``__metadata__`` holds four strings: ``format``, ``format_version``, ``header``
(JSON, below) and ``sha256``.

Weights section (``w/...``), one entry per ``state_dict`` tensor:

- a *sparsified* tensor (one with a mask in ``best_masks.safetensors``) is
  stored by row, seen as 2-D ``(shape[0], prod(shape[1:]))``: ``w/NAME/values``
  the active weights in row-major order, and their positions in whichever of
  two forms is smaller for this tensor: ``w/NAME/indices`` (column indices in
  the smallest unsigned type that holds ``n_cols - 1``) with
  ``w/NAME/row_counts`` (active weights per row, smallest unsigned type), or
  ``w/NAME/bitmap`` (one bit per weight, ``rows x ceil(n_cols / 8)`` bytes, bit
  ``c % 8`` of byte ``c // 8``; the counts are its popcounts). At density 0.2
  and 64 columns the bitmap (8 bytes a row) beats the indices (12.8 + 1). The
  masks decide what is active, not the values: an active weight that happens
  to be 0 is stored.
- every other tensor is stored whole as ``w/NAME``.

Values are float32, float16 or bfloat16, or int8 (``--dtype int8``): symmetric
per row, ``w/NAME/scales`` (float32, one per row, the row's largest magnitude
/ 127) times the stored integer; tensors with fewer than two dimensions
(biases) stay float32 then. Integer buffers (MultVAE's update counter) are
stored unchanged.

Seen section (``seen/...``, optional): each user's training items, sorted,
as gaps (``seen/deltas``: a row's first item, then the differences; the
smallest unsigned type that makes the section cheapest, gaps too large for it
stored as its largest value and listed in full in ``seen/exceptions``) and
``seen/row_counts``. It rebuilds LightGCN's graph and MultVAE's fold-in rows
and lets recommendations exclude items a user already has;
``with_seen=False`` drops it (MF and NeuMF only). Items are ranked for users
the model does not know by training interactions per item: the seen section's
column counts, or ``pop/item_counts`` (smallest unsigned type) when the seen
section is left out or the counts differ from it.

Raw ids: ``"0".."n-1"`` in order are stored as ``{"kind": "range"}``;
integers as an int64 tensor ``ids/users`` / ``ids/items``; anything else as a
JSON list in the header.

The header (JSON) records the backbone, its config, the raw-id maps, the run's
metrics, every tensor's dtype and shape, and the byte size of each section.
``sha256`` covers the header text and the bytes of every tensor (in name
order), so a truncated or altered file fails ``load`` with a clear error.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dslrec.data.dataset import binary_csr
from dslrec.encoding import (checksum, count_dtype, decode_ids, decode_sorted_rows, encode_ids,  # noqa: F401
                             encode_sorted_rows, index_dtype, indptr_of, np_to_torch)
from dslrec.errors import DslrecError

FORMAT = "dslrec-compact"
VERSION = 2
READS = ("1", "2")  # version 1: column indices only, seen items not delta-encoded
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}
VALUE_BYTES = {name: torch.empty(0, dtype=t).element_size() for name, t in DTYPES.items()}
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
SECTIONS = {"w/": "weights", "seen/": "seen", "ids/": "ids", "pop/": "popularity"}


def as_2d_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, columns) a tensor is stored as: first dimension by the rest."""
    if len(shape) == 0:
        return (1, 1)
    return (int(shape[0]), int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1)


def positions_nbytes(shape: tuple[int, ...], nnz: int, max_row_count: int) -> tuple[int, int]:
    """(bytes as column indices + row counts, bytes as a per-row bitmap) of a tensor's positions."""
    rows, cols = as_2d_shape(tuple(shape))
    as_indices = nnz * index_dtype(cols).itemsize + rows * count_dtype(max_row_count).itemsize
    return as_indices, rows * math.ceil(cols / 8)


def csr_nbytes(shape: tuple[int, ...], nnz: int, max_row_count: int, dtype: str) -> int:
    """Bytes of a sparsified tensor in this format: values (+ int8 row scales) + the cheaper positions."""
    rows, _ = as_2d_shape(tuple(shape))
    scales = 4 * rows if dtype == "int8" else 0
    return nnz * VALUE_BYTES[dtype] + scales + min(positions_nbytes(shape, nnz, max_row_count))


def dense_nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of a floating tensor stored whole in this format."""
    numel = math.prod(shape)
    if dtype == "int8" and len(shape) < 2:
        return 4 * numel  # biases stay float32
    return numel * VALUE_BYTES[dtype] + (4 * shape[0] if dtype == "int8" else 0)


def quantize_rows(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row): symmetric, scale = the row's largest magnitude / 127."""
    values = values.float()
    peak = torch.zeros(n_rows).scatter_reduce_(0, rows, values.abs(), "amax", include_self=True)
    scales = peak / 127
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(values / safe[rows]).clamp_(-127, 127).to(torch.int8)
    return q, scales


# --- encoding -----------------------------------------------------------------

def encode_active(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, ...],
                  dtype: str) -> dict[str, torch.Tensor]:
    """The parts of a sparsified tensor from its active (row, column, value) in row-major order:
    ``values`` (+ ``scales`` for int8) and the cheaper of ``indices`` + ``row_counts`` or ``bitmap``."""
    n_rows, n_cols = as_2d_shape(tuple(shape))
    counts = torch.bincount(rows, minlength=n_rows).numpy()
    max_count = int(counts.max(initial=0))
    parts = {}
    if dtype == "int8":
        parts["values"], parts["scales"] = quantize_rows(values, rows, n_rows)
    else:
        parts["values"] = values.detach().to(DTYPES[dtype]).contiguous()
    as_indices, as_bitmap = positions_nbytes(tuple(shape), len(values), max_count)
    if as_bitmap < as_indices:
        from dslrec.export.rows import pack_bits

        parts["bitmap"] = np_to_torch(pack_bits(rows.numpy(), cols.numpy(), (n_rows, n_cols)))
    else:
        parts["indices"] = np_to_torch(cols.numpy().astype(index_dtype(n_cols)))
        parts["row_counts"] = np_to_torch(counts.astype(count_dtype(max_count)))
    return parts


def encode_csr(weight: torch.Tensor, mask: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """The parts of the active weights of ``weight`` under ``mask`` (see ``encode_active``)."""
    rows, cols = as_2d_shape(tuple(weight.shape))
    w = weight.detach().cpu().reshape(rows, cols)
    r, c = mask.detach().cpu().reshape(rows, cols).bool().nonzero(as_tuple=True)  # row-major: the stored order
    return encode_active(w[r, c], r, c, tuple(weight.shape), dtype)


def encode_dense(t: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """``data`` (+ ``scales`` for int8 tables) of a tensor stored whole."""
    if not t.is_floating_point():
        return {"data": t.contiguous()}
    if dtype != "int8":
        return {"data": t.to(DTYPES[dtype]).contiguous()}
    if t.ndim < 2:
        return {"data": t.float().contiguous()}
    flat = t.reshape(t.shape[0], -1)
    rows = torch.arange(flat.shape[0]).repeat_interleave(flat.shape[1])
    q, scales = quantize_rows(flat.reshape(-1), rows, flat.shape[0])
    return {"data": q.reshape(t.shape), "scales": scales}


# --- writing ------------------------------------------------------------------

def _section_bytes(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    sizes = {s: 0 for s in SECTIONS.values()}
    for name, t in tensors.items():
        prefix = name.split("/", 1)[0] + "/"
        sizes[SECTIONS[prefix]] += t.numel() * t.element_size()
    return sizes


def write_compact(
    path: str | Path,
    *,
    backbone: str,
    model_config: dict,
    state: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None,
    dataset,
    dtype: str = "float32",
    with_seen: bool = True,
    metrics: dict | None = None,
    run: dict | None = None,
    item_counts: np.ndarray | None = None,
    packed: dict[str, dict] | None = None,
) -> dict:
    """Write a compact model file from weights, masks and the dataset; returns its header.

    ``state`` is the model's ``state_dict()``; ``masks`` maps sparsified tensor
    names to their masks (None for a dense model). ``dataset`` supplies raw
    ids, the seen section and item counts (unless ``item_counts`` is given).
    ``packed``: tensors already held as active values and CSR positions (a run
    with compact storage: ``{name: {values, crow, col, shape}}``), written as they are.
    """
    if dtype not in DTYPES:
        raise DslrecError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not with_seen and backbone in ("lightgcn", "multvae"):
        raise DslrecError(
            f"a {backbone} model needs its training interactions to score (graph / fold-in rows); "
            "export it without --no-seen"
        )
    masks = dict(masks or {})
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise DslrecError(f"masks name tensors the model does not have: {', '.join(unknown)}; "
                          "the run directory's best_masks.safetensors does not match best.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}

    def add(name: str, layout: str, shape, parts: dict[str, torch.Tensor]) -> None:
        entries[name] = {"layout": layout, "shape": list(shape)}
        if layout == "csr":
            entries[name]["nnz"] = int(parts["values"].numel())
        for part, value in parts.items():
            tensors[f"w/{name}/{part}"] = value
            entries[name][part] = f"w/{name}/{part}"

    for name, t in state.items():
        t = t.detach().cpu()
        if name in masks:
            if tuple(masks[name].shape) != tuple(t.shape):
                raise DslrecError(f"mask of {name} has shape {tuple(masks[name].shape)}, the weight "
                                  f"{tuple(t.shape)}; the run directory's files do not match")
            add(name, "csr", t.shape, encode_csr(t, masks[name], dtype))
        else:
            add(name, "dense", t.shape, encode_dense(t, dtype))
    for name, parts in (packed or {}).items():
        crow = parts["crow"].cpu().long()
        rows = torch.repeat_interleave(torch.arange(len(crow) - 1), crow.diff())
        add(name, "csr", parts["shape"],
            encode_active(parts["values"].detach().cpu(), rows, parts["col"].cpu().long(), tuple(parts["shape"]), dtype))

    user_entry, user_tensors = encode_ids(dataset.user_ids, "users")
    item_entry, item_tensors = encode_ids(dataset.item_ids, "items")
    tensors.update(user_tensors)
    tensors.update(item_tensors)
    train = sp.csr_matrix(dataset.train)
    seen_counts = np.asarray((train != 0).sum(axis=0)).ravel()
    counts = seen_counts if item_counts is None else np.asarray(item_counts)
    seen = None
    if with_seen:
        seen = {"nnz": int(train.nnz)}
        for part, value in encode_sorted_rows(train != 0).items():
            tensors[f"seen/{part}"] = value
            seen[part] = f"seen/{part}"
    pop = None  # the counts are the seen section's column counts, unless they differ or it is left out
    if not with_seen or not np.array_equal(counts, seen_counts):
        pop = "pop/item_counts"
        tensors[pop] = np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0)))))

    header = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": backbone,
        "model_config": model_config,
        "dtype": dtype,
        "n_users": int(dataset.n_users),
        "n_items": int(dataset.n_items),
        "user_ids": user_entry,
        "item_ids": item_entry,
        "weights": entries,
        "seen": seen,
        "item_counts": pop,
        "metrics": metrics or {},
        "run": run or {},
        "sizes": _section_bytes(tensors),
        "tensors": {n: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                    for n, t in sorted(tensors.items())},
    }
    text = json.dumps(header, separators=(",", ":"), default=_json_default)
    metadata = {"format": FORMAT, "format_version": str(VERSION), "header": text,
                "sha256": checksum(text, tensors)}
    from dslrec.rundir import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return header


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def export(run_dir: str | Path, out_path: str | Path | None = None, dtype: str = "float32",
           with_seen: bool = True, dataset=None) -> dict:
    """Export a finished run directory's best weights to one compact file.

    Reads only the run directory: ``config.yaml``, ``summary.json``,
    ``best.safetensors``, (sparse runs) ``best_masks.safetensors`` and the training
    data the run kept (``data.safetensors`` / ``data.json``: raw ids, each user's
    training items, item counts), so it works from any folder and never re-reads
    or re-splits the source. ``dataset`` is only needed for a run directory written
    before the run kept its data (it is checked against the run); for a newer run
    it must match what the run kept. Default output: ``RUN_DIR/model.dslrec``.
    Returns ``{"path", "sizes", "dense_bytes"}``: section sizes of the new file and
    the size of ``best.safetensors``.
    """
    from dslrec import models
    from dslrec import rundir
    from dslrec.settings import resolve_settings

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DslrecError(f"run directory {run_dir} does not exist; pass the --out folder of dslrec train")
    for needed in (rundir.CONFIG, rundir.SUMMARY, rundir.BEST):
        if not (run_dir / needed).is_file():
            raise DslrecError(f"{run_dir} has no {needed}: the run has not finished (or is not a dslrec run); "
                              "export a finished run")
    cfg = resolve_settings(config_file=run_dir / rundir.CONFIG)
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    if dataset is None and not rundir.has_data(run_dir):
        raise DslrecError(f"{run_dir} has no {rundir.DATA_INFO}: it was trained by an older dslrec that did not keep "
                          "its training data (export would have to re-read the source); retrain it with this version, "
                          "or from Python pass the training data: export(run_dir, dataset=...)")
    stored, item_counts = rundir.read_data(run_dir) if rundir.has_data(run_dir) else (None, None)
    if dataset is not None:
        expected = summary.get("dataset", {})
        got = dataset.sizes()
        diff = [k for k in ("users", "items", "train") if k in expected and expected[k] != got[k]]
        if stored is not None and not diff:
            diff = rundir.data_differences(stored, dataset)
        if diff:
            raise DslrecError(
                f"the dataset given for {run_dir} ({dataset.name!r}: {got['users']} users, {got['items']} items, "
                f"{got['train']} training interactions) is not the one the run trained on ({expected.get('users')} "
                f"users, {expected.get('items')} items, {expected.get('train')}; differs in: {', '.join(diff)}); "
                "leave dataset out, the run directory holds its training data"
            )
    if stored is not None:
        dataset = stored
    state = rundir.load_weights(run_dir / rundir.BEST)
    masks = rundir.load_weights(run_dir / rundir.BEST_MASKS) if (run_dir / rundir.BEST_MASKS).is_file() else None
    from dslrec.sparse.compact import split_compact_state

    state, packed = split_compact_state(state)
    if packed:  # compact storage: the values and positions go to the file as they are, nothing dense is built
        with torch.device("meta"):
            model = models.build(cfg.model, dataset, **cfg.model_options)
        _check_packed(run_dir, cfg.model, model, state, packed)
        masks = None
    else:
        model = models.build(cfg.model, dataset, **cfg.model_options)
        try:  # the weights must fit the backbone rebuilt from the config and the training data
            model.load_state_dict(state)
        except RuntimeError as e:
            raise DslrecError(f"{run_dir / rundir.BEST} does not fit a {cfg.model} built from {rundir.CONFIG} "
                              f"and the run's training data ({str(e).splitlines()[0]}); the run directory's files "
                              "do not belong together, retrain the run") from None
        state = model.state_dict()
    out = Path(out_path) if out_path is not None else run_dir / "model.dslrec"
    header = write_compact(
        out, backbone=cfg.model, model_config=dict(model.config), state=state, masks=masks, packed=packed,
        dataset=dataset, dtype=dtype, with_seen=with_seen, item_counts=item_counts,
        metrics={"valid": summary.get("valid", {}), "test": summary.get("test", {})},
        run={"method": cfg.method, "density": cfg.density, "dataset": dataset.name, "seed": cfg.seed,
             "best_epoch": summary.get("best_epoch"), "params": summary.get("params"),
             "dslrec_version": summary.get("dslrec_version")},
    )
    dense_bytes = (run_dir / rundir.BEST).stat().st_size
    if packed:  # the run's own weights are compact already: compare with the dense float32 checkpoint
        dense_bytes = sum(t.numel() * t.element_size() for t in state.values()) + 4 * sum(
            math.prod(p["shape"]) for p in packed.values())
    return {"path": str(out), "sizes": file_sizes(out, header), "dense_bytes": dense_bytes}


def _check_packed(run_dir: Path, backbone: str, model: torch.nn.Module, plain: dict, packed: dict) -> None:
    """A compact run's weights must fit the backbone rebuilt from its config (shapes only: built on meta)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {**{k: tuple(v.shape) for k, v in plain.items()}, **{k: tuple(p["shape"]) for k, p in packed.items()}}
    wrong = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
    if wrong:
        raise DslrecError(f"{run_dir} best.safetensors does not fit a {backbone} built from its config.yaml "
                          f"(differs in {', '.join(wrong[:3])}); the run directory's files do not belong together, "
                          "retrain the run")


# --- reading ------------------------------------------------------------------

def _read_header(path: Path) -> dict:
    """Our header from the raw safetensors header, with clear errors for foreign or damaged files."""
    if not path.is_file():
        raise DslrecError(f"no model file {path}; export one with: dslrec export RUN_DIR --out {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        raw = f.read(min(max(n, 0), size))
    not_ours = DslrecError(f"{path} is not a dslrec model file; export one with: dslrec export RUN_DIR --out FILE")
    damaged = DslrecError(f"file {path} is damaged (its header is cut short or unreadable); re-export it")
    if n < 0:
        raise not_ours
    try:
        meta = json.loads(raw.decode("utf-8")).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        # a safetensors header whose declared length runs past the end: a truncated file
        truncated = raw.startswith(b'{"') and 8 + n > size
        raise (damaged if truncated or FORMAT.encode() in raw else not_ours) from None
    if meta.get("format") != FORMAT:
        raise not_ours
    if meta.get("format_version") not in READS:
        raise DslrecError(f"{path} has compact format version {meta.get('format_version')}, this dslrec reads "
                          f"versions {' and '.join(READS)}; re-export it with this version of dslrec")
    try:
        header = json.loads(meta["header"])
    except (KeyError, json.JSONDecodeError):
        raise damaged from None
    header["_text"], header["_sha256"] = meta["header"], meta.get("sha256")
    return header


@dataclass
class CompactModel:
    """A loaded compact file: its header and tensors (as stored)."""

    path: Path
    header: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def backbone(self) -> str:
        return self.header["backbone"]

    @property
    def n_users(self) -> int:
        return self.header["n_users"]

    @property
    def n_items(self) -> int:
        return self.header["n_items"]

    def names(self) -> list[str]:
        """The model's state_dict names."""
        return list(self.header["weights"])

    def is_sparse(self, name: str) -> bool:
        return self.header["weights"][name]["layout"] == "csr"

    def rows(self, name: str):
        """A 2-D weight as stored (``dslrec.export.rows``): active values and positions, or the dense
        table; int8 values with their row scales, half precision as it is. Nothing is widened."""
        from dslrec.export.rows import DenseRows, SparseRows

        e = self.header["weights"][name]
        t = self.tensors
        scales = t[e["scales"]] if "scales" in e else None
        if e["layout"] != "csr":
            return DenseRows(t[e["data"]].reshape(as_2d_shape(tuple(e["shape"]))), scales)
        n_rows, n_cols = as_2d_shape(tuple(e["shape"]))
        if "bitmap" in e:
            bitmap = t[e["bitmap"]]
            counts = torch.from_numpy(_POPCOUNT[bitmap.numpy()].sum(axis=1, dtype=np.int64))  # uint8 lookups
            indptr = torch.zeros(n_rows + 1, dtype=torch.int64)
            torch.cumsum(counts, 0, out=indptr[1:])
            return SparseRows(indptr, n_cols, t[e["values"]], scales, bitmap=bitmap)
        indptr = torch.from_numpy(indptr_of(t[e["row_counts"]].numpy()))
        return SparseRows(indptr, n_cols, t[e["values"]], scales, indices=t[e["indices"]])

    def seen_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(row pointers int64, item indices in the smallest type) of the seen section."""
        s = self.header["seen"]
        if s is None:
            raise DslrecError(f"{self.path} was exported with --no-seen and holds no training interactions; "
                              "use exclude_seen=False (--include-seen) or re-export without --no-seen")
        if "indices" in s:  # version 1
            return indptr_of(self.tensors[s["row_counts"]].numpy()), self.tensors[s["indices"]].numpy()
        parts = {k: self.tensors[s[k]].numpy() for k in ("deltas", "row_counts", "exceptions") if k in s}
        return decode_sorted_rows(parts, self.n_items)

    def csr(self, name: str) -> sp.csr_matrix:
        """A tensor as a float32 scipy CSR of its 2-D shape (only active weights stored), widened whole:
        for checks and ``to_module``; serving works from ``rows``."""
        e = self.header["weights"][name]
        shape = as_2d_shape(tuple(e["shape"]))
        if e["layout"] != "csr":
            return sp.csr_matrix(self.dense(name).reshape(shape))
        table = self.rows(name)
        local, cols, pos = table.entries(torch.arange(shape[0]))
        values = table.values[pos].float()
        if table.scales is not None:
            values = values * table.scales[local]
        idx_type = np.int32 if max(shape) < 2**31 and len(values) < 2**31 else np.int64
        return sp.csr_matrix((values.numpy(), cols.numpy().astype(idx_type), table.indptr.numpy().astype(idx_type)),
                             shape=shape)

    def dense(self, name: str) -> np.ndarray:
        """Any tensor densified to its own shape (float32 for floating tensors)."""
        e = self.header["weights"][name]
        if e["layout"] == "csr":
            return self.csr(name).toarray().reshape(e["shape"])
        t = self.tensors[e["data"]]
        if "scales" in e:
            return self.rows(name).block(0, e["shape"][0]).numpy().reshape(e["shape"])
        return (t.float() if t.is_floating_point() else t).numpy().reshape(e["shape"])

    def mask(self, name: str) -> np.ndarray:
        """Bool mask of a tensor's active weights (all True for a dense tensor)."""
        e = self.header["weights"][name]
        if e["layout"] != "csr":
            return np.ones(e["shape"], dtype=bool)
        m = self.csr(name)
        m.data = np.ones_like(m.data, dtype=bool)
        return m.toarray().reshape(e["shape"])

    @property
    def has_seen(self) -> bool:
        return self.header["seen"] is not None

    def seen(self) -> sp.csr_matrix:
        """Each user's training items as a binary float32 CSR (n_users x n_items)."""
        indptr, indices = self.seen_parts()
        return binary_csr(indices.astype(np.int32), indptr, (self.n_users, self.n_items))

    def item_counts(self, seen_items: np.ndarray | None = None) -> np.ndarray:
        """Training interactions per item (stored, or counted from the seen section; pass its
        decoded items when they are at hand)."""
        if self.header["item_counts"] is None:
            items = self.seen_parts()[1] if seen_items is None else seen_items
            return np.bincount(items, minlength=self.n_items).astype(np.int64)
        return self.tensors[self.header["item_counts"]].numpy().astype(np.int64)

    def user_ids(self) -> np.ndarray:
        return decode_ids(self.header["user_ids"], self.tensors)

    def item_ids(self) -> np.ndarray:
        return decode_ids(self.header["item_ids"], self.tensors)

    @property
    def sizes(self) -> dict[str, int]:
        return file_sizes(self.path, self.header)


def file_sizes(path: str | Path, header: dict) -> dict[str, int]:
    """Bytes per section (weights, seen, ids, popularity), the rest (headers) and the whole file."""
    sizes = dict(header["sizes"])
    total = Path(path).stat().st_size
    sizes["header"] = total - sum(sizes.values())
    sizes["file"] = total
    return sizes


def load(path: str | Path) -> CompactModel:
    """Read and verify a compact model file (checksum, format, version)."""
    path = Path(path)
    header = _read_header(path)
    damaged = f"file {path} is damaged (checksum mismatch); re-export it"
    try:
        with safe_open(str(path), framework="pt") as f:
            # copied out of the file's mapping: a tensor view would keep the whole file resident
            # (every page was read for the checksum) as long as any one tensor is alive
            tensors = {name: f.get_tensor(name).clone() for name in f.keys()}
    except Exception as e:  # safetensors reports truncation and bad offsets as its own errors
        raise DslrecError(f"file {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "re-export it") from None
    listed = header.get("tensors", {})
    actual = {n: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for n, t in tensors.items()}
    if listed != actual or checksum(header.pop("_text"), tensors) != header.pop("_sha256"):
        raise DslrecError(damaged)
    return CompactModel(path, header, tensors)


# --- back to a module -----------------------------------------------------------

def stub_dataset(compact: CompactModel):
    """A Dataset with the model's ids and training interactions (empty valid/test), to build backbones."""
    from dslrec.data.dataset import Dataset

    shape = (compact.n_users, compact.n_items)
    empty = sp.csr_matrix(shape, dtype=np.float32)
    train = compact.seen() if compact.has_seen else empty
    return Dataset(name=compact.header.get("run", {}).get("dataset", "compact"), user_ids=compact.user_ids(),
                   item_ids=compact.item_ids(), train=train, valid=empty, test=empty.copy())


def to_module(compact: CompactModel) -> torch.nn.Module:
    """The backbone rebuilt with dense float32 weights (inactive weights are zeros), in eval mode."""
    from dslrec import models

    valid = models.model_kwargs(compact.backbone)
    config = {k: v for k, v in compact.header["model_config"].items() if k in valid}
    model = models.build(compact.backbone, stub_dataset(compact), **config)
    state = {name: torch.from_numpy(np.ascontiguousarray(compact.dense(name))) for name in compact.names()}
    model.load_state_dict(state)
    return model.eval()
