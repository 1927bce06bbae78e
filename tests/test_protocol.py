"""The evaluation protocol through ``dslrec.train``: selection on validation, test metrics of the best
validation epoch's weights (restored, and equal to a fresh evaluation of ``best.safetensors``),
validation items excluded from the test ranking, the sampled protocol of leave-one-out data, and
``split_seed`` apart from ``seed``.

``scripts/mutants.py`` breaks each of these rules on purpose and checks that a test here fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dslrec
from dslrec import models, rundir
from dslrec.data.synthetic import synthetic_dataset
from dslrec.evaluate import evaluate
from dslrec.evaluate.sampled import sampled_evaluate, sampled_negatives
from dslrec.settings import load_dataset, resolve_settings
from scripted import read_log, scripted_run

# short runs on tiny data: whether they beat popularity is not what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore:.*does not beat ranking by popularity")


@pytest.fixture(scope="module")
def tiny():
    return synthetic_dataset(n_users=300, n_items=200, seed=3)


# --- scripted metrics (tests/scripted.py): the evaluator knows which epoch's weights it is shown --------

def test_the_best_epoch_is_chosen_on_validation_and_tested_with_its_own_weights(monkeypatch, tiny, tmp_path):
    # validation prefers epoch 2, the test set epoch 4; the last epoch is 6
    valid = [0.10, 0.30, 0.20, 0.15, 0.12, 0.11]
    test = [0.05, 0.07, 0.09, 0.40, 0.08, 0.06]
    s, calls = scripted_run(monkeypatch, tiny, tmp_path / "r", valid, test, epochs=6)
    assert s["best_epoch"] == 2 and s["epochs_run"] == 6
    assert s["valid"]["recall@20"] == 0.30
    assert s["test"]["recall@20"] == 0.07  # epoch 2's weights: not epoch 4's (0.40) nor the last (0.06)
    # the test set is evaluated once, at the end, on the restored weights; validation every epoch
    assert calls == [("valid", e) for e in range(1, 7)] + [("test", 2)]
    assert [r["valid"]["recall@20"] for r in read_log(tmp_path / "r")] == valid


def test_early_stopping_counts_on_validation_and_reports_the_best_epoch(monkeypatch, tiny, tmp_path):
    # validation peaks at epoch 3 and stops 2 evaluations later; the test set keeps improving
    valid = [0.20, 0.25, 0.30, 0.28, 0.27, 0.26, 0.25, 0.24]
    test = [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17]
    s, calls = scripted_run(monkeypatch, tiny, tmp_path / "r", valid, test, epochs=8, patience=2)
    assert (s["best_epoch"], s["epochs_run"], s["test"]["recall@20"]) == (3, 5, 0.12)
    assert calls[-1] == ("test", 3) and [c for c in calls if c[0] == "test"] == [("test", 3)]


def test_a_multi_phase_run_reports_the_last_phases_best_epoch(monkeypatch, tiny, tmp_path):
    # one-shot pruning: the dense phase (epochs 1-3) scores higher on validation, but the result is the
    # pruned model's best epoch (5), tested with its weights
    valid = [0.50, 0.60, 0.55, 0.30, 0.40, 0.35]
    test = [0.90, 0.91, 0.92, 0.10, 0.20, 0.30]
    s, calls = scripted_run(monkeypatch, tiny, tmp_path / "r", valid, test, epochs=3, method="oneshot",
                            density=0.3, finetune_epochs=3)
    assert (s["best_epoch"], s["valid"]["recall@20"], s["test"]["recall@20"]) == (5, 0.40, 0.20)
    assert calls[-1] == ("test", 5)


def test_only_evaluated_epochs_can_be_selected(monkeypatch, tiny, tmp_path):
    # eval_every 3 over 7 epochs validates epochs 3, 6 and the last one; epoch 2 would be best
    valid = [0.10, 0.90, 0.20, 0.15, 0.12, 0.30, 0.25]
    test = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]
    s, calls = scripted_run(monkeypatch, tiny, tmp_path / "r", valid, test, epochs=7, eval_every=3)
    assert calls == [("valid", 3), ("valid", 6), ("valid", 7), ("test", 6)]
    assert (s["best_epoch"], s["valid"]["recall@20"], s["test"]["recall@20"]) == (6, 0.30, 0.06)
    assert ["valid" in r for r in read_log(tmp_path / "r")] == [False, False, True, False, False, True, True]


# --- real metrics: the summary is a fresh evaluation of best.safetensors ---------------------------

def model_from_run(run_dir: Path, dataset, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    cfg = resolve_settings(config_file=run_dir / rundir.CONFIG)
    model = models.build(cfg.model, dataset, **cfg.model_options)
    model.load_state_dict(weights)
    return model.eval()


def fresh_metrics(model, dataset, split: str) -> dict[str, float]:
    with torch.no_grad():
        return {k: float(v) for k, v in evaluate(model.scorer(), dataset, split=split, ks=(20,)).items()}


@pytest.mark.parametrize("method", ["dense", "dsl"])
def test_reported_metrics_are_a_fresh_evaluation_of_best_safetensors(method, tiny, tmp_path):
    # a learning rate high enough that validation peaks before the last epoch (dense: epoch 7 of 8;
    # DSL: epoch 3, and with a constant update ratio and two updates an epoch it keeps moving its masks)
    sparse = dict(method="dsl", density=0.5, schedule="constant", delta_t_epochs=0.5) if method == "dsl" else {}
    out = tmp_path / method
    s = dslrec.train(dict(model="mf", dim=16, l2=0, epochs=8, batch_size=256, patience=0,
                          lr=0.1, **sparse), dataset=tiny, out=out, progress=False)
    assert s["best_epoch"] < s["epochs_run"] == 8, "the run must peak before its last epoch for this test to bite"
    best = model_from_run(out, tiny, rundir.load_weights(out / rundir.BEST))
    assert fresh_metrics(best, tiny, "test") == pytest.approx(s["test"], rel=1e-12)
    assert fresh_metrics(best, tiny, "valid") == pytest.approx(s["valid"], rel=1e-12)
    log = read_log(out)
    assert log[s["best_epoch"] - 1]["valid"] == pytest.approx(s["valid"], rel=1e-12)
    # the last epoch's weights (kept in the checkpoint) score differently: restoring the best matters here
    last = model_from_run(out, tiny, torch.load(out / rundir.CHECKPOINT, weights_only=True)["model"])
    assert fresh_metrics(last, tiny, "valid")["recall@20"] == pytest.approx(log[-1]["valid"]["recall@20"], rel=1e-12)
    assert fresh_metrics(last, tiny, "test") != pytest.approx(s["test"], rel=1e-6)
    if method == "dsl":  # the best epoch's masks are kept beside its weights, and they are not the last ones
        masks = {k: v.bool() for k, v in rundir.load_weights(out / rundir.BEST_MASKS).items()}
        state = rundir.load_weights(out / rundir.BEST)
        final = torch.load(out / rundir.CHECKPOINT, weights_only=True)["engine"]
        for name, mask in masks.items():
            assert mask.sum(dim=1).tolist() == [8] * mask.shape[0]  # per row (the default): 8 of 16
            assert torch.count_nonzero(state[name][~mask]) == 0
        assert any(not torch.equal(mask, final[f"mask/{name}"].bool()) for name, mask in masks.items())


def test_validation_items_are_never_test_hits(tiny):
    # a scorer that ranks each user's validation items first, then the test items: with validation items
    # excluded at test time the test items fill the top of the list
    scores = torch.zeros(tiny.n_users, tiny.n_items)
    valid, test = tiny.valid.tocoo(), tiny.test.tocoo()
    scores[torch.from_numpy(test.row).long(), torch.from_numpy(test.col).long()] = 1.0
    scores[torch.from_numpy(valid.row).long(), torch.from_numpy(valid.col).long()] = 2.0
    metrics, per_user = evaluate(lambda u: scores[u], tiny, split="test", ks=(5,), per_user=True)
    n_test = np.diff(tiny.test.indptr)[per_user.users]
    assert metrics["recall@5"] == pytest.approx(np.mean(np.minimum(n_test, 5) / n_test))
    for row, user in zip(per_user.topk, per_user.users):
        assert not set(row.tolist()) & set(tiny.valid[user].indices.tolist())
    # validation itself excludes only training items: there the validation items are the hits
    assert evaluate(lambda u: scores[u], tiny, split="valid", ks=(5,))["hitrate@5"] == 1.0


# --- leave-one-out: the sampled protocol in the summary ----------------------------------------------

def write_log_csv(path: Path, n_users: int = 80, n_items: int = 300, per_user: int = 12, seed: int = 0) -> Path:
    """Interactions with timestamps (unsplit; leave-one-out holds out each user's last two), enough
    items for 100 sampled negatives per user."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,timestamp"]
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        for t, i in enumerate(items):
            lines.append(f"u{u},i{i},5,{1000 * u + t}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_leave_one_out_summary_reports_the_sampled_protocol_of_the_best_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_log_csv(tmp_path / "log.csv")
    out = tmp_path / "loo"
    # seed apart from split_seed: the sampled negatives are part of the split, fixed by split_seed
    s = dslrec.train(dict(model="mf", dataset="log.csv", split="loo", epochs=3, dim=16, lr=0.01, batch_size=128,
                          seed=3, split_seed=0, ks="10,20"), out=out, progress=False)
    names = {f"{m}@{k}" for m in ("sampled_hitrate", "sampled_ndcg") for k in (10, 20)}
    assert names <= set(s["valid"]) and names <= set(s["test"])
    dataset = load_dataset(resolve_settings(config_file=out / rundir.CONFIG), progress=False)
    assert dataset.protocol == "loo"
    model = model_from_run(out, dataset, rundir.load_weights(out / rundir.BEST))
    for split in ("valid", "test"):
        with torch.no_grad():
            got = sampled_evaluate(model.scorer(), dataset, split, ks=(10, 20),
                                   negatives=sampled_negatives(dataset, split, 100, 0))
            full = evaluate(model.scorer(), dataset, split=split, ks=(10, 20))
        summary = s[split]
        for name in names:
            assert summary[name] == pytest.approx(float(got[name]), rel=1e-12), (split, name)
        for k in (10, 20):  # 100 negatives are fewer competitors than every unseen item
            assert summary[f"sampled_hitrate@{k}"] >= summary[f"hitrate@{k}"]
            assert summary[f"hitrate@{k}"] == pytest.approx(float(full[f"hitrate@{k}"]), rel=1e-12)
    # other negatives give other figures: the comparison above can tell them apart
    with torch.no_grad():
        other = sampled_evaluate(model.scorer(), dataset, "test", ks=(10, 20),
                                 negatives=sampled_negatives(dataset, "test", 100, 3))
    assert any(float(other[n]) != pytest.approx(s["test"][n], rel=1e-9) for n in names)


# --- split_seed apart from seed -------------------------------------------------------------------

def test_split_seed_fixes_the_split_and_seed_the_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_log_csv(tmp_path / "log.csv", per_user=15)
    runs = {}
    for seed, split_seed in ((0, 0), (1, 0), (0, 1)):
        out = tmp_path / f"s{seed}-{split_seed}"
        runs[seed, split_seed] = (out, dslrec.train(dict(model="mf", dataset="log.csv", split="ratio", epochs=1,
                                                         dim=8, seed=seed, split_seed=split_seed), out=out,
                                                    progress=False))

    def data(key):
        return rundir.read_data(runs[key][0])[0]

    def weights(key):
        return rundir.load_weights(runs[key][0] / rundir.BEST)

    # the same split_seed: the same training data and held-out sets, other weights
    assert rundir.data_differences(data((0, 0)), data((1, 0))) == []
    assert runs[0, 0][1]["popularity"] == runs[1, 0][1]["popularity"]
    assert not torch.equal(weights((0, 0))["user.weight"], weights((1, 0))["user.weight"])
    # another split_seed: another split, the same initial weights (seed 0) on it
    assert rundir.data_differences(data((0, 0)), data((0, 1))) == ["training interactions"]
    a = load_dataset(resolve_settings(config_file=runs[0, 0][0] / rundir.CONFIG), progress=False)
    b = load_dataset(resolve_settings(config_file=runs[0, 1][0] / rundir.CONFIG), progress=False)
    assert (a.test != b.test).nnz > 0 and (a.valid != b.valid).nnz > 0
