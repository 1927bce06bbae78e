"""The optimisers a run can use, built over the model as the engine left it.

``sparse_adam`` is the lazy, row-sparse Adam that practitioners use for big
embedding tables: a step moves only the rows a batch looked up (their moments
too), so its cost follows the batch, not the table. It is torch's own
``SparseAdam`` for the tables looked up by rows (``nn.Embedding`` switched to
sparse gradients, or compact storage's values) and fused ``Adam`` for
everything else, under one optimiser so that learning-rate schedules and
checkpoints see one object.
"""

from __future__ import annotations

import torch
from torch import nn

from dslrec.errors import DslrecError
from dslrec.settings import RunConfig
from dslrec.sparse.compact import CompactEmbedding


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernels are ~3x faster on CPU, and the default Adam is slow on a masked model
    # (most moments are zero; benchmarks/bench_mask_update.py).
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sparse_adam":
        return lazy_adam(model, cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lazy_adam(model: nn.Module, lr: float) -> "LazyAdam":
    """Switch the model's row lookups to sparse gradients and build a ``LazyAdam`` over it."""
    looked_up: dict[int, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            module.sparse = True
            looked_up[id(module.weight)] = f"{name}.weight"
        elif isinstance(module, CompactEmbedding):
            module.sparse = True
            looked_up[id(module.values)] = f"{name}.values"
    if not looked_up:
        raise DslrecError("--optimizer sparse_adam needs embedding tables looked up by rows, and this model has "
                          "none; use --optimizer adam")
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = [p for p in params if id(p) in looked_up]
    return LazyAdam(sparse, [p for p in params if id(p) not in looked_up], lr=lr,
                    names={id(p): looked_up[id(p)] for p in sparse})


class LazyAdam(torch.optim.Optimizer):
    """torch's ``SparseAdam`` for ``sparse`` parameters and fused ``Adam`` for ``dense`` ones, as one
    optimiser: the inner optimisers share this one's parameter groups (learning-rate schedules
    reach them) and its state (one state dict)."""

    def __init__(self, sparse, dense, lr: float, names: dict[int, str] | None = None):
        groups = [{"params": list(ps), "lazy": lazy} for ps, lazy in ((sparse, True), (dense, False)) if ps]
        super().__init__(groups, {"lr": lr})
        self.names = names or {}
        self._link()

    def _link(self) -> None:
        self._inner = []
        for group in self.param_groups:
            kind = torch.optim.SparseAdam if group["lazy"] else torch.optim.Adam
            inner = kind(group["params"], lr=group["lr"], **({} if group["lazy"] else {"fused": True}))
            for key, value in inner.param_groups[0].items():
                group.setdefault(key, value)
            inner.param_groups = [group]
            inner.state = self.state
            self._inner.append(inner)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._link()  # loading replaced the group dicts: share the new ones

    @torch.no_grad()
    def step(self, closure=None):
        for group, inner in zip(self.param_groups, self._inner):
            if group["lazy"]:
                for p in group["params"]:
                    if p.grad is not None and not p.grad.is_sparse:
                        name = self.names.get(id(p), "a table")
                        raise DslrecError(f"--optimizer sparse_adam: {name} got a dense gradient (the backbone reads "
                                          "the whole table, e.g. lightgcn's propagation); use --optimizer adam")
            inner.step()
        return None
