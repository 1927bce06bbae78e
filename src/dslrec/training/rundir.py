"""The run directory: everything a run leaves behind, each file written atomically.

    RUN_DIR/config.yaml        the resolved settings (re-usable with --config)
    RUN_DIR/log.jsonl          one JSON record per epoch
    RUN_DIR/checkpoint.pt      last epoch's full training state (for --resume)
    RUN_DIR/best.safetensors   weights at the best validation epoch
    RUN_DIR/best_masks.safetensors  sparse runs: masks (uint8) of the sparsified parameters then
    RUN_DIR/summary.json       the results contract (see README, "summary.json")
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
