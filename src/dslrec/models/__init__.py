"""The backbones, picked by name.

``BACKBONES`` maps a name to the module that implements it; each module has
``build(dataset, **config)`` and ``PAPER_SETTINGS`` (see ``base.py`` for the
contract every backbone meets).
"""

from __future__ import annotations

import copy
import inspect
from types import ModuleType

from torch import nn

from dslrec.errors import DslrecError
from dslrec.models import lightgcn, mf, multvae, neumf

BACKBONES: dict[str, ModuleType] = {
    "mf": mf,
    "lightgcn": lightgcn,
    "neumf": neumf,
    "multvae": multvae,
}


def backbone(name: str) -> ModuleType:
    """The module implementing backbone ``name``."""
    if name not in BACKBONES:
        raise DslrecError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def model_kwargs(name: str) -> dict:
    """Constructor options of backbone ``name`` with their defaults."""
    params = inspect.signature(backbone(name).build).parameters
    return {
        k: (list(p.default) if isinstance(p.default, tuple) else p.default)
        for k, p in params.items()
        if k != "dataset"
    }


def paper_settings(name: str) -> dict:
    """The paper's training settings for backbone ``name`` (a copy, safe to edit)."""
    return copy.deepcopy(backbone(name).PAPER_SETTINGS)


def default_settings(name: str, paper: bool = False) -> dict:
    """The training settings a run of backbone ``name`` starts from (a copy).

    ``paper=True``: the paper's, ``delta_t`` included (``--preset paper``).
    Otherwise dslrec's defaults: the paper's, changed by the backbone's
    ``DEFAULT_CHANGES`` where the paper's value does not learn on ordinary data
    within the default epochs, and without ``delta_t``, which then follows the
    run's length (``delta_t_epochs``).
    """
    settings = paper_settings(name)
    if paper:
        return settings
    settings.pop("delta_t", None)
    settings.update(copy.deepcopy(getattr(backbone(name), "DEFAULT_CHANGES", {})))
    return settings


def build(name: str, dataset, **config) -> nn.Module:
    """Backbone ``name`` for ``dataset``; unknown options are an error, not ignored."""
    valid = model_kwargs(name)
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise DslrecError(
            f"backbone {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )
    return backbone(name).build(dataset, **config)


__all__ = ["BACKBONES", "backbone", "build", "default_settings", "model_kwargs", "paper_settings"]
