"""Sparse training from the outside of any ``torch.nn.Module`` (SPEC section 1).

``SparseEngine`` + ``SparseConfig`` are what a training loop needs;
``decisions`` holds the pure prune/grow rules, ``masks`` the initialisations,
``storage`` how masks are enforced on weights and optimiser state.
"""

import importlib

# Imported on first use, so that importing dslrec.sparse.config (its torch-free names, which
# `dslrec train --help` lists) does not import torch.
_WHERE = {"SparseConfig": "config", "SparseEngine": "engine", "erk_counts": "masks", "initial_masks": "masks",
          "magnitude_masks": "masks", "uniform_masks": "masks", "sparsifiable_parameters": "params"}

__all__ = ["SparseConfig", "SparseEngine", "erk_counts", "initial_masks", "magnitude_masks", "uniform_masks",
           "sparsifiable_parameters"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"dslrec.sparse.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dslrec.sparse' has no attribute {name!r}")
