"""What the engine remembers between updates, in memory that follows what is stored.

* ``EverActive``: which positions have ever been active (the exploration rate,
  random_unseen growth), one bit per position.
* ``RowSignal``: the gradient gathered for accumulated/momentum growth, kept
  only for the rows that received gradient.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor


ADD_CHUNK = 1 << 20  # positions marked at a time (a few MB of transients each)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class EverActive:
    """A bitset over the ``n`` flat positions of a tensor (n / 8 bytes, on the CPU)."""

    def __init__(self, n: int):
        self.n = n
        self.bits = np.zeros((n + 7) // 8, dtype=np.uint8)

    def add(self, positions: Tensor) -> None:
        """Mark positions (any order, repeats allowed) as ever active."""
        flat = positions.detach().reshape(-1).cpu()
        for a in range(0, flat.numel(), ADD_CHUNK):  # a few million at a time: small transients
            pos = flat[a: a + ADD_CHUNK].numpy().astype(np.int64, copy=False)
            if pos.size > 1 and not bool(np.all(pos[1:] > pos[:-1])):
                pos = np.unique(pos)
            byte = pos >> 3
            bit = np.left_shift(1, (pos & 7)).astype(np.uint8)
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])  # one OR per touched byte
            self.bits[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)

    def add_rows(self, first_row: int, cols: Tensor, counts: Tensor, n_cols: int) -> None:
        """Mark the first ``counts[i]`` columns of ``cols[i]`` (distinct within a row) in row
        ``first_row + i`` of a tensor with ``n_cols`` columns as ever active.

        When rows span whole 64-bit words (``n_cols`` a multiple of 64, e.g. embeddings of dim 64),
        each row's bits are summed into its words (distinct bits: the sum is their OR) and OR-ed in
        place: no flat positions, no sort. Otherwise through ``add``."""
        counts = counts.detach().cpu()
        c = cols.detach().cpu().long()
        valid = torch.arange(c.shape[1]).unsqueeze(0) < counts.unsqueeze(1)
        if n_cols % 64 or sys.byteorder != "little":
            rows = torch.arange(first_row, first_row + c.shape[0]).unsqueeze(1)
            self.add((rows * n_cols + c)[valid])
            return
        per_row = n_cols // 64
        bit = torch.where(valid, torch.ones((), dtype=torch.int64).bitwise_left_shift(c & 63), 0)
        words = torch.zeros((c.shape[0], per_row), dtype=torch.int64).scatter_add_(1, torch.where(valid, c >> 6, 0), bit)
        span = self.bits.view(np.uint64)[first_row * per_row: (first_row + c.shape[0]) * per_row]
        span |= words.numpy().view(np.uint64).reshape(-1)

    def contains(self, positions: Tensor) -> Tensor:
        pos = positions.detach().cpu().numpy().astype(np.int64, copy=False)
        hit = (self.bits[pos >> 3] >> (pos & 7)) & 1
        return torch.from_numpy(hit.astype(bool)).to(positions.device)

    def add_mask(self, mask: Tensor) -> None:
        """Mark the True positions of a dense bool mask (masked storage)."""
        self.bits |= np.packbits(mask.detach().reshape(-1).cpu().numpy(), bitorder="little")

    def count(self) -> int:
        return int(_POPCOUNT[self.bits].sum(dtype=np.int64))  # bits past n are never set

    def dense(self, start: int = 0, stop: int | None = None) -> Tensor:
        """Positions ``start .. stop - 1`` (default all) as a dense bool tensor (transient: random_unseen
        growth per row, a slice of rows at a time)."""
        stop = self.n if stop is None else stop
        bits = np.unpackbits(self.bits[start >> 3: (stop + 7) >> 3], bitorder="little")
        return torch.from_numpy(bits[start & 7: (start & 7) + stop - start].astype(bool))

    def to_tensor(self) -> Tensor:
        return torch.from_numpy(self.bits.copy())

    def load(self, saved: Tensor) -> None:
        """From ``to_tensor()``, or from a dense bool tensor (checkpoints before the bitset)."""
        saved = torch.as_tensor(saved).cpu()
        if saved.dtype == torch.bool:
            self.bits[:] = 0
            self.add(torch.from_numpy(np.flatnonzero(saved.reshape(-1).numpy())))
        else:
            self.bits[:] = saved.numpy().astype(np.uint8)


class RowSignal:
    """A per-row sum (``beta`` None) or exponential average of gradients, stored for touched rows only.

    Steps are added as (sorted unique rows, block) pairs and merged lazily (when the pending rows
    outnumber the stored ones, and when read), so a step costs a list append; ``beta``: the signal
    after each step is ``beta * signal + (1 - beta) * g``, weighted at the merge.
    """

    def __init__(self, n_cols: int, beta: float | None = None):
        self.n_cols, self.beta = n_cols, beta
        self.rows = torch.empty(0, dtype=torch.int64)
        self.block = torch.zeros((0, n_cols))
        self.steps = 0  # steps added so far; ``block`` holds the signal as of ``merged_at``
        self.merged_at = 0
        self.pending: list[tuple[Tensor, Tensor, int]] = []
        self._pending_rows = 0

    def add(self, rows: Tensor, block: Tensor) -> None:
        self.steps += 1
        self.pending.append((rows, block.float(), self.steps))
        self._pending_rows += rows.numel()
        if self._pending_rows > 2 * self.rows.numel() + (1 << 16):  # amortised: memory stays ~ touched rows
            self._merge()

    def _weight(self, step: int) -> float:
        """Weight of the gradient added at ``step`` in the signal as of now (exponential average)."""
        return (1.0 - self.beta) * self.beta ** (self.steps - step)

    def _merge(self) -> None:
        if not self.pending:
            return
        device = self.pending[0][0].device
        blocks = [b if self.beta is None else b * self._weight(t) for _, b, t in self.pending]
        old = self.block if self.beta is None else self.block * self.beta ** (self.steps - self.merged_at)
        idx = torch.cat([self.rows.to(device)] + [r for r, _, _ in self.pending])
        rows, inverse = torch.unique(idx, return_inverse=True)
        block = torch.zeros((rows.numel(), self.n_cols), dtype=torch.float32, device=device)
        self.rows, self.block = rows, block.index_add_(0, inverse, torch.cat([old.to(device)] + blocks))
        self.pending, self._pending_rows, self.merged_at = [], 0, self.steps

    def get(self) -> tuple[Tensor, Tensor]:
        """(sorted rows, (U, C) block)."""
        self._merge()
        return self.rows, self.block

    def state(self, prefix: str) -> dict[str, Tensor]:
        rows, block = self.get()
        return {f"{prefix}/rows": rows.cpu().clone(), f"{prefix}/block": block.cpu().clone()}

    def load(self, rows: Tensor, block: Tensor, n_rows: int | None = None) -> None:
        self.rows, self.block = torch.as_tensor(rows), torch.as_tensor(block).float()
        self.pending, self._pending_rows, self.steps, self.merged_at = [], 0, 0, 0


class DenseSignal:
    """The growth signal of masked storage: a dense tensor beside the dense gradient it sums (one
    ``add_`` a step; the per-row form would cost a pass to find the touched rows). Read per row, like
    ``RowSignal``, so the decisions see the same thing from either storage."""

    def __init__(self, n_cols: int, beta: float | None = None):
        self.n_cols, self.beta = n_cols, beta
        self.total: Tensor | None = None

    def add_dense(self, grad: Tensor) -> None:
        g = grad.reshape(-1, self.n_cols)
        if self.total is None:
            self.total = torch.zeros_like(g, dtype=torch.float32)
        if self.beta is None:
            self.total.add_(g)
        else:
            self.total.mul_(self.beta).add_(g, alpha=1.0 - self.beta)

    def get(self) -> tuple[Tensor, Tensor]:
        from dslrec.sparse.storage import rows_of_block

        if self.total is None:
            return torch.empty(0, dtype=torch.int64), torch.zeros((0, self.n_cols))
        return rows_of_block(self.total)

    def state(self, prefix: str) -> dict[str, Tensor]:
        rows, block = self.get()
        return {f"{prefix}/rows": rows.cpu().clone(), f"{prefix}/block": block.cpu().clone()}

    def load(self, rows: Tensor, block: Tensor, n_rows: int) -> None:
        self.total = torch.zeros((n_rows, self.n_cols))
        self.total[torch.as_tensor(rows)] = torch.as_tensor(block).float()
