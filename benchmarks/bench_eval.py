"""Benchmark: full-ranking evaluation and negative sampling on Gowalla, on CPU.

All 29,858 Gowalla users are ranked against all 40,981 items with random
64-dimensional user/item embeddings (an MF-like scorer, dot products), their
training items excluded, with ``torch.set_num_threads(2)``. Also times the
negative sampling of one training epoch (810,128 interactions).

    .venv/bin/python benchmarks/bench_eval.py [--threads 2] [--batch-sizes 0 512 1024 4096]

Data: ``dslrec.data.load("gowalla")`` when available, else the LightGCN text
files under ``$DSLREC_DATA_DIR/gowalla`` (default ``<repo>/../shared/data``).
Prints a table and writes ``benchmarks/results/eval.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dslrec.data.dataset import Dataset, csr_from_pairs
from dslrec.data.sampling import epoch_batches, pairwise_epoch, pointwise_epoch
from dslrec.evaluate import evaluate, sampled_evaluate, sampled_negatives
from dslrec.evaluate.ranking import default_batch_size

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "eval.json"


def data_dir() -> Path:
    return Path(os.environ.get("DSLREC_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def read_lightgcn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of a ``user item item ...`` file (fallback reader, benchmark only)."""
    users, items = [], []
    for line in path.read_text().splitlines():
        ids = np.array(line.split(), dtype=np.int64)
        if len(ids) > 1:
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    return np.concatenate(users), np.concatenate(items)


def load_gowalla() -> tuple[Dataset, str]:
    """The Gowalla dataset and how it was loaded (the project's loader, else a fallback)."""
    os.environ.setdefault("DSLREC_DATA_DIR", str(data_dir()))
    try:
        from dslrec.data import load

        return load("gowalla", download=False, progress=False), "dslrec.data.load"
    except (ImportError, AttributeError, TypeError) as e:
        print(f"dslrec.data.load unavailable ({e}); using the fallback reader")
    folder = data_dir() / "gowalla"
    tu, ti = read_lightgcn_file(folder / "train.txt")
    su, si = read_lightgcn_file(folder / "test.txt")
    shape = (int(max(tu.max(), su.max())) + 1, int(max(ti.max(), si.max())) + 1)
    empty = csr_from_pairs([], [], shape)
    d = Dataset(
        name="gowalla",
        user_ids=np.arange(shape[0]).astype(str),
        item_ids=np.arange(shape[1]).astype(str),
        train=csr_from_pairs(tu, ti, shape),
        valid=empty,
        test=csr_from_pairs(su, si, shape),
    )
    return d, f"fallback reader of {folder}"


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def timed_cpu(fn, repeat: int = 1) -> tuple[float, float, object]:
    """(best wall seconds, its process CPU seconds, result) of ``repeat`` calls."""
    best, out = (float("inf"), 0.0), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best[0], best[1], out


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[0, 512, 1024, 4096],
                    help="users per evaluation batch; 0 = evaluate's default (256 MiB of scores)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each evaluation (best kept)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t_load, (d, how) = timed(load_gowalla)
    print(f"gowalla via {how}: {d.n_users} users, {d.n_items} items, "
          f"train {d.train.nnz}, valid {d.valid.nnz}, test {d.test.nnz} ({t_load:.1f} s)")
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    g = torch.Generator().manual_seed(0)
    user_emb = torch.randn(d.n_users, args.dim, generator=g) * 0.1
    item_emb = torch.randn(d.n_items, args.dim, generator=g) * 0.1

    def scorer(users: torch.Tensor) -> torch.Tensor:
        return user_emb[users] @ item_emb.T

    rows = []
    # the matrix products alone: the floor any full-ranking evaluation pays
    bs0 = default_batch_size("cpu", d.n_items)

    def scores_only():
        with torch.no_grad():
            for s in range(0, d.n_users, bs0):
                scorer(torch.arange(s, min(s + bs0, d.n_users)))

    t_mm, cpu, _ = timed_cpu(scores_only, args.repeat)
    rows.append({"what": f"scores only (matmul, batch {bs0})", "seconds": t_mm, "cpu_seconds": cpu})
    evals = {}
    for bs in args.batch_sizes:
        bs = bs or default_batch_size("cpu", d.n_items)
        t, cpu, res = timed_cpu(
            lambda: evaluate(scorer, d, "test", ks=(20,), batch_size=bs), args.repeat
        )
        evals[bs] = (t, res)
        rows.append({"what": f"full-ranking evaluation, batch {bs}", "seconds": t, "cpu_seconds": cpu})
    best_bs = min(evals, key=lambda b: evals[b][0])

    # sampling on the full LightGCN training file (train + the loader's valid carve-out)
    train = (d.train + d.valid).tocsr()
    train.sort_indices()
    full = dataclasses.replace(d, train=train, valid=csr_from_pairs([], [], train.shape))
    rng = np.random.default_rng(0)
    t_pair, _ = timed(lambda: pairwise_epoch(full, rng), repeat=3)
    t_user, _ = timed(lambda: pairwise_epoch(full, rng, per_user=True), repeat=3)
    t_point, _ = timed(lambda: pointwise_epoch(full, rng, n_neg=4), repeat=3)
    t_iter, _ = timed(lambda: sum(1 for _ in epoch_batches(full, "pairwise", 2048, rng)), repeat=3)
    t_sneg, negs = timed(lambda: sampled_negatives(d, "test", 100, 0))
    t_seval, sampled = timed(lambda: sampled_evaluate(scorer, d, "test", ks=(10, 20), negatives=negs))
    rows += [
        {"what": "sampled protocol: 100 negatives per test user", "seconds": t_sneg},
        {"what": "sampled protocol: evaluation (HR/NDCG@10,20)", "seconds": t_seval},
        {"what": f"BPR negatives, one epoch of {train.nnz} (per interaction)", "seconds": t_pair},
        {"what": "BPR negatives, one epoch (per user, LightGCN)", "seconds": t_user},
        {"what": "pointwise, one epoch (4 negatives each)", "seconds": t_point},
        {"what": "epoch_batches pairwise, sample + iterate (batch 2048)", "seconds": t_iter},
    ]

    print(f"\n{'what':<62} {'seconds':>8} {'cpu s':>8}")
    for r in rows:
        cpu = f"{r['cpu_seconds']:>8.2f}" if "cpu_seconds" in r else ""
        print(f"{r['what']:<62} {r['seconds']:>8.3f} {cpu}")
    metrics = evals[best_bs][1]
    print(f"\nbest batch size {best_bs}; random-embedding metrics (sanity only): "
          + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    write_json(args.out, {
        "dataset": d.sizes(),
        "loaded_via": how,
        "threads": args.threads,
        "repeat": args.repeat,
        "dim": args.dim,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "timings": rows,
        "best_batch_size": best_bs,
        "eval_seconds_best": evals[best_bs][0],
        "target_seconds": 10.0,
        "metrics_random_embeddings": metrics,
        "sampled_metrics_random_embeddings": sampled,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
