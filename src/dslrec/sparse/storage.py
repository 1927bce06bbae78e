"""How the sparsified tensors are held: the one interface the engine goes through.

``WeightStorage`` is what the engine and the decisions see of a sparsified
tensor: its active positions and their weights, the gradient where it can be
non-zero, a way to set new active positions (kept weights keep their value and
optimiser state; new ones start at zero with zero state), hooks around the
optimiser step, a state dict and a dense view for export and evaluation.

Two storages implement it:

* ``MaskedDenseStorage`` (here): the dense parameter stays in the model and a
  bool mask beside it zeroes the inactive weights and their optimiser state.
  Any optimiser and every method work; memory and time are those of dense
  training plus the masks.
* ``CompactStorage`` (``compact.py``): only the active values are stored and
  trained, with their positions; memory and optimiser work follow the budget.

Positions are flat indices into the tensor (row-major); "rows" are the
tensor's first dimension (``decisions.as_rows``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from dslrec.sparse.decisions import as_rows, count_true, flat_nonzero, sorted_rows

# Optimisers for which a zero weight with zero state and zero gradient stays exactly
# zero (weight and state) after a step, whatever the hyper-parameters: masking the
# gradient before the step then keeps inactive weights at zero without touching the
# weights and states afterwards (one pass over the gradient instead of three).
ZERO_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def zero_preserving(optimizer: torch.optim.Optimizer | None) -> bool:
    return optimizer is not None and type(optimizer) in ZERO_PRESERVING


def row_shape(shape: torch.Size) -> tuple[int, int]:
    """(rows, columns) of a tensor seen as rows."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, int(shape[0])
    n_rows = int(shape[0])
    return n_rows, (int(torch.Size(shape).numel()) // n_rows if n_rows else 0)


def rows_of_block(grad: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of a dense (R, C) gradient that hold a non-zero, and those rows."""
    rows = flat_nonzero(grad.ne(0).any(dim=1)).to(grad.device)
    return rows, grad.index_select(0, rows)


class WeightStorage(ABC):
    """What the engine needs of the sparsified tensors, however they are stored."""

    names: list[str]
    shapes: dict[str, torch.Size]

    # --- reading -------------------------------------------------------------------------
    @abstractmethod
    def count(self, name: str) -> int:
        """Active weights of a tensor."""

    @abstractmethod
    def row_counts(self, name: str) -> Tensor:
        """Active weights per row (int64)."""

    @abstractmethod
    def col_counts(self, name: str) -> Tensor:
        """Active weights per column of a matrix (int64)."""

    @abstractmethod
    def active(self, name: str) -> tuple[Tensor, Tensor]:
        """Sorted flat positions of the active weights (int64) and their weights."""

    @abstractmethod
    def active_rows(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: active columns sorted to the front of an (R, S) integer tensor (padding: the column
        count; int64, or a smaller type when no row needs padding), their weights (padding 0) and the
        count per row."""

    @abstractmethod
    def grad_rows(self, name: str) -> tuple[Tensor, Tensor] | None:
        """This step's gradient with respect to the dense tensor, in the rows where it can be non-zero:
        (sorted unique rows, (U, C) block), or None when nothing reached the tensor. Needs
        ``record_grads(True)`` before the forward pass."""

    @abstractmethod
    def mask(self, name: str) -> Tensor:
        """The dense bool mask (built on request: records, export)."""

    @abstractmethod
    def dense(self, name: str) -> Tensor:
        """The dense weights (built on request: export, evaluation)."""

    # --- writing --------------------------------------------------------------------------
    @abstractmethod
    def set_active(self, name: str, positions: Tensor) -> int:
        """New sorted active positions; returns how many are newly active."""

    @abstractmethod
    def set_active_rows(self, name: str, cols: Tensor, counts: Tensor) -> int:
        """New active columns per row (as ``active_rows`` gives them); returns how many are new."""

    def set_mask(self, name: str, mask: Tensor) -> int:
        """New active positions from a dense bool mask."""
        return self.set_active(name, flat_nonzero(mask.reshape(-1)).to(mask.device))

    def new_signal(self, name: str, beta: float | None):
        """An empty growth signal (accumulated/momentum) suited to this storage."""
        from dslrec.sparse.tracking import RowSignal

        return RowSignal(row_shape(self.shapes[name])[1], beta)

    def accumulate(self, name: str, signal, grad_rows) -> None:
        """Fold this step's gradient into ``signal``; ``grad_rows(name)`` is the engine's per-row view."""
        got = grad_rows(name)
        if got is not None:
            signal.add(*got)

    def record_grads(self, on: bool) -> None:
        """Whether the next forward/backward must keep gradients at inactive positions (compact
        storage records them only when the engine asks; masked storage always has them)."""

    def attach(self, optimizer: torch.optim.Optimizer | None) -> None:
        """The optimiser whose per-weight state storage keeps in step with the positions."""
        self.optimizer = optimizer

    def before_update(self) -> None:
        """Before a prune-and-grow update, after the optimiser's step (default: nothing)."""

    def release_buffers(self) -> None:
        """Free memory kept from one step for the next (before an evaluation; default: nothing)."""

    @abstractmethod
    def before_step(self, fast: bool) -> None:
        """Before ``optimizer.step()``; ``fast``: a plain step of a zero-preserving optimiser."""

    @abstractmethod
    def after_step(self, fast: bool) -> None:
        """After ``optimizer.step()``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Tensor]:
        """Positions, as tensors (the values are the model's own parameters)."""

    @abstractmethod
    def load_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Restore positions saved by ``state_dict``."""


class MaskedDenseStorage(WeightStorage):
    """Masks beside dense parameters; inactive weights and optimiser state held at exactly zero.

    Enforcing a mask zeroes the inactive weights and every optimiser state tensor of the
    parameter's shape (Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, SGD's
    ``momentum_buffer``, ...), found generically in ``optimizer.state[p]``.
    """

    kind = "masked"

    def __init__(self, params: Mapping[str, torch.nn.Parameter], masks: Mapping[str, Tensor],
                 optimizer: torch.optim.Optimizer | None):
        self.params = dict(params)
        self.names = list(self.params)
        self.shapes = {n: p.shape for n, p in self.params.items()}
        self.optimizer = optimizer
        self.masks: dict[str, Tensor] = {}
        self._scale: dict[str, Tensor] = {}
        for name, mask in masks.items():
            self._set(name, mask)

    def _set(self, name: str, mask: Tensor) -> None:
        p = self.params[name]
        mask = mask.to(device=p.device, dtype=torch.bool).reshape(p.shape)
        self.masks[name] = mask
        self._scale[name] = mask.to(p.dtype)

    # --- views ----------------------------------------------------------------------------
    def weight(self, name: str) -> Tensor:
        return self.params[name].detach()

    def grad(self, name: str) -> Tensor | None:
        g = self.params[name].grad
        if g is not None and g.is_sparse:
            g = g.to_dense()
        return g

    def count(self, name: str) -> int:
        return count_true(self.masks[name].reshape(-1))

    active_count = count

    def row_counts(self, name: str) -> Tensor:
        return as_rows(self.masks[name]).sum(dim=1)

    def col_counts(self, name: str) -> Tensor:
        return self.masks[name].sum(dim=0)

    def active(self, name: str) -> tuple[Tensor, Tensor]:
        pos = flat_nonzero(self.masks[name].reshape(-1)).to(self.params[name].device)
        return pos, self.weight(name).reshape(-1).index_select(0, pos)

    def active_rows(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        mask = as_rows(self.masks[name])
        counts = mask.sum(dim=1)
        width = int(counts.max()) if counts.numel() else 0
        cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        cols = sorted_rows(cols, mask, mask.shape[1])[:, :width].contiguous()
        w = torch.cat([as_rows(self.weight(name)), torch.zeros_like(as_rows(self.weight(name))[:, :1])], dim=1)
        return cols, w.gather(1, cols), counts

    def grad_rows(self, name: str) -> tuple[Tensor, Tensor] | None:
        g = self.grad(name)
        return None if g is None else rows_of_block(as_rows(g))

    def mask(self, name: str) -> Tensor:
        return self.masks[name]

    def new_signal(self, name: str, beta: float | None):
        from dslrec.sparse.tracking import DenseSignal

        return DenseSignal(row_shape(self.shapes[name])[1], beta)

    def accumulate(self, name: str, signal, grad_rows) -> None:
        g = self.grad(name)
        if g is not None:
            signal.add_dense(g)

    def dense(self, name: str) -> Tensor:
        return self.weight(name)

    def state_tensors(self, name: str) -> list[Tensor]:
        """Optimiser state tensors shaped like the parameter (per-weight state)."""
        if self.optimizer is None:
            return []
        p = self.params[name]
        state = self.optimizer.state.get(p, {})
        return [v for v in state.values() if isinstance(v, Tensor) and v.shape == p.shape]

    # --- enforcing masks ----------------------------------------------------------------
    def before_step(self, fast: bool) -> None:
        if fast:
            self.mask_grads()

    def after_step(self, fast: bool) -> None:
        if not fast:
            self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero inactive weights and their optimiser state (after an optimiser step)."""
        for name, p in self.params.items():
            scale = self._scale[name]
            p.mul_(scale)
            for s in self.state_tensors(name):
                s.mul_(scale)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradient of inactive weights (before a step of a zero-preserving optimiser)."""
        for name, p in self.params.items():
            if p.grad is not None and not p.grad.is_sparse:
                p.grad.mul_(self._scale[name])

    def set_active(self, name: str, positions: Tensor) -> int:
        new = torch.zeros(self.masks[name].numel(), dtype=torch.bool, device=self.masks[name].device)
        new[positions.to(new.device)] = True
        return self.set_mask(name, new)

    def set_active_rows(self, name: str, cols: Tensor, counts: Tensor) -> int:
        rows = as_rows(self.masks[name])
        new = torch.zeros((rows.shape[0], rows.shape[1] + 1), dtype=torch.bool, device=rows.device)
        new.scatter_(1, cols.long(), True)  # padding lands in the extra last column
        return self.set_mask(name, new[:, :-1])

    @torch.no_grad()
    def set_mask(self, name: str, new: Tensor) -> int:
        """Replace a mask; returns the number of newly active positions.

        Weights active in both masks keep value and optimiser state; pruned and newly
        grown positions are set to zero with zero state. Only the changed positions
        are written (O(changes) on the weights and states).
        """
        p = self.params[name]
        old = self.masks[name].reshape(-1)
        new = new.to(device=p.device, dtype=torch.bool).reshape(-1)
        changed = flat_nonzero(old ^ new).to(p.device)
        targets = [p, *self.state_tensors(name)]
        if all(t.is_contiguous() for t in targets):
            for t in targets:
                t.view(-1).index_fill_(0, changed, 0)
        else:  # rare: fall back to whole-tensor multiplication
            keep = (old & new).reshape(p.shape).to(p.dtype)
            for t in targets:
                t.mul_(keep)
        self._scale[name].view(-1).copy_(new)
        self.masks[name] = new.reshape(p.shape)
        # changed = grown + pruned and count(new) - count(old) = grown - pruned
        return (changed.numel() + count_true(new) - count_true(old)) // 2

    def state_dict(self) -> dict[str, Tensor]:
        return {f"mask/{n}": m.detach().cpu().clone() for n, m in self.masks.items()}

    def load_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        for n in self.names:
            self.set_mask(n, torch.as_tensor(sd[f"mask/{n}"]).to(self.params[n].device))
