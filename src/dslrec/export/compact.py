"""The compact model format: one safetensors file holding only the active weights.

Layout (format ``dslrec-compact``, version 1). Every tensor lives in one
safetensors file (no pickle); the safetensors ``__metadata__`` holds four
strings: ``format``, ``format_version``, ``header`` (JSON, below) and
``sha256``.

Weights section (``w/...``), one entry per ``state_dict`` tensor:

- a *sparsified* tensor (one with a mask in ``best_masks.safetensors``) is
  stored as CSR by row, seen as 2-D ``(shape[0], prod(shape[1:]))``:
  ``w/NAME/values`` the active weights in row-major order, in the chosen dtype
  (float32, float16 or bfloat16); ``w/NAME/indices`` their column indices in
  the smallest unsigned type that holds ``n_cols - 1`` (uint8 up to 256
  columns, uint16 up to 65,536, else uint32); ``w/NAME/row_counts`` the number
  of active weights per row in the smallest unsigned type that holds the
  largest count (uint8 when every row has < 256 active, else uint16/uint32).
  Counts, not row pointers: they are never larger (pointers need int32/int64)
  and the pointers are one cumulative sum away at load time. The masks decide
  what is active, not the values: an active weight that happens to be 0 is
  stored.
- every other tensor is stored whole as ``w/NAME``: floating tensors in the
  chosen dtype, integer buffers (MultVAE's update counter) unchanged.

Seen section (``seen/...``, optional): each user's training items, CSR by
user (``seen/row_counts`` and ``seen/indices``, smallest types as above). It
rebuilds LightGCN's graph and MultVAE's fold-in rows and lets recommendations
exclude items a user already has; ``with_seen=False`` drops it (MF and NeuMF
only). ``pop/item_counts`` (training interactions per item, smallest unsigned
type) is always stored: it ranks items for users the model does not know.

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

from dslrec.encoding import (checksum, count_dtype, decode_ids, encode_ids, encode_matrix,  # noqa: F401
                             index_dtype, indptr_of, np_to_torch)
from dslrec.errors import DslrecError

FORMAT = "dslrec-compact"
VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SECTIONS = {"w/": "weights", "seen/": "seen", "ids/": "ids", "pop/": "popularity"}


def as_2d_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, columns) a tensor is stored as: first dimension by the rest."""
    if len(shape) == 0:
        return (1, 1)
    return (int(shape[0]), int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1)


def csr_nbytes(shape: tuple[int, ...], nnz: int, max_row_count: int, value_bytes: int) -> int:
    """Bytes of a tensor stored as CSR in this format (values + indices + row counts)."""
    rows, cols = as_2d_shape(tuple(shape))
    return nnz * (value_bytes + index_dtype(cols).itemsize) + rows * count_dtype(max_row_count).itemsize


# --- encoding -----------------------------------------------------------------

def encode_csr(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``values``, ``indices``, ``row_counts`` of the active weights of ``weight`` (see module doc)."""
    rows, cols = as_2d_shape(tuple(weight.shape))
    w = weight.detach().cpu().reshape(rows, cols)
    m = mask.detach().cpu().reshape(rows, cols).bool()
    counts = m.sum(1).numpy()
    r, c = m.nonzero(as_tuple=True)  # row-major: the CSR order
    return {
        "values": w[r, c].to(dtype).contiguous(),
        "indices": np_to_torch(c.numpy().astype(index_dtype(cols))),
        "row_counts": np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0))))),
    }


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
    vdtype = DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if name in masks:
            if tuple(masks[name].shape) != tuple(t.shape):
                raise DslrecError(f"mask of {name} has shape {tuple(masks[name].shape)}, the weight "
                                  f"{tuple(t.shape)}; the run directory's files do not match")
            parts = encode_csr(t, masks[name], vdtype)
            entry = {"layout": "csr", "shape": list(t.shape), "nnz": int(parts["values"].numel())}
            for part, value in parts.items():
                tensors[f"w/{name}/{part}"] = value
                entry[part] = f"w/{name}/{part}"
        else:
            stored = t.to(vdtype) if t.is_floating_point() else t
            tensors[f"w/{name}"] = stored.contiguous()
            entry = {"layout": "dense", "shape": list(t.shape), "data": f"w/{name}"}
        entries[name] = entry
    for name, parts in (packed or {}).items():
        rows, cols = as_2d_shape(tuple(parts["shape"]))
        counts = parts["crow"].diff().numpy()
        encoded = {
            "values": parts["values"].detach().cpu().to(vdtype).contiguous(),
            "indices": np_to_torch(parts["col"].cpu().numpy().astype(index_dtype(cols))),
            "row_counts": np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0))))),
        }
        entries[name] = {"layout": "csr", "shape": list(parts["shape"]), "nnz": int(encoded["values"].numel())}
        for part, value in encoded.items():
            tensors[f"w/{name}/{part}"] = value
            entries[name][part] = f"w/{name}/{part}"

    user_entry, user_tensors = encode_ids(dataset.user_ids, "users")
    item_entry, item_tensors = encode_ids(dataset.item_ids, "items")
    tensors.update(user_tensors)
    tensors.update(item_tensors)
    train = sp.csr_matrix(dataset.train)
    counts = np.asarray((train != 0).sum(axis=0)).ravel() if item_counts is None else np.asarray(item_counts)
    tensors["pop/item_counts"] = np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0)))))
    seen = None
    if with_seen:
        for part, value in encode_matrix(train != 0).items():
            tensors[f"seen/{part}"] = value
        seen = {"indices": "seen/indices", "row_counts": "seen/row_counts", "nnz": int(train.nnz)}

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
        "item_counts": "pop/item_counts",
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
    if meta.get("format_version") != str(VERSION):
        raise DslrecError(f"{path} has compact format version {meta.get('format_version')}, this dslrec reads "
                          f"version {VERSION}; re-export it with this version of dslrec")
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

    def csr_parts(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row pointers int64, column indices in their stored type, float32 values) of a sparse tensor."""
        e = self.header["weights"][name]
        indptr = indptr_of(self.tensors[e["row_counts"]].numpy())
        return indptr, self.tensors[e["indices"]].numpy(), self.tensors[e["values"]].float().numpy()

    def seen_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(row pointers int64, item indices in their stored type) of the seen section."""
        s = self.header["seen"]
        if s is None:
            raise DslrecError(f"{self.path} was exported with --no-seen and holds no training interactions; "
                              "use exclude_seen=False (--include-seen) or re-export without --no-seen")
        return indptr_of(self.tensors[s["row_counts"]].numpy()), self.tensors[s["indices"]].numpy()

    def csr(self, name: str) -> sp.csr_matrix:
        """A sparse tensor as a float32 scipy CSR of its 2-D shape (only active weights stored)."""
        e = self.header["weights"][name]
        if e["layout"] != "csr":
            return sp.csr_matrix(self.dense(name).reshape(as_2d_shape(tuple(e["shape"]))))
        indptr, indices, values = self.csr_parts(name)
        shape = as_2d_shape(tuple(e["shape"]))
        idx_type = np.int32 if max(shape) < 2**31 and len(values) < 2**31 else np.int64
        return sp.csr_matrix((values, indices.astype(idx_type), indptr.astype(idx_type)), shape=shape)

    def dense(self, name: str) -> np.ndarray:
        """Any tensor densified to its own shape (float32 for floating tensors)."""
        e = self.header["weights"][name]
        if e["layout"] == "csr":
            return self.csr(name).toarray().reshape(e["shape"])
        t = self.tensors[e["data"]]
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
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(self.n_users, self.n_items))

    def item_counts(self) -> np.ndarray:
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
            tensors = {name: f.get_tensor(name) for name in f.keys()}
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
