"""What each sparse method does, one policy per method.

The engine (``engine.py``) owns what methods share: storage, scopes, budgets,
the ever-active record, the growth signal, the step order and the records. A
policy says when its method acts and what it does then:

    update_due(engine, t)    is step t an update step?
    accumulating(engine, t)  does step t's gradient feed the growth signal?
    update(engine)           move the active positions (DSL prune-and-grow, GMP pruning)
    after_step(engine)       anything after every step (PEP's freezing check)
    at_target / settled      for model selection and early stopping

A new method is one class here plus its name in ``POLICIES``; a new prune or
grow criterion is one decision function in ``decisions.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dslrec.errors import DslrecError
from dslrec.sparse import decisions, schedule
from dslrec.sparse.config import COMPACT_METHODS
from dslrec.sparse.masks import budget
from dslrec.sparse.storage import row_shape

if TYPE_CHECKING:
    from dslrec.sparse.config import SparseConfig
    from dslrec.sparse.engine import SparseEngine



class Policy:
    """A method that never moves its mask (the base of the others)."""

    starts_sparse = True  # begins from the initial masks (else dense, all positions active)

    def __init__(self, cfg: "SparseConfig"):
        self.cfg = cfg

    def setup(self, engine: "SparseEngine", model, params, optimizer, fixed: bool) -> None:
        pass

    def masking(self, engine: "SparseEngine") -> bool:
        return True

    def update_due(self, engine: "SparseEngine", t: int) -> bool:
        return False

    def accumulating(self, engine: "SparseEngine", t: int) -> bool:
        return False

    def needs_grads(self, engine: "SparseEngine", t: int) -> bool:
        """Whether step t's gradient at inactive positions is read (compact storage records it then)."""
        return False

    def update(self, engine: "SparseEngine") -> None:
        pass

    def after_step(self, engine: "SparseEngine") -> None:
        pass

    def at_target(self, engine: "SparseEngine") -> bool:
        return True

    def settled(self, engine: "SparseEngine") -> bool:
        return self.at_target(engine)

    def soft_mask(self, engine: "SparseEngine", name: str) -> Tensor | None:
        """A mask the storage does not hold (PEP before freezing), else None."""
        return None

    def state_dict(self, engine: "SparseEngine") -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, engine: "SparseEngine", sd) -> None:
        pass


class Static(Policy):
    """SST: a random mask, frozen from the first step."""


class Dense(Policy):
    """Nothing masked; counts still reported."""

    starts_sparse = False

    def masking(self, engine) -> bool:
        return False


class DSL(Policy):
    """Dynamic sparse learning: every ``delta_t`` steps prune ``zeta_t`` of the active weights and
    grow as many (SPEC 1.4)."""

    def update_due(self, engine, t: int) -> bool:
        cfg = self.cfg
        return schedule.is_update_step(t, cfg.delta_t, engine.total_steps, cfg.explore_until)

    def accumulating(self, engine, t: int) -> bool:
        cfg = self.cfg
        if cfg.grow not in ("momentum", "accumulated"):
            return False
        next_update = -(-t // cfg.delta_t) * cfg.delta_t
        # past the run's end too, when the run may be extended (a constant ratio, exploring to the end):
        # resumed with more epochs it then updates from the signal a longer run would hold (at most one
        # window of extra sums)
        extendable = cfg.schedule == "constant" and cfg.explore_until >= 1.0
        return next_update - t < cfg.window() and (self.update_due(engine, next_update)
                                                   or (extendable and next_update >= engine.total_steps))

    def needs_grads(self, engine, t: int) -> bool:
        cfg = self.cfg
        at_update = (cfg.grow == "gradient" or cfg.prune == "taylor") and self.update_due(engine, t)
        return at_update or self.accumulating(engine, t)

    def settled(self, engine) -> bool:
        cfg = self.cfg
        if cfg.schedule == "constant":
            return True
        if engine.t >= cfg.explore_until * engine.total_steps:
            return True
        return engine.zeta() <= 0.5 * cfg.zeta0

    # --- the update ----------------------------------------------------------------------
    def _source(self, engine, name: str) -> tuple[Tensor, Tensor] | None:
        """Rows and (U, C) block where the grow score |source| can be non-zero."""
        grow = self.cfg.grow
        if grow == "gradient":
            return engine.grad_rows(name)
        if grow in ("momentum", "accumulated") and name in engine.signal:
            return engine.signal[name].get()
        return None

    @torch.no_grad()
    def update(self, engine) -> None:
        zeta = engine.zeta()
        for i, scope in enumerate(engine.scopes):
            if engine.per_row:
                self._update_rows(engine, scope[0], zeta)
            else:
                self._update_scope(engine, scope, schedule.n_moved(zeta, engine.budgets[i]))
        engine.signal = {}
        engine.last_zeta = zeta

    def _update_scope(self, engine, scope: list[str], k: int) -> None:
        cfg, st = self.cfg, engine.storage
        active, weight, cand_pos, cand_score, grads = [], [], [], [], []
        offset = 0
        for n in scope:
            pos, w = st.active(n)
            active.append(pos + offset)
            weight.append(w)
            source = self._source(engine, n)
            n_cols = row_shape(engine.shapes[n])[1]
            if source is not None:
                rows, block = source
                cols = torch.arange(n_cols, device=rows.device)
                cand_pos.append((rows.unsqueeze(1) * n_cols + cols + offset).reshape(-1))
                cand_score.append(block.abs().reshape(-1))
            if cfg.prune == "taylor":
                grads.append(_values_at(engine.grad_rows(n), pos, n_cols, w))
            offset += engine.numel[n]
        unseen = None
        if cfg.grow == "random_unseen":
            unseen = (lambda p: _scope_contains(engine, scope, p), sum(engine.ever[n].count() for n in scope))
        cat = (lambda parts: torch.cat(parts) if parts else None)
        new = decisions.prune_and_grow_positions(
            offset, torch.cat(active), torch.cat(weight), k, cfg.prune, cfg.grow, cat(cand_pos), cat(cand_score),
            cat(grads), unseen, engine.generator)
        engine.commit_positions(scope, new)

    def _update_rows(self, engine, name: str, zeta: float) -> None:
        """Every row moves ceil(zeta * its count)."""
        cfg, st = self.cfg, engine.storage
        cols, w, counts = st.active_rows(name)
        n_rows, n_cols = row_shape(engine.shapes[name])
        grad = None
        if cfg.prune == "taylor":
            rows = torch.arange(n_rows, device=cols.device).unsqueeze(1)
            pos = (rows * n_cols + cols.clamp(max=n_cols - 1)).reshape(-1)
            grad = _values_at(engine.grad_rows(name), pos, n_cols, w.reshape(-1)).view_as(w)
        source = None if cfg.grow == "random_unseen" else self._source(engine, name)
        # rows are their own scopes: decide a slice of rows at a time, so the update's working
        # memory is a few slices' worth, not several copies of the (rows, budget) table
        # new columns in the storage's column type (int16 for most tables) when it holds the padding
        new = torch.empty_like(cols, dtype=cols.dtype if torch.iinfo(cols.dtype).max >= n_cols else torch.int64)
        for lo, hi in decisions.row_chunks(n_rows, n_cols):
            part = None
            if cfg.grow == "random_unseen":  # never-active positions score 1
                never = ~engine.ever[name].dense(lo * n_cols, hi * n_cols).to(cols.device)
                part = (torch.arange(hi - lo, device=cols.device), never.view(hi - lo, n_cols).float())
            elif source is not None:
                a, b = torch.searchsorted(source[0], torch.tensor([lo, hi], device=source[0].device)).tolist()
                part = (source[0][a:b] - lo, source[1][a:b].abs())
            new[lo:hi] = decisions.prune_and_grow_row_slots(
                n_cols, cols[lo:hi].long(), counts[lo:hi], w[lo:hi], schedule.n_moved(zeta, counts[lo:hi]),
                cfg.prune, *(part if part is not None else (None, None)), None if grad is None else grad[lo:hi],
                engine.generator)
        engine.commit_rows(name, new, counts)


def _values_at(got: tuple[Tensor, Tensor] | None, pos: Tensor, n_cols: int, like: Tensor) -> Tensor:
    """The per-row gradient (rows, block) at flat positions ``pos``; zero in rows it does not hold."""
    out = torch.zeros_like(like, dtype=torch.float32)
    if got is None:
        return out
    rows, block = got
    r = torch.div(pos, n_cols, rounding_mode="floor")
    hit = decisions.is_member(rows, r)
    at = torch.searchsorted(rows, r[hit])
    out[hit] = block[at, pos[hit] - r[hit] * n_cols].float()
    return out


def _scope_contains(engine, scope: list[str], positions: Tensor) -> Tensor:
    """Ever-active test for flat positions of a (global) scope."""
    out = torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)
    offset = 0
    for n in scope:
        inside = (positions >= offset) & (positions < offset + engine.numel[n])
        if bool(inside.any()):
            out[inside] = engine.ever[n].contains(positions[inside] - offset)
        offset += engine.numel[n]
    return out


class GMP(Policy):
    """Gradual magnitude pruning: dense at first, pruned by magnitude to the density by ``gmp_end``."""

    starts_sparse = False

    def update_due(self, engine, t: int) -> bool:
        cfg, total = self.cfg, engine.total_steps
        if t <= cfg.gmp_start * total or self.at_target(engine):
            return False
        return t % cfg.delta_t == 0 or t >= cfg.gmp_end * total

    def at_target(self, engine) -> bool:
        return all(b <= target for b, target in zip(engine.budgets, engine.targets))

    @torch.no_grad()
    def update(self, engine) -> None:
        cfg, st = self.cfg, engine.storage
        density = schedule.gmp_density(engine.t, engine.total_steps, cfg.density, cfg.gmp_start, cfg.gmp_end)
        for i, scope in enumerate(engine.scopes):
            if engine.per_row:
                rows = decisions.as_rows
                row_len = rows(st.masks[scope[0]]).shape[1]
                target = max(budget(row_len, cfg.density), budget(row_len, density))
                new = decisions.prune_rows_to(rows(st.masks[scope[0]]), rows(st.weight(scope[0])), target,
                                              engine.generator).reshape(-1)
            else:
                target = max(engine.targets[i], budget(sum(engine.numel[n] for n in scope), density))
                mask = _flat(engine, scope, lambda n: st.masks[n])
                new = decisions.prune_to(mask, _flat(engine, scope, st.weight), target, engine.generator)
            _commit_flat_mask(engine, scope, new)
            engine.budgets[i] = decisions.count_true(new)
        engine.last_zeta = None


class PEP(Policy):
    """PEP's learnable soft thresholds until the non-zero count reaches the budget, then frozen."""

    starts_sparse = False

    def setup(self, engine, model, params, optimizer, fixed: bool) -> None:
        from dslrec.sparse.baselines import PEPThresholds

        self.pep = None if fixed else PEPThresholds(model, params, optimizer, self.cfg.pep_granularity,
                                                    self.cfg.pep_init)
        self.frozen: set[int] = set()  # scopes whose mask is fixed

    def masking(self, engine) -> bool:
        return self.pep is None or bool(self.frozen)

    def at_target(self, engine) -> bool:
        return self.pep is None or len(self.frozen) == len(engine.scopes)

    def soft_mask(self, engine, name: str) -> Tensor | None:
        if self.pep is not None and self.pep.attached(name):
            return self.pep.nonzero(name)
        return None

    @torch.no_grad()
    def after_step(self, engine) -> None:
        """Freeze a scope once its non-zero count reaches the budget (or at the deadline)."""
        pep = self.pep
        if pep is None:
            return
        deadline = engine.t >= self.cfg.pep_deadline * engine.total_steps
        for i, scope in enumerate(engine.scopes):
            if i in self.frozen:
                continue
            if engine._scope_active(i) > engine.targets[i] and not deadline:
                continue
            margin = _flat(engine, scope, pep.margin)
            keep = decisions.select_largest(margin, torch.ones_like(margin, dtype=torch.bool), engine.targets[i],
                                            engine.generator)
            offset = 0
            for n in scope:
                size = engine.numel[n]
                mask = keep[offset:offset + size].view(engine.shapes[n])
                offset += size
                pep.detach(n, mask)
                engine.storage.set_mask(n, mask)
                engine.ever[n].bits[:] = 0
                engine.ever[n].add_mask(mask)
            engine.budgets[i] = engine.targets[i]
            self.frozen.add(i)

    def state_dict(self, engine) -> dict[str, Tensor]:
        if self.pep is None:
            return {}
        sd = {"pep_frozen": torch.tensor([i in self.frozen for i in range(len(engine.scopes))])}
        for n in engine.names:
            sd[f"pep_s/{n}"] = self.pep.thresholds[n].detach().cpu().clone()
        return sd

    def load_state_dict(self, engine, sd) -> None:
        if self.pep is None:
            return
        frozen = sd.get("pep_frozen")
        with torch.no_grad():
            for n in engine.names:
                if f"pep_s/{n}" in sd:
                    self.pep.thresholds[n].copy_(torch.as_tensor(sd[f"pep_s/{n}"]))
        for i, scope in enumerate(engine.scopes):
            if frozen is not None and bool(frozen[i]):
                self.frozen.add(i)
                for n in scope:
                    self.pep.detach(n, engine.storage.masks[n])


def _flat(engine, scope: list[str], get) -> Tensor:
    parts = [get(n) for n in scope]
    return parts[0].reshape(-1) if len(parts) == 1 else torch.cat([p.reshape(-1) for p in parts])


def _commit_flat_mask(engine, scope: list[str], new_flat: Tensor) -> None:
    offset = 0
    for n in scope:
        size = engine.numel[n]
        engine.commit_mask(n, new_flat[offset:offset + size].view(engine.shapes[n]))
        offset += size


POLICIES = {"dsl": DSL, "static": Static, "dense": Dense, "gmp": GMP, "pep": PEP}


def make_policy(cfg: "SparseConfig", fixed_masks: bool = False) -> Policy:
    """The policy of ``cfg.method``; with fixed masks gmp and pep behave as static."""
    if cfg.storage == "compact" and cfg.method not in COMPACT_METHODS:
        raise DslrecError(f"method {cfg.method} trains dense weights by definition and needs --storage masked "
                          f"(compact storage supports {', '.join(COMPACT_METHODS)})")
    if fixed_masks and cfg.method in ("gmp", "pep"):
        return Static(cfg)
    return POLICIES[cfg.method](cfg)
