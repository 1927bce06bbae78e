"""The run directory: everything a run leaves behind, each file written atomically.

    RUN_DIR/config.yaml        the resolved settings (re-usable with --config)
    RUN_DIR/log.jsonl          one JSON record per epoch
    RUN_DIR/checkpoint.pt      last epoch's full training state (for --resume)
    RUN_DIR/best.safetensors   weights at the best validation epoch
    RUN_DIR/best_masks.safetensors  sparse runs: masks (uint8) of the sparsified parameters then
    RUN_DIR/summary.json       the results contract (see README, "summary.json")
    RUN_DIR/data.safetensors   the training data export and serving need (each user's training
    RUN_DIR/data.json          items as CSR, item counts, raw ids), so they never re-read the source
"""

from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from safetensors.torch import load_file, save_file

from dslrec import fileio
from dslrec.errors import DslrecError

CONFIG = "config.yaml"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"
BEST_MASKS = "best_masks.safetensors"
SUMMARY = "summary.json"
DATA = "data.safetensors"
DATA_INFO = "data.json"
DATA_FORMAT = "dslrec-run-data"
DATA_VERSION = 1


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = fileio.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0666 & ~umask
    mode = os.fstat(fd).st_mode
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, stat.S_IMODE(mode))  # some writers (safetensors) replace the file with a private one
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_config(run_dir: Path, config: dict) -> None:
    write_text(run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))


def write_log(run_dir: Path, records: list[dict]) -> None:
    """Rewrite the whole log (small: one line per epoch), so a resumed run never duplicates lines."""
    write_text(run_dir / LOG, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_checkpoint(run_dir: Path, state: dict) -> None:
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def load_checkpoint(run_dir: Path) -> dict:
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise DslrecError(f"{run_dir} has no {CHECKPOINT}; pass the directory of a run started by dslrec train")
    try:
        # weights_only: never unpickle arbitrary objects, even from a run directory.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise DslrecError(f"{path} cannot be read ({type(e).__name__}); it is damaged, start a new run") from None


# --- the run's training data -----------------------------------------------------------

def save_data(run_dir: Path, dataset) -> None:
    """Keep what export and serving need from ``dataset``: raw ids, each user's training items
    (CSR), training interactions per item, which users are trained on, and its sizes.

    Arrays go to ``data.safetensors``, ids that are not integers and the metadata to ``data.json``
    (with a sha256 of the arrays, so a pair from different runs is refused); never pickle.
    """
    import numpy as np
    import scipy.sparse as sp

    from dslrec.encoding import checksum, encode_ids, encode_matrix

    train = sp.csr_matrix(dataset.train != 0)
    tensors = {f"train/{k}": v for k, v in encode_matrix(train).items()}
    tensors["item_counts"] = torch.from_numpy(np.asarray(train.sum(axis=0), dtype=np.int64).ravel())
    if dataset.train_users is not None:
        tensors["train_users"] = torch.from_numpy(np.asarray(dataset.train_users, dtype=np.uint8))
    user_entry, user_tensors = encode_ids(dataset.user_ids, "users")
    item_entry, item_tensors = encode_ids(dataset.item_ids, "items")
    tensors.update(user_tensors)
    tensors.update(item_tensors)
    info = {"format": DATA_FORMAT, "version": DATA_VERSION, "name": dataset.name, "source": str(dataset.source),
            "protocol": dataset.protocol, "n_users": int(dataset.n_users), "n_items": int(dataset.n_items),
            "sizes": dataset.sizes(), "user_ids": user_entry, "item_ids": item_entry,
            "sha256": checksum("", tensors)}
    save_weights(run_dir / DATA, tensors)
    write_json(run_dir / DATA_INFO, info)


def has_data(run_dir: Path) -> bool:
    return (Path(run_dir) / DATA_INFO).is_file()


def read_data(run_dir: Path):
    """``(dataset, item_counts)`` from ``save_data``: a Dataset holding the training split only
    (valid and test empty), the raw ids and the trained-users mask of the run."""
    import numpy as np
    import scipy.sparse as sp

    from dslrec.data.dataset import Dataset, binary_csr
    from dslrec.encoding import checksum, decode_ids, indptr_of

    run_dir = Path(run_dir)
    if not has_data(run_dir):
        raise DslrecError(f"{run_dir} has no {DATA_INFO}: it was trained by an older dslrec that did not keep its "
                          "training data; retrain it with this version")
    damaged = DslrecError(f"{run_dir}'s {DATA} / {DATA_INFO} are damaged or do not belong together; retrain the run")
    try:
        info = json.loads((run_dir / DATA_INFO).read_text())
        tensors = load_weights(run_dir / DATA)
    except Exception:  # a missing, truncated or foreign file
        raise damaged from None
    if info.get("format") != DATA_FORMAT or info.get("version") != DATA_VERSION:
        raise DslrecError(f"{run_dir / DATA_INFO} is not run data this dslrec reads (format {info.get('format')!r} "
                          f"version {info.get('version')!r}); retrain the run with this version")
    if checksum("", tensors) != info.get("sha256"):
        raise damaged
    shape = (int(info["n_users"]), int(info["n_items"]))
    indices = tensors["train/indices"].numpy().astype(np.int32)
    indptr = indptr_of(tensors["train/row_counts"].numpy())
    train = binary_csr(indices, indptr, shape)
    empty = sp.csr_matrix(shape, dtype=np.float32)
    train_users = tensors["train_users"].numpy().astype(bool) if "train_users" in tensors else None
    dataset = Dataset(name=info["name"], user_ids=decode_ids(info["user_ids"], tensors),
                      item_ids=decode_ids(info["item_ids"], tensors), train=train, valid=empty, test=empty.copy(),
                      protocol=info.get("protocol", "fixed"), train_users=train_users, source=info.get("source", ""))
    return dataset, tensors["item_counts"].numpy()


def data_differences(stored, dataset) -> list[str]:
    """What differs between the training data a run kept (``read_data``) and ``dataset``: empty when
    they are the same users, items (raw ids in the same order) and training interactions."""
    import numpy as np

    if (stored.n_users, stored.n_items) != (dataset.n_users, dataset.n_items):
        return [f"{dataset.n_users} users x {dataset.n_items} items instead of {stored.n_users} x {stored.n_items}"]
    out = []
    for kind in ("user", "item"):
        a, b = getattr(stored, f"{kind}_ids"), getattr(dataset, f"{kind}_ids")
        if not np.array_equal(np.asarray(a).astype(str), np.asarray(b).astype(str)):
            out.append(f"{kind} ids")
    if ((stored.train != 0) != (dataset.train != 0)).nnz:
        out.append("training interactions")
    return out
