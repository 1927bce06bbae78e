"""Sparse engine: decisions on hand-made tensors, schedules, ERK, resume, custom modules, PEP, GMP."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dslrec.errors import DslrecError
from dslrec.sparse import SparseConfig, SparseEngine, erk_counts, magnitude_masks, sparsifiable_parameters
from dslrec.sparse import decisions, schedule
from dslrec.sparse.storage import MaskedDenseStorage


def B(*bits):
    return torch.tensor(bits, dtype=torch.bool)


def where(mask):
    return sorted(mask.nonzero().squeeze(1).tolist())


# --- decisions ---------------------------------------------------------------------------

def test_magnitude_prune_picks_smallest_active():
    w = torch.tensor([0.5, -0.1, 0.3, 2.0, -0.05, 0.0, 0.01])
    mask = B(1, 1, 1, 1, 1, 0, 0)  # the two smallest |w| are inactive and must not be chosen
    assert where(decisions.choose_prune("magnitude", w, mask, 2)) == [1, 4]
    assert where(decisions.choose_prune("magnitude", w, mask, 3)) == [1, 2, 4]


def test_set_prune_takes_half_from_each_side_closest_to_zero():
    w = torch.tensor([0.1, 0.2, 0.9, -0.1, -0.3, -0.8, -0.01])
    mask = B(1, 1, 1, 1, 1, 1, 0)
    assert where(decisions.choose_prune("set", w, mask, 4)) == [0, 1, 3, 4]
    # odd k: k // 2 = 1 from the negative side, the rest from the non-negative side
    assert where(decisions.choose_prune("set", w, mask, 3)) == [0, 1, 3]


def test_set_prune_when_one_side_runs_short():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4, -0.5])
    mask = torch.ones(5, dtype=torch.bool)
    # one negative weight only: it goes, the other three come from the positive side
    assert where(decisions.choose_prune("set", w, mask, 4)) == [0, 1, 2, 4]
    assert where(decisions.choose_prune("set", -w, mask, 4)) == [0, 1, 2, 4]


def test_taylor_prune_uses_weight_times_gradient():
    w = torch.tensor([1.0, 0.1, 2.0, 0.5])
    g = torch.tensor([0.01, 5.0, 1.0, 0.1])  # |w g| = 0.01, 0.5, 2.0, 0.05
    mask = torch.ones(4, dtype=torch.bool)
    assert where(decisions.choose_prune("taylor", w, mask, 2, grad=g)) == [0, 3]
    assert where(decisions.choose_prune("magnitude", w, mask, 2)) == [1, 3]


def test_gradient_grow_regrows_a_just_pruned_weight_with_large_gradient():
    w = torch.tensor([0.9, 0.01, 0.8, 0.0, 0.0, 0.0])
    mask = B(1, 1, 1, 0, 0, 0)
    g = torch.tensor([0.0, 3.0, 0.0, 1.0, 2.0, 0.5])
    new = decisions.prune_and_grow(mask, w, 1, "magnitude", "gradient", grad=g)
    assert where(new) == [0, 1, 2]  # position 1 pruned (smallest |w|) then regrown (largest |g|)
    new = decisions.prune_and_grow(mask, w, 2, "magnitude", "gradient", grad=g)
    assert where(new) == [0, 1, 4]  # 1 and 2 pruned; 1 (|g|=3) and 4 (|g|=2) grown


def test_momentum_and_accumulated_grow_follow_the_signal_not_the_gradient():
    w = torch.tensor([0.9, 0.01, 0.0, 0.0])
    mask = B(1, 1, 0, 0)
    g = torch.tensor([0.0, 0.0, 5.0, 0.0])
    signal = torch.tensor([0.0, 0.0, 0.1, -2.0])
    for kind in ("momentum", "accumulated"):
        new = decisions.prune_and_grow(mask, w, 1, "magnitude", kind, grad=g, signal=signal)
        assert where(new) == [0, 3]
    assert where(decisions.prune_and_grow(mask, w, 1, "magnitude", "gradient", grad=g, signal=signal)) == [0, 2]


def test_random_unseen_prefers_never_active_positions():
    mask = B(1, 1, 0, 0, 0, 0)
    ever = B(1, 1, 1, 1, 0, 0)
    w = torch.tensor([0.5, 0.6, 0.0, 0.0, 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        new = decisions.prune_and_grow(mask, w, 2, "magnitude", "random_unseen", ever_active=ever, generator=gen)
        assert where(new) == [4, 5]
    # only one never-active position left: the other grown position is any other inactive one
    ever = B(1, 1, 1, 1, 1, 0)
    new = decisions.prune_and_grow(mask, w, 2, "magnitude", "random_unseen", ever_active=ever, generator=gen)
    assert new[5] and int(new.sum()) == 2


def test_ties_are_broken_at_random_and_reproducibly():
    scores = torch.zeros(1000)
    eligible = torch.ones(1000, dtype=torch.bool)
    a = decisions.select_largest(scores, eligible, 100, torch.Generator().manual_seed(1))
    b = decisions.select_largest(scores, eligible, 100, torch.Generator().manual_seed(1))
    c = decisions.select_largest(scores, eligible, 100, torch.Generator().manual_seed(2))
    assert int(a.sum()) == 100 and torch.equal(a, b) and not torch.equal(a, c)
    # not biased towards low indices (index-order tie-breaking would pick 0..99)
    assert where(a)[-1] > 500 and where(a)[0] < 500


@pytest.mark.parametrize("n,k", [(40, 3), (40, 25)])  # the few-of-many and the large-share paths
def test_random_subsets_are_distinct_exact_and_uniform(n, k):
    gen = torch.Generator().manual_seed(0)
    hits = torch.zeros(n)
    draws = 2000
    for _ in range(draws):
        idx = decisions._random_subset(n, k, gen, torch.device("cpu"))
        assert idx.numel() == k and idx.unique().numel() == k and int(idx.min()) >= 0 and int(idx.max()) < n
        hits[idx] += 1
    expected = draws * k / n
    assert float((hits - expected).abs().max()) < 5 * expected ** 0.5  # every index about equally often


@pytest.mark.parametrize("k", [3, 20])  # drawn from the pool's positions / picked by index
def test_random_pick_is_exact_inside_the_pool_and_uniform(k):
    gen = torch.Generator().manual_seed(0)
    pool = torch.ones(60, dtype=torch.bool)
    pool[::5] = False  # 48 positions
    hits = torch.zeros(60)
    draws = 2000
    for _ in range(draws):
        picked = decisions.random_pick(pool, k, gen)
        assert int(picked.sum()) == k and not torch.any(picked & ~pool)
        hits += picked
    expected = draws * k / 48
    assert hits[~pool].sum() == 0
    assert float((hits[pool] - expected).abs().max()) < 5 * expected ** 0.5


def test_selection_with_clear_winners_and_ties_at_cutoff():
    scores = torch.tensor([5.0, 1.0, 1.0, 1.0, 9.0, 0.0, 7.0])
    eligible = B(1, 1, 1, 1, 1, 1, 0)
    chosen = decisions.select_largest(scores, eligible, 3, torch.Generator().manual_seed(0))
    assert chosen[4] and chosen[0] and not chosen[6] and not chosen[5]
    assert int(chosen[1:4].sum()) == 1


def test_nan_scores_raise_a_clear_error():
    w = torch.tensor([float("nan"), float("nan"), 1.0])
    with pytest.raises(DslrecError, match="diverged"):
        decisions.choose_prune("magnitude", w, torch.ones(3, dtype=torch.bool), 2)


# --- storage: what pruned, regrown and new weights keep --------------------------------------

def test_storage_keeps_regrown_and_zeroes_new_and_pruned():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 0.0]))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    opt.step()
    st = MaskedDenseStorage({"p": p}, {"p": B(1, 1, 1, 0)}, opt)
    st.apply()
    before = p.detach().clone()
    m_before = opt.state[p]["exp_avg"].clone()
    st.set_mask("p", B(1, 0, 0, 1))  # 0 stays, 1 and 2 pruned, 3 newly grown
    assert p[0] == before[0] and opt.state[p]["exp_avg"][0] == m_before[0]
    assert p[1:].abs().sum() == 0
    for s in ("exp_avg", "exp_avg_sq"):
        assert opt.state[p][s][1:].abs().sum() == 0


# --- schedules ---------------------------------------------------------------------------------

def test_update_ratio_schedules():
    T, z0, lo = 1000, 0.5, 0.005
    assert schedule.update_ratio("cosine", 0, T, z0, lo) == pytest.approx(0.5)
    assert schedule.update_ratio("cosine", T, T, z0, lo) == pytest.approx(0.005)
    assert schedule.update_ratio("cosine", T // 2, T, z0, lo) == pytest.approx((0.5 + 0.005) / 2)
    assert schedule.update_ratio("cosine", 250, T, z0, lo) == pytest.approx(
        lo + 0.5 * (z0 - lo) * (1 + math.cos(math.pi / 4)))
    assert schedule.update_ratio("linear", 250, T, z0, lo) == pytest.approx(lo + (z0 - lo) * 0.75)
    assert schedule.update_ratio("constant", 999, T, z0, lo) == 0.5
    assert schedule.n_moved(0.3, 10) == 3 and schedule.n_moved(0.31, 10) == 4 and schedule.n_moved(0.5, 0) == 0


def test_gmp_density_is_cubic_and_reaches_target():
    d = [schedule.gmp_density(t, 100, 0.2, 0.0, 0.75) for t in range(101)]
    assert d[0] == 1.0 and d[75] == pytest.approx(0.2) and d[100] == 0.2
    assert all(a >= b for a, b in zip(d, d[1:]))
    assert d[25] == pytest.approx(1 - 0.8 * (1 - (2 / 3) ** 3))


# --- masks ---------------------------------------------------------------------------------

def test_erk_counts_sum_to_budget_and_favour_small_layers():
    shapes = {"emb": torch.Size([1000, 16]), "fc1": torch.Size([16, 64]), "fc2": torch.Size([64, 1])}
    total = 16000 + 1024 + 64
    for density in (0.05, 0.2, 0.5, 0.9, 1.0):
        counts = erk_counts(shapes, density)
        assert sum(counts.values()) == round(density * total)
        assert all(0 <= counts[n] <= math.prod(s) for n, s in shapes.items())
    counts = erk_counts(shapes, 0.2)
    dens = {n: counts[n] / math.prod(s) for n, s in shapes.items()}
    assert dens["fc2"] == 1.0  # (64 + 1) / 64 > 1 after scaling: capped, budget redistributed
    # the uncapped layers follow (n_in + n_out) / (n_in n_out)
    assert dens["fc1"] / dens["emb"] == pytest.approx((80 / 1024) / (1016 / 16000), rel=0.01)


def test_magnitude_masks_per_tensor_and_global():
    a = torch.tensor([[0.1, -5.0], [0.2, 0.3]])
    b = torch.tensor([[4.0, 0.01, -3.0, 0.02]])
    per = magnitude_masks({"a": a, "b": b}, 0.5, "per_tensor")
    assert per["a"].tolist() == [[False, True], [False, True]] and per["b"].tolist() == [[True, False, True, False]]
    glob = magnitude_masks([("a", a), ("b", b)], 0.5, "global")
    assert glob["a"].tolist() == [[False, True], [False, True]] and glob["b"].tolist() == [[True, False, True, False]]
    glob = magnitude_masks({"a": a, "b": b}, 0.25, "global")
    assert int(glob["a"].sum()) == 1 and int(glob["b"].sum()) == 1 and glob["a"][0, 1] and glob["b"][0, 0]


def test_magnitude_masks_per_row_keep_the_largest_of_every_row():
    a = torch.tensor([[0.1, -5.0, 0.3, 0.2], [7.0, 6.0, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    m = magnitude_masks({"a": a}, 0.5, "per_row", torch.Generator().manual_seed(0))["a"]
    assert m[:2].tolist() == [[False, True, True, False], [True, True, False, False]]
    assert m.sum(dim=1).tolist() == [2, 2, 2]  # an all-tie row still gets exactly its budget


def test_rows_select_breaks_ties_at_random_per_row():
    # every row is one big tie: each position must be picked about equally often
    hits = torch.zeros(4, 10)
    gen = torch.Generator().manual_seed(1)
    for _ in range(400):
        hits += decisions.rows_select(torch.zeros(4, 10), torch.ones(4, 10, dtype=torch.bool), 3, gen).float()
    assert torch.all(hits.sum(dim=1) == 1200)
    assert hits.min() > 80 and hits.max() < 160  # expectation 120 per position


def test_rows_select_orders_negative_scores_and_ignores_nan_where_ineligible():
    nan = float("nan")
    scores = torch.tensor([[-3.0, 2.0, -0.5, nan, 0.0], [nan, -1.0, -2.0, 4.0, -0.0]])
    eligible = torch.tensor([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    smallest = decisions.rows_select(scores, eligible, 2, gen)
    assert smallest.tolist() == [[True, False, True, False, False], [False, True, True, False, False]]
    largest = decisions.rows_select(scores, eligible, 2, gen, largest=True)
    assert largest.tolist() == [[False, True, False, False, True], [False, False, False, True, True]]
    scores[0, 1] = nan  # now where it is eligible
    with pytest.raises(DslrecError, match="diverged"):
        decisions.rows_select(scores, eligible, 2, gen)


def test_per_row_scope_rejects_erk_and_pep():
    with pytest.raises(DslrecError, match="per_row"):
        SparseConfig(method="dsl", scope="per_row", init="erk")
    with pytest.raises(DslrecError, match="per_row"):
        SparseConfig(method="pep", scope="per_row")


def test_per_row_dsl_moves_weights_inside_rows_only():
    torch.manual_seed(0)
    model = nn.Embedding(40, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    engine = SparseEngine(model, opt, SparseConfig(method="dsl", density=0.3, scope="per_row", delta_t=2,
                                                   grow="accumulated", accumulate_steps=2), total_steps=20)
    g = torch.Generator().manual_seed(0)
    start = engine.masks["weight"].clone()
    for _ in range(20):
        opt.zero_grad()
        rows = torch.randint(0, 40, (8,), generator=g)
        (model(rows) - 1.0).square().sum().backward()
        engine.step()
        assert engine.masks["weight"].sum(dim=1).tolist() == [3] * 40
        assert torch.count_nonzero(model.weight.detach()[~engine.masks["weight"]]) == 0
    assert engine.n_updates == 9 and not torch.equal(start, engine.masks["weight"])
    assert engine.epoch_record()["active"] == 120


# --- engine on a user's own module -----------------------------------------------------------

class TwoTower(nn.Module):
    """Not a dslrec backbone: an embedding, a linear layer with bias and a layer norm."""

    def __init__(self, n=30, m=20, d=8):
        super().__init__()
        self.users = nn.Embedding(n, d)
        self.items = nn.Embedding(m, d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, u, i):
        return (self.norm(self.proj(self.users(u))) * self.items(i)).sum(-1)


def batches(n_batches, seed=0, n=30, m=20):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, n, (8,), generator=g), torch.randint(0, m, (8,), generator=g),
             torch.rand(8, generator=g)) for _ in range(n_batches)]


def train(model, engine, optimizer, data):
    for u, i, y in data:
        optimizer.zero_grad()
        ((model(u, i) - y) ** 2).mean().backward()
        engine.step()


def test_engine_on_custom_module_keeps_budget_and_dense_biases():
    torch.manual_seed(0)
    model = TwoTower()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    cfg = SparseConfig(method="dsl", density=0.25, delta_t=3, grow="gradient")
    engine = SparseEngine(model, opt, cfg, total_steps=30, seed=1)
    assert engine.names == ["users.weight", "items.weight", "proj.weight"]
    budgets = {n: round(0.25 * p.numel()) for n, p in engine.params.items()}
    dense_before = {n: p.detach().clone() for n, p in model.named_parameters() if n not in engine.params}
    train(model, engine, opt, batches(30))
    for n, p in engine.params.items():
        assert int(engine.masks[n].sum()) == budgets[n]
        assert p[~engine.masks[n]].abs().sum() == 0
    # biases and the norm stay dense: trained in every entry, none held at zero
    params = dict(model.named_parameters())
    assert set(dense_before) == {"proj.bias", "norm.weight", "norm.bias"}
    for n, before in dense_before.items():
        assert (params[n] != before).all() and (params[n] != 0).all(), n
    rec = engine.epoch_record()
    json.dumps(rec)
    assert rec["n_updates"] == 9 and rec["active"] == sum(budgets.values())
    assert rec["exploration_rate"] > 0.25 and rec["moved"] > 0
    assert rec["tensors"]["users.weight"]["moved"] > 0
    assert engine.epoch_record()["moved"] == 0  # counters reset at each record
    rows = engine.row_counts("items.weight")
    assert rows.shape == (20,) and int(rows.sum()) == budgets["items.weight"]


def test_include_exclude_globs_and_no_match_error():
    model = TwoTower()
    names = [n for n, _ in sparsifiable_parameters(model, include=["*.weight"], exclude=["norm.*"])]
    assert names == ["users.weight", "items.weight", "proj.weight"]
    names = [n for n, _ in sparsifiable_parameters(model, include=["*s.weight"])]
    assert names == ["users.weight", "items.weight"]
    with pytest.raises(DslrecError, match="no parameter"):
        SparseEngine(model, None, SparseConfig(include=["nothing*"]), total_steps=10)


def test_bad_config_is_a_dslrec_error():
    with pytest.raises(DslrecError, match="density"):
        SparseConfig(density=0.0)
    with pytest.raises(DslrecError, match="grow"):
        SparseConfig(grow="magic")
    with pytest.raises(DslrecError, match="unknown sparse setting"):
        SparseConfig.from_dict({"densty": 0.2})


def test_fast_and_full_remasking_train_identically():
    results = []
    for remask in ("auto", "full"):
        torch.manual_seed(0)
        model = TwoTower()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        engine = SparseEngine(model, opt, SparseConfig(density=0.3, delta_t=4, remask=remask), total_steps=20)
        assert engine._fast == (remask == "auto")
        train(model, engine, opt, batches(20))
        results.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_given_masks_are_frozen_with_static_method():
    torch.manual_seed(0)
    model = TwoTower()
    masks = magnitude_masks(dict(sparsifiable_parameters(model)), 0.3, "global")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, opt, SparseConfig(method="static", density=0.3), total_steps=10, masks=masks)
    train(model, engine, opt, batches(10))
    for n in engine.names:
        assert torch.equal(engine.masks[n], masks[n])
    with pytest.raises(DslrecError, match="do not match"):
        SparseEngine(model, opt, SparseConfig(method="static"), total_steps=10,
                     masks={"users.weight": masks["users.weight"]})


def test_accumulated_grow_sums_only_the_window_before_an_update():
    model = TwoTower()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put: decisions depend on gradients only
    cfg = SparseConfig(method="dsl", density=0.5, delta_t=10, grow="accumulated", accumulate_steps=3,
                       include=["proj.weight"])
    engine = SparseEngine(model, opt, cfg, total_steps=100)
    p = model.proj.weight
    inactive = (~engine.masks["proj.weight"]).nonzero()
    loud, steady = tuple(inactive[0].tolist()), tuple(inactive[1].tolist())
    for t in range(1, 11):
        p.grad = torch.zeros_like(p)
        if t <= 7:
            p.grad[loud] = 100.0  # outside the window: must be ignored
        else:
            p.grad[steady] = 1.0  # steps 8, 9, 10
        assert ("proj.weight" in engine.signal) == (t >= 9)  # signal holds the steps already taken
        if t == 10:  # the signal is kept per row, for the rows that received gradient
            rows, block = engine.signal["proj.weight"].get()
            signal = torch.zeros_like(p).index_copy_(0, rows, block)
            assert signal[steady] == 2.0 and signal[loud] == 0.0 and rows.tolist() == [steady[0]]
        engine.step()
    assert engine.n_updates == 1 and engine.signal == {}
    assert engine.masks["proj.weight"][steady]  # the only position with a non-zero accumulated gradient


# --- resume -------------------------------------------------------------------------------------

@pytest.mark.parametrize("grow", ["random", "gradient", "momentum"])
def test_state_dict_round_trip_reproduces_masks(tmp_path, grow):
    def build():
        torch.manual_seed(0)
        model = TwoTower()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        cfg = SparseConfig(method="dsl", density=0.3, delta_t=3, grow=grow, scope="global", accumulate_steps=2)
        return model, opt, SparseEngine(model, opt, cfg, total_steps=40, seed=5)

    data = batches(40, seed=3)
    model, opt, engine = build()
    train(model, engine, opt, data[:20])
    save_file(engine.state_dict(), tmp_path / "engine.safetensors")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "rest.pt")
    train(model, engine, opt, data[20:])
    expected = {n: m.clone() for n, m in engine.masks.items()}

    model2, opt2, engine2 = build()
    engine2.load_state_dict(load_file(tmp_path / "engine.safetensors"))
    rest = torch.load(tmp_path / "rest.pt", weights_only=True)
    model2.load_state_dict(rest["model"])
    opt2.load_state_dict(rest["opt"])
    assert engine2.t == 20
    train(model2, engine2, opt2, data[20:])
    for n in expected:
        assert torch.equal(engine2.masks[n], expected[n]), n
    assert torch.equal(model2.users.weight, model.users.weight)


def test_load_state_dict_rejects_other_model():
    engine = SparseEngine(TwoTower(), None, SparseConfig(), total_steps=10)
    other = SparseEngine(TwoTower(n=31), None, SparseConfig(), total_steps=10)
    with pytest.raises(DslrecError, match="shape"):
        other.load_state_dict(engine.state_dict())


# --- baselines ------------------------------------------------------------------------------------

def test_gmp_prunes_monotonically_to_exact_target():
    torch.manual_seed(0)
    model = TwoTower()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    engine = SparseEngine(model, opt, SparseConfig(method="gmp", density=0.2, delta_t=2), total_steps=40)
    counts = [engine.active_count()]
    assert counts[0] == engine.sparsifiable_count() and not engine.at_target()
    for batch in batches(40):
        train(model, engine, opt, [batch])
        counts.append(engine.active_count())
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert engine.at_target() and counts[30] == counts[-1]
    for n, p in engine.params.items():
        assert int(engine.masks[n].sum()) == round(0.2 * p.numel())


def test_pep_reaches_target_density_and_freezes():
    torch.manual_seed(0)
    model = TwoTower()
    with torch.no_grad():  # recommender-style small initial embeddings
        model.users.weight.mul_(0.1)
        model.items.weight.mul_(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    cfg = SparseConfig(method="pep", density=0.3, pep_init=-6.0, include=["users.weight", "items.weight"])
    engine = SparseEngine(model, opt, cfg, total_steps=3000)
    assert len(opt.param_groups) == 3  # one group per threshold
    start = engine.active_count()
    assert start > 0.9 * engine.sparsifiable_count() and not engine.at_target()
    frozen_at = None
    for t, (u, i, y) in enumerate(batches(3000)):
        opt.zero_grad()
        # an L2 penalty on the effective embeddings pushes the thresholds up, as in PEP's training
        loss = ((model(u, i) - y) ** 2).mean() + 0.1 * (model.users.weight.square().sum()
                                                         + model.items.weight.square().sum())
        loss.backward()
        engine.step()
        if engine.at_target():
            frozen_at = t
            break
    assert frozen_at is not None and frozen_at < 0.75 * 3000  # reached by learning, not by the deadline
    names = [n for n, _ in model.named_parameters()]
    assert "users.weight" in names and not any("parametrizations" in n for n in names)
    for n in ("users.weight", "items.weight"):
        p = engine.params[n]
        assert int(engine.masks[n].sum()) == round(0.3 * p.numel())
        assert p[~engine.masks[n]].abs().sum() == 0
    train(model, engine, opt, batches(20, seed=9))
    for n in ("users.weight", "items.weight"):
        assert int(engine.masks[n].sum()) == round(0.3 * engine.params[n].numel())
        assert engine.params[n][~engine.masks[n]].abs().sum() == 0


def test_pep_deadline_forces_the_budget():
    torch.manual_seed(0)
    model = TwoTower()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # far too slow to prune by itself
    cfg = SparseConfig(method="pep", density=0.3, pep_deadline=0.5, include=["items.weight"])
    engine = SparseEngine(model, opt, cfg, total_steps=20)
    train(model, engine, opt, batches(9))
    assert not engine.at_target()
    train(model, engine, opt, batches(1))
    assert engine.at_target() and engine.active_count() == round(0.3 * 160)


def test_dense_method_reports_counts_and_changes_nothing():
    def build():
        torch.manual_seed(0)
        model = TwoTower()
        return model, torch.optim.Adam(model.parameters(), lr=0.05)

    data = batches(10)
    model, opt = build()
    engine = SparseEngine(model, opt, SparseConfig(method="dense"), total_steps=10)
    train(model, engine, opt, data)
    # the same steps without an engine: weights and optimiser state come out bit for bit the same
    plain, plain_opt = build()
    for u, i, y in data:
        plain_opt.zero_grad()
        ((plain(u, i) - y) ** 2).mean().backward()
        plain_opt.step()
    for (name, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        assert torch.equal(p, q), name
        for key, value in opt.state[p].items():
            assert torch.equal(value, plain_opt.state[q][key]), (name, key)
    assert engine.active_count() == engine.sparsifiable_count() == 30 * 8 + 20 * 8 + 64
    assert all(bool(m.all()) for m in engine.masks.values()) and engine.n_updates == 0
    assert engine.epoch_record()["density"] == 1.0


@pytest.mark.parametrize("save_at", [3, 8])  # before and after the mask is frozen (deadline at step 5)
def test_pep_resume_in_the_training_loop_order(save_at):
    def build():
        torch.manual_seed(0)
        model = TwoTower()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        cfg = SparseConfig(method="pep", density=0.3, pep_deadline=0.5, include=["items.weight"])
        return model, opt, SparseEngine(model, opt, cfg, total_steps=10)

    data = batches(10)
    model, opt, engine = build()
    train(model, engine, opt, data[:save_at])
    saved = {"engine": engine.state_dict(), "model": {k: v.clone() for k, v in model.state_dict().items()},
             "opt": copy.deepcopy(opt.state_dict())}
    train(model, engine, opt, data[save_at:])

    model2, opt2, engine2 = build()
    engine2.load_state_dict(saved["engine"])  # first: it may remove the parametrization
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    train(model2, engine2, opt2, data[save_at:])
    assert engine2.at_target() and torch.equal(engine2.masks["items.weight"], engine.masks["items.weight"])
    assert torch.equal(model2.items.weight, model.items.weight)


def test_torch_selection_path_used_on_gpus_gives_exact_counts(monkeypatch):
    monkeypatch.setattr(decisions, "USE_NUMPY", False)
    gen = torch.Generator().manual_seed(0)
    n = 5000
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:1000]] = True
    w = torch.randn(n, generator=gen) * mask
    grad = torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) < 0.1)
    for prune in ("magnitude", "set", "taylor"):
        for grow in ("gradient", "random"):
            new = decisions.prune_and_grow(mask, w, 400, prune, grow, grad=grad, generator=gen)
            assert int(new.sum()) == 1000
    rows = decisions.prune_and_grow_rows(mask.view(50, 100), w.view(50, 100), 8, "magnitude", "gradient",
                                         grad=grad.view(50, 100), generator=gen)
    assert torch.equal(rows.sum(dim=1), mask.view(50, 100).sum(dim=1))
    w[:10] = 0.0  # a tie block inside the scores
    kept = decisions.prune_to(mask, w, 300, gen)
    assert int(kept.sum()) == 300 and not torch.any(kept & ~mask)
    assert torch.all(w[kept].abs().min() >= w[mask & ~kept].abs().max())
