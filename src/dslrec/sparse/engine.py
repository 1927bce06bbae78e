"""``SparseEngine``: train any ``torch.nn.Module`` sparse, from the outside.

The engine selects parameters by name/shape (never by backbone), initialises
the active positions, and replaces ``optimizer.step()`` in the training loop::

    engine = SparseEngine(model, None, SparseConfig(method="dsl", density=0.2), total_steps=T)
    optimizer = torch.optim.Adam(model.parameters())   # after the engine: compact storage
    engine.attach(optimizer)                            # replaces the model's tensors
    for batch in batches:
        optimizer.zero_grad()
        model.loss(batch).backward()
        engine.step()            # optimiser step, masking, prune/grow every delta_t steps
    record = engine.epoch_record()

(With ``storage="masked"`` an optimiser built before the engine may also be
passed to the constructor.)

What the engine shares between methods lives here: the storage (masked or
compact, ``storage.py``), the scopes and budgets, the ever-active record and the
growth signal (``tracking.py``), the step order and the records. What a method
does is its policy (``policies.py``); which weights to prune and grow are the
pure functions of ``decisions.py``.

Order inside ``step()`` (t counts completed optimiser steps, from 1):

1. gradient averages for grow="momentum"/"accumulated" take in this step's
   gradient (only during the ``accumulate_steps`` steps before an update);
2. the optimiser steps; masked storage keeps inactive weights and their
   optimiser state at zero (for SGD/Adam/AdamW by masking the gradient before
   the step; other optimisers, update steps and ``remask="full"`` re-mask
   after it); compact storage has nothing inactive to mask;
3. the policy acts: at a DSL update step it prunes and grows using the weights
   after the step and this mini-batch's gradient; GMP prunes; PEP checks
   whether its mask can be frozen.

Several processes (``dist``, a ``dslrec.distributed.Group``): the training loop averages the
parameters' gradients over ranks before ``step()`` (masked storage: the whole dense gradient;
compact: the active values' only), so every rank holds the same weights. What compact storage
records at inactive positions for growth is each rank's own; the engine averages it over ranks
only where decisions read it: the accumulated signal at an update (the rows touched since the last
update, union over ranks), this step's gradient rows when growth or Taylor pruning reads them. With
the same generator seed on every rank, ties break alike, so every rank makes the same decisions; a
checksum of the masks is compared across ranks after each update and a mismatch stops the run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from dslrec import distributed
from dslrec.errors import DslrecError
from dslrec.memory import release_freed_memory
from dslrec.sparse import decisions, schedule
from dslrec.sparse.config import SparseConfig
from dslrec.sparse.masks import budget, initial_positions, positions_to_masks
from dslrec.sparse.params import sparsifiable_parameters
from dslrec.sparse.policies import make_policy
from dslrec.sparse.storage import MaskedDenseStorage, WeightStorage, row_shape, zero_preserving
from dslrec.sparse.tracking import EverActive


class SparseEngine:
    """Active positions for the sparsifiable parameters of ``model`` and the rules that move them.

    ``masks``: optional ``{name: bool tensor}`` replacing the initialisation (for
    one-shot pruning or lottery tickets use ``method="static"``: frozen; with
    ``method="dsl"`` exploration starts from them; ``gmp``/``pep`` then behave as
    ``static``). Budgets are then the counts of the given masks.

    ``deferred``: a ``deferred.Deferred`` for a model built on the meta device (compact storage):
    its parameters are initialised here, the sparsified ones only at their active positions.

    ``dist``: the process group of a distributed run (``dslrec.distributed.Group``), None for one
    process. Every rank must build its engine with the same ``seed``.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, config: SparseConfig,
                 total_steps: int, seed: int = 0, masks: dict[str, Tensor] | None = None, deferred=None,
                 dist: "distributed.Group | None" = None):
        if not isinstance(config, SparseConfig):
            raise DslrecError("SparseEngine needs a SparseConfig; build one with SparseConfig(...)")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise DslrecError(f"total_steps={total_steps!r} must be a positive integer (optimiser steps of the run)")
        if deferred is not None and (config.storage != "compact" or masks is not None or config.init == "magnitude"):
            raise DslrecError("a model built on the meta device needs compact storage with a uniform or erk init")
        if config.storage == "compact" and optimizer is not None:
            raise DslrecError("compact storage replaces the model's tensors: build the optimiser after the engine "
                              "(SparseEngine(model, None, ...); opt = ...(model.parameters()); engine.attach(opt))")
        self.cfg = config
        self.model = model
        self.total_steps = total_steps
        self.dist = dist if dist is not None and dist.world > 1 else None
        self._checksums: list[list[int]] = []  # per update since the last record: the masks' checksum by rank
        named = sparsifiable_parameters(model, config.include, config.exclude)
        if not named:
            raise DslrecError("no parameter matches the sparse selection; check include/exclude globs "
                              f"(include={config.include}, exclude={config.exclude})")
        params: dict[str, torch.nn.Parameter] = dict(named)
        self.names = list(params)
        self.shapes = {n: p.shape for n, p in params.items()}
        self.numel = {n: p.numel() for n, p in params.items()}
        self.scopes = [self.names] if config.scope == "global" else [[n] for n in self.names]
        self.per_row = config.scope == "per_row"  # every row of a tensor is a scope of its own
        self.generator = torch.Generator().manual_seed(int(seed))
        self.policy = make_policy(config, fixed_masks=masks is not None)
        self.t = 0
        self.n_updates = 0
        self.last_zeta: float | None = None
        self.signal: dict[str, Any] = {}  # RowSignal (compact) or DenseSignal (masked), per tensor
        self._moved_since = {n: 0 for n in self.names}
        self._moved_last = {n: 0 for n in self.names}
        self._updates_since = 0
        self._update_seconds: list[float] = []  # wall time of each update since the last record
        self._force_full = True  # first step after construction/loading re-masks everything
        self._grads: dict[str, tuple[Tensor, Tensor] | None] = {}  # this step's gradient rows

        if masks is not None:
            masks = self._check_masks(masks, params)
            positions = {n: decisions.flat_nonzero(m.reshape(-1)).to(m.device) for n, m in masks.items()}
        elif self.policy.starts_sparse:
            positions = initial_positions(config.init, params, config.density, config.scope, self.generator)
        else:  # dense, gmp (starts dense), pep (mask decided by the thresholds)
            positions = None
        self.ever = {n: EverActive(self.numel[n]) for n in self.names}
        self.storage: WeightStorage
        if config.storage == "compact":
            from dslrec.sparse.compact import CompactStorage

            values = deferred.materialise(positions) if deferred is not None else None
            self.storage = CompactStorage(model, params, positions, values=values)
            if deferred is not None:
                model.to(deferred.device)
            for n in self.names:
                self.ever[n].add(positions[n])
            positions = values = None  # the storage holds them in its own form now; free the flat ones
        else:
            init = (positions_to_masks(positions, self.shapes) if positions is not None
                    else {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})
            self.storage = MaskedDenseStorage(params, init, optimizer)
            for n in self.names:
                self.ever[n].add_mask(init[n])
        self.params = params if config.storage != "compact" else {}
        self.budgets = [sum(self.storage.count(n) for n in scope) for scope in self.scopes]
        self.targets = [self._scope_budget(scope, config.density) for scope in self.scopes]
        if masks is not None or self.policy.starts_sparse:
            self.targets = list(self.budgets)
        self.policy.setup(self, model, params, optimizer, fixed=masks is not None)
        self.attach(optimizer)

    def attach(self, optimizer: torch.optim.Optimizer | None) -> None:
        """The optimiser the engine steps (compact storage: built over ``model.parameters()`` after the
        engine). Inactive weights are zeroed now."""
        self.optimizer = optimizer
        self.storage.attach(optimizer)
        self._fast = self.cfg.remask == "auto" and zero_preserving(optimizer)
        if self._masking:
            self.storage.after_step(fast=False)
        self.storage.record_grads(self.policy.needs_grads(self, self.t + 1))

    def release_buffers(self) -> None:
        """Free what storage keeps from one step for the next (a reused gradient buffer): call when
        training pauses (an evaluation), so that it is not held on top of the evaluation's memory."""
        self.storage.release_buffers()

    def detach(self) -> None:
        """Training with this engine is over: forget the optimiser, so that its state (as large as the
        active weights, twice for Adam) is freed before the final evaluation."""
        self.optimizer = None
        self.storage.attach(None)
        self.storage.release_buffers()

    # --- the training-loop API ----------------------------------------------------
    @property
    def masks(self) -> dict[str, Tensor]:
        """Current bool mask per sparsified parameter (dense, built on request; PEP before freezing:
        its non-zero pattern)."""
        return {n: self._current_mask(n) for n in self.names}

    @property
    def _masking(self) -> bool:
        """Whether masks are enforced (not for dense, nor for PEP before any mask is frozen)."""
        return self.policy.masking(self)

    def step(self) -> None:
        """``optimizer.step()`` plus everything sparse training does around it."""
        t = self.t + 1
        update = self.policy.update_due(self, t)
        if self.policy.accumulating(self, t):
            self._accumulate()
        fast = self._fast and not update and not self._force_full
        if self._masking:
            self.storage.before_step(fast)
        if self.optimizer is not None:
            self.optimizer.step()
        if self._masking:
            self.storage.after_step(fast)
        self._force_full = False
        self.t = t
        if update:
            started = time.perf_counter()
            if self.dist is not None:
                self._average_growth_signal()
            self.storage.before_update()
            self.policy.update(self)
            if self.dist is not None:
                self._check_ranks_agree()
            self._update_seconds.append(time.perf_counter() - started)
            self.n_updates += 1
            self._updates_since += 1
        self.policy.after_step(self)
        self._grads = {}
        self.storage.record_grads(self.policy.needs_grads(self, t + 1))
        if update:
            # an update frees as much as it allocated (the old positions, values and state): hand the
            # heap's holes back, or every step after it trains about 60 MB larger (2M-user benchmark)
            release_freed_memory()

    def apply_masks(self) -> None:
        """Zero inactive weights and optimiser state now (e.g. after loading weights by hand)."""
        if self._masking:
            self.storage.after_step(fast=False)

    def active_count(self) -> int:
        """Active weights over all sparsified tensors now."""
        return sum(self._active(n) for n in self.names)

    def sparsifiable_count(self) -> int:
        return sum(self.numel.values())

    def at_target(self) -> bool:
        """True once the run holds its final budget (GMP after its ramp, PEP once frozen)."""
        return self.policy.at_target(self)

    def settled(self) -> bool:
        """Whether the masks have settled enough for a validation plateau to mean something: DSL's
        update ratio has decayed to half its start or below (or exploration is over; a constant ratio
        never decays, so it counts as settled); other methods once at their target."""
        return self.policy.settled(self)

    def row_counts(self, name: str) -> Tensor:
        """Active weights per row (dim 0) of a sparsified tensor, as int64 on its device."""
        if name not in self.shapes:
            raise DslrecError(f"{name!r} is not a sparsified parameter; choose one of {', '.join(self.names)}")
        if self.policy.soft_mask(self, name) is not None:
            mask = self._current_mask(name)
            return mask.reshape(mask.shape[0], -1).sum(dim=1)
        return self.storage.row_counts(name)

    def axis_counts(self, name: str, axis: int) -> Tensor:
        """Active weights of a tensor per index along ``axis`` (0: per row; 1: per column of a matrix)."""
        if axis == 0:
            return self.row_counts(name)
        if axis == 1 and len(self.shapes[name]) == 2 and self.policy.soft_mask(self, name) is None:
            return self.storage.col_counts(name)
        mask = self._current_mask(name)
        return mask.sum(dim=[d for d in range(mask.dim()) if d != axis])

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
                "exploration_rate": self.ever[n].count() / self.numel[n],
                "moved": self._moved_since[n], "moved_last_update": self._moved_last[n],
            }
        active = sum(v["active"] for v in tensors.values())
        record = {
            "method": self.cfg.method, "storage": self.cfg.storage, "step": self.t, "zeta": self.last_zeta,
            "zeta_now": self.zeta(), "n_updates": self.n_updates, "updates": self._updates_since,
            "moved": sum(self._moved_since.values()), "moved_last_update": sum(self._moved_last.values()),
            "active": active, "sparsifiable": total, "density": active / total,
            "exploration_rate": sum(e.count() for e in self.ever.values()) / total,
            "at_target": self.at_target(), "update_s": self._update_seconds, "tensors": tensors,
        }
        if self.dist is not None:
            record["ranks"] = {"world_size": self.dist.world, "mask_checksums": self._checksums}
            self._checksums = []
        self._update_seconds = []
        self._moved_since = {n: 0 for n in self.names}
        self._updates_since = 0
        return record

    # --- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Everything needed to resume, as tensors only (safetensors- and weights_only-safe).
        Distributed: a collective (every rank calls it); the ranks' growth signals are replaced by their
        mean first, so that the one state rank 0 saves resumes every rank exactly."""
        if self.dist is not None:
            self._average_signals()
        sd: dict[str, Tensor] = {
            "step": torch.tensor(self.t, dtype=torch.int64),
            "n_updates": torch.tensor(self.n_updates, dtype=torch.int64),
            "updates_since": torch.tensor(self._updates_since, dtype=torch.int64),
            "last_zeta": torch.tensor(math.nan if self.last_zeta is None else self.last_zeta, dtype=torch.float64),
            "rng": self.generator.get_state(),
        }
        sd.update(self.storage.state_dict())
        for n in self.names:
            sd[f"ever/{n}"] = self.ever[n].to_tensor()
            sd[f"moved/{n}"] = torch.tensor([self._moved_since[n], self._moved_last[n]], dtype=torch.int64)
            if n in self.signal:
                sd.update(self.signal[n].state(f"signal/{n}"))
        sd.update(self.policy.state_dict(self))
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; the model's and optimiser's own states are loaded by the caller
        (after this call, because PEP may remove parametrizations here)."""
        kind = "compact" if any(k.startswith("crow/") for k in sd) else "masked"
        if "step" in sd and kind != self.cfg.storage:
            raise DslrecError(f"the engine state was saved with --storage {kind}, this run uses "
                              f"--storage {self.cfg.storage}; resume with the same storage or start a new run")
        first = "crow" if kind == "compact" else "mask"
        missing = [k for k in [f"{first}/{n}" for n in self.names] + ["step", "rng"] if k not in sd]
        if missing:
            raise DslrecError(f"engine state lacks {', '.join(missing[:3])}; it was saved for a different model "
                              "or sparse method: resume with the same settings or start a new run")
        if kind == "masked":
            for n in self.names:
                if tuple(sd[f"mask/{n}"].shape) != tuple(self.shapes[n]):
                    raise DslrecError(f"engine state mask for {n} has shape {tuple(sd[f'mask/{n}'].shape)}, the "
                                      f"model has {tuple(self.shapes[n])}; resume with the same model settings")
        self.t = int(sd["step"])
        self.n_updates = int(sd.get("n_updates", 0))
        self._updates_since = int(sd.get("updates_since", 0))
        zeta = float(sd.get("last_zeta", math.nan))
        self.last_zeta = None if math.isnan(zeta) else zeta
        self.generator.set_state(torch.as_tensor(sd["rng"], dtype=torch.uint8).cpu())
        self.storage.load_state_dict(sd)
        self.signal = {}
        for n in self.names:
            self.ever[n].load(sd.get(f"ever/{n}", sd.get(f"mask/{n}", self.storage.mask(n))))
            moved = sd.get(f"moved/{n}")
            self._moved_since[n], self._moved_last[n] = (int(moved[0]), int(moved[1])) if moved is not None else (0, 0)
            if f"signal/{n}/rows" in sd:
                self._new_signal(n).load(sd[f"signal/{n}/rows"], sd[f"signal/{n}/block"],
                                         row_shape(self.shapes[n])[0])
            elif f"signal/{n}" in sd:  # a dense signal (checkpoints before the per-row form)
                from dslrec.sparse.storage import rows_of_block

                self._new_signal(n).load(*rows_of_block(decisions.as_rows(torch.as_tensor(sd[f"signal/{n}"]))),
                                         row_shape(self.shapes[n])[0])
        self.policy.load_state_dict(self, sd)
        self.budgets = [sum(self.storage.count(n) for n in scope) for scope in self.scopes]
        self._force_full = True
        self._grads = {}
        self.storage.record_grads(self.policy.needs_grads(self, self.t + 1))

    # --- what policies use --------------------------------------------------------------
    def grad_rows(self, name: str) -> tuple[Tensor, Tensor] | None:
        """This step's gradient of a tensor per row (read once from storage, kept until the step ends)."""
        if name not in self._grads:
            self._grads[name] = self.storage.grad_rows(name)
        return self._grads[name]

    def commit_positions(self, scope: list[str], new: Tensor) -> None:
        """Split a scope's new sorted flat positions into tensors and hand them to storage."""
        offset = 0
        for n in scope:
            size = self.numel[n]
            lo, hi = torch.searchsorted(new, torch.tensor([offset, offset + size], device=new.device)).tolist()
            part = new[lo:hi] - offset
            offset += size
            self._record_move(n, self.storage.set_active(n, part), part)

    def commit_rows(self, name: str, cols: Tensor, counts: Tensor) -> None:
        grown = self.storage.set_active_rows(name, cols, counts)
        n_cols = row_shape(self.shapes[name])[1]
        self._record_move(name, grown, None)
        for lo, hi in decisions.row_chunks(cols.shape[0], n_cols):  # a slice of rows at a time
            self.ever[name].add_rows(lo, cols[lo:hi], counts[lo:hi], n_cols)

    def commit_mask(self, name: str, mask: Tensor) -> None:
        self._record_move(name, self.storage.set_mask(name, mask), None, mask)

    def _record_move(self, name: str, grown: int, positions: Tensor | None,
                     mask: Tensor | None = None) -> None:
        """Count the weights an update grew and mark the new active ``positions`` (flat) or ``mask`` as
        ever active (neither: the caller marks them)."""
        self._moved_last[name] = grown
        self._moved_since[name] += grown
        if positions is not None:
            self.ever[name].add(positions)
        elif mask is not None:
            self.ever[name].add_mask(mask)

    # --- several processes ---------------------------------------------------------------
    def _average_signals(self) -> None:
        """Compact storage: every rank's accumulated growth signal becomes the mean over ranks (the sum
        and the exponential average are linear in the gradients, so the mean of the ranks' signals is the
        signal of the averaged gradients). Masked storage sums gradients already averaged: nothing to do."""
        if self.storage.kind != "compact":
            return
        for n in self.names:  # in the same order on every rank; a rank without a signal sends no rows
            signal = self.signal.get(n)
            got = signal.get() if signal is not None else None
            if got is not None and got[0].numel() == 0:
                got = None
            mean = distributed.rows_mean(self.dist, got, row_shape(self.shapes[n])[1])
            if mean is None:
                if signal is not None:
                    signal.load(torch.empty(0, dtype=torch.int64), torch.zeros((0, row_shape(self.shapes[n])[1])))
                continue
            (signal or self._new_signal(n)).load(*mean)

    def _average_growth_signal(self) -> None:
        """Before an update: what the decisions read, averaged over ranks (compact storage)."""
        if self.storage.kind != "compact":
            return
        if self.cfg.grow in ("accumulated", "momentum"):
            self._average_signals()
        if self.cfg.grow == "gradient" or self.cfg.prune == "taylor":  # this step's gradient rows
            for n in self.names:
                self._grads[n] = distributed.rows_mean(self.dist, self.grad_rows(n), row_shape(self.shapes[n])[1])

    def _check_ranks_agree(self) -> None:
        """Compare a checksum of every tensor's active positions across ranks (after an update)."""
        total = 0
        for n in self.names:
            total = (total * 1_000_003 + distributed.positions_checksum(self.storage.active(n)[0])) % ((1 << 61) - 1)
        self._checksums.append(distributed.check_agree(self.dist, total, f"the sparse masks after update "
                                                                          f"{self.n_updates + 1} (step {self.t})"))

    # --- internals --------------------------------------------------------------------
    def _new_signal(self, name: str):
        beta = self.cfg.grow_momentum if self.cfg.grow == "momentum" else None
        self.signal[name] = self.storage.new_signal(name, beta)
        return self.signal[name]

    @torch.no_grad()
    def _accumulate(self) -> None:
        """Fold this step's gradient into the grow signal (sum, or exponential average), per row."""
        for n in self.names:
            signal = self.signal.get(n) or self._new_signal(n)
            self.storage.accumulate(n, signal, self.grad_rows)

    def _check_masks(self, masks: dict[str, Tensor], params) -> dict[str, Tensor]:
        missing = [n for n in self.names if n not in masks]
        extra = [n for n in masks if n not in params]
        if missing or extra:
            raise DslrecError(f"given masks do not match the sparsified parameters (missing {missing}, "
                              f"unknown {extra}); build them from sparsifiable_parameters(model)")
        out = {}
        for n in self.names:
            m = torch.as_tensor(masks[n])
            if tuple(m.shape) != tuple(params[n].shape):
                raise DslrecError(f"mask for {n} has shape {tuple(m.shape)}, the parameter "
                                  f"{tuple(params[n].shape)}; build masks from this model's parameters")
            out[n] = m.to(device=params[n].device, dtype=torch.bool)
        return out

    def _scope_budget(self, scope: list[str], density: float) -> int:
        """Active weights a scope holds at ``density`` (per_row: the sum of its rows' budgets)."""
        if self.per_row:
            n_rows, n_cols = row_shape(self.shapes[scope[0]])
            return n_rows * budget(n_cols, density)
        return budget(sum(self.numel[n] for n in scope), density)

    def _current_mask(self, name: str) -> Tensor:
        soft = self.policy.soft_mask(self, name)
        return soft if soft is not None else self.storage.mask(name)

    def _active(self, name: str) -> int:
        if self.cfg.method == "dense":
            return self.numel[name]
        soft = self.policy.soft_mask(self, name)
        return int(torch.count_nonzero(soft)) if soft is not None else self.storage.count(name)

    def _scope_active(self, i: int) -> int:
        return sum(self._active(n) for n in self.scopes[i])
