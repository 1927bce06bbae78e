"""How arrays are stored compactly in safetensors files: the smallest integer types, CSR matrices
as indices and row counts, raw-id arrays, and a checksum over a header and tensors.

Shared by the run directory (its training data) and the compact model format, so that
neither has to import the other; it imports nothing else from dslrec.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
import torch


# --- smallest types ---------------------------------------------------------------

def index_dtype(n_cols: int) -> np.dtype:
    """Smallest unsigned type for column indices ``0..n_cols-1``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_cols <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.int64)


def count_dtype(max_count: int) -> np.dtype:
    """Smallest unsigned type holding counts up to ``max_count``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_count <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def np_to_torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def encode_matrix(m: sp.csr_matrix) -> dict[str, torch.Tensor]:
    """A binary CSR matrix (the seen section) as indices and row counts."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    counts = np.diff(m.indptr)
    return {
        "indices": np_to_torch(m.indices.astype(index_dtype(m.shape[1]))),
        "row_counts": np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0))))),
    }


def encode_sorted_rows(m: sp.csr_matrix) -> dict[str, torch.Tensor]:
    """A binary CSR matrix as per-row gaps between its sorted column indices (the first entry of a
    row: its column), in the smallest unsigned type that makes the whole cheapest: gaps that do not
    fit are stored as that type's largest value and listed in full in ``exceptions`` (patched
    frame of reference). ``row_counts`` as in ``encode_matrix``."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    counts = np.diff(m.indptr)
    cols = m.indices.astype(np.int64)
    gaps = cols.copy()
    gaps[1:] -= cols[:-1]
    gaps[m.indptr[:-1][counts > 0]] = cols[m.indptr[:-1][counts > 0]]  # each row starts from column 0
    wide = index_dtype(m.shape[1])
    best = None
    for dt in (np.uint8, np.uint16, np.uint32):
        dt = np.dtype(dt)
        if dt.itemsize > wide.itemsize:
            break
        n_big = int((gaps >= np.iinfo(dt).max).sum()) if dt != wide else 0
        cost = len(gaps) * dt.itemsize + n_big * wide.itemsize
        if best is None or cost < best[0]:
            best = (cost, dt)
    dt = best[1] if best else wide
    out = {"row_counts": np_to_torch(counts.astype(count_dtype(int(counts.max(initial=0)))))}
    if dt == wide:
        out["deltas"] = np_to_torch(gaps.astype(dt))
        return out
    top = np.iinfo(dt).max
    big = gaps >= top
    out["deltas"] = np_to_torch(np.where(big, top, gaps).astype(dt))
    if big.any():
        out["exceptions"] = np_to_torch(gaps[big].astype(wide))
    return out


DECODE_CHUNK = 1 << 22  # entries decoded at a time


def decode_sorted_rows(parts: dict[str, np.ndarray], n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(row pointers int64, column indices in the smallest type) back from ``encode_sorted_rows``."""
    indptr = indptr_of(parts["row_counts"])
    small = parts["deltas"]
    total = small.astype(np.int64)
    if "exceptions" in parts:
        total[small == np.iinfo(small.dtype).max] = parts["exceptions"]
    np.cumsum(total, out=total)  # running total over all rows, in place
    starts = indptr[:-1]
    before = np.where(starts > 0, total[np.maximum(starts - 1, 0)], 0)  # the total before each row
    cols = np.empty(len(total), dtype=index_dtype(n_cols))
    # rows a few million entries at a time, so the per-entry offsets stay a small transient
    bounds = np.unique(np.searchsorted(indptr, np.arange(0, len(total), DECODE_CHUNK), side="right") - 1)
    for r0, r1 in zip(bounds, [*bounds[1:], len(starts)]):
        a, b = indptr[r0], indptr[r1]
        cols[a:b] = total[a:b] - np.repeat(before[r0:r1], np.diff(indptr[r0 : r1 + 1]))
    return indptr, cols


def indptr_of(row_counts: np.ndarray) -> np.ndarray:
    """Row pointers (int64) from per-row counts."""
    out = np.zeros(len(row_counts) + 1, dtype=np.int64)
    np.cumsum(row_counts, out=out[1:])
    return out


def encode_ids(ids: np.ndarray, prefix: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header entry, tensors) for a raw-id array, as compactly as it allows."""
    ids = np.asarray(ids)
    kind = "int" if ids.dtype.kind in "iu" else "str"
    n = len(ids)
    if kind == "int":
        ints = ids.astype(np.int64)
    else:
        text = np.asarray(ids, dtype=str)
        ints = canonical_ints(text)
    if ints is None and kind == "str":
        try:
            ints = text.astype(np.int64)
            if not np.array_equal(ints.astype(str), text):  # "007" or "+7" do not round-trip
                ints = None
        except (ValueError, OverflowError):
            ints = None
        if ints is None:
            return {"kind": "list", "type": "str", "values": text.tolist()}, {}
    if np.array_equal(ints, np.arange(n)):
        return {"kind": "range", "type": kind, "n": n}, {}
    name = f"ids/{prefix}"
    if len(ints) and ints.min() >= 0:  # non-negative ids in the smallest unsigned type that holds them
        ints = ints.astype(count_dtype(int(ints.max())))
    return {"kind": "int", "type": kind, "tensor": name}, {name: np_to_torch(ints)}


def canonical_ints(text: np.ndarray) -> np.ndarray | None:
    """int64 values of a string array whose every entry is a canonical non-negative decimal
    (digits, no leading zero but "0" itself, at most 18 digits), else None. Vectorised over the
    characters: no Python object per id (the general round trip through ``astype(str)`` makes one
    each, which takes seconds and hundreds of MB for millions of ids)."""
    n = len(text)
    width = text.dtype.itemsize // 4
    if n == 0 or width == 0 or text.dtype.kind != "U":
        return None
    codes = text.view(np.uint32).reshape(n, width)  # UCS-4 code points, NUL padded on the right
    used = codes != 0
    length = used.sum(axis=1)
    width = int(length.max())
    if width > 18:
        return None
    codes, used = codes[:, :width], used[:, :width]
    digit = (codes >= 48) & (codes <= 57)
    if not ((digit | ~used).all() and (length >= 1).all()
            and (np.diff(used.view(np.int8), axis=1) <= 0).all()  # NULs only as the padding
            and ((codes[:, 0] != 48) | (length == 1)).all()):
        return None
    values = np.zeros(n, dtype=np.int64)
    for j in range(width):
        step = values * 10 + (codes[:, j].astype(np.int64) - 48)
        np.copyto(values, step, where=used[:, j])
    return values


def decode_ids(entry: dict, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """The raw-id array back, strings or int64 as the dataset had them."""
    if entry["kind"] == "list":
        return np.asarray(entry["values"], dtype=str)
    ints = (np.arange(entry["n"], dtype=np.int64) if entry["kind"] == "range"
            else tensors[entry["tensor"]].numpy().astype(np.int64))
    return ints.astype(str) if entry["type"] == "str" else ints


# --- checksum -----------------------------------------------------------------

def _tensor_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy())


def checksum(header_text: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(header_text.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(_tensor_bytes(tensors[name]))
    return h.hexdigest()
