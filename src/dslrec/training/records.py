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
        self.sizes = {k: np.bincount(g, minlength=N_GROUPS).tolist() for k, g in self.groups.items()}

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
                # the groups' sizes, so that a reader can tell active weights per user/item in each group
                out[f"{entity}_group_sizes"] = self.sizes[entity]
        return out


def record_scalars(record: dict) -> dict[str, float]:
    """The scalars of one epoch's log record, by TensorBoard tag: loss, lr, active weights, validation
    metrics, and for sparse runs the update ratio, weights moved per update, the exploration rate and
    the active weights per user and per item in each popularity group (1 = least popular)."""
    out = {"train/loss": record["loss"], "train/lr": record["lr"], "train/active_weights": record["active"],
           "time/epoch_s": record["train_s"]}
    out.update({f"valid/{k}": v for k, v in record.get("valid", {}).items()})
    sparse = record.get("sparse")
    if sparse:
        if sparse.get("zeta_now") is not None:
            out["sparse/zeta"] = sparse["zeta_now"]
        if sparse.get("updates"):
            out["sparse/moved_per_update"] = sparse["moved"] / sparse["updates"]
        out["sparse/exploration_rate"] = sparse["exploration_rate"]
        out["sparse/density"] = sparse["density"]
        spread = sparse.get("spread", {})
        for entity in ("user", "item"):
            counts, sizes = spread.get(f"{entity}_groups"), spread.get(f"{entity}_group_sizes")
            for g, (c, n) in enumerate(zip(counts or [], sizes or []), 1):
                out[f"budget/active_per_{entity}_group{g:02d}"] = c / max(n, 1)
    return out


def tensorboard_logger(log_dir):
    """``log(record)``: writes an epoch record's scalars (``record_scalars``) to TensorBoard event files
    in ``log_dir``, created at the first record (so a run refused before training leaves none).
    TensorBoard is an optional extra: without it this fails at once, in one line."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from dslrec.errors import DslrecError

        raise DslrecError("--tensorboard needs the tensorboard package, an optional extra: "
                          "pip install 'dslrec[tensorboard]' (or pip install tensorboard)") from None
    writer = None

    def log(record: dict) -> None:
        nonlocal writer
        if writer is None:
            writer = SummaryWriter(log_dir=str(log_dir))
        for tag, value in record_scalars(record).items():
            writer.add_scalar(tag, value, global_step=record["epoch"])
        writer.flush()

    return log
