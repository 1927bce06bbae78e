"""Sparse training from the outside of any ``torch.nn.Module`` (SPEC section 1).

``SparseEngine`` + ``SparseConfig`` are what a training loop needs;
``decisions`` holds the pure prune/grow rules, ``masks`` the initialisations,
``storage`` how masks are enforced on weights and optimiser state.
"""

from dslrec.sparse.config import SparseConfig
from dslrec.sparse.engine import SparseEngine
from dslrec.sparse.masks import erk_counts, initial_masks, magnitude_masks, uniform_masks
from dslrec.sparse.params import sparsifiable_parameters

__all__ = ["SparseConfig", "SparseEngine", "erk_counts", "initial_masks", "magnitude_masks", "uniform_masks",
           "sparsifiable_parameters"]
