"""Pruning baselines that are not DSL: PEP's learnable soft thresholds.

(Gradual magnitude pruning is a schedule, ``schedule.gmp_density``, plus the
``decisions.prune_to`` decision; the engine drives it.)

PEP (Liu et al., ICLR 2021, "Learnable Embedding Sizes for Recommender
Systems") re-parametrises a table ``v`` as ``W = sign(v) * relu(|v| - g(s))``
with ``g = sigmoid`` and a learnable threshold logit ``s`` trained by the same
optimiser. Granularity of ``s`` (the paper's options):

* ``feature_dimension`` (default, as in the authors' code): one threshold per weight;
* ``feature``: one per row (user/item);
* ``dimension``: one per column (embedding dimension);
* ``global``: one per tensor.

The paper prunes until the parameter count reaches a target, then retrains
with that mask (lottery style). Here the mask is read and frozen the first
time the count of non-zero ``W`` drops to the budget (if it overshoots, the
``budget`` positions with the largest margin ``|v| - g(s)``, i.e. the largest
``|W|``, are kept), training then continues from the effective weights with
the mask fixed. Until then PEP holds more weights than the target; the run's
peak and mean active counts show it. If the target is not reached by the
deadline the mask is forced to the budget the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


def threshold_shape(shape: torch.Size, granularity: str) -> tuple[int, ...]:
    ones = (1,) * (len(shape) - 1)
    if granularity == "feature_dimension":
        return tuple(shape)
    if granularity == "feature":
        return (shape[0],) + ones
    if granularity == "dimension":
        return (1,) + tuple(shape[1:])
    if granularity == "global":
        return (1,) * len(shape)
    raise ValueError(f"unknown PEP granularity {granularity!r}")


class SoftThreshold(nn.Module):
    """Parametrization ``v -> sign(v) * relu(|v| - sigmoid(s))`` with a learnable ``s``."""

    def __init__(self, shape: tuple[int, ...], init: float, device=None, dtype=None):
        super().__init__()
        self.s = nn.Parameter(torch.full(shape, float(init), device=device, dtype=dtype))

    def forward(self, v: Tensor) -> Tensor:
        return torch.sign(v) * torch.relu(v.abs() - torch.sigmoid(self.s))


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, attr = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), attr


class PEPThresholds:
    """Attaches soft thresholds to parameters of a model and removes them when frozen."""

    def __init__(self, model: nn.Module, params: Mapping[str, nn.Parameter],
                 optimizer: torch.optim.Optimizer | None, granularity: str, init: float):
        self.model = model
        self.params = dict(params)
        self.thresholds: dict[str, nn.Parameter] = {}
        for name, v in self.params.items():
            module, attr = _owner(model, name)
            soft = SoftThreshold(threshold_shape(v.shape, granularity), init, device=v.device, dtype=v.dtype)
            parametrize.register_parametrization(module, attr, soft)
            self.thresholds[name] = soft.s
        if optimizer is not None:
            # thresholds train with the hyper-parameters of the group holding their table
            for name, s in self.thresholds.items():
                group = next((g for g in optimizer.param_groups if any(p is self.params[name] for p in g["params"])),
                             optimizer.param_groups[0])
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": [s]})

    def attached(self, name: str) -> bool:
        module, attr = _owner(self.model, name)
        return parametrize.is_parametrized(module, attr)

    @torch.no_grad()
    def margin(self, name: str) -> Tensor:
        """``|v| - g(s)``: positive exactly where the effective weight is non-zero."""
        return self.params[name].abs() - torch.sigmoid(self.thresholds[name])

    @torch.no_grad()
    def nonzero(self, name: str) -> Tensor:
        return self.margin(name) > 0

    @torch.no_grad()
    def detach(self, name: str, mask: Tensor | None) -> None:
        """Remove the parametrization; the parameter keeps the effective weights times ``mask``."""
        module, attr = _owner(self.model, name)
        if not parametrize.is_parametrized(module, attr):
            return
        effective = getattr(module, attr).detach().clone()
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        v = self.params[name]
        v.copy_(effective if mask is None else effective * mask.to(effective.dtype))
        # the threshold leaves training: no stale gradient may move it any more
        self.thresholds[name].grad = None
        self.thresholds[name].requires_grad_(False)
