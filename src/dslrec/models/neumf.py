"""NeuMF (He et al., WWW 2017): GMF and MLP branches joined by a final linear layer.

Reading of the paper's "GMF dim 16, MLP layers 32-32-16-8, dropout 0.2" (the
NCF code's convention, where ``layers[0]`` is the MLP's input width):

- GMF: user and item embeddings of ``gmf_dim`` (16); the branch output is
  their element-wise product (16 wide).
- MLP: user and item embeddings of ``layers[0] / 2`` (16) each, concatenated
  into ``layers[0]`` (32) inputs, then Linear 32->32, 32->16, 16->8, each
  preceded by dropout 0.2 and followed by ReLU; the branch output is 8 wide.
- Final ``nn.Linear(16 + 8, 1)``: one logit. Loss: binary cross-entropy with
  logits against the batch's labels (1 for observed pairs, 0 for sampled
  negatives).

Initialisation as in the NCF PyTorch reference: embeddings N(0, 0.01^2),
MLP weights Xavier-uniform, the final layer Kaiming-uniform (a=1, sigmoid
gain), biases zero.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dslrec.errors import DslrecError
from dslrec.models.mf import check_int, check_non_negative, embedding_l2

PAPER_SETTINGS = {
    "optimizer": "adam",
    "lr": 1e-4,
    "lr_end": 1e-4,
    "schedule": "constant",
    "batch_size": 512,
    "epochs": 200,
    "l2": 0.0,
    "density": 0.5,
    "delta_t": 2000,
    "negatives": 4,  # sampled negatives per positive, NCF's default
}
# dslrec's default learning rate is 10x the paper's: at 1e-4 NeuMF needs about 90 epochs to reach MF's
# validation recall on ml-100k, and on small data it does not beat popularity within a short run
# (README, Results: defaults); 1e-3 is what the README's tuned ml-1m run uses
DEFAULT_CHANGES = {"lr": 1e-3, "lr_end": 1e-3}

# Scoring all items for a batch of users materialises (users x items x width)
# activations; chunk the items so one chunk stays under this many floats.
SCORE_CHUNK_ELEMENTS = 1 << 24


class NeuMF(nn.Module):
    """Neural matrix factorisation: GMF + MLP -> one logit per (user, item)."""

    sampling = "pointwise"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        gmf_dim: int = 16,
        layers: tuple[int, ...] = (32, 32, 16, 8),
        dropout: float = 0.2,
        l2: float = 0.0,
    ):
        super().__init__()
        layers = [int(x) for x in layers]
        self.n_users, self.n_items = n_users, n_items
        self.config = {"gmf_dim": gmf_dim, "layers": layers, "dropout": dropout, "l2": l2}
        self.l2 = l2
        half = layers[0] // 2
        self.gmf_user = nn.Embedding(n_users, gmf_dim)
        self.gmf_item = nn.Embedding(n_items, gmf_dim)
        self.mlp_user = nn.Embedding(n_users, half)
        self.mlp_item = nn.Embedding(n_items, half)
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(layers[:-1], layers[1:]):
            blocks += [nn.Dropout(dropout), nn.Linear(d_in, d_out), nn.ReLU()]
        self.mlp = nn.Sequential(*blocks)
        self.predict = nn.Linear(gmf_dim + layers[-1], 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=0.01)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_uniform_(self.predict.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.predict.bias)

    def _logits(self, gu, gi, mu, mi) -> torch.Tensor:
        """Logits from embeddings that broadcast against each other (leading dims)."""
        shape = torch.broadcast_shapes(gu.shape[:-1], gi.shape[:-1])
        gmf = gu * gi
        mlp_in = torch.cat([mu.expand(*shape, -1), mi.expand(*shape, -1)], dim=-1)
        h = torch.cat([gmf, self.mlp(mlp_in)], dim=-1)
        return self.predict(h).squeeze(-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of aligned (user, item) pairs."""
        dev = self.predict.weight.device
        users, items = users.to(dev), items.to(dev)
        return self._logits(
            self.gmf_user(users), self.gmf_item(items), self.mlp_user(users), self.mlp_item(items)
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = self.predict.weight.device
        users, items = batch["users"].to(dev), batch["items"].to(dev)
        labels = batch["labels"].to(dev, torch.float32)
        gu, gi = self.gmf_user(users), self.gmf_item(items)
        mu, mi = self.mlp_user(users), self.mlp_item(items)
        out = F.binary_cross_entropy_with_logits(self._logits(gu, gi, mu, mi), labels)
        if self.l2 > 0:
            out = out + self.l2 * embedding_l2(gu, gi, mu, mi)
        return out

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        width = max(self.config["gmf_dim"], *self.config["layers"])  # widest activation

        def score(users: torch.Tensor) -> torch.Tensor:
            dev = self.predict.weight.device
            users = users.to(dev)
            gu = self.gmf_user(users)[:, None, :]
            mu = self.mlp_user(users)[:, None, :]
            chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, len(users) * width))
            parts = []
            gmf_items, mlp_items = self.gmf_item.weight, self.mlp_item.weight  # read each table once
            for start in range(0, self.n_items, chunk):  # a few chunks, not a loop over items
                gi = gmf_items[start : start + chunk][None]
                mi = mlp_items[start : start + chunk][None]
                parts.append(self._logits(gu, gi, mu, mi))
            return torch.cat(parts, dim=1)

        return score


def build(
    dataset,
    gmf_dim: int = 16,
    layers: tuple[int, ...] | list[int] = (32, 32, 16, 8),
    dropout: float = 0.2,
    l2: float = 0.0,
) -> NeuMF:
    """NeuMF for ``dataset`` (its user and item counts)."""
    check_int("gmf_dim", gmf_dim, "neumf")
    if isinstance(layers, str) or not hasattr(layers, "__len__") or len(layers) < 1:
        raise DslrecError(f"neumf: layers must be a list of integers like [32, 32, 16, 8], got {layers!r}")
    for width in layers:
        check_int("each entry of layers", width, "neumf")
    if layers[0] % 2:
        raise DslrecError(
            f"neumf: layers[0] is the MLP input (user and item embeddings concatenated) "
            f"and must be even, got {layers[0]}"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise DslrecError(f"neumf: dropout must be a number in [0, 1), got {dropout!r}")
    return NeuMF(
        dataset.n_users,
        dataset.n_items,
        gmf_dim=gmf_dim,
        layers=tuple(layers),
        dropout=float(dropout),
        l2=check_non_negative("l2", l2, "neumf"),
    )
