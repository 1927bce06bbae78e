"""Weight tables kept in memory as the compact file stores them, made dense one block at a time.

A served model never holds a dense copy of a sparse (or int8) table: a batch's
rows (``dense(rows)``) or a block of consecutive rows (``block(start, stop)``)
are widened to float32 when a product needs them, and ``times_t`` multiplies
by the whole table block by block (dense blocks fed to BLAS, which is faster
than a sparse kernel at the densities DSL trains). Two storages, one interface:

- ``DenseRows``: a dense table (float32/float16/bfloat16, or int8 with a float32
  scale per row); a float32 block is a view, nothing is copied.
- ``SparseRows``: the active weights of each row, their positions as column
  indices or as a per-row bitmap (whichever the file chose), row pointers, and
  the values (float32/float16/bfloat16, or int8 with a float32 scale per row).
  Without values it is a binary matrix (the seen section).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

BLOCK_ELEMENTS = 1 << 20  # a dense block in ``times_t``: about 4 MB of float32
_BITS = torch.arange(8, dtype=torch.uint8)


def pack_bits(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A per-row bitmap (rows x ceil(cols / 8) uint8, bit ``c % 8`` of byte ``c // 8``, little-endian
    within a byte) with the bits of the (row, col) pairs set; pairs must be distinct.
    Built from the pairs, never from a dense mask."""
    n_rows, n_cols = shape
    width = math.ceil(n_cols / 8)
    byte = rows.astype(np.int64) * width + cols.astype(np.int64) // 8
    bits = np.left_shift(1, cols.astype(np.int64) % 8)
    packed = np.bincount(byte, weights=bits, minlength=n_rows * width)  # distinct bits: sum = or
    return packed.astype(np.uint8).reshape(n_rows, width)


def unpack_bits(packed: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Bool (rows x n_cols) from a ``pack_bits`` bitmap."""
    bits = (packed[..., None] >> _BITS) & 1
    return bits.reshape(packed.shape[0], -1)[:, :n_cols].bool()


def small_pointers(indptr: torch.Tensor) -> torch.Tensor:
    """Row pointers in int32 when they fit (half the memory of int64 for a table's many rows)."""
    return indptr.to(torch.int32) if int(indptr[-1]) < 2**31 else indptr.to(torch.int64)


def ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The positions ``starts[j] .. starts[j] + lengths[j] - 1`` of every j, concatenated (int64)."""
    starts, lengths = starts.long(), lengths.long()
    total = int(lengths.sum())
    first = torch.cumsum(lengths, 0) - lengths  # output offset of each range
    return torch.arange(total, dtype=torch.int64) + torch.repeat_interleave(starts - first, lengths)


def _widen(values: torch.Tensor) -> torch.Tensor:
    return values if values.dtype == torch.float32 else values.to(torch.float32)


class Rows(ABC):
    """A (n_rows x n_cols) weight table as stored; every method returns float32 torch tensors."""

    shape: tuple[int, int]

    @abstractmethod
    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (int64) dense: (len(rows), n_cols)."""

    @abstractmethod
    def block(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start .. stop - 1`` dense: (stop - start, n_cols)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes held."""

    def times_t(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` (batch x n_rows), W taken in blocks of rows so no dense copy of it exists."""
        n_rows, n_cols = self.shape
        step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
        if step >= n_rows:
            return x @ self.block(0, n_rows).T
        out = torch.empty((x.shape[0], n_rows), dtype=torch.float32)
        for start in range(0, n_rows, step):  # a few blocks of the table, not a loop over rows
            stop = min(start + step, n_rows)
            torch.matmul(x, self.block(start, stop).T, out=out[:, start:stop])
        return out


class DenseRows(Rows):
    def __init__(self, data: torch.Tensor, scales: torch.Tensor | None = None):
        self.data = data.reshape(data.shape[0], -1) if data.ndim != 2 else data
        self.scales = scales
        self.shape = tuple(self.data.shape)

    def _scaled(self, block: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        block = _widen(block)
        return block if scales is None else block * scales[:, None]

    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.data[rows], None if self.scales is None else self.scales[rows])

    def block(self, start: int, stop: int) -> torch.Tensor:
        return self._scaled(self.data[start:stop], None if self.scales is None else self.scales[start:stop])

    @property
    def nbytes(self) -> int:
        return _bytes(self.data) + _bytes(self.scales)


class SparseRows(Rows):
    """Active weights per row; exactly one of ``indices`` (column of each value) and ``bitmap``
    (rows x ceil(n_cols / 8)) gives the positions; ``values`` None makes a binary matrix."""

    def __init__(self, indptr: torch.Tensor, n_cols: int, values: torch.Tensor | None = None,
                 scales: torch.Tensor | None = None, indices: torch.Tensor | None = None,
                 bitmap: torch.Tensor | None = None):
        if (indices is None) == (bitmap is None):
            raise ValueError("give the positions as exactly one of indices and bitmap")
        self.indptr, self.values, self.scales = small_pointers(indptr), values, scales
        self.indices, self.bitmap = indices, bitmap
        self.shape = (len(indptr) - 1, int(n_cols))

    def _values(self, vals: torch.Tensor | None, n: int) -> torch.Tensor:
        return torch.ones(n, dtype=torch.float32) if vals is None else _widen(vals)

    def _fill(self, n_rows: int, local_rows: torch.Tensor | None, mask: torch.Tensor | None,
              cols: torch.Tensor | None, vals: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros((n_rows, self.shape[1]), dtype=torch.float32)
        if mask is not None:
            out[mask] = vals  # a bitmap's set bits in row-major order: the stored order of the values
        else:
            out[local_rows, cols] = vals
        return out if scales is None else out.mul_(scales[:, None])

    def entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(position of the row in ``rows``, column, position in the values) of every entry of ``rows``."""
        starts = self.indptr[rows]
        lengths = (self.indptr[rows + 1] - starts).long()
        pos = ranges(starts, lengths)
        if self.indices is not None:
            local = torch.repeat_interleave(torch.arange(len(rows)), lengths)
            return local, self.indices[pos].long(), pos
        local, cols = torch.nonzero(unpack_bits(self.bitmap[rows], self.shape[1]), as_tuple=True)
        return local, cols, pos

    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.long()
        scales = None if self.scales is None else self.scales[rows]
        if self.bitmap is not None:
            starts = self.indptr[rows]
            pos = ranges(starts, self.indptr[rows + 1] - starts)
            vals = self._values(None if self.values is None else self.values[pos], len(pos))
            return self._fill(len(rows), None, unpack_bits(self.bitmap[rows], self.shape[1]), None, vals, scales)
        local, cols, pos = self.entries(rows)
        vals = self._values(None if self.values is None else self.values[pos], len(pos))
        return self._fill(len(rows), local, None, cols, vals, scales)

    def block(self, start: int, stop: int) -> torch.Tensor:
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        vals = self._values(None if self.values is None else self.values[a:b], b - a)
        scales = None if self.scales is None else self.scales[start:stop]
        if self.bitmap is not None:
            mask = unpack_bits(self.bitmap[start:stop], self.shape[1])
            return self._fill(stop - start, None, mask, None, vals, scales)
        lengths = (self.indptr[start + 1 : stop + 1] - self.indptr[start:stop]).long()
        local = torch.repeat_interleave(torch.arange(stop - start), lengths)
        return self._fill(stop - start, local, None, self.indices[a:b].long(), vals, scales)

    def transposed(self) -> "SparseRows":
        """The transpose with column indices and the values as stored, without the row scales
        (int8: the caller scales the product's columns by ``self.scales``)."""
        local, cols, pos = self.entries(torch.arange(self.shape[0]))
        order = torch.argsort(cols, stable=True)  # by column, then row: the transpose's CSR order
        counts = torch.bincount(cols, minlength=self.shape[1])
        indptr = torch.zeros(self.shape[1] + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=indptr[1:])
        rows = local[order]
        small = torch.int16 if self.shape[0] <= 2**15 else torch.int32
        values = None if self.values is None else self.values[pos[order]]
        return SparseRows(indptr, self.shape[0], values, None, indices=rows.to(small))

    @property
    def nbytes(self) -> int:
        return sum(_bytes(t) for t in (self.indptr, self.values, self.scales, self.indices, self.bitmap))


def _bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()
