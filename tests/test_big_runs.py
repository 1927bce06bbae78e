"""Big data on one machine: --max_steps, --eval_users, and what a cut epoch samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dslrec
from dslrec.cli import main
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError, DslrecWarning
from dslrec.evaluate.ranking import eval_users, sample_users
from dslrec.models.popularity import Popularity
from dslrec.sparse.schedule import update_ratio


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n_users=400, n_items=300, seed=5)


BATCH = 512


def steps_per_epoch(ds) -> int:
    return math.ceil(ds.train.nnz / BATCH)


def log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# --- --max_steps -------------------------------------------------------------------------


def test_max_steps_stops_at_exactly_n_steps_and_the_schedules_span_them(small, tmp_path):
    spe = steps_per_epoch(small)
    n = spe + spe // 3  # one full epoch and a cut one
    out = tmp_path / "cut"
    s = dslrec.train(dict(model="mf", epochs=6, batch_size=BATCH, max_steps=n, method="dsl", density=0.3,
                          delta_t=5, lr_schedule="cosine", lr=5e-3, lr_end=1e-4, patience=0),
                     dataset=small, out=out, progress=False)
    records = log(out)
    assert [r["steps"] for r in records] == [spe, n - spe]
    assert s["steps_run"] == n and s["max_steps"] == n and s["epochs_run"] == 2
    assert s["steps_per_epoch"] == spe and s["config"]["max_steps"] == n
    assert s["world_size"] == 1 and s["backend"] is None  # one process
    assert "examples_by_rank" not in records[0]
    last = records[-1]
    # the engine counted exactly n optimiser steps, and its horizon was n: DSL's update ratio and
    # the cosine lr have annealed to their ends at the cut
    assert last["sparse"]["step"] == n
    assert last["sparse"]["zeta_now"] == pytest.approx(s["config"]["eta_min"])
    assert last["lr"] == pytest.approx(1e-4)
    assert records[0]["lr"] == pytest.approx(1e-4 + (5e-3 - 1e-4) * (1 + math.cos(math.pi * spe / n)) / 2)
    cfg = s["config"]
    assert records[0]["sparse"]["zeta_now"] == pytest.approx(update_ratio("cosine", spe, n, cfg["zeta0"], cfg["eta_min"]))
    # the cut epoch is evaluated like a last epoch: selection and test on the best weights work
    assert "valid" in last and s["best_epoch"] in (1, 2)
    best = max((r for r in records if "valid" in r), key=lambda r: r["valid"]["recall@20"])
    assert s["best_epoch"] == best["epoch"] and s["valid"] == best["valid"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["steps_run"] == n and on_disk["max_steps"] == n
    assert torch.load(out / "checkpoint.pt", weights_only=True)["phase_done"]


def test_max_steps_above_the_epochs_changes_nothing(small, tmp_path):
    spe = steps_per_epoch(small)
    a = dslrec.train(dict(model="mf", epochs=2, batch_size=BATCH, seed=3), dataset=small, out=tmp_path / "a",
                     progress=False)
    b = dslrec.train(dict(model="mf", epochs=2, batch_size=BATCH, seed=3, max_steps=10 * spe), dataset=small,
                     out=tmp_path / "b", progress=False)
    assert a["test"] == b["test"] and a["steps_run"] == b["steps_run"] == 2 * spe
    assert a["max_steps"] is None


def test_a_cut_epoch_samples_only_its_batches(small, tmp_path, monkeypatch):
    import dslrec.data.sampling as sampling

    monkeypatch.setattr(sampling, "CHUNK_ROWS", 2 * BATCH)  # chunks of two batches
    drawn: list[int] = []
    real = sampling.sample_negatives

    def spy(positives, users, n_items, rng):
        drawn.append(int(users.size))
        return real(positives, users, n_items, rng)

    monkeypatch.setattr(sampling, "sample_negatives", spy)
    s = dslrec.train(dict(model="mf", epochs=3, batch_size=BATCH, max_steps=3), dataset=small,
                     out=tmp_path / "three", progress=False)
    assert s["steps_run"] == 3 and s["epochs_run"] == 1
    # two chunks of two batches, not the epoch's small.train.nnz negatives
    assert len(drawn) == 2 and sum(drawn) == 4 * BATCH < small.train.nnz


def test_max_steps_resumes_to_the_same_weights(small, tmp_path, monkeypatch):
    from dslrec.training.loop import Trainer

    spe = steps_per_epoch(small)
    settings = dict(model="mf", epochs=5, batch_size=BATCH, max_steps=2 * spe + 7, method="dsl", density=0.3,
                    delta_t=4, lr=5e-3, patience=0, seed=4)
    full = dslrec.train(settings, dataset=small, out=tmp_path / "full", progress=False)

    # the same run, interrupted in its second epoch, then resumed
    real, calls = Trainer.train_epoch, {"n": 0}

    def interrupted(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        dslrec.train(settings, dataset=small, out=out, progress=False)
    monkeypatch.setattr(Trainer, "train_epoch", real)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["global_epoch"] == 1
    resumed = dslrec.train(resume=out, dataset=small, progress=False)
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=True)["model"]
    b = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == full["test"] and resumed["steps_run"] == full["steps_run"] == 2 * spe + 7
    assert [r["steps"] for r in log(out)] == [spe, spe, 7]


def test_max_steps_cannot_change_or_be_extended_on_resume(small, tmp_path):
    out = tmp_path / "run"
    dslrec.train(dict(model="mf", epochs=3, batch_size=BATCH, max_steps=5), dataset=small, out=out, progress=False)
    with pytest.raises(DslrecError, match=r"refusing to change max_steps \(5 -> 9\)"):
        dslrec.train(resume=out, dataset=small, progress=False, max_steps=9)
    with pytest.raises(DslrecError, match=r"it has trained its max_steps \(5 steps\)"):
        dslrec.train(resume=out, dataset=small, progress=False, epochs=4)


def test_max_steps_applies_to_each_phase_of_oneshot(small, tmp_path):
    spe = steps_per_epoch(small)
    s = dslrec.train(dict(model="mf", epochs=3, finetune_epochs=2, batch_size=BATCH, max_steps=spe + 4,
                          method="oneshot", density=0.3, scope="per_tensor"),
                     dataset=small, out=tmp_path / "oneshot", progress=False)
    records = log(tmp_path / "oneshot")
    assert [(r["phase"], r["steps"]) for r in records] == [("dense", spe), ("dense", 4),
                                                          ("finetune", spe), ("finetune", 4)]
    assert s["steps_run"] == 2 * (spe + 4) and s["epochs_run"] == 4


def test_max_steps_below_delta_t_warns(small, tmp_path):
    with pytest.warns(DslrecWarning, match=r"never updates its mask; pass a smaller --delta-t \(e.g. 1\)"):
        dslrec.train(dict(model="mf", epochs=2, batch_size=BATCH, max_steps=10, method="dsl", density=0.5),
                     dataset=small, out=tmp_path / "dsl", progress=False)


@pytest.mark.parametrize("key,value,message", [
    ("max_steps", "0", "max_steps must be an integer >= 1"),
    ("max_steps", "many", "setting max_steps must be an integer"),
    ("eval_users", "-3", "eval_users must be an integer >= 1"),
    ("eval_users", "1.5", "setting eval_users must be an integer"),
])
def test_bad_values_are_one_line_errors(key, value, message, tmp_path, capsys):
    assert main(["train", f"--{key}", value, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x").exists()


# --- --eval_users ------------------------------------------------------------------------


def test_user_sample_is_seeded_sorted_and_from_the_evaluated_users(small):
    a, pool = sample_users(small, 50, seed=1)
    b, _ = sample_users(small, 50, seed=1)
    c, _ = sample_users(small, 50, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) == 50 == len(np.unique(a)) and np.all(np.diff(a) > 0)
    either = np.union1d(eval_users(small, "valid"), eval_users(small, "test"))
    assert pool == len(either) and np.isin(a, either).all()
    assert sample_users(small, pool, seed=1) == (None, pool)  # everyone: no sample
    # roughly uniform: over many seeds every user is drawn about equally often
    hits = np.zeros(small.n_users)
    for seed in range(200):
        hits[sample_users(small, 50, seed)[0]] += 1
    share = hits[either] / 200
    assert abs(share.mean() - 50 / pool) < 1e-9 and share.std() < 0.05


def test_eval_users_one_sample_for_valid_test_and_popularity(small, tmp_path, monkeypatch):
    import dslrec.evaluate as ev

    seen: list[tuple[str, object]] = []
    real = ev.evaluate

    def spy(scorer, dataset, split="valid", *args, users=None, **kw):
        seen.append((split, None if users is None else users.copy()))
        return real(scorer, dataset, split, *args, users=users, **kw)

    monkeypatch.setattr(ev, "evaluate", spy)
    s = dslrec.train(dict(model="mf", epochs=2, batch_size=BATCH, eval_users=60, seed=7), dataset=small,
                     out=tmp_path / "sample", progress=False)
    sample, pool = sample_users(small, 60, seed=7)
    # popularity (valid, test), two validations, the final test: all on the run's one sample
    assert [split for split, _ in seen] == ["valid", "test", "valid", "valid", "test"]
    assert all(np.array_equal(users, sample) for _, users in seen)
    info = s["eval_users"]
    assert info == {"requested": 60, "sampled": True, "seed": 7, "of": pool, "users": 60,
                    "valid": len(eval_users(small, "valid", sample)), "test": len(eval_users(small, "test", sample))}
    pop = real(Popularity.from_dataset(small).scorer(), small, "valid", users=sample)["recall@20"]
    assert s["popularity"]["valid"]["recall@20"] == pytest.approx(pop)
    assert json.loads((tmp_path / "sample/summary.json").read_text())["eval_users"] == info


def test_eval_users_above_the_users_evaluates_everyone(small, tmp_path):
    a = dslrec.train(dict(model="mf", epochs=1, batch_size=BATCH), dataset=small, out=tmp_path / "a",
                     progress=False)
    b = dslrec.train(dict(model="mf", epochs=1, batch_size=BATCH, eval_users=10**6), dataset=small,
                     out=tmp_path / "b", progress=False)
    assert a["test"] == b["test"] and a["popularity"] == b["popularity"] and a["eval_users"] is None
    assert b["eval_users"]["sampled"] is False and b["eval_users"]["users"] == b["eval_users"]["of"]


def test_eval_users_on_leave_one_out_samples_the_sampled_protocol_too(tmp_path):
    from dslrec.data.preprocess import prepare
    from dslrec.data import _synthetic_log

    ds = prepare(_synthetic_log(0), name="loo", split="loo")
    s = dslrec.train(dict(model="mf", epochs=1, batch_size=2048, eval_users=100), dataset=ds,
                     out=tmp_path / "loo", progress=False)
    assert s["eval_users"]["test"] == 100 and "sampled_hitrate@20" in s["test"]
