"""Compact storage: the same run as masked storage, in memory that follows the budget.

* equivalence: with the same seed and settings, compact and masked storage make
  identical mask decisions and reach the same weights (Adam, AdamW, SGD; every
  scope; gradient and accumulated growth; MF, NeuMF, LightGCN; several updates),
  and ``dslrec.train`` reports the same metrics;
* the storage contract, by hypothesis, for both storages: the budget is exact,
  inactive positions are zero, kept weights keep their value and optimiser
  state, new ones start at zero with zero state;
* nothing of a table's dense size is kept between steps;
* export of a compact run needs no conversion; bad combinations fail in one line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import dslrec
from dslrec import rundir
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError
from dslrec.export import Recommender, export, load
from dslrec.models.lightgcn import LightGCN
from dslrec.models.graph import normalized_adjacency
from dslrec.models.mf import MF
from dslrec.models.neumf import NeuMF
from dslrec.sparse import SparseConfig, SparseEngine
from dslrec.sparse.compact import CompactStorage
from dslrec.sparse.storage import MaskedDenseStorage

N_USERS, N_ITEMS = 40, 30


def make_optimizer(kind: str, params):
    params = list(params)
    if kind == "adam":
        return torch.optim.Adam(params, lr=0.02, fused=True)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=0.02, weight_decay=0.1)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def make_model(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    if backbone == "mf":
        return MF(N_USERS, N_ITEMS, dim=8)
    if backbone == "neumf":
        return NeuMF(N_USERS, N_ITEMS, gmf_dim=4, layers=(8, 4), dropout=0.0)
    ds = synthetic_dataset(N_USERS, N_ITEMS, seed=1)
    return LightGCN(N_USERS, N_ITEMS, normalized_adjacency(ds.train), dim=8, n_layers=2)


def batches(backbone: str, steps: int):
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        users = torch.randint(0, N_USERS, (24,), generator=g)
        if backbone == "neumf":
            yield {"users": users, "items": torch.randint(0, N_ITEMS, (24,), generator=g),
                   "labels": torch.randint(0, 2, (24,), generator=g)}
        else:
            yield {"users": users, "pos": torch.randint(0, N_ITEMS, (24,), generator=g),
                   "neg": torch.randint(0, N_ITEMS, (24,), generator=g)}


def train_engine(storage: str, backbone: str, optim: str, scope: str, grow: str, steps: int = 14):
    model = make_model(backbone)
    cfg = SparseConfig(method="dsl", density=0.3, scope=scope, grow=grow, delta_t=3, accumulate_steps=2,
                       storage=storage)
    engine = SparseEngine(model, None, cfg, total_steps=steps, seed=3)
    opt = make_optimizer(optim, model.parameters())
    engine.attach(opt)
    history = []
    for batch in batches(backbone, steps):
        opt.zero_grad()
        model.loss(batch).backward()
        engine.step()
        history.append({n: m.clone() for n, m in engine.masks.items()})
    return engine, history, {n: engine.storage.dense(n).clone() for n in engine.names}


CASES = ([("mf", optim, scope, grow) for optim in ("adam", "adamw", "sgd")
          for scope in ("per_tensor", "global", "per_row") for grow in ("gradient", "accumulated")]
         + [("neumf", "adam", "per_tensor", "gradient"), ("neumf", "sgd", "global", "accumulated"),
            ("lightgcn", "adam", "per_row", "accumulated"), ("lightgcn", "adamw", "global", "gradient")])


@pytest.mark.parametrize("backbone,optim,scope,grow", CASES)
def test_compact_makes_the_masked_decisions_and_reaches_the_same_weights(backbone, optim, scope, grow):
    masked, m_hist, m_weights = train_engine("masked", backbone, optim, scope, grow)
    compact, c_hist, c_weights = train_engine("compact", backbone, optim, scope, grow)
    assert masked.n_updates == compact.n_updates >= 4
    for step, (a, b) in enumerate(zip(m_hist, c_hist), 1):
        for n in a:
            assert torch.equal(a[n], b[n]), f"masks differ at step {step} in {n}"
    moved = sum(int((m_hist[0][n] != m_hist[-1][n]).sum()) for n in m_hist[0])
    assert moved > 0  # the updates moved weights: the comparison is not vacuous
    for n in m_weights:
        torch.testing.assert_close(c_weights[n], m_weights[n], rtol=1e-5, atol=1e-6)
        assert torch.all(c_weights[n][~c_hist[-1][n]] == 0)


@pytest.mark.parametrize("grow", ["accumulated", "random_unseen"])
def test_per_row_updates_in_slices_of_rows_stay_exact(monkeypatch, grow):
    """Big tables are decided and committed a few rows at a time: with slices of 3 rows, compact
    still makes the masked decisions, every row keeps its count, and the ever-active record holds
    every position that was active."""
    from dslrec.sparse import decisions

    monkeypatch.setattr(decisions, "ROW_CHUNK_ELEMENTS", 3 * 8)  # 3 rows of the 8-column tables
    masked, m_hist, m_weights = train_engine("masked", "mf", "adam", "per_row", grow)
    compact, c_hist, c_weights = train_engine("compact", "mf", "adam", "per_row", grow)
    assert len(decisions.row_chunks(N_USERS, 8)) > 10
    for step, (a, b) in enumerate(zip(m_hist, c_hist), 1):
        for n in a:
            assert torch.equal(a[n], b[n]), f"masks differ at step {step} in {n}"
            assert torch.equal(b[n].sum(dim=1), c_hist[0][n].sum(dim=1))  # each row's count is constant
    assert sum(int((m_hist[0][n] != m_hist[-1][n]).sum()) for n in m_hist[0]) > 0
    for n in m_weights:
        torch.testing.assert_close(c_weights[n], m_weights[n], rtol=1e-5, atol=1e-6)
        ever = compact.ever[n].dense().view(m_hist[0][n].shape)
        union = torch.stack([h[n] for h in c_hist]).any(dim=0)
        assert torch.equal(ever & union, union)  # every position active at some step is recorded


def test_per_row_decisions_do_not_depend_on_the_slicing(monkeypatch):
    """When every row has gradient and no scores tie, randomness plays no part: deciding in slices of
    3 rows gives the masks of deciding all rows at once (a slice's candidate rows are its own)."""
    from dslrec.sparse import decisions

    def run(elements):
        model = make_model("mf")
        cfg = SparseConfig(method="dsl", density=0.3, scope="per_row", grow="gradient", delta_t=3, storage="compact")
        engine = SparseEngine(model, None, cfg, total_steps=12, seed=3)  # the same initial draw
        monkeypatch.setattr(decisions, "ROW_CHUNK_ELEMENTS", elements)  # the updates' slices
        opt = make_optimizer("adam", model.parameters())
        engine.attach(opt)
        every = torch.arange(N_USERS)
        batch = {"users": every, "pos": every % N_ITEMS, "neg": (every + 7) % N_ITEMS}  # every row gets gradient
        for _ in range(12):
            opt.zero_grad()
            model.loss(batch).backward()
            engine.step()
        return {n: m.clone() for n, m in engine.masks.items()}, engine.n_updates

    whole, n_whole = run(1 << 22)
    sliced, n_sliced = run(3 * 8)
    assert n_whole == n_sliced >= 3
    for n in whole:
        assert torch.equal(whole[n], sliced[n]), n


def test_compact_keeps_no_tensor_of_a_tables_dense_size():
    model = MF(2000, 1500, dim=16)
    cfg = SparseConfig(method="dsl", density=0.1, scope="per_tensor", grow="accumulated", delta_t=4, storage="compact")
    engine = SparseEngine(model, None, cfg, total_steps=12, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    engine.attach(opt)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        batch = {k: torch.randint(0, n, (64,), generator=g) for k, n in (("users", 2000), ("pos", 1500),
                                                                          ("neg", 1500))}
        opt.zero_grad()
        model.loss(batch).backward()
        engine.step()
    smallest_table = 1500 * 16
    kept = [*model.parameters(), *model.buffers()]
    kept += [s for st_ in opt.state.values() for s in st_.values() if isinstance(s, torch.Tensor)]
    kept += [t for sig in engine.signal.values() for t in sig.get()]
    assert all(t.numel() < smallest_table // 2 for t in kept), [tuple(t.shape) for t in kept]
    assert all(e.bits.nbytes <= math.ceil(n / 8) for e, n in zip(engine.ever.values(), engine.numel.values()))
    values = sum(p.numel() for p in model.parameters())
    assert values == round(0.1 * 2000 * 16) + round(0.1 * 1500 * 16)  # the optimiser trains the budget only
    assert engine.n_updates == 2 and engine.active_count() == values


# --- the storage contract, for both storages ---------------------------------------------------------

class Table(nn.Module):
    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.emb = nn.Embedding(rows, cols)


def build_storage(kind: str, rows: int, cols: int, positions: torch.Tensor):
    torch.manual_seed(0)
    model = Table(rows, cols)
    p = model.emb.weight
    if kind == "masked":
        mask = torch.zeros(rows * cols, dtype=torch.bool)
        mask[positions] = True
        storage = MaskedDenseStorage({"emb.weight": p}, {"emb.weight": mask.view(rows, cols)}, None)
        storage.apply()
    else:
        storage = CompactStorage(model, {"emb.weight": p}, {"emb.weight": positions})
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    storage.attach(opt)
    return model, storage, opt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["masked", "compact"]), rows=st.integers(1, 8), cols=st.integers(1, 6),
       frac=st.floats(0.1, 1.0), keep_frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_storage_contract(kind, rows, cols, frac, keep_frac, seed):
    g = torch.Generator().manual_seed(seed)
    n = rows * cols
    nnz = max(1, round(frac * n))
    old = torch.randperm(n, generator=g)[:nnz].sort().values
    model, storage, opt = build_storage(kind, rows, cols, old)
    name = "emb.weight"
    # one optimiser step so that there is state to carry over
    opt.zero_grad()
    idx = torch.arange(rows)
    (model.emb(idx) ** 2).sum().backward()
    storage.before_step(fast=False)
    opt.step()
    storage.after_step(fast=False)
    before = storage.dense(name).clone()
    state_before = dense_state(storage, name)
    assert storage.count(name) == nnz
    assert torch.all(before.reshape(-1)[complement(n, old)] == 0)
    # new positions: a share of the old ones kept, the rest drawn among the others
    n_keep = round(keep_frac * nnz)
    kept = old[torch.randperm(nnz, generator=g)[:n_keep]]
    others = complement(n, kept)
    new = torch.cat([kept, others[torch.randperm(others.numel(), generator=g)[: nnz - n_keep]]]).sort().values
    grown = storage.set_active(name, new)
    after = storage.dense(name).reshape(-1)
    state_after = dense_state(storage, name)
    assert storage.count(name) == nnz == int(storage.mask(name).sum())  # budget exact
    assert grown == int((~torch.isin(new, old)).sum())
    assert torch.all(after[complement(n, new)] == 0)  # inactive positions are zero
    fresh = new[~torch.isin(new, old)]
    assert torch.all(after[fresh] == 0)  # new weights start at zero ...
    both = new[torch.isin(new, old)]
    assert torch.equal(after[both], before.reshape(-1)[both])  # ... kept ones keep their value
    for key in state_before:
        assert torch.all(state_after[key][fresh] == 0) and torch.all(state_after[key][complement(n, new)] == 0)
        assert torch.equal(state_after[key][both], state_before[key][both]), key  # and their state
    assert torch.equal(storage.row_counts(name), storage.mask(name).sum(dim=1))
    pos, w = storage.active(name)
    assert torch.equal(pos, new) and torch.equal(w, after[new])


def complement(n: int, positions: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[positions] = False
    return keep.nonzero().squeeze(1)


def dense_state(storage, name: str) -> dict[str, torch.Tensor]:
    """Adam's moments as dense flat tensors, whichever storage holds them."""
    if isinstance(storage, MaskedDenseStorage):
        state = storage.optimizer.state[storage.params[name]]
        return {k: state[k].reshape(-1).clone() for k in ("exp_avg", "exp_avg_sq")}
    v = storage.values(name)
    state = storage.optimizer.state[v]
    pos, _ = storage.active(name)
    n = math.prod(storage.shapes[name])
    return {k: torch.zeros(n).index_copy_(0, pos, state[k]) for k in ("exp_avg", "exp_avg_sq")}


# --- through dslrec.train ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n_users=150, n_items=100, seed=4)


RUN = dict(model="mf", dim=16, epochs=3, method="dsl", density=0.2, delta_t=5, batch_size=256, lr=5e-3)


@pytest.mark.parametrize("scope", ["per_row", "global"])
def test_a_compact_run_reports_what_the_masked_run_reports(small, tmp_path, scope):
    a = dslrec.train(dict(RUN, scope=scope), dataset=small, out=tmp_path / "masked", progress=False)
    b = dslrec.train(dict(RUN, scope=scope, storage="compact"), dataset=small, out=tmp_path / "compact",
                     progress=False)
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("valid", "test"):
        for key, value in a[split].items():
            assert b[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert a["params"] == b["params"]
    # the compact run's export: no conversion, the masked run's masks, the same recommendations
    export(tmp_path / "masked", tmp_path / "m.dslrec")
    export(tmp_path / "compact", tmp_path / "c.dslrec")
    masks = rundir.load_weights(tmp_path / "masked" / rundir.BEST_MASKS)
    packed = load(tmp_path / "c.dslrec")
    for name, mask in masks.items():
        assert np.array_equal(packed.mask(name), mask.numpy().astype(bool))
    assert not (tmp_path / "compact" / rundir.BEST_MASKS).exists()  # positions travel with the weights
    got_m = Recommender.load(tmp_path / "m.dslrec").recommend(small.user_ids, k=10)
    got_c = Recommender.load(tmp_path / "c.dslrec").recommend(small.user_ids, k=10)
    np.testing.assert_allclose(got_c.scores, got_m.scores, atol=1e-5)


@pytest.mark.parametrize("settings_", [dict(), dict(method="static"), dict(optimizer="sparse_adam")])
def test_a_finished_compact_run_resumes_to_its_summary(small, tmp_path, settings_):
    """``--resume`` on a finished compact run rebuilds its compact model (no dense tables) and reports
    what it reported: the test metrics of its best weights."""
    first = dslrec.train(dict(RUN, storage="compact", **settings_), dataset=small, out=tmp_path / "run",
                         progress=False)
    again = dslrec.train(resume=tmp_path / "run", dataset=small, progress=False)
    assert again["test"] == first["test"] and again["best_epoch"] == first["best_epoch"]
    assert again["params"] == first["params"]


def test_sparse_adam_learns_and_is_the_same_on_both_storages(small, tmp_path):
    common = dict(model="mf", dim=16, epochs=4, lr=1e-2, batch_size=256, patience=0)
    adam = dslrec.train(common, dataset=small, out=tmp_path / "adam", progress=False)
    lazy = dslrec.train(dict(common, optimizer="sparse_adam"), dataset=small, out=tmp_path / "lazy", progress=False)
    assert lazy["valid"]["recall@20"] > 0.8 * adam["valid"]["recall@20"]
    sparse = dict(common, method="dsl", density=0.2, delta_t=5, optimizer="sparse_adam")
    masked = dslrec.train(sparse, dataset=small, out=tmp_path / "masked", progress=False)
    compact = dslrec.train(dict(sparse, storage="compact"), dataset=small, out=tmp_path / "compact", progress=False)
    for key, value in masked["test"].items():
        assert compact["test"][key] == pytest.approx(value, abs=1e-6), key


def test_lazy_adam_moves_only_the_rows_a_batch_looked_up():
    from dslrec.training.optim import lazy_adam

    torch.manual_seed(0)
    model = MF(30, 20, dim=4)
    opt = lazy_adam(model, lr=0.1)
    before = model.user.weight.detach().clone()
    users = torch.tensor([1, 4, 4])
    model.loss({"users": users, "pos": torch.tensor([0, 1, 2]), "neg": torch.tensor([3, 4, 5])}).backward()
    opt.step()
    moved = (model.user.weight.detach() != before).any(dim=1)
    assert moved.nonzero().squeeze(1).tolist() == [1, 4]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    sched.step()
    assert all(g["lr"] < 0.1 for g in opt.param_groups)
    opt.load_state_dict(opt.state_dict())
    assert opt._inner[0].param_groups[0] is opt.param_groups[0]


@pytest.mark.parametrize("settings_, needle", [
    (dict(method="gmp", density=0.2, storage="compact"), "needs --storage masked"),
    (dict(method="oneshot", density=0.2, storage="compact"), "needs --storage masked"),
    (dict(method="dsl", density=0.2, storage="sparse"), "storage"),
    (dict(model="lightgcn", optimizer="sparse_adam"), "dense gradient"),
    (dict(optimizer="sparse_adam", weight_decay=0.1), "no weight decay"),
])
def test_bad_combinations_fail_in_one_line(small, tmp_path, settings_, needle):
    with pytest.raises(DslrecError, match=needle) as err:
        dslrec.train(dict(dict(model="mf", epochs=1, batch_size=256), **settings_), dataset=small,
                     out=tmp_path / "run", progress=False)
    assert "\n" not in str(err.value)


def test_a_lookups_dense_gradient_reuses_the_last_steps_memory_until_released():
    """The values' gradient is written into the previous step's buffer (no budget-sized tensor made
    afresh per step), the same numbers as a fresh one; ``release_buffers`` (before an evaluation)
    and an update let it go."""
    torch.manual_seed(0)
    model = MF(50, 40, dim=8)
    engine = SparseEngine(model, None, SparseConfig(density=0.3, storage="compact", delta_t=1000), total_steps=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    engine.attach(opt)
    ptrs = []
    for i in range(3):  # other users each step: a stale gradient would show in their rows
        batch = {"users": torch.arange(10 * i, 10 * i + 10), "pos": torch.arange(10), "neg": torch.arange(10, 20)}
        opt.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        grad = model.user.values.grad
        ptrs.append(grad.data_ptr())
        # what a fresh buffer would hold: gradient at the looked-up users' values only
        rows = model.user.positions.rows()
        looked = (rows >= 10 * i) & (rows < 10 * i + 10)
        assert bool((grad[~looked] == 0).all()) and bool((grad[looked] != 0).any())
        engine.step()
        del grad  # (a reference kept elsewhere makes autograd copy the buffer instead of taking it)
    assert ptrs[0] == ptrs[1] == ptrs[2]
    assert model.user.positions.grad_pool  # held between steps ...
    engine.release_buffers()
    assert not model.user.positions.grad_pool  # ... until training pauses


def test_engine_refuses_an_optimizer_built_before_compact_storage():
    model = MF(10, 10, dim=4)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(DslrecError, match="build the optimiser after the engine"):
        SparseEngine(model, opt, SparseConfig(storage="compact"), total_steps=5)


# --- building without the dense tables --------------------------------------------------------------

@pytest.mark.parametrize("build", [lambda: MF(1003, 77, dim=13), lambda: NeuMF(1001, 333, gmf_dim=8, layers=(16, 8))],
                         ids=["mf", "neumf"])
def test_deferred_build_makes_the_constructors_weights_without_dense_tables(build, monkeypatch):
    from dslrec.sparse import deferred

    monkeypatch.setattr(deferred, "BLOCK", 48)  # many blocks of the random stream, a ragged last one
    torch.manual_seed(5)
    dense = build()
    after = torch.get_rng_state()
    torch.manual_seed(5)
    model, d = deferred.deferred_build(build, torch.device("cpu"))
    assert d is not None and all(p.is_meta for p in model.parameters())
    params = dict(dense.named_parameters())
    g = torch.Generator().manual_seed(0)
    pos = {n: torch.randperm(p.numel(), generator=g)[: p.numel() // 3].sort().values
           for n, p in params.items() if p.ndim >= 2}
    values = d.materialise(pos)
    for n, p in pos.items():
        assert torch.equal(params[n].detach().reshape(-1)[p], values[n]), n
    for n, q in model.named_parameters():
        if n not in pos:
            assert torch.equal(params[n].detach(), q.detach()), n
    assert torch.equal(after, torch.get_rng_state())  # the random stream continues as after the constructor


def test_deferred_build_loads_none_of_torchs_python_decompositions():
    """Filling meta tensors is skipped: meta ``normal_`` alone would import sympy and dynamo (about
    75 MB resident, a quarter of compact training's peak on the 2M-user benchmark)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from dslrec.sparse.deferred import deferred_build\n"
            "from dslrec.models.mf import MF\n"
            "from dslrec.models.neumf import NeuMF\n"
            "for build in (lambda: MF(1000, 500), lambda: NeuMF(100, 50)):\n"
            "    assert deferred_build(build, torch.device('cpu'))[1] is not None\n"
            "print(sorted(m for m in ('sympy', 'torch._dynamo') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class RandomInit(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))


def test_deferred_build_falls_back_when_it_cannot_replay():
    from dslrec.sparse.deferred import deferred_build

    model, d = deferred_build(RandomInit, torch.device("cpu"))  # a random factory: not replayable
    assert d is None and not model.w.is_meta
    model, d = deferred_build(lambda: make_model("lightgcn"), torch.device("cpu"))  # a graph buffer
    assert d is None and not model.embedding.weight.is_meta
