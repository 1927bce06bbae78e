"""Training on several processes or machines: the process group and the few collectives dslrec uses.

dslrec runs distributed when ``torchrun`` (or ``python -m torch.distributed.run``) launched it: the
launcher's environment (``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) says so, and :func:`setup` joins the group. Without it (or with ``WORLD_SIZE=1``)
nothing here is used and a run is exactly a single-process run.

This module is at the bottom of the layers (torch only) so that every layer may use it: the sparse
engine to average its growth signal over ranks and to compare masks, evaluation to gather per-user
results, training to split batches and write files on rank 0 only.

Every function taking a :class:`Group` is a *collective*: all ranks must call it, in the same order.
"""

from __future__ import annotations

import gc

import datetime
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from dslrec.errors import DslrecError, DslrecWarning

# seconds a collective waits for the other ranks before failing (a rank that died, a hung machine);
# torchrun also stops the other workers when one fails
DEFAULT_TIMEOUT_S = 600


@dataclass
class Group:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its machine.
    ``backend`` is what gradients travel through: ``gloo`` (CPU) or ``nccl`` (CUDA), set by training
    once the device is known. ``sent`` counts the bytes this rank handed to collectives, per kind."""

    rank: int
    world: int
    local_rank: int
    cuda: bool  # CUDA was available when the group was made (nccl joined for CUDA tensors)
    backend: str = "gloo"
    sent: dict[str, int] = field(default_factory=lambda: {"gradients": 0, "signal": 0, "checks": 0, "other": 0})

    @property
    def writer(self) -> bool:
        """Rank 0 writes the run directory, logs and checkpoints."""
        return self.rank == 0


_current: Group | None = None


def launched() -> bool:
    """Whether the environment is that of a multi-process launch (torchrun's ``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise DslrecError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


def current() -> Group | None:
    """The process group of this run, or None for a single process."""
    return _current


def setup(device: str = "auto") -> Group | None:
    """Join the process group torchrun describes (once per process); None when not launched so.

    Gradients go through NCCL on GPUs and gloo on CPUs: with CUDA available the group is made as
    ``cpu:gloo,cuda:nccl`` (each tensor takes the backend of its device), else ``gloo``. ``device``
    ``cpu`` keeps NCCL out even where CUDA is available.
    """
    global _current
    if _current is not None:
        return _current
    if not launched():
        return None
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DslrecError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; launch "
                          "with torchrun --nproc-per-node N -m dslrec train ... (it sets all of them)")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = str(device) != "cpu" and torch.cuda.is_available()
    timeout = datetime.timedelta(seconds=float(os.environ.get("DSLREC_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    import torch.distributed as td

    if not td.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        td.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    _current = Group(td.get_rank(), td.get_world_size(), local_rank, cuda)
    if not _current.writer:  # one copy of each warning: rank 0's
        warnings.filterwarnings("ignore", category=DslrecWarning)
    return _current


def teardown(wait: bool = False) -> None:
    """Leave the process group :func:`setup` joined (end of a distributed run); nothing otherwise.
    ``wait``: first wait until every rank is here (after a run that finished on every rank), so that no
    rank closes its connections while another still talks to it."""
    global _current
    if _current is None:
        return
    import torch.distributed as td

    if td.is_initialized():
        if wait:
            td.barrier()
        # a DDP wrapper left in a reference cycle keeps the gloo group (and its worker threads) alive past
        # destroy_process_group, until the interpreter's own teardown, where freeing it aborts the process
        # now and then ("terminate called without an active exception"): free such cycles first
        gc.collect()
        td.destroy_process_group()
    _current = None


def shard(n, rank: int, world: int) -> tuple:
    """(start, stop) of rank's contiguous share of ``n`` items; shares differ by at most one, the first
    ``n % world`` ranks hold the larger ones (as ``numpy.array_split``). ``n`` may be an array of sizes
    (one per global batch): then the starts and stops are arrays."""
    base, extra = np.divmod(n, world)
    start = rank * base + np.minimum(rank, extra)
    stop = start + base + (rank < extra)
    if np.ndim(n) == 0:
        return int(start), int(stop)
    return start, stop


# --- collectives --------------------------------------------------------------------------------

def _device(group: Group, like: Tensor | None = None) -> torch.device:
    if like is not None:
        return like.device
    return torch.device("cuda", torch.cuda.current_device()) if group.backend == "nccl" else torch.device("cpu")


def all_sum_(group: Group, t: Tensor, kind: str = "other") -> Tensor:
    """Sum ``t`` over ranks in place."""
    import torch.distributed as td

    group.sent[kind] += t.numel() * t.element_size()
    td.all_reduce(t)
    return t


def all_gather_ints(group: Group, values: list[int], kind: str = "other", device=None) -> list[list[int]]:
    """Every rank's list of ``len(values)`` int64 values, in rank order."""
    import torch.distributed as td

    mine = torch.tensor(values, dtype=torch.int64, device=device or _device(group))
    out = [torch.empty_like(mine) for _ in range(group.world)]
    group.sent[kind] += mine.numel() * 8
    td.all_gather(out, mine)
    return [o.tolist() for o in out]


def rows_mean(group: Group, got: tuple[Tensor, Tensor] | None, n_cols: int,
              kind: str = "signal") -> tuple[Tensor, Tensor] | None:
    """The mean over ranks of a per-row block (``(sorted unique rows, (U, C) block)``, None: no rows):
    the rows are the union of the ranks' rows, a row a rank does not hold counts as zero there. Sends
    the row ids and one block of the union's rows, not the tensor. None when no rank holds a row."""
    import torch.distributed as td

    device = _device(group, got[0] if got is not None else None)
    rows = got[0].to(device, torch.int64) if got is not None else torch.empty(0, dtype=torch.int64, device=device)
    counts = all_gather_ints(group, [rows.numel()], kind, device)
    most = max(c[0] for c in counts)
    if most == 0:
        return None
    padded = torch.full((most,), -1, dtype=torch.int64, device=device)
    padded[: rows.numel()] = rows
    everyone = [torch.empty_like(padded) for _ in range(group.world)]
    group.sent[kind] += padded.numel() * 8
    td.all_gather(everyone, padded)
    union = torch.unique(torch.cat(everyone))
    union = union[union >= 0]
    dtype = got[1].dtype if got is not None else torch.float32
    block = torch.zeros((union.numel(), n_cols), dtype=dtype, device=device)
    if got is not None and rows.numel():
        block.index_copy_(0, torch.searchsorted(union, rows), got[1].to(device))
    all_sum_(group, block, kind)
    return union, block.div_(group.world)


def gather_objects(group: Group, obj: Any) -> list[Any]:
    """Every rank's (picklable) ``obj``, in rank order."""
    import torch.distributed as td

    out: list[Any] = [None] * group.world
    td.all_gather_object(out, obj)
    return out


def from_rank0(group: Group | None, make: Callable[[], Any]) -> Any:
    """``make()`` run on rank 0 and its result handed to every rank (without a group: ``make()``).
    An exception on rank 0 is raised on every rank, so that none waits for the others."""
    if group is None or group.world == 1:
        return make()
    import torch.distributed as td

    box: list[Any] = [None]
    if group.writer:
        try:
            box[0] = ("ok", make())
        except BaseException as e:  # noqa: BLE001 - re-raised below, on every rank
            box[0] = ("error", e)
    td.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def barrier(group: Group | None) -> None:
    if group is not None and group.world > 1:
        import torch.distributed as td

        td.barrier()


# --- masks agree ----------------------------------------------------------------------------------

_PRIME = (1 << 61) - 1


def positions_checksum(positions: Tensor) -> int:
    """A cheap fingerprint of a set of flat positions (int64): their count, sum and a sum of a
    multiplicative hash, combined modulo 2**61 - 1. Equal sets give equal values; different ones almost
    surely differ."""
    x = positions.detach().to(torch.int64).reshape(-1)
    mixed = (x * 2654435761 + 97) % 2147483647  # stays below 2**63: positions below 2**31 * 2**32
    parts = (int(x.numel()), int(x.sum()), int(mixed.sum()), int((mixed * (x % 65521)).sum()))
    out = 0
    for p in parts:
        out = (out * 1_000_003 + p) % _PRIME
    return out


def check_agree(group: Group, value: int, what: str) -> list[int]:
    """Compare ``value`` across ranks; the values (rank order) when all agree, else a DslrecError on
    every rank naming ``what``."""
    values = [v[0] for v in all_gather_ints(group, [int(value)], "checks")]
    if len(set(values)) > 1:
        raise DslrecError(f"{what} differs across ranks (checksums by rank: {values}); the ranks no longer train "
                          "the same model, which is a bug in dslrec or a nondeterministic operation, so the run "
                          "stops rather than train on")
    return values
