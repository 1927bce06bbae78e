"""How a sparse run's budget is spread over users and items, by popularity group.

The engine knows tensors, not users: it reports active weights per row. Here a
tensor's axes are matched to entities by size: an axis of length ``n_users`` is
indexed by user, ``n_items`` by item, ``n_users + n_items`` by user then item
(LightGCN's single table). Weight matrices whose input or output is the item
vector (MultVAE's first and last layers) are counted along that axis too.
If ``n_users == n_items`` the parameter's name decides ("user"/"item" in it).
"""

from __future__ import annotations

import numpy as np
import torch

from dslrec.evaluate.groups import group_counts, item_groups, user_groups

N_GROUPS = 10


def axis_owners(name: str, shape: torch.Size, n_users: int, n_items: int) -> list[tuple[int, str]]:
    """(axis, "user" | "item" | "user+item") for every axis indexed by an entity."""
    owners = []
    for axis, size in enumerate(shape):
        if size == n_users + n_items:
            owners.append((axis, "user+item"))
        elif size == n_users and size == n_items:
            if "user" in name.lower():
                owners.append((axis, "user"))
            elif "item" in name.lower():
                owners.append((axis, "item"))
        elif size == n_users:
            owners.append((axis, "user"))
        elif size == n_items:
            owners.append((axis, "item"))
    return owners[:1]


class BudgetSpread:
    """Active weights per user group and item group, from the engine's masks."""

    def __init__(self, dataset):
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.groups = {"user": user_groups(dataset, N_GROUPS), "item": item_groups(dataset, N_GROUPS)}

    def __call__(self, shapes: dict[str, torch.Size], count_along) -> dict:
        """``count_along(name, axis)``: a tensor's active weights per index of ``axis`` (the engine's
        ``axis_counts``, which never needs a dense mask for compact storage)."""
        per_entity = {"user": np.zeros(self.n_users), "item": np.zeros(self.n_items)}
        for name, shape in shapes.items():
            for axis, owner in axis_owners(name, shape, self.n_users, self.n_items):
                counts = count_along(name, axis).cpu().numpy().astype(np.float64)
                if owner == "user+item":
                    per_entity["user"] += counts[: self.n_users]
                    per_entity["item"] += counts[self.n_users:]
                else:
                    per_entity[owner] += counts
        out = {}
        for entity, counts in per_entity.items():
            if counts.any():
                out[f"{entity}_groups"] = group_counts(counts, self.groups[entity], N_GROUPS).astype(int).tolist()
                out[f"{entity}_mean"] = float(counts.mean())
        return out
