"""Every ``--method`` and the loop's settings through ``dslrec.train`` (not only at the engine level):
static, gmp, pep (an epoch counts as best only once the target budget is reached), the lottery ticket
(its rounds, budgets and rewinding), resume in the middle of multi-phase runs (oneshot, lth),
``--explore_until``, early stopping of a DSL run, and the optimisers and the cosine learning rate.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import dslrec
from dslrec import rundir
from dslrec.data.synthetic import synthetic_dataset
from dslrec.sparse import schedule
from dslrec.training.loop import Trainer
from scripted import read_log, scripted_run

pytestmark = pytest.mark.filterwarnings("ignore:.*does not beat ranking by popularity")

DIM = 16


@pytest.fixture(scope="module")
def tiny():
    return synthetic_dataset(n_users=300, n_items=200, seed=3)


def quick(**settings) -> dict:
    """Few steps per epoch (300 users x 200 items, about 4,000 training interactions)."""
    return dict(dict(model="mf", dim=DIM, batch_size=1024, lr=0.01, patience=0), **settings)


def steps_per_epoch(dataset, batch_size: int = 1024) -> int:
    return math.ceil(dataset.train[dataset.trained_users()].nnz / batch_size)


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)


def final_masks(run_dir: Path) -> dict[str, torch.Tensor]:
    engine = checkpoint(run_dir)["engine"]
    return {k.removeprefix("mask/"): v.bool() for k, v in engine.items() if k.startswith("mask/")}


def best_masks(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v.bool() for k, v in rundir.load_weights(run_dir / rundir.BEST_MASKS).items()}


def assert_inactive_zero(run_dir: Path) -> None:
    """In the last checkpoint, inactive weights and all their optimiser state are exactly zero."""
    ck = checkpoint(run_dir)
    masks = final_masks(run_dir)
    names = list(ck["model"])  # MF: every parameter, in the optimiser's order
    for index, name in enumerate(names):
        if name not in masks:
            continue
        off = ~masks[name]
        assert torch.count_nonzero(ck["model"][name][off]) == 0, name
        for key, value in ck["optimizer"]["state"].get(index, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == off.shape:
                assert torch.count_nonzero(value[off]) == 0, (name, key)


# --- static, gmp, pep -----------------------------------------------------------------------------

def test_static_keeps_its_random_mask_for_the_whole_run(tiny, tmp_path):
    out = tmp_path / "static"
    s = dslrec.train(quick(method="static", density=0.25, epochs=3), dataset=tiny, out=out, progress=False)
    per_row = round(0.25 * DIM)
    budget = per_row * (tiny.n_users + tiny.n_items)
    assert s["params"]["active"] == s["params"]["peak_active"] == s["params"]["mean_active"] == budget
    for record in read_log(out):
        sparse = record["sparse"]
        assert sparse["n_updates"] == 0 and sparse["moved"] == 0 and sparse["active"] == budget
        assert sparse["exploration_rate"] == pytest.approx(budget / sparse["sparsifiable"])  # never another position
    final = final_masks(out)
    for name, mask in best_masks(out).items():
        assert torch.equal(mask, final[name]) and mask.sum(dim=1).tolist() == [per_row] * mask.shape[0]
    assert_inactive_zero(out)
    # and it is random: another seed, another mask
    other = tmp_path / "other"
    dslrec.train(quick(method="static", density=0.25, epochs=1, seed=1), dataset=tiny, out=other, progress=False)
    assert not torch.equal(best_masks(other)["user.weight"], final["user.weight"])


@pytest.mark.parametrize("method", ["gmp", "pep"])
def test_gmp_and_pep_count_an_epoch_as_best_only_at_their_target_budget(method, monkeypatch, tiny, tmp_path):
    # validation falls from the first epoch on: the best epoch is the first one at the target budget
    valid = [0.50, 0.45, 0.40, 0.35, 0.30]
    settings = (dict(gmp_start=0.0, gmp_end=0.5) if method == "gmp" else dict(pep_deadline=0.5, pep_init=-15.0))
    out = tmp_path / method
    s, _ = scripted_run(monkeypatch, tiny, out, valid, method=method, density=0.2, epochs=5, dim=DIM,
                        scope="per_tensor", **settings)
    log = read_log(out)
    at_target = [r["sparse"]["at_target"] for r in log]
    first = at_target.index(True) + 1
    assert first > 1, "the first epoch must still be above the budget for this test to bite"
    assert at_target == [False] * (first - 1) + [True] * (len(valid) - first + 1)
    assert s["best_epoch"] == first and s["valid"]["recall@20"] == valid[first - 1]
    total = (tiny.n_users + tiny.n_items) * DIM
    target = round(0.2 * tiny.n_users * DIM) + round(0.2 * tiny.n_items * DIM)
    active = [r["sparse"]["active"] for r in log]
    assert active[first - 1:] == [target] * (len(valid) - first + 1) and all(a > target for a in active[:first - 1])
    assert all(a >= b for a, b in zip(active, active[1:]))  # only ever pruned
    assert s["params"]["active"] == target and s["params"]["peak_active"] == total
    assert sum(int(m.sum()) for m in best_masks(out).values()) == target


def test_gmp_prunes_on_its_cubic_schedule_in_the_loop(tiny, tmp_path):
    out = tmp_path / "gmp"
    S = steps_per_epoch(tiny)
    s = dslrec.train(quick(method="gmp", density=0.2, epochs=4, gmp_start=0.0, gmp_end=0.75, delta_t=S,
                           scope="per_tensor"), dataset=tiny, out=out, progress=False)
    T = 4 * S
    for e, record in enumerate(read_log(out), 1):
        for name, numel in (("user.weight", tiny.n_users * DIM), ("item.weight", tiny.n_items * DIM)):
            density = schedule.gmp_density(e * S, T, 0.2, 0.0, 0.75)
            assert record["sparse"]["tensors"][name]["active"] == max(round(0.2 * numel), round(density * numel))
    assert s["best_epoch"] >= 3  # at the target from epoch 3 on
    assert_inactive_zero(out)


# --- the lottery ticket -----------------------------------------------------------------------------

def capture_phase_starts(monkeypatch) -> dict[int, dict]:
    """Weights and masks at the start of every phase's first epoch (after its preparation)."""
    starts: dict[int, dict] = {}
    real = Trainer.train_epoch

    def train_epoch(self, phase, epoch, optimizer, schedule_, engine, *args, **kwargs):
        if epoch == 0:
            starts[phase] = {"state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                             "masks": {k: m.clone() for k, m in engine.masks.items()} if engine else None}
        return real(self, phase, epoch, optimizer, schedule_, engine, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    return starts


def test_lottery_ticket_prunes_in_rounds_and_rewinds_to_the_initial_weights(monkeypatch, tiny, tmp_path):
    starts = capture_phase_starts(monkeypatch)
    out = tmp_path / "lth"
    s = dslrec.train(quick(method="lth", density=0.25, lth_rounds=2, epochs=2), dataset=tiny, out=out,
                     progress=False)
    log = read_log(out)
    assert [r["phase"] for r in log] == ["dense"] * 2 + ["lth-1"] * 2 + ["lth-2"] * 2
    assert s["epochs_run"] == 6 and s["best_epoch"] in (5, 6)
    rows = tiny.n_users + tiny.n_items
    # round r keeps density ** (r / R) of every row (the default per_row scope): 8, then 4 of 16
    assert [r["active"] for r in log] == [rows * DIM] * 2 + [rows * 8] * 2 + [rows * 4] * 2
    assert s["params"]["active"] == rows * 4 and s["params"]["peak_active"] == rows * DIM
    init = rundir.load_weights(out / "init.safetensors")
    assert torch.equal(starts[0]["state"]["user.weight"], init["user.weight"])  # saved before training
    for phase in (1, 2):
        masks = starts[phase]["masks"]
        for name, mask in masks.items():
            assert torch.equal(starts[phase]["state"][name], init[name] * mask), (phase, name)  # rewound
    for name, mask in starts[2]["masks"].items():
        assert not torch.any(mask & ~starts[1]["masks"][name])  # the second round prunes inside the first
    assert all(torch.equal(m, best_masks(out)[n]) for n, m in starts[2]["masks"].items())


@pytest.mark.parametrize("method", ["oneshot", "lth"])
def test_pruning_keeps_the_largest_weights_of_the_previous_phases_best_epoch(method, monkeypatch, tiny, tmp_path):
    from dslrec.sparse import magnitude_masks

    starts = capture_phase_starts(monkeypatch)
    ends: dict[int, dict] = {}
    real = Trainer.train_epoch  # (captures the phase starts)

    def train_epoch(self, *args, **kwargs):
        loss = real(self, *args, **kwargs)
        ends[self.global_epoch + 1] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return loss

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    # the dense phase's best epoch is its first, not its last
    valid = [0.50, 0.30, 0.20, 0.25, 0.22, 0.21]
    s, _ = scripted_run(monkeypatch, tiny, tmp_path / method, valid, method=method, density=0.25, epochs=2,
                        finetune_epochs=2, lth_rounds=1, dim=DIM)
    best_dense = ends[1]
    masks = starts[1]["masks"]
    expected = magnitude_masks({n: best_dense[n] for n in masks}, 0.25, "per_row")
    for name, mask in masks.items():
        assert torch.equal(mask, expected[name]), name
        assert not torch.equal(mask, magnitude_masks({name: ends[2][name]}, 0.25, "per_row")[name])
    start = starts[1]["state"]
    if method == "oneshot":  # fine-tuning starts from the best dense weights, pruned
        weights = best_dense
    else:  # the ticket: the initial weights under the mask
        weights = rundir.load_weights(tmp_path / method / "init.safetensors")
    for name, mask in masks.items():
        assert torch.equal(start[name], weights[name] * mask), name
    assert s["best_epoch"] == 4  # the result is the pruned phase's best epoch


# --- resume in the middle of multi-phase runs ---------------------------------------------------------

def interrupted_then_resumed(monkeypatch, dataset, out: Path, settings: dict, stop_after: int) -> dict:
    """Stop the run (Ctrl-C) before epoch ``stop_after + 1``, then resume it; returns the summary."""
    real = Trainer.train_epoch

    def train_epoch(self, *args, **kwargs):
        if self.global_epoch == stop_after:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", train_epoch)
        with pytest.raises(KeyboardInterrupt):
            dslrec.train(settings, dataset=dataset, out=out, progress=False)
    assert checkpoint(out)["global_epoch"] == stop_after
    return dslrec.train(resume=out, dataset=dataset, progress=False)


@pytest.mark.parametrize("method, stop_after, model", [
    ("oneshot", 3, "mf"),  # one epoch into fine-tuning
    ("oneshot", 2, "mf"),  # between the dense phase and fine-tuning
    ("oneshot", 2, "neumf"),  # the same with dropout: the random generator carries over the boundary
    ("lth", 3, "mf"),  # one epoch into the first round
    ("lth", 4, "mf"),  # between the first and the second round
])
def test_a_multi_phase_run_resumed_midway_ends_as_an_uninterrupted_one(method, stop_after, model, monkeypatch,
                                                                       tiny, tmp_path):
    settings = quick(method=method, density=0.25, epochs=2, finetune_epochs=3, lth_rounds=2, seed=4, model=model)
    if model == "neumf":  # its own sizes; at lr 0.01 its MLP branch (the one with dropout) dies on this data
        settings.pop("dim")
        settings["lr"] = 1e-3
    full = dslrec.train(settings, dataset=tiny, out=tmp_path / "full", progress=False)
    resumed = interrupted_then_resumed(monkeypatch, tiny, tmp_path / "resumed", settings, stop_after)
    a, b = checkpoint(tmp_path / "full"), checkpoint(tmp_path / "resumed")
    assert a["global_epoch"] == b["global_epoch"] == (5 if method == "oneshot" else 6)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert final_masks(tmp_path / "full").keys() == final_masks(tmp_path / "resumed").keys()
    for name, mask in final_masks(tmp_path / "full").items():
        assert torch.equal(mask, final_masks(tmp_path / "resumed")[name]), name
    assert (resumed["best_epoch"], resumed["valid"], resumed["test"]) == (full["best_epoch"], full["valid"],
                                                                           full["test"])
    assert resumed["params"] == full["params"]
    assert [r["epoch"] for r in read_log(tmp_path / "resumed")] == list(range(1, a["global_epoch"] + 1))


# --- DSL in the loop: explore_until, early stopping ---------------------------------------------------

def test_explore_until_freezes_the_masks_in_the_loop(tiny, tmp_path):
    out = tmp_path / "explore"
    S, epochs, delta_t = steps_per_epoch(tiny), 4, 2
    s = dslrec.train(quick(method="dsl", density=0.25, epochs=epochs, delta_t=delta_t, explore_until=0.5),
                     dataset=tiny, out=out, progress=False)
    T = epochs * S
    due = [t for t in range(1, T + 1) if t % delta_t == 0 and t < 0.5 * T]
    log = read_log(out)
    assert [r["sparse"]["updates"] for r in log] == [sum(1 for t in due if (e - 1) * S < t <= e * S)
                                                     for e in range(1, epochs + 1)]
    assert log[-1]["sparse"]["n_updates"] == len(due) > 0
    assert [r["sparse"]["moved"] > 0 for r in log] == [r["sparse"]["updates"] > 0 for r in log]
    assert s["config"]["explore_until"] == 0.5


def test_dsl_early_stopping_waits_until_the_update_ratio_has_halved(monkeypatch, tiny, tmp_path):
    # validation peaks at epoch 2; with the cosine update ratio over 10 epochs, the masks count as settled
    # from epoch 6 on (zeta <= zeta0 / 2 past the middle of the run): patience 2 stops at epoch 7, not 4
    valid = [0.20, 0.30, 0.29, 0.28, 0.27, 0.26, 0.25, 0.24, 0.23, 0.22]
    S = math.ceil(tiny.train[tiny.trained_users()].nnz / 1024)
    settled = [schedule.update_ratio("cosine", e * S, 10 * S, 0.5, 0.005) <= 0.25 for e in range(1, 11)]
    assert settled.index(True) + 1 == 6
    s, _ = scripted_run(monkeypatch, tiny, tmp_path / "r", valid, method="dsl", density=0.5, epochs=10,
                        patience=2, delta_t=2)
    assert (s["best_epoch"], s["epochs_run"]) == (2, 7)


# --- optimisers and the learning-rate schedule -----------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_each_optimizer_and_the_cosine_learning_rate_in_the_loop(optimizer, tiny, tmp_path):
    out = tmp_path / optimizer
    lr, lr_end, epochs = 0.05, 0.001, 3
    s = dslrec.train(quick(method="dsl", density=0.25, epochs=epochs, delta_t=3, optimizer=optimizer, lr=lr,
                           lr_schedule="cosine", lr_end=lr_end, weight_decay=0.01, momentum=0.8),
                     dataset=tiny, out=out, progress=False)
    group = checkpoint(out)["optimizer"]["param_groups"][0]
    state = checkpoint(out)["optimizer"]["state"][0]
    if optimizer == "sgd":
        assert group["momentum"] == 0.8 and "betas" not in group and "momentum_buffer" in state
    else:
        assert "exp_avg" in state and group["decoupled_weight_decay"] == (optimizer == "adamw")
    assert group["weight_decay"] == 0.01
    # the learning rate after each epoch follows the cosine from lr to lr_end over all steps of the run
    S = steps_per_epoch(tiny)
    T = epochs * S
    expected = [lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * e * S / T)) for e in range(1, epochs + 1)]
    assert [r["lr"] for r in read_log(out)] == pytest.approx(expected, rel=1e-6)
    assert read_log(out)[-1]["lr"] == pytest.approx(lr_end)
    assert s["params"]["active"] == round(0.25 * DIM) * (tiny.n_users + tiny.n_items)
    assert_inactive_zero(out)
    assert read_log(out)[-1]["sparse"]["n_updates"] >= 1
