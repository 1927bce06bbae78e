"""Compact storage: only the active values are stored and trained, with their positions.

Each sparsified tensor, seen as (rows, columns), becomes

* ``values``: one trainable 1-D parameter of budget length (the optimiser's
  state exists for these values only), and
* its positions as CSR: ``crow`` (row pointers, int32 below 2**31 positions) and ``col`` (column
  indices in the smallest integer type that holds the column count).

No tensor of the table's full dense size is kept between steps.

How a backbone sees it (it never knows): an ``nn.Embedding`` is swapped for a
``CompactEmbedding`` with the same call interface, whose lookup builds the
batch's rows from the values by index arithmetic, so gradients reach the
active values only; reading its ``.weight`` (LightGCN's propagation) builds
the dense table transiently, inside the step. Any other tensor (NeuMF's and
MultVAE's layers) is presented through ``torch.nn.utils.parametrize``: its
``weight`` is built dense from the values at each access. ``parametrize``
alone would not do for lookup tables: it materialises the whole table at
every access, which is exactly the cost compact storage removes.

Growth needs the gradient at inactive positions. A lookup's gradient is
non-zero only in the batch's rows, so when the engine asks for it
(``record_grads``) the gradient of the looked-up rows (or of the transient
dense table) is recorded by a hook and handed to the engine per row.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from dslrec.errors import DslrecError
from dslrec.sparse.decisions import ROW_CHUNK_ELEMENTS, flat_nonzero, is_member, row_chunks
from dslrec.sparse.storage import WeightStorage, row_shape, rows_of_block


def index_dtype(n: int) -> torch.dtype:
    """The smallest signed integer type holding ``0 .. n - 1``."""
    for dtype in (torch.int16, torch.int32):
        if n <= torch.iinfo(dtype).max + 1:
            return dtype
    return torch.int64


class _Gather(torch.autograd.Function):
    """``values[src]`` whose gradient is a sparse tensor when asked (for a lazy, row-sparse Adam).

    A dense gradient is written into a buffer from ``pool`` when it holds one (the last step's
    gradient, handed back by the storage): a budget-sized tensor made afresh at every step is mapped
    and zero-filled by the system each time (17.6 ms against 2.4 ms for 46 MB, one thread). The
    buffer leaves the pool, so autograd takes it as the gradient without a copy."""

    @staticmethod
    def forward(ctx, values: Tensor, src: Tensor, sparse: bool, pool: list | None = None) -> Tensor:
        ctx.save_for_backward(src)
        ctx.n, ctx.sparse, ctx.pool = values.shape[0], sparse, pool
        return values.index_select(0, src)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (src,) = ctx.saved_tensors
        if ctx.sparse:
            return torch.sparse_coo_tensor(src.unsqueeze(0), grad, (ctx.n,), check_invariants=False), None, None, None
        pool = ctx.pool
        buf = pool.pop() if pool else None
        if buf is None or buf.shape[0] != ctx.n or buf.dtype != grad.dtype or buf.device != grad.device:
            buf = torch.zeros(ctx.n, dtype=grad.dtype, device=grad.device)
        else:
            buf.zero_()
        return buf.index_add_(0, src, grad), None, None, None


class Positions(nn.Module):
    """The CSR positions of one compact tensor, and the dense views built from its values."""

    def __init__(self, shape: torch.Size, positions: Tensor):
        super().__init__()
        self.shape = torch.Size(shape)
        self.n_rows, self.n_cols = row_shape(self.shape)
        # row pointers never exceed the dense size: int32 below 2**31 positions (half the memory)
        crow_dtype = torch.int32 if self.n_rows * self.n_cols < 2**31 else torch.int64
        self.register_buffer("crow", torch.zeros(self.n_rows + 1, dtype=crow_dtype, device=positions.device))
        self.register_buffer("col", torch.zeros(0, dtype=index_dtype(self.n_cols), device=positions.device))
        # the dense shape travels with the state dict, so that a saved compact state describes itself
        self.register_buffer("shape_", torch.tensor(list(self.shape), dtype=torch.int64, device=positions.device))
        self.set(positions)
        self.recording = False
        self.recorded: list[tuple[Tensor | None, Tensor]] = []
        self.grad_pool: list[Tensor] = []  # the values' last dense gradient, for the next lookup's backward
        self.gathers = False  # whether lookups make the values' gradient (only then is it pooled)

    def set(self, positions: Tensor) -> None:
        """New sorted flat positions."""
        # row r starts at the first position >= r * n_cols; columns a slice at a time (no int64 temporaries
        # of the budget's length)
        starts = torch.arange(self.n_rows + 1, device=positions.device) * self.n_cols
        self.crow = torch.searchsorted(positions, starts).to(self.crow.dtype)
        col = torch.empty(positions.shape, dtype=self.col.dtype, device=positions.device)
        for a in range(0, positions.numel(), ROW_CHUNK_ELEMENTS):
            col[a: a + ROW_CHUNK_ELEMENTS] = positions[a: a + ROW_CHUNK_ELEMENTS] % self.n_cols
        self.col = col
        self._find_width()

    def _find_width(self) -> None:
        """The common count of every row, or None when rows differ (then lookups go through CSR)."""
        counts = self.crow.diff()
        width = int(counts[0]) if counts.numel() else 0
        self.width = width if counts.numel() and width > 0 and bool((counts == width).all()) else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the count per tensor may differ from now (global scope): take the saved size
        col = state_dict.get(prefix + "col")
        if col is not None and col.shape != self.col.shape:
            self.col = torch.empty(col.shape, dtype=self.col.dtype, device=self.col.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._find_width()

    def rows(self) -> Tensor:
        """The row of every value."""
        return torch.repeat_interleave(torch.arange(self.n_rows, device=self.crow.device), self.crow.diff())

    def flat(self) -> Tensor:
        """The flat position of every value (sorted)."""
        return self.rows() * self.n_cols + self.col.long()

    def counts(self) -> Tensor:
        return self.crow.diff()

    def dense(self, values: Tensor) -> Tensor:
        """The dense tensor (differentiable with respect to ``values``)."""
        out = torch.zeros(self.n_rows * self.n_cols, dtype=values.dtype, device=values.device)
        # in place and a slice of rows at a time: one dense copy, and position transients of a slice
        for lo, hi in row_chunks(self.n_rows, self.n_cols):
            a, b = int(self.crow[lo]), int(self.crow[hi])
            rows = torch.repeat_interleave(torch.arange(lo, hi, device=self.crow.device),
                                           self.crow[lo: hi + 1].diff(), output_size=b - a)
            out = out.index_put_((rows * self.n_cols + self.col[a:b].long(),), values[a:b])
        out = out.view(self.shape)
        if self.recording and out.requires_grad:
            out.register_hook(self._record_dense)
        return out

    def lookup(self, values: Tensor, idx: Tensor, sparse_grad: bool = False) -> Tensor:
        """Dense rows ``idx`` (any shape) as ``idx.shape + (columns,)``, from the values by index
        arithmetic; gradients reach the active values only."""
        flat_idx = idx.reshape(-1).long()
        self.gathers = self.gathers or (torch.is_grad_enabled() and values.requires_grad and not sparse_grad)
        if self.width is not None:  # every row holds the same count (scope per_row): plain 2-D gathers
            out = self._lookup_regular(values, flat_idx, sparse_grad)
        else:
            out = self._lookup_csr(values, flat_idx, sparse_grad)
        if self.recording and out.requires_grad:
            out.register_hook(lambda g: self.recorded.append((flat_idx, g.detach())))
        return out.view(*idx.shape, self.n_cols)

    def _lookup_regular(self, values: Tensor, flat_idx: Tensor, sparse_grad: bool) -> Tensor:
        width = self.width
        src = (flat_idx.unsqueeze(1) * width + torch.arange(width, device=flat_idx.device)).reshape(-1)
        vals = _Gather.apply(values, src, sparse_grad, self.grad_pool).view(-1, width)
        cols = self.col.view(-1, width).index_select(0, flat_idx).long()
        return torch.zeros((flat_idx.numel(), self.n_cols), dtype=values.dtype, device=values.device).scatter(
            1, cols, vals)

    def _lookup_csr(self, values: Tensor, flat_idx: Tensor, sparse_grad: bool) -> Tensor:
        starts = self.crow.index_select(0, flat_idx)
        counts = self.crow.index_select(0, flat_idx + 1) - starts
        n_out = flat_idx.numel()
        total = int(counts.sum())
        # value j of looked-up row b sits at starts[b] + j; it is output number offsets[b] + j
        shift = starts - (torch.cumsum(counts, 0) - counts)
        src = torch.arange(total, device=flat_idx.device) + torch.repeat_interleave(shift, counts, output_size=total)
        owner = torch.repeat_interleave(torch.arange(n_out, device=flat_idx.device), counts, output_size=total)
        target = owner * self.n_cols + self.col.index_select(0, src).long()
        vals = _Gather.apply(values, src, sparse_grad, self.grad_pool)
        out = torch.zeros(n_out * self.n_cols, dtype=values.dtype, device=values.device)
        return out.index_put((target,), vals).view(n_out, self.n_cols)

    def _record_dense(self, g: Tensor) -> None:
        self.recorded.append((None, g.detach().reshape(self.n_rows, self.n_cols)))

    def take_grad_rows(self) -> tuple[Tensor, Tensor] | None:
        """The recorded gradient with respect to the dense tensor, per row (rows sorted, unique)."""
        parts, self.recorded = self.recorded, []
        if not parts:
            return None
        dense = [g for i, g in parts if i is None]
        looked = [(i, g) for i, g in parts if i is not None]
        if dense:
            total = torch.stack(dense).sum(0) if len(dense) > 1 else dense[0].clone()
            for i, g in looked:
                total.index_add_(0, i, g)
            return rows_of_block(total)
        idx = torch.cat([i for i, _ in looked])
        grads = torch.cat([g for _, g in looked])
        rows, inverse = torch.unique(idx, return_inverse=True)
        return rows, torch.zeros((rows.numel(), self.n_cols), dtype=grads.dtype, device=grads.device).index_add_(
            0, inverse, grads)


class CompactEmbedding(nn.Module):
    """Drop-in for ``nn.Embedding``: ``self(idx)`` looks rows up, ``self.weight`` is the dense table."""

    def __init__(self, shape: torch.Size, positions: Tensor, values: Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(shape[0]), int(shape[1])
        self.positions = Positions(shape, positions)
        self.values = nn.Parameter(values)
        self.sparse = False  # True: the values' gradient is a sparse tensor (for sparse_adam)

        self.resize = None  # set by the storage: installs a values parameter of another size

    def forward(self, idx: Tensor) -> Tensor:
        return self.positions.lookup(self.values, idx, self.sparse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "values")
        if saved is not None and saved.shape != self.values.shape and self.resize is not None:
            self.resize(torch.zeros(saved.shape, dtype=self.values.dtype, device=self.values.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def weight(self) -> Tensor:
        return self.positions.dense(self.values)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, active={self.values.numel()}"


class CompactParametrization(nn.Module):
    """``parametrize`` view of a compact tensor: the original is the 1-D values, the tensor is dense."""

    def __init__(self, shape: torch.Size, positions: Tensor):
        super().__init__()
        self.positions = Positions(shape, positions)

    def forward(self, values: Tensor) -> Tensor:
        return self.positions.dense(values)

    def right_inverse(self, dense: Tensor) -> Tensor:
        return dense.detach().reshape(-1).index_select(0, self.positions.flat()).clone()


class CompactStorage(WeightStorage):
    """The sparsified tensors of ``model`` held as active values plus CSR positions.

    Building it replaces the model's dense tensors (their memory is freed): an
    ``nn.Embedding`` by a ``CompactEmbedding`` in its parent, any other tensor
    by a ``parametrize`` parametrization. Active weights keep their values.
    """

    kind = "compact"

    def __init__(self, model: nn.Module, params: Mapping[str, nn.Parameter], positions: Mapping[str, Tensor],
                 optimizer: torch.optim.Optimizer | None = None, values: Mapping[str, Tensor] | None = None):
        self.names = list(params)
        self.shapes = {n: p.shape for n, p in params.items()}
        self.optimizer = optimizer
        self.pos: dict[str, Positions] = {}
        self._values: dict[str, callable] = {}
        self._setters: dict[str, callable] = {}
        for name, p in params.items():
            given = None if values is None else values[name]
            device = given.device if given is not None else p.device
            self._convert(model, name, p, positions[name].to(device), given)

    @torch.no_grad()
    def _convert(self, model: nn.Module, name: str, p: nn.Parameter, positions: Tensor,
                 given: Tensor | None = None) -> None:
        """Replace tensor ``name`` by its values at ``positions`` (``given``: those values, when the
        dense tensor was never built)."""
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if isinstance(owner, nn.Embedding) and attr == "weight" and owner_name:
            if owner.padding_idx is not None or owner.max_norm is not None:
                raise DslrecError(f"{owner_name} uses padding_idx or max_norm, which compact storage does not "
                                  "keep; train it with --storage masked")
            values = given if given is not None else p.detach().reshape(-1).index_select(0, positions).clone()
            module = CompactEmbedding(p.shape, positions, values)
            parent_name, _, child = owner_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
            self.pos[name] = module.positions
            self._values[name] = lambda m=module: m.values
            self._setters[name] = lambda v, m=module: setattr(m, "values", v)
            module.resize = lambda t, n=name: self._install(n, t, {})
        else:
            if parametrize.is_parametrized(owner, attr):
                raise DslrecError(f"{name} is already parametrized; compact storage needs a plain tensor "
                                  "(use --storage masked)")
            param = CompactParametrization(p.shape, positions)
            if given is not None:  # a meta tensor: register the values directly as the original
                owner._parameters[attr] = nn.Parameter(torch.zeros(p.shape, dtype=given.dtype), p.requires_grad)
            parametrize.register_parametrization(owner, attr, param, unsafe=True)
            if given is not None:
                owner.parametrizations[attr].original = nn.Parameter(given, p.requires_grad)
            plist = owner.parametrizations[attr]
            self.pos[name] = param.positions
            self._values[name] = lambda pl=plist: pl.original
            self._setters[name] = lambda v, pl=plist: setattr(pl, "original", v)

            def resize_on_load(module, state_dict, prefix, *args, n=name):
                saved = state_dict.get(prefix + "original")
                if saved is not None and saved.shape != self.values(n).shape:
                    self._install(n, torch.zeros(saved.shape, dtype=saved.dtype, device=self.values(n).device), {})

            plist.register_load_state_dict_pre_hook(resize_on_load)

    def _install(self, name: str, values: Tensor, state: dict) -> nn.Parameter:
        """A new values parameter (another count: global scope) in the model and in the optimiser,
        with ``state`` as its optimiser state (the old one's re-keyed by the caller)."""
        old = self.values(name)
        new = nn.Parameter(values, requires_grad=old.requires_grad)
        self._setters[name](new)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["params"] = [new if q is old else q for q in group["params"]]
            old_state = self.optimizer.state.pop(old, {})
            if old_state:
                self.optimizer.state[new] = {**old_state, **state}
        return new

    def values(self, name: str) -> nn.Parameter:
        """The trainable 1-D values of a tensor."""
        return self._values[name]()

    # --- reading ---------------------------------------------------------------------------
    def count(self, name: str) -> int:
        return int(self.values(name).numel())

    def row_counts(self, name: str) -> Tensor:
        return self.pos[name].counts()

    def col_counts(self, name: str) -> Tensor:
        pos = self.pos[name]
        return torch.bincount(pos.col.long(), minlength=pos.n_cols)

    def active(self, name: str) -> tuple[Tensor, Tensor]:
        return self.pos[name].flat(), self.values(name).detach()

    def active_rows(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        pos = self.pos[name]
        counts = pos.counts()
        width = int(counts.max()) if counts.numel() else 0
        values = self.values(name).detach()
        if counts.numel() and bool((counts == width).all()):  # every row holds the same count (per_row)
            return pos.col.view(-1, width), values.view(-1, width), counts  # no padding: the stored type
        rows = pos.rows()
        within = torch.arange(rows.numel(), device=rows.device) - pos.crow[:-1].index_select(0, rows)
        cols = torch.full((pos.n_rows, width), pos.n_cols, dtype=torch.int64, device=rows.device)
        w = torch.zeros((pos.n_rows, width), dtype=values.dtype, device=rows.device)
        cols[rows, within] = pos.col.long()
        w[rows, within] = values
        return cols, w, counts

    def grad_rows(self, name: str) -> tuple[Tensor, Tensor] | None:
        return self.pos[name].take_grad_rows()

    def mask(self, name: str) -> Tensor:
        pos = self.pos[name]
        out = torch.zeros(pos.n_rows * pos.n_cols, dtype=torch.bool, device=pos.crow.device)
        out[pos.flat()] = True
        return out.view(self.shapes[name])

    def dense(self, name: str) -> Tensor:
        with torch.no_grad():
            return self.pos[name].dense(self.values(name).detach())

    # --- writing ---------------------------------------------------------------------------
    def record_grads(self, on: bool) -> None:
        for pos in self.pos.values():
            pos.recording = on
            if not on:
                pos.recorded = []

    def before_update(self) -> None:
        # the values' gradient has been applied, and an update re-keys (or resizes) the values: drop it
        # rather than hold a budget-sized tensor through the update's transients (Adam's dense gradient)
        for name in self.pos:
            self.values(name).grad = None
        self.release_buffers()

    def release_buffers(self) -> None:
        for pos in self.pos.values():
            pos.grad_pool.clear()

    def before_step(self, fast: bool) -> None:
        pass  # every stored value is active: nothing to mask

    def after_step(self, fast: bool) -> None:
        # the applied gradient's memory serves the next step's (see ``_Gather``)
        for name, pos in self.pos.items():
            g = self.values(name).grad
            if pos.gathers and g is not None and g.layout == torch.strided:
                pos.grad_pool[:] = [g]

    def state_tensors(self, name: str) -> list[Tensor]:
        """Optimiser state tensors shaped like the values (per-weight state)."""
        if self.optimizer is None:
            return []
        v = self.values(name)
        state = self.optimizer.state.get(v, {})
        return [s for s in state.values() if isinstance(s, Tensor) and s.shape == v.shape]

    @torch.no_grad()
    def set_active(self, name: str, positions: Tensor) -> int:
        """New sorted positions, as many as before: kept weights keep value and optimiser state
        (re-keyed to their new index), new ones start at zero with zero state."""
        pos = self.pos[name]
        old = pos.flat()
        positions = positions.to(old.device)
        kept = is_member(old, positions)
        src = torch.searchsorted(old, positions[kept])
        dst = flat_nonzero(kept).to(old.device)

        def rekey(t: Tensor) -> Tensor:
            moved = t.new_zeros((positions.numel(),) + tuple(t.shape[1:]))
            moved[dst] = t[src]
            return moved

        values = self.values(name)
        if positions.numel() == old.numel():
            for t in [values, *self.state_tensors(name)]:
                t.copy_(rekey(t))
        else:  # the tensor's share of a global budget changed: new tensors, state re-keyed into them
            state = self.optimizer.state.get(values, {}) if self.optimizer is not None else {}
            moved = {k: rekey(v) for k, v in state.items() if isinstance(v, Tensor) and v.shape == values.shape}
            self._install(name, rekey(values.detach()), moved)
        pos.set(positions)
        return int(positions.numel() - dst.numel())

    @torch.no_grad()
    def set_active_rows(self, name: str, cols: Tensor, counts: Tensor) -> int:
        pos = self.pos[name]
        width = cols.shape[1]
        if pos.width == width and bool((counts == width).all()):
            return self._set_regular_rows(name, cols)
        valid = torch.arange(width, device=cols.device).expand_as(cols) < counts.unsqueeze(1)
        rows = torch.arange(cols.shape[0], device=cols.device).unsqueeze(1).expand_as(cols)
        return self.set_active(name, (rows * pos.n_cols + cols.long())[valid])

    def _set_regular_rows(self, name: str, cols: Tensor) -> int:
        """``set_active_rows`` when every row keeps the same count (per_row scope): kept weights are
        found row by row (a search in each row's few sorted columns, not over the whole tensor)."""
        pos = self.pos[name]
        width = pos.width
        old_cols = pos.col.view(-1, width)
        tensors = [t.view(-1, width) for t in [self.values(name), *self.state_tensors(name)]]
        grown = 0
        for lo, hi in row_chunks(cols.shape[0], pos.n_cols):  # a slice of rows at a time: small transients
            new, old = cols[lo:hi].long(), old_cols[lo:hi].long()
            at = torch.searchsorted(old, new).clamp_(max=width - 1)
            kept = old.gather(1, at) == new
            for rows in tensors:
                part = rows[lo:hi]
                part.copy_(torch.where(kept, part.gather(1, at), part.new_zeros(())))
            old_cols[lo:hi] = new.to(old_cols.dtype)  # the row pointers do not change
            grown += kept.numel() - int(kept.sum())
        return grown

    def state_dict(self) -> dict[str, Tensor]:
        out = {}
        for n, pos in self.pos.items():
            out[f"crow/{n}"] = pos.crow.detach().cpu().clone()
            out[f"col/{n}"] = pos.col.detach().cpu().clone()
        return out

    def load_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        for n, pos in self.pos.items():
            crow, col = torch.as_tensor(sd[f"crow/{n}"]), torch.as_tensor(sd[f"col/{n}"])
            if crow.numel() != pos.n_rows + 1 or int(crow[-1]) != col.numel():
                raise DslrecError(f"saved positions of {n} do not fit this model ({crow.numel() - 1} rows saved, "
                                  f"{pos.n_rows} here); resume with the same settings")
            if col.numel() != self.count(n):
                values = self.values(n)
                self._install(n, values.detach().new_zeros(col.numel()), {})
            pos.crow = crow.to(pos.crow.device, pos.crow.dtype)
            pos.col = col.to(pos.col.device, pos.col.dtype)
            pos._find_width()


# --- compact state dicts (what a compact run saves) -------------------------------------------------

def split_compact_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """A compact model's ``state_dict`` as (plain tensors, ``{dense name: {values, crow, col, shape}}``).

    ``user.values`` + ``user.positions.*`` is the table ``user.weight``;
    ``mlp.1.parametrizations.weight.original`` + ``...weight.0.positions.*`` is ``mlp.1.weight``.
    """
    plain, compact = {}, {}
    for key, t in state.items():
        if key.endswith(".values") and f"{key[:-7]}.positions.crow" in state:
            base = key[:-7]
            compact[f"{base}.weight"] = {"values": t, **_positions(state, f"{base}.positions.")}
        elif ".parametrizations." in key and key.endswith(".original"):
            owner, rest = key.split(".parametrizations.", 1)
            attr = rest[: -len(".original")]
            prefix = f"{owner}.parametrizations.{attr}.0.positions."
            if f"{prefix}crow" not in state:
                plain[key] = t
                continue
            compact[f"{owner}.{attr}"] = {"values": t, **_positions(state, prefix)}
        elif ".positions." not in key:
            plain[key] = t
    return plain, compact


def _positions(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {"crow": state[f"{prefix}crow"], "col": state[f"{prefix}col"],
            "shape": torch.Size(state[f"{prefix}shape_"].tolist())}


def packed_masks(packed: Mapping[str, dict]) -> dict[str, Tensor]:
    """Dense bool masks of packed tensors (``split_compact_state``), for small models' cost counts."""
    out = {}
    for name, parts in packed.items():
        n_rows, n_cols = row_shape(parts["shape"])
        rows = torch.repeat_interleave(torch.arange(n_rows), parts["crow"].diff())
        mask = torch.zeros(n_rows * n_cols, dtype=torch.bool)
        mask[rows * n_cols + parts["col"].long()] = True
        out[name] = mask.view(parts["shape"])
    return out
