"""Build a model without its dense tables, then initialise exactly what compact storage keeps.

A backbone allocates and initialises its tables in its constructor: for a
table of millions of rows that alone costs the dense memory compact storage is
meant to save. ``deferred_build`` runs the constructor on the meta device (no
memory) and records the in-place initialisations it applies to its parameters
(``normal_``, ``uniform_``, ``zero_``, ``fill_``: what ``nn.init`` and the
modules' ``reset_parameters`` use). ``Deferred.materialise`` then replays them
in their order on the same random stream: dense tensors in full, sparsified
ones only at their active positions, drawing the random stream block by block
and keeping the values that fall on active positions. The weights are the
ones the ordinary constructor would have made (torch's CPU ``normal_`` and
``uniform_`` give the same stream in blocks of a multiple of 16 as in one
call; a test checks it), without ever holding a dense table.

Anything else (random factories such as ``torch.randn``, buffers, views) is
not replayable: ``deferred_build`` then builds the model the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

BLOCK = 1 << 20  # positions drawn at a time (a multiple of 16: the random stream is the same as in one call)
RANDOM_OPS = (Tensor.normal_, Tensor.uniform_)
CONSTANT_OPS = (Tensor.zero_, Tensor.fill_)
# operations that consume the random stream in ways the replay cannot reproduce
UNREPLAYABLE = (torch.randn, torch.rand, torch.randint, torch.randperm, torch.normal, torch.bernoulli,
                torch.randn_like, torch.rand_like, torch.randint_like, torch.multinomial,
                Tensor.random_, Tensor.bernoulli_, Tensor.exponential_, Tensor.geometric_, Tensor.cauchy_,
                Tensor.log_normal_)
DATA_OPS = (Tensor.copy_,)  # fine on other tensors, not replayable onto a parameter


class _Recorder:
    """Records the in-place initialisations applied while building (and flags what cannot be replayed).

    It wraps the few tensor methods involved for the time of the build. A torch-function mode would
    not do: ``nn.init`` functions hand themselves to an active mode whole (``xavier_uniform_``, not
    the ``uniform_`` it calls), and their arguments depend on the tensor's shape."""

    def __init__(self):
        self.ops: list[tuple[Tensor, Callable, tuple, dict]] = []
        self.unreplayable: str | None = None
        self._saved: list[tuple[object, str, object]] = []
        self._depth = 0

    def __enter__(self) -> "_Recorder":
        for func in (*RANDOM_OPS, *CONSTANT_OPS, *DATA_OPS):
            self._wrap(Tensor, func.__name__, func, record=True)
        for func in UNREPLAYABLE:
            owner = Tensor if hasattr(Tensor, func.__name__) and getattr(Tensor, func.__name__) is func else torch
            self._wrap(owner, func.__name__, func, record=False)
        return self

    def _wrap(self, owner, name: str, func, record: bool) -> None:
        recorder = self

        def wrapper(*args, **kwargs):
            if recorder._depth == 0:  # not the operations a recorded one is made of (meta kernels)
                if record:
                    if kwargs.get("generator") is not None:
                        recorder.unreplayable = recorder.unreplayable or f"{name} with its own generator"
                    recorder.ops.append((args[0], func, tuple(args[1:]), dict(kwargs)))
                    if isinstance(args[0], Tensor) and args[0].is_meta:
                        # nothing to fill on meta; and meta ``normal_`` imports torch's Python
                        # decompositions (sympy, dynamo: about 75 MB resident) for no data at all
                        return args[0]
                else:
                    recorder.unreplayable = recorder.unreplayable or name
            recorder._depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                recorder._depth -= 1

        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved = []


class Deferred:
    """A model built on meta and the initialisations to replay (see the module doc)."""

    def __init__(self, model: nn.Module, ops, rng_state: Tensor, device: torch.device):
        self.model, self.ops, self.rng_state, self.device = model, ops, rng_state, device

    @torch.no_grad()
    def materialise(self, positions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Allocate every parameter not in ``positions`` on the CPU and replay the initialisations;
        return the values of the tensors in ``positions`` (sorted flat positions) at those positions.
        The global random state ends where the ordinary constructor would have left it."""
        model = self.model
        names = {id(p): n for n, p in model.named_parameters()}
        values: dict[str, Tensor] = {}
        real: dict[str, Tensor] = {}
        for name, p in list(model.named_parameters()):
            if name in positions:
                values[name] = torch.zeros(positions[name].numel(), dtype=p.dtype)
            else:
                owner_name, _, attr = name.rpartition(".")
                owner = model.get_submodule(owner_name) if owner_name else model
                new = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad)
                owner._parameters[attr] = new
                real[name] = new
        torch.set_rng_state(self.rng_state)
        for tensor, func, args, kwargs in self.ops:
            name = names[id(tensor)]
            if name in positions:
                self._replay_sparse(func, args, kwargs, tensor.numel(), positions[name], values[name])
            else:
                func(real[name], *args, **kwargs)
        return values

    @staticmethod
    def _replay_sparse(func, args, kwargs, n: int, pos: Tensor, out: Tensor) -> None:
        if func in CONSTANT_OPS:
            func(out, *args, **kwargs)
            return
        pos = pos.cpu()
        bounds = torch.searchsorted(pos, torch.arange(0, n + BLOCK, BLOCK)).tolist()
        for i, start in enumerate(range(0, n, BLOCK)):  # blocks of the random stream, not positions
            block = func(torch.empty(min(BLOCK, n - start), dtype=out.dtype), *args, **kwargs)
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                out[lo:hi] = block[pos[lo:hi] - start]


def deferred_build(build: Callable[[], nn.Module], device: torch.device) -> tuple[nn.Module, Deferred | None]:
    """``build()`` on the meta device with its initialisations recorded; if something in it cannot be
    replayed (or a buffer holds data), the model built the ordinary way and None."""
    rng_state = torch.get_rng_state()
    recorder = _Recorder()
    try:
        with torch.device("meta"), recorder:
            model = build()
    except Exception:  # a constructor that needs real data (a graph, fold-in rows): build it normally
        recorder.unreplayable = "a constructor that needs real tensors"
    replayable = recorder.unreplayable is None
    if replayable:
        params = {id(p) for p in model.parameters()}
        ops = [op for op in recorder.ops if id(op[0]) in params]  # initialisations of the parameters
        initialised = {id(op[0]) for op in ops}
        # random draws into anything else would shift the random stream the replay reproduces
        other_draws = any(op[1] in RANDOM_OPS and id(op[0]) not in params for op in recorder.ops)
        replayable = (not other_draws and not any(op[1] in DATA_OPS for op in ops)
                      and initialised == params  # every parameter, and only by replayable operations
                      and not any(True for _ in model.buffers())
                      and all(p.is_meta for p in model.parameters()))
        recorder.ops = ops
    if not replayable:
        torch.set_rng_state(rng_state)
        return build().to(device), None
    return model, Deferred(model, recorder.ops, rng_state, device)
