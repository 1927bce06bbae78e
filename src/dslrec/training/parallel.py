"""Data-parallel training (torchrun): each rank samples and trains on its share of every global batch,
and DistributedDataParallel averages the gradients.

The run keeps its single-process schedule: ``batch_size`` is the *global* batch, the steps per epoch,
``delta_t`` and every schedule are those of one process. Every rank draws the epoch's shuffle order
from the shared seed and samples only its own contiguous share of each global batch, its negatives
from a generator of its own (``data.sampling.Share``): the shares are disjoint and together cover the
epoch once. A rank's loss is weighted by its share (``world * n_rank / n``, from the loop), so the
averaged gradient is the gradient of the global batch's mean loss even when the batch does not split
evenly.

DDP wraps a small module whose ``forward`` is the backbone's ``loss`` (the loop trains through
``model.loss(batch)``, and DDP synchronises only calls through its own ``forward``). It reduces the
parameters' gradients: with compact storage those are the active values only, with masked storage
the whole dense tables. A comm hook counts the bytes. Compact storage with ``scope global`` may
install value parameters of a new size at a mask update; DDP's buckets are built for fixed
parameters, so it is rebuilt then (``after_step``). Buffers are not broadcast (``broadcast_buffers``
off): every rank builds the same model from the same seed, which ``DataParallel`` checks at the
start of each phase, and compact storage's positions are buffers the engine keeps in step itself.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from dslrec import distributed
from dslrec.errors import DslrecError


class _Loss(nn.Module):
    """``forward(batch)`` is the backbone's training loss (what DDP wraps)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def weights_checksum(model: nn.Module) -> int:
    """An exact fingerprint of the model's trainable weights (their bits summed as integers)."""
    total = 0
    for p in model.parameters():
        if p.requires_grad and p.numel():
            bits = p.detach().contiguous().view(-1)
            if bits.element_size() == 4:
                as_int = bits.view(torch.int32).to(torch.int64)
            elif bits.element_size() == 8:
                as_int = bits.view(torch.int64) % 2147483647
            else:
                as_int = bits.to(torch.float64).view(torch.int64) % 2147483647
            total = (total * 1_000_003 + int(as_int.sum())) % ((1 << 61) - 1)
    return total


class DataParallel:
    """DDP over ``model.loss`` for one phase of a distributed run (see the module's docstring)."""

    def __init__(self, model: nn.Module, group: distributed.Group, device: torch.device, phase: str):
        self.model, self.group, self.device = model, group, device
        if any(getattr(m, "sparse", False) is True for m in model.modules()):
            raise DslrecError("--optimizer sparse_adam makes sparse gradients, which distributed training does not "
                              "average; use --optimizer adam (or train on one process)")
        distributed.check_agree(group, weights_checksum(model), f"the model's weights at the start of phase {phase}")
        self._wrap()

    def _trained(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _wrap(self) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        self._ids = [id(p) for p in self._trained()]
        cuda = self.device.type == "cuda"
        with warnings.catch_warnings():  # torch 2.13 suggests forward_sync_buffers, which syncs at init
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            self.ddp = DistributedDataParallel(_Loss(self.model), device_ids=[self.device] if cuda else None,
                                               init_sync=False, broadcast_buffers=False)
        sent = self.group.sent

        def count_and_average(state, bucket):
            buffer = bucket.buffer()
            sent["gradients"] += buffer.numel() * buffer.element_size()
            return default_hooks.allreduce_hook(state, bucket)

        self.ddp.register_comm_hook(None, count_and_average)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.ddp(batch)

    def after_step(self) -> None:
        """Rebuild DDP when the trainable parameters were replaced (compact storage, global scope)."""
        if [id(p) for p in self._trained()] != self._ids:
            self._wrap()
