"""Ranking by training popularity: the reference every personalised model must beat."""

from __future__ import annotations

import numpy as np
import torch


class Popularity(torch.nn.Module):
    """Scores every item by its number of training interactions (same list for every user)."""

    sampling = "none"

    def __init__(self, item_counts: np.ndarray):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(np.asarray(item_counts), dtype=torch.float32))
        self.config: dict = {}

    @classmethod
    def from_dataset(cls, dataset) -> "Popularity":
        return cls(dataset.item_popularity())

    def scorer(self):
        counts = self.counts

        def score(users: torch.Tensor) -> torch.Tensor:
            return counts.to(users.device).expand(len(users), -1)

        return score
