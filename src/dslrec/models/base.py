"""What the training loop, evaluation and export expect of a backbone.

A backbone is an ordinary ``torch.nn.Module``; nothing in it knows about
sparsity (the sparse engine works on its parameters from the outside).

Required attributes / methods:

``sampling: str``
    How training batches are made: ``"pairwise"`` (BPR triples: ``users``,
    ``pos``, ``neg``), ``"pointwise"`` (``users``, ``items``, ``labels`` with
    sampled negatives labelled 0) or ``"rows"`` (``users`` and their training
    rows ``rows`` as a dense float tensor, for autoencoders).
``loss(batch: dict[str, Tensor]) -> Tensor``
    The scalar training loss of one batch, regularisation included.
``scorer() -> Callable[[LongTensor], Tensor]``
    Returns a function mapping a batch of user indices to scores over all
    items (shape ``(len(users), n_items)``). Work shared by all users
    (LightGCN's propagation) is done once, when ``scorer()`` is called.
    Called under ``torch.no_grad()`` in eval mode. A backbone whose scores are
    dot products returns a ``DotScorer`` (below), which evaluation can rank
    faster.
``config: dict``
    The hyper-parameters it was built with (JSON-serialisable).

Each backbone module defines ``PAPER_SETTINGS``: the paper's training
settings (``lr``, ``batch_size``, ``epochs``, ``schedule``, ``delta_t`` ...)
and ``build(dataset, **config)``. ``dslrec.models.build(name, dataset,
**config)`` picks the backbone by name.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DotScorer:
    """A scorer whose scores are dot products: ``user_vectors(users) @ item_t``.

    Called like any scorer (the same product as before, bit for bit). It also shows
    evaluation the two factors, so that a reduced-precision pass can pick candidates
    whose exact scores are then checked (``dslrec.evaluate.ranking``); MF and LightGCN
    return one.
    ``item_t``: ``(dim, n_items)``, any layout (MF passes a transposed view of its table).
    """

    user_vectors: Callable[[torch.Tensor], torch.Tensor]
    item_t: torch.Tensor

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(users) @ self.item_t
