"""The training loop, the run directory, resume and the train command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import dslrec
from dslrec import models
from dslrec.cli import main
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError
from dslrec.evaluate import evaluate
from dslrec.models.popularity import Popularity


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n_users=600, n_items=400, seed=3)


def reference_recalls(dataset):
    pop = evaluate(Popularity.from_dataset(dataset).scorer(), dataset, split="valid", ks=(20,))["recall@20"]
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(dataset.n_users, dataset.n_items, generator=gen)
    rnd = evaluate(lambda u: scores[u], dataset, split="valid", ks=(20,))["recall@20"]
    return pop, rnd


# settings small enough for seconds on 2 cores, large enough to learn
FAST = {
    "mf": dict(epochs=15, lr=5e-3, batch_size=512),
    "lightgcn": dict(epochs=12, lr=5e-3, batch_size=512, lr_schedule="constant"),
    "neumf": dict(epochs=10, lr=3e-3, batch_size=1024),
    "multvae": dict(epochs=40, lr=3e-3, batch_size=64, total_anneal_steps=2000),
}


@pytest.mark.parametrize("model", sorted(FAST))
def test_each_backbone_learns(model, small, tmp_path):
    summary = dslrec.train(dict(model=model, dataset="synthetic-small", patience=0, **FAST[model]),
                           dataset=small, out=tmp_path / model, progress=False)
    pop, rnd = reference_recalls(small)
    got = summary["valid"]["recall@20"]
    assert got > 1.3 * pop and got > 3 * rnd, (got, pop, rnd)
    # test metrics are reported at the best validation epoch, from the restored best weights: a fresh
    # evaluation of best.safetensors gives them (tests/test_protocol.py checks the rule where it bites)
    assert set(summary["test"]) >= {"recall@20", "ndcg@20", "precision@20", "hitrate@20", "mrr@20"}
    log = [json.loads(line) for line in (tmp_path / model / "log.jsonl").read_text().splitlines()]
    best = max((r for r in log if "valid" in r), key=lambda r: r["valid"]["recall@20"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["valid"]["recall@20"] == pytest.approx(best["valid"]["recall@20"])
    fresh = models.build(model, small, **summary["config"]["model_options"])
    fresh.load_state_dict(load_file(str(tmp_path / model / "best.safetensors")))
    fresh.eval()
    with torch.no_grad():
        again = evaluate(fresh.scorer(), small, split="test", ks=(20,))
    assert {k: float(v) for k, v in again.items()} == pytest.approx(summary["test"], rel=1e-9)


def test_run_directory_contract(small, tmp_path):
    out = tmp_path / "run"
    summary = dslrec.train(dict(model="mf", epochs=3, lr=5e-3, seed=1), dataset=small, out=out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "log.jsonl", "checkpoint.pt",
                                               "best.safetensors", "summary.json"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["test"] == summary["test"]
    for key in ("model", "dataset", "config", "best_epoch", "valid", "test", "params", "time",
                "peak_rss_mb", "dslrec_version"):
        assert key in on_disk, key
    assert on_disk["dataset"]["users"] == small.n_users
    assert set(on_disk["time"]) >= {"train_s", "epoch_s", "eval_s"}
    assert on_disk["params"]["total"] == on_disk["params"]["active"] == (small.n_users + small.n_items) * 64
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["seed"] == 1 and config["epochs"] == 3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and "valid" in r for r in records)
    weights = load_file(str(out / "best.safetensors"))
    assert set(weights) == {"user.weight", "item.weight"}


def test_same_seed_same_weights_on_cpu(small, tmp_path):
    a = dslrec.train(dict(model="mf", epochs=2, seed=5), dataset=small, out=tmp_path / "a", progress=False)
    b = dslrec.train(dict(model="mf", epochs=2, seed=5), dataset=small, out=tmp_path / "b", progress=False)
    assert a["test"] == b["test"]
    wa, wb = load_file(str(tmp_path / "a/best.safetensors")), load_file(str(tmp_path / "b/best.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("storage", [[], ["--storage", "compact", "--scope", "global"]], ids=["masked", "compact"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, storage):
    args = ["train", "--model", "mf", "--dataset", "synthetic", "--epochs", "12", "--method", "dsl",
            "--density", "0.3", "--delta-t", "20", "--seed", "2", "--quiet", "--patience", "0",
            "--batch_size", "2048", "--eval_every", "3", *storage]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    # the same run, killed (SIGKILL, no chance to clean up) once a few epochs are logged
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dslrec.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(out / "checkpoint.pt", weights_only=True)["global_epoch"]
    assert 4 <= done < 12, "the kill must land midway through the run"

    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    full, resumed = final_weights(tmp_path / "full"), final_weights(out)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    s_full = json.loads((tmp_path / "full/summary.json").read_text())
    s_res = json.loads((out / "summary.json").read_text())
    assert s_full["test"] == s_res["test"] and s_full["best_epoch"] == s_res["best_epoch"]
    assert [r["epoch"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())] == list(range(1, 13))


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(small, tmp_path, monkeypatch):
    from dslrec import models

    real_build = models.build

    def build(name, dataset, **kw):
        model = real_build(name, dataset, **kw)
        loss, calls = model.loss, {"n": 0}

        def poisoned(batch):
            calls["n"] += 1
            value = loss(batch)
            return value * float("nan") if calls["n"] > 2 * steps else value  # NaN from the 3rd epoch

        model.loss = poisoned
        return model

    monkeypatch.setattr(models, "build", build)
    out = tmp_path / "nan"
    data = synthetic_dataset(100, 80, seed=0)
    steps = -(-data.train.nnz // 200)
    with pytest.raises(DslrecError, match="loss became nan.*last good checkpoint"):
        dslrec.train(dict(model="mf", epochs=6, batch_size=200), dataset=data, out=out, progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["global_epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_settings_give_one_line_errors(capsys, tmp_path):
    assert main(["train", "--model", "mf", "--epochs", "1", "--dimm", "32", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'dimm'" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["train", "--density", "0.5", "--out", str(tmp_path / "y")]) == 2
    assert "needs a sparse method" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_config_file_and_overrides(small, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mf\nepochs: 2\ndim: 16\nlr: 0.01\n")
    summary = dslrec.train(config_file=cfg, dataset=small, out=tmp_path / "r", progress=False, epochs=1)
    assert summary["config"]["epochs"] == 1 and summary["config"]["model_options"]["dim"] == 16
    assert summary["params"]["total"] == (small.n_users + small.n_items) * 16


def test_sparse_run_reports_budget_spread_and_cost(small, tmp_path):
    out = tmp_path / "dsl"
    # the paper's DSL (one budget for the table): counts are round(0.2 * numel) exactly
    s = dslrec.train(dict(model="lightgcn", epochs=2, method="dsl", density=0.2, delta_t=5, batch_size=1024,
                          preset="paper"), dataset=small, out=out, progress=False)
    total = (small.n_users + small.n_items) * 64
    p = s["params"]
    assert p["total"] == p["sparsifiable"] == total
    assert p["active"] == p["peak_active"] == p["mean_active"] == round(0.2 * total)
    masks = load_file(str(out / "best_masks.safetensors"))
    assert int(masks["embedding.weight"].sum()) == round(0.2 * total)
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])["sparse"]
    spread = record["spread"]
    # LightGCN's one table: rows are users then items; the groups add up to the whole budget
    assert len(spread["user_groups"]) == len(spread["item_groups"]) == 10
    assert sum(spread["user_groups"]) + sum(spread["item_groups"]) == round(0.2 * total)
    assert record["n_updates"] >= 1 and 0 < record["exploration_rate"] <= 1
    assert s["cost"]["parameters"]["active"] == round(0.2 * total)
    assert s["cost"]["macs"]["inference"]["sparse"] < s["cost"]["macs"]["inference"]["dense"]
    assert len(s["test_groups"]["user_groups"]["recall@20"]) == 10


def test_per_row_scope_gives_every_user_and_item_the_same_budget(small, tmp_path):
    out = tmp_path / "rows"
    s = dslrec.train(dict(model="mf", epochs=2, method="dsl", density=0.25, scope="per_row", grow="accumulated",
                          accumulate_steps=5, delta_t=5), dataset=small, out=out, progress=False)
    masks = load_file(str(out / "best_masks.safetensors"))
    for name, rows in (("user.weight", small.n_users), ("item.weight", small.n_items)):
        assert masks[name].sum(dim=1).tolist() == [16] * rows  # round(0.25 * 64) in every row
    assert s["config"]["scope"] == "per_row" and s["config"]["accumulate_steps"] == 5
    assert s["params"]["active"] == 16 * (small.n_users + small.n_items)


def test_methods_that_train_dense_first_show_it_in_their_budget(small, tmp_path):
    s = dslrec.train(dict(model="mf", epochs=2, method="oneshot", density=0.2, finetune_epochs=2, scope="per_tensor"),
                     dataset=small, out=tmp_path / "oneshot", progress=False)
    p = s["params"]
    assert p["active"] == round(0.2 * p["total"]) and p["peak_active"] == p["total"]
    assert p["mean_active"] == pytest.approx((p["total"] + p["active"]) / 2)
    assert s["epochs_run"] == 4 and s["best_epoch"] in (3, 4)  # selected in the fine-tuning phase


def test_resume_after_the_last_checkpoint_reports_the_same_result(small, tmp_path):
    # a run killed after its last checkpoint but before summary.json
    out = tmp_path / "done"
    first = dslrec.train(dict(model="mf", epochs=3, lr=5e-3), dataset=small, out=out, progress=False)
    (out / "summary.json").unlink()
    again = dslrec.train(resume=out, dataset=small, progress=False)
    assert again["best_epoch"] == first["best_epoch"] and again["valid"] == first["valid"]
    assert again["test"] == first["test"]


def test_demo_runs_end_to_end(tmp_path, capsys):
    from dslrec import demo

    assert demo.main(["--out", str(tmp_path / "demo"), "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    for label, folder, _ in demo.RUNS:
        assert label in printed and (tmp_path / "demo" / folder / "summary.json").exists()
    assert printed.count("of dense recall@20") == 2 and "top-5 recommendations" in printed
