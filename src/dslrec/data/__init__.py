"""Datasets: reading, filtering, splitting, the registry of named datasets.

``load(name_or_path)`` is the one entry point: ``"synthetic"`` (embedded, no
files), a registry name (``list_datasets()``; downloaded and verified on
first use) or a path to a dataset folder/file (format auto-detected).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dslrec.data import registry
from dslrec.data.dataset import SPLITS, Dataset, csr_from_pairs
from dslrec.data.preprocess import METHODS, prepare
from dslrec.data.readers import FORMATS, InteractionLog, check_table_options, detect, read
from dslrec.data.synthetic import synthetic_dataset, synthetic_log
from dslrec.errors import DslrecError
from dslrec.memory import release_freed_memory

__all__ = [
    "Dataset", "InteractionLog", "SPLITS", "METHODS", "FORMATS", "csr_from_pairs", "detect", "list_datasets",
    "load", "prepare", "read", "read_log", "registry", "synthetic_dataset",
]


def list_datasets() -> list[str]:
    """Names ``load`` accepts besides paths: ``synthetic`` and the registry's datasets."""
    return ["synthetic", *registry.names()]


def check_source(name_or_path: str | Path) -> None:
    """Raise the one-line error ``read_log`` would for a name that is neither a dataset we know nor
    an existing path, without reading (or downloading) anything: a sweep checks its grid with it."""
    text = str(name_or_path)
    if text == "synthetic" or text.lower() in registry.REGISTRY or Path(text).expanduser().exists():
        return
    raise DslrecError(f"no dataset {text!r}: not a known name ({', '.join(list_datasets())}) nor an existing path")


def read_log(name_or_path: str | Path, *, fmt: str | None = None, columns: dict[str, str] | None = None,
             sep: str | None = None, download: bool = True,
             progress: bool = True) -> tuple[InteractionLog, str, str | None]:
    """(raw log, dataset name, default split) of a registry name or a path, before any preprocessing."""
    text = str(name_or_path)
    if text.lower() in registry.REGISTRY and not Path(text).exists():
        e = registry.entry(text)
        folder = registry.get(e, download_missing=download, progress=progress)
        log = read(folder, e.format, columns, sep)
        registry.check_counts(e, log, folder)
        return log, e.name, e.split
    check_source(text)
    path = Path(text).expanduser()
    log = read(path, fmt, columns, sep)
    p = path.resolve()
    if p.is_file():  # a file named by its role (users.dat, train.txt) is named after its folder
        name = p.parent.name if p.name in ("users.dat", "train.txt", "test.txt", "valid.txt") else p.stem
    else:
        name = p.name
    return log, name, None


def _synthetic_log(seed: int) -> InteractionLog:
    users, items = synthetic_log(seed=seed)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    return InteractionLog(users=users.astype(np.int64), items=items.astype(np.int64),
                          user_ids=np.arange(n_users).astype(str), item_ids=np.arange(n_items).astype(str),
                          source="synthetic")


def load(
    name_or_path: str | Path = "synthetic",
    *,
    split: str | None = None,
    seed: int = 0,
    min_rating: float | None = None,
    k_core: int | tuple[int, int] | None = None,
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    fold_in: float = 0.8,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
    download: bool = True,
    progress: bool = True,
    sep: str | None = None,
) -> Dataset:
    """Load a dataset by registry name, path or ``"synthetic"``, filtered and split.

    ``split``: None keeps the files' own split (LightGCN folders; valid is
    carved from train with ``valid_ratio`` and ``seed``) or uses the dataset's
    default (ratio 0.8/0.1/0.1); otherwise one of ``preprocess.METHODS``
    (``given``, ``ratio``, ``temporal``, ``loo``, ``users``); pre-split files
    are pooled and re-split. ``k_core`` (int or (user_k, item_k)) and
    ``min_rating`` filter first. ``fmt``/``columns``/``sep`` override format
    detection, column names (role -> header name, e.g. ``{"user": "uid"}``)
    and the CSV separator for paths. ``download=False`` never downloads.
    """
    if is_synthetic(name_or_path):
        check_table_options("the synthetic dataset (generated)", "synthetic", columns, sep)
        if split in (None, "ratio", "random") and min_rating is None and not k_core:
            return synthetic_dataset(seed=seed, valid_ratio=valid_ratio, test_ratio=test_ratio)
        log, name, default = _synthetic_log(seed), "synthetic", "ratio"
    else:
        log, name, default = read_log(name_or_path, fmt=fmt, columns=columns, sep=sep, download=download,
                                      progress=progress)
    dataset = prepare(
        log, name=name, split=split or default, seed=seed, min_rating=min_rating, k_core=k_core,
        valid_ratio=valid_ratio, test_ratio=test_ratio, fold_in=fold_in,
    )
    del log
    release_freed_memory()  # reading's and splitting's transients go back to the system, not to the run
    return dataset


def is_synthetic(name_or_path: str | Path) -> bool:
    return str(name_or_path) == "synthetic" and not Path("synthetic").exists()
