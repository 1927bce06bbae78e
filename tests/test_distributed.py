"""Training on two processes (torchrun, gloo on loopback): one run directory, the same masks on every
rank after every update, a constant budget, evaluation equal to one process's, resume."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dslrec
from dslrec import distributed, models, rundir
from dslrec.data import load
from dslrec.errors import DslrecError
from dslrec.evaluate.ranking import UserMetrics, join_user_metrics
from dslrec.settings import resolve_settings
from dslrec.sparse import SparseConfig, SparseEngine
from dslrec.sparse.compact import packed_masks, split_compact_state
from dslrec.training.run import make_evaluator

SRC = Path(dslrec.__file__).parent.parent
# small and quick: 32 global batches an epoch on the synthetic data, an update every 12 steps growing by
# the gradient of the 6 steps before it. The checkpoint after epoch 1 (step 32) falls inside a window
# (31-36), so the saved growth signal is the ranks' mean; the one after epoch 2 (step 64) outside any
# (a run ending inside a window keeps summing for the update beyond its end, so that one extended is
# exact too; tests/test_rundir.py checks that on one process)
ARGS = ["--model", "mf", "--dataset", "synthetic", "--method", "dsl", "--density", "0.2", "--delta-t", "12",
        "--accumulate_steps", "6", "--schedule", "constant", "--patience", "0", "--seed", "4", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, n: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC), DSLREC_DIST_TIMEOUT="120")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(n),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "dslrec", "train", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / rundir.LOG).read_text().splitlines()]


def dense_best(run: Path) -> dict[str, torch.Tensor]:
    """A run's best weights as a dense model's state dict (compact runs store values and positions)."""
    state = rundir.load_weights(run / rundir.BEST)
    plain, packed = split_compact_state(state)
    for name, mask in packed_masks(packed).items():
        dense = torch.zeros(mask.numel())
        dense[mask.reshape(-1).nonzero().squeeze(1)] = packed[name]["values"].float()
        plain[name] = dense.view(mask.shape)
    return plain


def single_process_test(run: Path) -> dict[str, float]:
    """The test metrics one process computes for a run's saved best weights."""
    cfg = resolve_settings(config_file=run / rundir.CONFIG)
    data = load("synthetic")
    model = models.build(cfg.model, data, **cfg.model_options)
    model.load_state_dict(dense_best(run))
    return make_evaluator(cfg, data)(model, "test")


def check_two_rank_run(tmp_path: Path, storage: str) -> None:
    out = torchrun([*ARGS, "--epochs", "2", "--storage", storage, "--out", "run"], cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run directory, nothing else
    run = tmp_path / "run"
    assert out.stdout.count("run written to") == 1  # one summary printed: rank 0's
    summary = json.loads((run / rundir.SUMMARY).read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    log = records(run)
    assert len(log) == 2
    # each rank sampled and trained on its own half of every global batch: together, every training
    # pair of the epoch once
    pairs = load("synthetic").train.nnz
    for r in log:
        a, b = r["examples_by_rank"]
        assert a + b == pairs and abs(a - b) <= summary["steps_per_epoch"], r["examples_by_rank"]
    budget = log[0]["active"]
    n_updates = 0
    for r in log:
        assert r["active"] == budget
        assert r["sparse"]["active"] == log[0]["sparse"]["active"]  # the budget holds
        checks = r["sparse"]["ranks"]["mask_checksums"]
        assert len(checks) == r["sparse"]["updates"] > 0
        for by_rank in checks:  # after every update, both ranks hold the same masks
            assert len(by_rank) == 2 and by_rank[0] == by_rank[1]
        n_updates += len(checks)
    assert n_updates == log[-1]["sparse"]["n_updates"] == summary["steps_run"] // 12
    # evaluation over the two ranks' shares is one process's evaluation of the same weights
    again = single_process_test(run)
    assert again.keys() == summary["test"].keys()
    for k in again:
        assert summary["test"][k] == pytest.approx(again[k], rel=1e-9, abs=1e-12), k
    communication = summary["communication"]
    sparsifiable = summary["params"]["sparsifiable"]
    gradient_bytes = communication["bytes_per_step"]["gradients"]
    if storage == "masked":  # every dense table's gradient, every step
        assert gradient_bytes == 4 * sparsifiable
    else:  # the active values' only
        assert gradient_bytes == 4 * log[0]["sparse"]["active"]
        assert communication["bytes_per_step"]["signal"] > 0


def resume_to_four_epochs_like_one_go(tmp_path: Path, args: list[str]) -> None:
    """Resume ``tmp_path/run`` (2 epochs, trained with ``args``) to 4 epochs on two ranks: every update's
    masks agree across ranks, and the best weights are those two ranks reach in one go."""
    run = tmp_path / "run"
    torchrun(["--resume", str(run), "--epochs", "4", "--quiet"], cwd=tmp_path)
    log = records(run)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert all(by[0] == by[1] for r in log for by in r["sparse"]["ranks"]["mask_checksums"])
    torchrun([*args, "--epochs", "4", "--out", "straight"], cwd=tmp_path)
    a, b = dense_best(run), dense_best(tmp_path / "straight")
    for k in a:
        assert torch.equal(a[k] != 0, b[k] != 0), k  # the same masks
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    shutil.rmtree(tmp_path / "straight")


def test_two_ranks_masked(tmp_path):
    check_two_rank_run(tmp_path, "masked")


@pytest.mark.filterwarnings("ignore::dslrec.errors.DslrecWarning")  # 4 epochs do not beat popularity
def test_two_ranks_compact_and_resume(tmp_path):
    check_two_rank_run(tmp_path, "compact")
    # resumed on two ranks with more epochs (mid-interval: the growth signal is saved by rank 0), it
    # trains on to the weights two ranks reach in one go
    resume_to_four_epochs_like_one_go(tmp_path, [*ARGS[:-1], "--storage", "compact", "--quiet"])


@pytest.mark.filterwarnings("ignore::dslrec.errors.DslrecWarning")
def test_a_global_scope_compact_run_resumes_on_two_ranks(tmp_path):
    """With --scope global a tensor's share of the budget moves, so a resumed compact run installs values
    of another size than a fresh build's: DDP must be built over those (it reduced the stale ones, and
    the ranks drifted apart until the mask check stopped the run)."""
    args = [*ARGS[:-1], "--storage", "compact", "--scope", "global", "--quiet"]
    torchrun([*args, "--epochs", "2", "--out", "run"], cwd=tmp_path)
    resume_to_four_epochs_like_one_go(tmp_path, args)


def test_the_multi_machine_form_trains_one_run(tmp_path):
    """torchrun's form for several machines (``--nnodes 2 --node-rank R``, one launcher a machine), both
    launchers on this one: one run directory, each rank sampling its half."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC), DSLREC_DIST_TIMEOUT="120")
    port = free_port()
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
         "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "dslrec", "train", *ARGS, "--epochs", "1", "--storage", "compact", "--out", "run"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outs = [launcher.communicate(timeout=240) for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert "run written to" in outs[0][0] and "run written to" not in outs[1][0]  # rank 0 (node 0) prints
    summary = json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    (record,) = records(tmp_path / "run")
    assert sum(record["examples_by_rank"]) == load("synthetic").train.nnz
    assert min(record["examples_by_rank"]) > 0


def test_a_refused_setting_is_one_line_per_rank_and_leaves_nothing(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC), DSLREC_DIST_TIMEOUT="120")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "dslrec", "train",
           *ARGS, "--method", "lth", "--out", "run"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("dslrec: error")]
    assert sorted(line.split(":", 2)[1] for line in lines) == [" error", " error (rank 1)"], done.stderr
    assert all("--method lth" in line for line in lines)
    assert not (tmp_path / "run").exists()


def _diverging_rank(rank: int, port: int, out: Path) -> None:
    """One rank of a two-process engine whose ranks were (wrongly) seeded apart."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DSLREC_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    group = distributed.setup("cpu")
    model = torch.nn.Embedding(30, 8)
    engine = SparseEngine(model, None, SparseConfig(method="dsl", density=0.5, delta_t=3), total_steps=20,
                          seed=rank, dist=group)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine.attach(optimizer)
    message = "no error"
    try:
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.arange(30)).pow(2).sum().backward()
            engine.step()
    except DslrecError as e:
        message = str(e)
    (out / f"rank{rank}.txt").write_text(message)
    # both ranks stop at the same collective check, so both get here: leave together (closing the
    # group while the other rank still talks to it can abort that rank in gloo's threads)
    distributed.teardown(wait=True)


def test_masks_that_differ_across_ranks_stop_the_run(tmp_path):
    torch.multiprocessing.spawn(_diverging_rank, args=(free_port(), tmp_path), nprocs=2)
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "the sparse masks after update 1 (step 3) differs across ranks" in message, message


# --- without launching processes ---------------------------------------------------------------------

def test_shares_are_contiguous_disjoint_and_cover_everything():
    for n in (0, 1, 5, 64, 65):
        for world in (1, 2, 3, 8):
            shares = [distributed.shard(n, r, world) for r in range(world)]
            assert shares[0][0] == 0 and shares[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1


def test_joined_user_metrics_average_as_one():
    rng = np.random.default_rng(0)
    values = rng.random(101)
    whole = UserMetrics(np.arange(101), np.ones(101, int), np.zeros((101, 2), int), np.zeros((101, 2), bool),
                        {"recall@20": values})
    parts = []
    for r in range(3):
        a, b = distributed.shard(101, r, 3)
        parts.append(UserMetrics(whole.users[a:b], whole.n_target[a:b], whole.topk[a:b], whole.hits[a:b],
                                 {"recall@20": values[a:b]}))
    assert join_user_metrics(parts).summary() == whole.summary()


def test_positions_checksum_tells_sets_apart():
    a = torch.tensor([1, 5, 9, 200])
    assert distributed.positions_checksum(a) == distributed.positions_checksum(a.clone())
    assert distributed.positions_checksum(a) != distributed.positions_checksum(torch.tensor([1, 5, 10, 199]))
    assert distributed.positions_checksum(a) != distributed.positions_checksum(a[:3])
