"""``SparseEngine``: train any ``torch.nn.Module`` sparse, from the outside.

The engine selects parameters by name/shape (never by backbone), initialises
masks, and replaces ``optimizer.step()`` in the training loop::

    engine = SparseEngine(model, optimizer, SparseConfig(method="dsl", density=0.2), total_steps=T)
    for batch in batches:
        optimizer.zero_grad()
        model.loss(batch).backward()
        engine.step()            # optimiser step, re-masking, prune/grow every delta_t steps
    record = engine.epoch_record()

Order inside ``step()`` (t counts completed optimiser steps, from 1):

1. gradient averages for grow="momentum"/"accumulated" take in the dense gradient
   (only during the ``accumulate_steps`` steps before an update);
2. the optimiser steps; inactive weights and their optimiser state are zeroed
   (for SGD/Adam/AdamW by masking the gradient before the step, which keeps
   them at zero with one pass instead of three; other optimisers, update steps
   and ``remask="full"`` use the generic after-step re-masking);
3. if t is an update step: DSL prunes and grows using the weights after the
   step and the dense gradient of this mini-batch; GMP prunes; PEP checks
   whether its mask can be frozen.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dslrec.errors import DslrecError
from dslrec.sparse import decisions, schedule
from dslrec.sparse.baselines import PEPThresholds
from dslrec.sparse.config import SparseConfig
from dslrec.sparse.masks import budget, initial_masks
from dslrec.sparse.params import sparsifiable_parameters
from dslrec.sparse.storage import MaskedDenseStorage, zero_preserving


class SparseEngine:
    """Masks for the sparsifiable parameters of ``model`` and the rules that move them.

    ``masks``: optional ``{name: bool tensor}`` replacing the initialisation (for
    one-shot pruning or lottery tickets use ``method="static"``: frozen; with
    ``method="dsl"`` exploration starts from them; ``gmp``/``pep`` then behave as
    ``static``). Budgets are then the counts of the given masks.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, config: SparseConfig,
                 total_steps: int, seed: int = 0, masks: dict[str, Tensor] | None = None):
        if not isinstance(config, SparseConfig):
            raise DslrecError("SparseEngine needs a SparseConfig; build one with SparseConfig(...)")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise DslrecError(f"total_steps={total_steps!r} must be a positive integer (optimiser steps of the run)")
        self.cfg = config
        self.model = model
        self.optimizer = optimizer
        self.total_steps = total_steps
        named = sparsifiable_parameters(model, config.include, config.exclude)
        if not named:
            raise DslrecError("no parameter matches the sparse selection; check include/exclude globs "
                              f"(include={config.include}, exclude={config.exclude})")
        self.params: dict[str, torch.nn.Parameter] = dict(named)
        self.names = list(self.params)
        self.numel = {n: p.numel() for n, p in self.params.items()}
        self.scopes = [self.names] if config.scope == "global" else [[n] for n in self.names]
        self.per_row = config.scope == "per_row"  # every row of a tensor is a scope of its own
        self.generator = torch.Generator().manual_seed(int(seed))
        self.t = 0
        self.n_updates = 0
        self.last_zeta: float | None = None
        self.signal: dict[str, Tensor] = {}
        self.pep: PEPThresholds | None = None
        self.frozen_scopes: set[int] = set()  # PEP scopes whose mask is fixed
        self._moved_since = {n: 0 for n in self.names}
        self._moved_last = {n: 0 for n in self.names}
        self._updates_since = 0
        self._force_full = True  # first step after construction/loading re-masks everything

        if masks is not None:
            init = self._check_masks(masks)
        elif config.method in ("dsl", "static"):
            init = initial_masks(config.init, self.params, config.density, config.scope, self.generator)
        else:  # dense, gmp (starts dense), pep (mask decided by the thresholds)
            init = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        self.storage = MaskedDenseStorage(self.params, init, optimizer)
        self.budgets = [sum(int(torch.count_nonzero(init[n])) for n in scope) for scope in self.scopes]
        self.targets = [self._scope_budget(scope, config.density) for scope in self.scopes]
        if masks is not None or config.method in ("dsl", "static"):
            self.targets = list(self.budgets)
        self.ever = {n: m.clone() for n, m in self.storage.masks.items()}
        if config.method == "pep" and masks is None:
            self.pep = PEPThresholds(model, self.params, optimizer, config.pep_granularity, config.pep_init)
        self._fast = config.remask == "auto" and zero_preserving(optimizer)
        if self._masking:
            self.storage.apply()

    # --- the training-loop API ----------------------------------------------------
    @property
    def masks(self) -> dict[str, Tensor]:
        """Current bool mask per sparsified parameter (PEP before freezing: its non-zero pattern)."""
        if self.pep is None:
            return dict(self.storage.masks)
        return {n: self._current_mask(n) for n in self.names}

    @property
    def _masking(self) -> bool:
        """Whether masks are enforced (not for dense, nor for PEP before any mask is frozen)."""
        return self.cfg.method != "dense" and (self.pep is None or bool(self.frozen_scopes))

    def step(self) -> None:
        """``optimizer.step()`` plus everything sparse training does around it."""
        t = self.t + 1
        update = self._update_due(t)
        if self._accumulating(t):
            self._accumulate()
        fast = self._fast and not update and not self._force_full
        if self._masking and fast:
            self.storage.mask_grads()
        if self.optimizer is not None:
            self.optimizer.step()
        if self._masking and not fast:
            self.storage.apply()
        self._force_full = False
        self.t = t
        if update:
            self._update()
        if self.pep is not None:
            self._pep_check()

    def apply_masks(self) -> None:
        """Zero inactive weights and optimiser state now (e.g. after loading weights by hand)."""
        if self._masking:
            self.storage.apply()

    def active_count(self) -> int:
        """Active weights over all sparsified tensors now."""
        return sum(self._active(n) for n in self.names)

    def sparsifiable_count(self) -> int:
        return sum(self.numel.values())

    def at_target(self) -> bool:
        """True once the run holds its final budget (GMP after its ramp, PEP once frozen)."""
        if self.cfg.method == "pep" and self.pep is not None:
            return len(self.frozen_scopes) == len(self.scopes)
        if self.cfg.method == "gmp":
            return all(b <= target for b, target in zip(self.budgets, self.targets))
        return True

    def settled(self) -> bool:
        """Whether the masks have settled enough for a validation plateau to mean something: DSL's
        update ratio has decayed to half its start or below (or exploration is over; a constant ratio
        never decays, so it counts as settled); other methods once at their target."""
        cfg = self.cfg
        if cfg.method != "dsl" or cfg.schedule == "constant":
            return self.at_target()
        if self.t >= cfg.explore_until * self.total_steps:
            return True
        return self.zeta() <= 0.5 * cfg.zeta0

    def row_counts(self, name: str) -> Tensor:
        """Active weights per row (dim 0) of a sparsified tensor, as int64 on its device."""
        if name not in self.params:
            raise DslrecError(f"{name!r} is not a sparsified parameter; choose one of {', '.join(self.names)}")
        mask = self._current_mask(name)
        return mask.reshape(mask.shape[0], -1).sum(dim=1)

    def zeta(self, t: int | None = None) -> float:
        """The update ratio zeta_t of the DSL schedule at iteration ``t`` (default: now)."""
        cfg = self.cfg
        return schedule.update_ratio(cfg.schedule, self.t if t is None else t, self.total_steps, cfg.zeta0, cfg.eta_min)

    def epoch_record(self) -> dict[str, Any]:
        """JSON-ready summary for the run log; resets the 'since last record' counters."""
        total = self.sparsifiable_count()
        tensors = {}
        for n in self.names:
            active = self._active(n)
            tensors[n] = {
                "numel": self.numel[n], "active": active, "density": active / self.numel[n],
                "exploration_rate": int(torch.count_nonzero(self.ever[n])) / self.numel[n],
                "moved": self._moved_since[n], "moved_last_update": self._moved_last[n],
            }
        active = sum(v["active"] for v in tensors.values())
        record = {
            "method": self.cfg.method, "step": self.t, "zeta": self.last_zeta, "zeta_now": self.zeta(),
            "n_updates": self.n_updates, "updates": self._updates_since,
            "moved": sum(self._moved_since.values()), "moved_last_update": sum(self._moved_last.values()),
            "active": active, "sparsifiable": total, "density": active / total,
            "exploration_rate": sum(int(torch.count_nonzero(e)) for e in self.ever.values()) / total,
            "at_target": self.at_target(), "tensors": tensors,
        }
        self._moved_since = {n: 0 for n in self.names}
        self._updates_since = 0
        return record

    # --- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Everything needed to resume, as tensors only (safetensors- and weights_only-safe)."""
        sd: dict[str, Tensor] = {
            "step": torch.tensor(self.t, dtype=torch.int64),
            "n_updates": torch.tensor(self.n_updates, dtype=torch.int64),
            "updates_since": torch.tensor(self._updates_since, dtype=torch.int64),
            "last_zeta": torch.tensor(math.nan if self.last_zeta is None else self.last_zeta, dtype=torch.float64),
            "rng": self.generator.get_state(),
        }
        for n in self.names:
            sd[f"mask/{n}"] = self.storage.masks[n].detach().cpu().clone()
            sd[f"ever/{n}"] = self.ever[n].detach().cpu().clone()
            sd[f"moved/{n}"] = torch.tensor([self._moved_since[n], self._moved_last[n]], dtype=torch.int64)
            if n in self.signal:
                sd[f"signal/{n}"] = self.signal[n].detach().cpu().clone()
        if self.pep is not None:
            sd["pep_frozen"] = torch.tensor([i in self.frozen_scopes for i in range(len(self.scopes))])
            for n in self.names:
                sd[f"pep_s/{n}"] = self.pep.thresholds[n].detach().cpu().clone()
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; the model's and optimiser's own states are loaded by the caller
        (after this call, because PEP may remove parametrizations here)."""
        missing = [k for k in [f"mask/{n}" for n in self.names] + ["step", "rng"] if k not in sd]
        if missing:
            raise DslrecError(f"engine state lacks {', '.join(missing[:3])}; it was saved for a different model "
                              "or sparse method: resume with the same settings or start a new run")
        for n in self.names:
            if tuple(sd[f"mask/{n}"].shape) != tuple(self.params[n].shape):
                raise DslrecError(f"engine state mask for {n} has shape {tuple(sd[f'mask/{n}'].shape)}, "
                                  f"the model has {tuple(self.params[n].shape)}; resume with the same model settings")
        self.t = int(sd["step"])
        self.n_updates = int(sd.get("n_updates", 0))
        self._updates_since = int(sd.get("updates_since", 0))
        zeta = float(sd.get("last_zeta", math.nan))
        self.last_zeta = None if math.isnan(zeta) else zeta
        self.generator.set_state(torch.as_tensor(sd["rng"], dtype=torch.uint8).cpu())
        self.signal = {}
        for n in self.names:
            device = self.params[n].device
            self.storage.set_mask(n, torch.as_tensor(sd[f"mask/{n}"]).to(device))
            self.ever[n] = torch.as_tensor(sd.get(f"ever/{n}", sd[f"mask/{n}"])).to(device, torch.bool)
            moved = sd.get(f"moved/{n}")
            self._moved_since[n], self._moved_last[n] = (int(moved[0]), int(moved[1])) if moved is not None else (0, 0)
            if f"signal/{n}" in sd:
                self.signal[n] = torch.as_tensor(sd[f"signal/{n}"]).to(device)
        if self.pep is not None:
            frozen = sd.get("pep_frozen")
            with torch.no_grad():
                for n in self.names:
                    if f"pep_s/{n}" in sd:
                        self.pep.thresholds[n].copy_(torch.as_tensor(sd[f"pep_s/{n}"]))
            for i, scope in enumerate(self.scopes):
                if frozen is not None and bool(frozen[i]):
                    self.frozen_scopes.add(i)
                    for n in scope:
                        self.pep.detach(n, self.storage.masks[n])
        self.budgets = [sum(int(torch.count_nonzero(self.storage.masks[n])) for n in scope) for scope in self.scopes]
        self._force_full = True

    # --- internals --------------------------------------------------------------------
    def _check_masks(self, masks: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = [n for n in self.names if n not in masks]
        extra = [n for n in masks if n not in self.params]
        if missing or extra:
            raise DslrecError(f"given masks do not match the sparsified parameters (missing {missing}, "
                              f"unknown {extra}); build them from sparsifiable_parameters(model)")
        out = {}
        for n in self.names:
            m = torch.as_tensor(masks[n])
            if tuple(m.shape) != tuple(self.params[n].shape):
                raise DslrecError(f"mask for {n} has shape {tuple(m.shape)}, the parameter "
                                  f"{tuple(self.params[n].shape)}; build masks from this model's parameters")
            out[n] = m.to(device=self.params[n].device, dtype=torch.bool)
        return out

    def _scope_budget(self, scope: list[str], density: float) -> int:
        """Active weights a scope holds at ``density`` (per_row: the sum of its rows' budgets)."""
        if self.per_row:
            rows = decisions.as_rows(self.params[scope[0]])
            return rows.shape[0] * budget(rows.shape[1], density)
        return budget(sum(self.numel[n] for n in scope), density)

    def _current_mask(self, name: str) -> Tensor:
        if self.pep is not None and self.pep.attached(name):
            return self.pep.nonzero(name)
        return self.storage.masks[name]

    def _active(self, name: str) -> int:
        if self.cfg.method == "dense":
            return self.numel[name]
        return int(torch.count_nonzero(self._current_mask(name)))

    def _scope_active(self, i: int) -> int:
        return sum(self._active(n) for n in self.scopes[i])

    def _update_due(self, t: int) -> bool:
        cfg, T = self.cfg, self.total_steps
        if cfg.method == "dsl":
            return schedule.is_update_step(t, cfg.delta_t, T, cfg.explore_until)
        if cfg.method == "gmp":
            if t <= cfg.gmp_start * T or self.at_target():
                return False
            return t % cfg.delta_t == 0 or t >= cfg.gmp_end * T
        return False

    def _accumulating(self, t: int) -> bool:
        cfg = self.cfg
        if cfg.method != "dsl" or cfg.grow not in ("momentum", "accumulated"):
            return False
        window = cfg.window()
        next_update = -(-t // cfg.delta_t) * cfg.delta_t
        return next_update - t < window and self._update_due(next_update)

    @torch.no_grad()
    def _accumulate(self) -> None:
        """Fold this step's dense gradient into the grow signal (sum, or exponential average)."""
        beta = self.cfg.grow_momentum
        for n in self.names:
            g = self.storage.grad(n)
            if g is None:
                continue
            if n not in self.signal:
                self.signal[n] = torch.zeros_like(g, dtype=torch.float32)
            if self.cfg.grow == "accumulated":
                self.signal[n].add_(g)
            else:
                self.signal[n].mul_(beta).add_(g, alpha=1.0 - beta)

    def _flat(self, scope: list[str], get) -> Tensor | None:
        parts = [get(n) for n in scope]
        if all(p is None for p in parts):
            return None
        parts = [p if p is not None else torch.zeros_like(self.params[n]) for n, p in zip(scope, parts)]
        return parts[0].reshape(-1) if len(parts) == 1 else torch.cat([p.reshape(-1) for p in parts])

    def _update(self) -> None:
        if self.cfg.method == "gmp":
            self._gmp_update()
        else:
            self._dsl_update()

    @torch.no_grad()
    def _dsl_update(self) -> None:
        cfg = self.cfg
        zeta = self.zeta()
        st = self.storage
        for i, scope in enumerate(self.scopes):
            if self.per_row:
                self._dsl_update_rows(scope[0], zeta)
                continue
            k = schedule.n_moved(zeta, self.budgets[i])
            mask = self._flat(scope, lambda n: st.masks[n])
            weight = self._flat(scope, st.weight)
            grad = None
            if cfg.prune == "taylor" or cfg.grow == "gradient":
                grad = self._flat(scope, st.grad)
                grad = torch.zeros_like(weight) if grad is None else grad  # unused in this batch: zero gradient
            signal = self._flat(scope, self.signal.get) if cfg.grow in ("momentum", "accumulated") else None
            ever = self._flat(scope, self.ever.get) if cfg.grow == "random_unseen" else None
            new = decisions.prune_and_grow(mask, weight, k, cfg.prune, cfg.grow, grad=grad, signal=signal,
                                           ever_active=ever, generator=self.generator)
            self._commit(scope, new)
        self.signal = {}
        self.last_zeta = zeta
        self.n_updates += 1
        self._updates_since += 1

    def _dsl_update_rows(self, name: str, zeta: float) -> None:
        """One DSL update of a tensor whose rows are scopes: every row moves ceil(zeta * its count)."""
        cfg, st = self.cfg, self.storage
        rows = decisions.as_rows
        mask = rows(st.masks[name])
        k = schedule.n_moved(zeta, mask.sum(dim=1))
        grad = signal = ever = None
        if cfg.prune == "taylor" or cfg.grow == "gradient":
            g = st.grad(name)
            grad = rows(g) if g is not None else torch.zeros_like(mask, dtype=torch.float32)
        if cfg.grow in ("momentum", "accumulated") and name in self.signal:
            signal = rows(self.signal[name])
        if cfg.grow == "random_unseen":
            ever = rows(self.ever[name])
        new = decisions.prune_and_grow_rows(mask, rows(st.weight(name)), k, cfg.prune, cfg.grow, grad=grad,
                                            signal=signal, ever_active=ever, generator=self.generator)
        self._commit([name], new.reshape(-1))

    @torch.no_grad()
    def _gmp_update(self) -> None:
        cfg = self.cfg
        density = schedule.gmp_density(self.t, self.total_steps, cfg.density, cfg.gmp_start, cfg.gmp_end)
        st = self.storage
        for i, scope in enumerate(self.scopes):
            if self.per_row:
                rows = decisions.as_rows
                row_len = rows(st.masks[scope[0]]).shape[1]
                target = max(budget(row_len, cfg.density), budget(row_len, density))
                new = decisions.prune_rows_to(rows(st.masks[scope[0]]), rows(st.weight(scope[0])), target,
                                              self.generator).reshape(-1)
            else:
                target = max(self.targets[i], budget(sum(self.numel[n] for n in scope), density))
                mask = self._flat(scope, lambda n: st.masks[n])
                new = decisions.prune_to(mask, self._flat(scope, st.weight), target, self.generator)
            self._commit(scope, new)
            self.budgets[i] = int(torch.count_nonzero(new))
        self.last_zeta = None
        self.n_updates += 1
        self._updates_since += 1

    def _commit(self, scope: list[str], new_flat: Tensor) -> None:
        """Split a scope's new flat mask back into tensors and hand them to storage."""
        offset = 0
        for n in scope:
            size = self.numel[n]
            new = new_flat[offset:offset + size].view(self.params[n].shape)
            offset += size
            grown = self.storage.set_mask(n, new)
            self._moved_last[n] = grown
            self._moved_since[n] += grown
            self.ever[n].logical_or_(new)

    @torch.no_grad()
    def _pep_check(self) -> None:
        """Freeze a PEP scope once its non-zero count reaches the budget (or at the deadline)."""
        pep = self.pep
        deadline = self.t >= self.cfg.pep_deadline * self.total_steps
        for i, scope in enumerate(self.scopes):
            if i in self.frozen_scopes:
                continue
            if self._scope_active(i) > self.targets[i] and not deadline:
                continue
            margin = self._flat(scope, pep.margin)
            keep = decisions.select_largest(margin, torch.ones_like(margin, dtype=torch.bool), self.targets[i],
                                            self.generator)
            offset = 0
            for n in scope:
                size = self.numel[n]
                mask = keep[offset:offset + size].view(self.params[n].shape)
                offset += size
                pep.detach(n, mask)
                self.storage.set_mask(n, mask)
                self.ever[n] = mask.clone()
            self.budgets[i] = self.targets[i]
            self.frozen_scopes.add(i)
