"""The one in-memory representation of implicit feedback used everywhere.

Users and items are dense 0-based indices; ``user_ids``/``item_ids`` map each
index back to the raw id found in the source file. Each split is a binary
``scipy.sparse.csr_matrix`` of shape (n_users, n_items) with sorted column
indices and no duplicates. Optional per-interaction side data (ratings,
timestamps) is stored as arrays aligned with the CSR ``data`` order of the
split they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dslrec.errors import DslrecError, warn

SPLITS = ("train", "valid", "test")
COLD_USERS = ("drop", "popular")  # what evaluation does with users who have no training items


def binary_csr(indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A binary float32 CSR matrix whose values are one read-only broadcast 1.0: no value array of
    the interactions' length (4 bytes per interaction, 38 MB on a 10M-interaction log). scipy copies
    it wherever it makes a new matrix; writing to ``.data`` in place raises (copy the matrix first)."""
    data = np.broadcast_to(np.float32(1.0), (len(indices),))
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def csr_from_pairs(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary CSR matrix from (user, item) index pairs; duplicates collapse to one.

    Built from the sorted int64 keys ``user * n_items + item`` (a stable sort: linear when the
    pairs come mostly in order, as files list them), with int32 indices when they fit.
    """
    n_users, n_items = int(shape[0]), int(shape[1])
    users, items = np.asarray(users), np.asarray(items)
    users = users if users.dtype.kind in "iu" else users.astype(np.int64)
    items = items if items.dtype.kind in "iu" else items.astype(np.int64)
    if len(users) != len(items):
        raise ValueError(f"{len(users)} users but {len(items)} items")
    if len(users) and (users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"user or item index outside the shape {shape}")
    key = users.astype(np.int64)
    key *= n_items
    key += items
    key.sort(kind="stable")
    if len(key) > 1:
        new = np.empty(len(key), dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        if not new.all():
            key = key[new]
    index = np.int32 if max(len(key), n_users, n_items) < 2**31 else np.int64
    indptr = np.searchsorted(key, np.arange(n_users + 1, dtype=np.int64) * n_items).astype(index)
    key %= max(n_items, 1)
    m = binary_csr(key.astype(index), indptr, (n_users, n_items))
    m.has_sorted_indices = True
    m.has_canonical_format = True  # sorted, no duplicates
    return m


@dataclass
class Dataset:
    """Implicit feedback split into train / valid / test.

    ``protocol`` says how it was split and therefore how it is evaluated:
    ``"fixed"`` (per-user held-out items, full ranking), ``"loo"`` (leave one
    out; the sampled 1-in-101 protocol is reported too) or ``"users"`` (strong
    generalisation: valid/test users' rows in ``train`` are their fold-in
    items, and ``train_users`` marks the users whose rows are trained on).
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    protocol: str = "fixed"
    train_users: np.ndarray | None = None  # bool mask (n_users,), None = every user
    ratings: dict[str, np.ndarray] = field(default_factory=dict)
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        for name in SPLITS:
            m = getattr(self, name)
            if m.shape != shape:
                raise DslrecError(
                    f"dataset {self.name!r}: split {name} has shape {m.shape}, expected {shape}"
                )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise DslrecError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def trained_users(self) -> np.ndarray:
        """Indices of users whose training rows are used to fit a model."""
        has_items = np.diff(self.train.indptr) > 0
        if self.train_users is not None:
            has_items &= self.train_users
        return np.flatnonzero(has_items)

    def cold_users(self, split: str) -> np.ndarray:
        """Users with items in ``split`` (valid or test) but no training items; they cannot be ranked
        from a trained model (evaluation drops them or ranks them by popularity)."""
        held = np.diff(self.split(split).indptr) > 0
        return np.flatnonzero(held & (np.diff(self.train.indptr) == 0))

    def cold_counts(self) -> dict[str, int]:
        """Number of cold users (``cold_users``) in valid and in test."""
        return {s: len(self.cold_users(s)) for s in ("valid", "test")}

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel()

    def user_activity(self) -> np.ndarray:
        """Training interactions per user."""
        return np.diff(self.train.indptr)

    def sizes(self) -> dict:
        """Counts reported by ``dslrec data info`` and in ``summary.json``."""
        n = {s: int(getattr(self, s).nnz) for s in SPLITS}
        total = sum(n.values())
        cells = max(self.n_users * self.n_items, 1)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            **n,
            "interactions": total,
            "density": total / cells,
            "protocol": self.protocol,
            "cold_users": self.cold_counts(),
        }

    def check_usable(self, needs=("train", "valid", "test"), cold_users: str = "drop") -> None:
        """Clear errors for splits that would make training or evaluation meaningless.

        Cold users (``cold_users(split)``) are reported by a one-line warning;
        with ``cold_users="drop"`` a split whose every user is cold is an error.
        """
        for name in needs:
            if getattr(self, name).nnz == 0:
                raise DslrecError(
                    f"dataset {self.name!r}: the {name} split is empty; "
                    "check the input files or choose a different split ratio"
                )
        if cold_users not in COLD_USERS:
            raise DslrecError(f"unknown cold_users {cold_users!r}; choose one of {', '.join(COLD_USERS)}")
        held = [s for s in ("valid", "test") if s in needs]
        cold = {s: self.cold_users(s) for s in held}
        n = len(np.unique(np.concatenate([cold[s] for s in held]))) if held else 0
        if n == 0:
            return
        where = "/".join(s for s in ("test", "valid") if s in cold and len(cold[s]))
        counts = f" ({', '.join(f'{s} {len(cold[s]):,}' for s in held)})" if "/" in where else ""
        if cold_users == "drop":
            for s in held:
                if len(cold[s]) and len(cold[s]) == int((np.diff(self.split(s).indptr) > 0).sum()):
                    raise DslrecError(
                        f"dataset {self.name!r}: every user with {s} interactions ({len(cold[s]):,}) has no "
                        f"training interactions, so none can be evaluated; use --cold-users popular or give "
                        "them training data"
                    )
            what = "they are left out of evaluation (--cold-users popular ranks them by popularity)"
        else:
            what = "they are ranked by item popularity (--cold-users popular)"
        warn(f"{n:,} users have {where} interactions but no training interactions{counts}; {what}")
