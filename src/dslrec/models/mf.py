"""Matrix factorisation with BPR: a user table, an item table, dot-product scores.

The canonical simplest backbone. Conventions follow LightGCN's code so the two
are directly comparable: embeddings initialised N(0, 0.1^2), BPR loss
``-log sigmoid(s_pos - s_neg)`` averaged over the batch, plus
``l2 * (|u|^2 + |i|^2 + |j|^2) / 2 / batch`` on the batch's embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dslrec.errors import DslrecError
from dslrec.models.base import DotScorer

# The paper has no MF row; these are LightGCN's settings made stable for a
# plain table model: Adam at a constant 1e-3 (MF does not need LightGCN's
# large 1e-2 start), batch 2048 (the LightGCN code's default bpr_batch), the
# same L2 1e-4, density 0.5 and delta_t 3000 as LightGCN.
PAPER_SETTINGS = {
    "optimizer": "adam",
    "lr": 1e-3,
    "lr_end": 1e-3,
    "schedule": "constant",
    "batch_size": 2048,
    "epochs": 1000,
    "l2": 1e-4,
    "density": 0.5,
    "delta_t": 3000,
}
# dslrec's defaults change the paper's 1000 epochs: DSL's update ratio (and a cosine lr) anneal over
# the planned epochs, and with early stopping near epoch 40-140 (where the dense model peaks on the
# data in ../shared/data) a 1000-epoch plan leaves DSL moving half its weights at every update when
# the best epoch is picked (README, Results: defaults)
DEFAULT_CHANGES = {"epochs": 200}

INIT_STD = 0.1  # LightGCN's normal init of embedding tables


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(pos - neg) (softplus form is the numerically stable one)."""
    return F.softplus(neg - pos).mean()


def embedding_l2(*embs: torch.Tensor) -> torch.Tensor:
    """LightGCN's regulariser: sum of squared norms / 2 / batch size."""
    return sum(e.pow(2).sum() for e in embs) / 2 / embs[0].shape[0]


def check_int(name: str, value, model: str, minimum: int = 1) -> int:
    """Config check shared by the backbones: an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DslrecError(f"{model}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_non_negative(name: str, value, model: str) -> float:
    """Config check shared by the backbones: a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise DslrecError(f"{model}: {name} must be a number >= 0, got {value!r}")
    return float(value)


class MF(nn.Module):
    """BPR matrix factorisation."""

    sampling = "pairwise"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, l2: float = 1e-4):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.config = {"dim": dim, "l2": l2}
        self.l2 = l2
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=INIT_STD)
        nn.init.normal_(self.item.weight, std=INIT_STD)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = next(self.parameters()).device  # not .weight: a table may be stored in another form
        u = self.user(batch["users"].to(dev))
        i = self.item(batch["pos"].to(dev))
        j = self.item(batch["neg"].to(dev))
        pos, neg = (u * i).sum(-1), (u * j).sum(-1)
        return bpr_loss(pos, neg) + self.l2 * embedding_l2(u, i, j)

    def scorer(self) -> DotScorer:
        items_w = self.item.weight  # the whole item table, once; users are looked up per batch
        return DotScorer(lambda users: self.user(users.to(items_w.device)), items_w.T)


def build(dataset, dim: int = 64, l2: float = 1e-4) -> MF:
    """MF for ``dataset`` (its user and item counts)."""
    check_int("dim", dim, "mf")
    return MF(dataset.n_users, dataset.n_items, dim=dim, l2=check_non_negative("l2", l2, "mf"))
