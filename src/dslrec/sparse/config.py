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
STORAGES = ("masked", "compact")
COMPACT_METHODS = ("dsl", "static")  # the methods whose weights are sparse from the first step


@dataclass
class SparseSettings:
    """How the sparse methods behave: the one definition of these settings.

    ``SparseConfig`` (the engine's configuration) and the training run's
    ``RunConfig`` both inherit these fields, so a setting is declared, defaulted
    and checked here once and reaches the Python API, the YAML config and the
    command line under the same name.

    ``density`` is the fraction of active weights; ``scope`` says whether the
    budget ``round(density * numel)`` holds per tensor or over all sparsified
    tensors together; ``per_row`` gives every row (a user's or an item's
    embedding, a layer's output unit) its own budget ``round(density * row length)``,
    so popular rows cannot take the budget of rare ones. ``include``/``exclude`` are ``fnmatch`` globs on parameter
    names; by default every parameter with ``ndim >= 2`` (embedding tables,
    weight matrices) is sparsified and biases/norms stay dense.

    ``grow="accumulated"`` sums, ``grow="momentum"`` exponentially averages the
    dense gradients of the last ``accumulate_steps`` steps before each update:
    the optimiser's own moments are zero at inactive positions, so they cannot
    serve as the signal.
    """

    density: float = 0.2
    scope: str = "per_tensor"
    init: str = "uniform"
    prune: str = "magnitude"
    grow: str = "gradient"
    schedule: str = "cosine"  # DSL update-ratio schedule
    zeta0: float = 0.5
    eta_min: float = 0.005
    delta_t: int = 100  # iterations between DSL's mask updates (and GMP's pruning steps)
    explore_until: float = 1.0  # fraction of training during which DSL explores
    accumulate_steps: int | None = 20  # steps of gradient growth gathers before an update (at most delta_t; null: all of them)
    grow_momentum: float = 0.9  # decay of grow=momentum's average
    include: list[str] | None = None  # parameter-name globs to sparsify (default: every ndim >= 2)
    exclude: list[str] | None = None  # parameter-name globs to keep dense
    gmp_start: float = 0.0  # fraction of training where gradual pruning starts
    gmp_end: float = 0.75  # ... and where it reaches the target density
    pep_init: float = -15.0  # initial threshold logit s (g(s) = sigmoid(s))
    pep_granularity: str = "feature_dimension"  # one PEP threshold per: feature_dimension | feature | dimension | global
    pep_deadline: float = 0.75  # fraction of training after which PEP's mask is forced to the target
    remask: str = "auto"  # "full": always re-mask weights and every optimiser state after a step
    storage: str = "masked"  # masked: dense tensors times masks; compact: only the active values (dsl, static)

    def check_sparse(self) -> None:
        """Every sparse setting in range, with a one-line message naming it."""
        choices = {"scope": SCOPES, "init": INITS, "prune": PRUNES, "grow": GROWS,
                   "schedule": SCHEDULES, "pep_granularity": PEP_GRANULARITIES, "remask": REMASKS,
                   "storage": STORAGES}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise DslrecError(f"sparse setting {key}={value!r} is unknown; use one of {', '.join(allowed)}")
        _check(isinstance(self.density, (int, float)) and 0.0 < self.density <= 1.0,
               f"density={self.density!r} must be in (0, 1]; e.g. 0.2 keeps 20% of the weights")
        _check(0.0 < self.zeta0 <= 1.0, f"zeta0={self.zeta0} must be in (0, 1]")
        _check(0.0 <= self.eta_min <= self.zeta0, f"eta_min={self.eta_min} must be in [0, zeta0={self.zeta0}]")
        _check(self.delta_t is None or (isinstance(self.delta_t, int) and self.delta_t >= 1),
               f"delta_t={self.delta_t!r} must be an integer >= 1")
        _check(0.0 <= self.explore_until <= 1.0, f"explore_until={self.explore_until} must be in [0, 1]")
        _check(self.accumulate_steps is None or (isinstance(self.accumulate_steps, int) and self.accumulate_steps >= 1),
               f"accumulate_steps={self.accumulate_steps!r} must be an integer >= 1, or null for the whole "
               "interval between updates")
        _check(0.0 <= self.grow_momentum < 1.0, f"grow_momentum={self.grow_momentum} must be in [0, 1)")
        _check(0.0 <= self.gmp_start < self.gmp_end <= 1.0,
               f"gmp_start={self.gmp_start}, gmp_end={self.gmp_end} must satisfy 0 <= start < end <= 1")
        _check(math.isfinite(self.pep_init), f"pep_init={self.pep_init} must be a finite number")
        _check(0.0 < self.pep_deadline <= 1.0, f"pep_deadline={self.pep_deadline} must be in (0, 1]")
        if self.scope == "per_row":
            _check(self.init != "erk", "init='erk' allocates per tensor; with scope per_row use uniform or magnitude")
        for key in ("include", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, [v for v in value.split(",") if v])
            elif value is not None and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise DslrecError(f"sparse setting {key} must be a list of name globs, got {value!r}")
            elif value is not None:
                setattr(self, key, list(value))

    def window(self) -> int:
        """Steps of gradient that accumulated/momentum growth gathers before an update."""
        return self.delta_t if self.accumulate_steps is None else min(self.accumulate_steps, self.delta_t)


SPARSE_KEYS = tuple(f.name for f in dataclasses.fields(SparseSettings))


@dataclass
class SparseConfig(SparseSettings):
    """What to sparsify, how to initialise the masks and how to move them (see ``SparseSettings``).

    ``method``: ``dsl`` (prune and grow), ``static`` (random mask, frozen: SST),
    ``dense`` (nothing masked; counts still reported), ``gmp`` (gradual magnitude
    pruning from dense) or ``pep`` (learnable soft thresholds, then frozen).
    """

    method: str = "dsl"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DslrecError(f"sparse setting method={self.method!r} is unknown; use one of {', '.join(METHODS)}")
        _check(self.delta_t is not None, "delta_t must be an integer >= 1 (iterations between mask updates)")
        self.check_sparse()
        if self.scope == "per_row":
            _check(self.method != "pep", "scope per_row does not apply to pep (its thresholds choose the mask); "
                                         "use per_tensor or global")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparseConfig":
        """Build from a mapping (e.g. YAML); unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DslrecError(f"unknown sparse setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_settings(cls, settings: SparseSettings, **changes) -> "SparseConfig":
        """The engine configuration of any object holding the sparse settings (a run's RunConfig)."""
        return cls(**{**{k: getattr(settings, k) for k in SPARSE_KEYS}, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise DslrecError(f"sparse setting {message}")
