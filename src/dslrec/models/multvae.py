"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder over users' item rows.

Encoder: L2-normalised row -> dropout 0.5 -> Linear n_items->600 -> tanh ->
Linear 600->2*200 (mu, logvar). Decoder: Linear 200->600 -> tanh -> Linear
600->n_items (logits). Loss: multinomial log-likelihood of the row under
softmax(logits) + beta * KL(q(z|x) || N(0, I)), with beta rising linearly from
0 to ``anneal_cap`` over ``total_anneal_steps`` updates. The update counter is
a persistent buffer, so a resumed run continues the annealing where it was.

Scoring a user encodes their training row (the fold-in items under the
strong-generalisation protocol) with the posterior mean and returns the
decoder's logits over all items. Initialisation as in the reference code:
Xavier-uniform weights, biases N(0, 0.001^2).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from dslrec.errors import DslrecError
from dslrec.models.mf import check_int, check_non_negative

PAPER_SETTINGS = {
    "optimizer": "adam",
    "lr": 1e-3,
    "lr_end": 1e-3,
    "schedule": "constant",
    "batch_size": 16,
    "epochs": 200,
    "l2": 0.0,
    "density": 0.5,
    "delta_t": 100,
}


class MultVAE(nn.Module):
    """Mult-VAE with one hidden layer each side (n_items-600-200-600-n_items)."""

    sampling = "rows"

    def __init__(
        self,
        n_items: int,
        fold_in: sp.csr_matrix,
        hidden: int = 600,
        latent: int = 200,
        dropout: float = 0.5,
        anneal_cap: float = 0.2,
        total_anneal_steps: int = 200000,
        l2: float = 0.0,
    ):
        super().__init__()
        self.n_items = n_items
        self.config = {
            "hidden": hidden,
            "latent": latent,
            "dropout": dropout,
            "anneal_cap": anneal_cap,
            "total_anneal_steps": total_anneal_steps,
            "l2": l2,
        }
        self.latent, self.anneal_cap, self.total_anneal_steps = latent, anneal_cap, total_anneal_steps
        self.l2 = l2
        self.encoder = nn.Linear(n_items, hidden)
        self.encoder_out = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Linear(latent, hidden)
        self.decoder_out = nn.Linear(hidden, n_items)
        self.drop = nn.Dropout(dropout)
        for layer in (self.encoder, self.encoder_out, self.decoder, self.decoder_out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64))
        # The rows scored at evaluation: kept as scipy (host memory), sliced per
        # user batch; not a parameter and not saved (rebuilt from the dataset).
        self.fold_in = sp.csr_matrix(fold_in, dtype=np.float32)

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.normalize(rows, p=2, dim=1)
        h = torch.tanh(self.encoder(self.drop(x)))
        out = self.encoder_out(h)
        return out[:, : self.latent], out[:, self.latent :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_out(torch.tanh(self.decoder(z)))

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(rows)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar

    def beta_tensor(self) -> torch.Tensor:
        """Current KL weight, linear warm-up to ``anneal_cap`` (a tensor: no device sync)."""
        if self.total_anneal_steps <= 0:
            return torch.tensor(self.anneal_cap, device=self.update_count.device)
        return (self.update_count.double() / self.total_anneal_steps).clamp(max=self.anneal_cap).float()

    def beta(self) -> float:
        """Current KL weight as a number (for logging)."""
        return float(self.beta_tensor())

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = self.decoder_out.weight.device
        rows = batch["rows"].to(dev, torch.float32)
        logits, mu, logvar = self(rows)
        neg_ll = -(F.log_softmax(logits, dim=1) * rows).sum(1).mean()
        kl = (0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1)).sum(1).mean()
        out = neg_ll + self.beta_tensor() * kl
        if self.l2 > 0:
            weights = (self.encoder.weight, self.encoder_out.weight, self.decoder.weight, self.decoder_out.weight)
            out = out + self.l2 * sum(w.pow(2).sum() for w in weights) / 2
        if self.training:
            self.update_count += 1
        return out

    def rows_of(self, users: torch.Tensor) -> torch.Tensor:
        """Dense fold-in rows of ``users`` on the module's device."""
        idx = users.detach().cpu().numpy()
        dense = self.fold_in[idx].toarray()
        return torch.from_numpy(dense).to(self.decoder_out.weight.device)

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        def score(users: torch.Tensor) -> torch.Tensor:
            mu, _ = self.encode(self.rows_of(users))
            return self.decode(mu)

        return score


def build(
    dataset,
    hidden: int = 600,
    latent: int = 200,
    dropout: float = 0.5,
    anneal_cap: float = 0.2,
    total_anneal_steps: int = 200000,
    l2: float = 0.0,
) -> MultVAE:
    """Mult-VAE for ``dataset``; its training matrix is the fold-in for scoring."""
    check_int("hidden", hidden, "multvae")
    check_int("latent", latent, "multvae")
    check_int("total_anneal_steps", total_anneal_steps, "multvae", minimum=0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise DslrecError(f"multvae: dropout must be a number in [0, 1), got {dropout!r}")
    return MultVAE(
        dataset.n_items,
        dataset.train,
        hidden=hidden,
        latent=latent,
        dropout=float(dropout),
        anneal_cap=check_non_negative("anneal_cap", anneal_cap, "multvae"),
        total_anneal_steps=total_anneal_steps,
        l2=check_non_negative("l2", l2, "multvae"),
    )
