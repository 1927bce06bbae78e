"""Which parameters of a model are sparsified (chosen by name and shape, never by backbone)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

PARAMETRIZED = ".parametrizations."


def _plain_name(name: str) -> str | None:
    """``emb.parametrizations.weight.original`` -> ``emb.weight``; other parametrization parameters -> None."""
    if PARAMETRIZED not in name:
        return name
    owner, rest = name.split(PARAMETRIZED, 1)
    attr, _, tail = rest.partition(".")
    return f"{owner}.{attr}" if tail == "original" else None


def sparsifiable_parameters(model: torch.nn.Module, include: list[str] | None = None,
                            exclude: list[str] | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs to sparsify, in ``named_parameters`` order.

    Default: every trainable parameter with ``ndim >= 2`` (embedding tables, weight
    matrices); biases and normalisation parameters stay dense. ``include`` globs
    (``fnmatch``, e.g. ``"*emb*"``) replace the default rule and may select any
    shape; ``exclude`` globs remove names. Parametrized tensors are reported under
    their plain name (``emb.weight``) with the underlying parameter.
    """
    chosen = []
    for raw_name, p in model.named_parameters():
        name = _plain_name(raw_name)
        if name is None or not p.requires_grad:
            continue
        if include is None:
            keep = p.ndim >= 2
        else:
            keep = any(fnmatchcase(name, g) for g in include)
        if keep and exclude is not None and any(fnmatchcase(name, g) for g in exclude):
            keep = False
        if keep:
            chosen.append((name, p))
    return chosen
