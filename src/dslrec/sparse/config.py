"""Settings of a sparse training run (SPEC section 1)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dslrec.errors import DslrecError

METHODS = ("dsl", "static", "dense", "gmp", "pep")
SCOPES = ("per_tensor", "global", "per_row")
INITS = ("uniform", "erk", "magnitude")
PRUNES = ("magnitude", "set", "taylor")
GROWS = ("gradient", "momentum", "random", "random_unseen", "accumulated")
SCHEDULES = ("cosine", "linear", "constant")
PEP_GRANULARITIES = ("feature_dimension", "feature", "dimension", "global")
REMASKS = ("auto", "full")


@dataclass
class SparseConfig:
    """What to sparsify, how to initialise the masks and how to move them.

    ``method``: ``dsl`` (prune and grow), ``static`` (random mask, frozen: SST),
    ``dense`` (nothing masked; counts still reported), ``gmp`` (gradual magnitude
    pruning from dense) or ``pep`` (learnable soft thresholds, then frozen).
    ``density`` is the fraction of active weights; ``scope`` says whether the
    budget ``round(density * numel)`` holds per tensor or over all sparsified
    tensors together; ``per_row`` gives every row (a user's or an item's
    embedding, a layer's output unit) its own budget ``round(density * row length)``,
    so popular rows cannot take the budget of rare ones. ``include``/``exclude`` are ``fnmatch`` globs on parameter
    names; by default every parameter with ``ndim >= 2`` (embedding tables,
    weight matrices) is sparsified and biases/norms stay dense.
    """

    method: str = "dsl"
    density: float = 0.2
    scope: str = "per_tensor"
    init: str = "uniform"
    prune: str = "magnitude"
    grow: str = "gradient"
    schedule: str = "cosine"
    zeta0: float = 0.5
    eta_min: float = 0.005
    delta_t: int = 100
    explore_until: float = 1.0  # fraction of training during which DSL explores
    # grow="accumulated" sums, grow="momentum" exponentially averages (decay `momentum`) the dense
    # gradients of the last `accumulate_steps` steps before each update (capped at delta_t); the
    # optimiser's own moments are zeroed at inactive positions, so they cannot serve as the signal
    accumulate_steps: int = 20
    momentum: float = 0.9
    include: list[str] | None = None
    exclude: list[str] | None = None
    gmp_start: float = 0.0  # fraction of training where gradual pruning starts
    gmp_end: float = 0.75  # ... and where it reaches the target density
    pep_init: float = -15.0  # initial threshold logit s (g(s) = sigmoid(s))
    pep_granularity: str = "feature_dimension"
    pep_deadline: float = 0.75  # fraction of training after which PEP's mask is forced to the target
    remask: str = "auto"  # "full": always re-mask weights and every optimiser state after a step

    def __post_init__(self) -> None:
        choices = {"method": METHODS, "scope": SCOPES, "init": INITS, "prune": PRUNES, "grow": GROWS,
                   "schedule": SCHEDULES, "pep_granularity": PEP_GRANULARITIES, "remask": REMASKS}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise DslrecError(f"sparse setting {key}={value!r} is unknown; use one of {', '.join(allowed)}")
        _check(isinstance(self.density, (int, float)) and 0.0 < self.density <= 1.0,
               f"density={self.density!r} must be in (0, 1]; e.g. 0.2 keeps 20% of the weights")
        _check(0.0 < self.zeta0 <= 1.0, f"zeta0={self.zeta0} must be in (0, 1]")
        _check(0.0 <= self.eta_min <= self.zeta0, f"eta_min={self.eta_min} must be in [0, zeta0={self.zeta0}]")
        _check(isinstance(self.delta_t, int) and self.delta_t >= 1, f"delta_t={self.delta_t!r} must be an integer >= 1")
        _check(0.0 <= self.explore_until <= 1.0, f"explore_until={self.explore_until} must be in [0, 1]")
        _check(isinstance(self.accumulate_steps, int) and self.accumulate_steps >= 1,
               f"accumulate_steps={self.accumulate_steps!r} must be an integer >= 1")
        _check(0.0 <= self.momentum < 1.0, f"momentum={self.momentum} must be in [0, 1)")
        _check(0.0 <= self.gmp_start < self.gmp_end <= 1.0,
               f"gmp_start={self.gmp_start}, gmp_end={self.gmp_end} must satisfy 0 <= start < end <= 1")
        _check(math.isfinite(self.pep_init), f"pep_init={self.pep_init} must be a finite number")
        _check(0.0 < self.pep_deadline <= 1.0, f"pep_deadline={self.pep_deadline} must be in (0, 1]")
        if self.scope == "per_row":
            _check(self.init != "erk", "init='erk' allocates per tensor; with scope per_row use uniform or magnitude")
            _check(self.method != "pep", "scope per_row does not apply to pep (its thresholds choose the mask); "
                                         "use per_tensor or global")
        for key in ("include", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, [value])
            elif value is not None and not all(isinstance(v, str) for v in value):
                raise DslrecError(f"sparse setting {key} must be a list of name globs, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparseConfig":
        """Build from a mapping (e.g. YAML); unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DslrecError(f"unknown sparse setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise DslrecError(f"sparse setting {message}")
