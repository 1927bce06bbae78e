"""How masks are held and enforced: dense tensors multiplied by their masks.

``MaskedDenseStorage`` keeps a bool mask (and a cached mask in the weight's
dtype, for a fast ``mul_``) beside each dense parameter. Enforcing a mask
zeroes the inactive weights and every optimiser state tensor of the
parameter's shape (Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, SGD's
``momentum_buffer``, ...), found generically in ``optimizer.state[p]``.

A compact storage (only active values stored) would implement the same
methods; the engine and the decisions do not depend on how values are kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from dslrec.sparse.decisions import count_true, flat_nonzero

# Optimisers for which a zero weight with zero state and zero gradient stays exactly
# zero (weight and state) after a step, whatever the hyper-parameters: masking the
# gradient before the step then keeps inactive weights at zero without touching the
# weights and states afterwards (one pass over the gradient instead of three).
ZERO_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def zero_preserving(optimizer: torch.optim.Optimizer | None) -> bool:
    return optimizer is not None and type(optimizer) in ZERO_PRESERVING


class MaskedDenseStorage:
    """Masks beside dense parameters; inactive weights and optimiser state held at exactly zero."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], masks: Mapping[str, Tensor],
                 optimizer: torch.optim.Optimizer | None):
        self.params = dict(params)
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

    # --- views the decisions need -------------------------------------------------
    def weight(self, name: str) -> Tensor:
        return self.params[name].detach()

    def grad(self, name: str) -> Tensor | None:
        g = self.params[name].grad
        if g is not None and g.is_sparse:
            g = g.to_dense()
        return g

    def state_tensors(self, name: str) -> list[Tensor]:
        """Optimiser state tensors shaped like the parameter (per-weight state)."""
        if self.optimizer is None:
            return []
        p = self.params[name]
        state = self.optimizer.state.get(p, {})
        return [v for v in state.values() if isinstance(v, Tensor) and v.shape == p.shape]

    # --- enforcing masks ----------------------------------------------------------
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

    def active(self, name: str) -> int:
        return count_true(self.masks[name].reshape(-1))
