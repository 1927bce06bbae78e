"""Sparse training from the outside of any ``torch.nn.Module`` (SPEC section 1).

``SparseEngine`` + ``SparseConfig`` are what a training loop needs;
``decisions`` holds the pure prune/grow rules, ``masks`` the initialisations,
``storage`` how masks are enforced on weights and optimiser state.

The names below are imported lazily, so that reading the settings
(``dslrec.sparse.config``) never imports torch: the command line's ``--help``
stays fast.
"""

from importlib import import_module

_HOME = {
    "SparseConfig": "dslrec.sparse.config",
    "SparseSettings": "dslrec.sparse.config",
    "SparseEngine": "dslrec.sparse.engine",
    "erk_counts": "dslrec.sparse.masks",
    "initial_masks": "dslrec.sparse.masks",
    "magnitude_masks": "dslrec.sparse.masks",
    "uniform_masks": "dslrec.sparse.masks",
    "sparsifiable_parameters": "dslrec.sparse.params",
}

__all__ = list(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'dslrec.sparse' has no attribute {name!r}")
