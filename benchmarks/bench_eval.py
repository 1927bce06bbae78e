"""Benchmark: full-ranking evaluation and negative sampling on Gowalla, on CPU.

All 29,858 Gowalla users are ranked against all 40,981 items with random
64-dimensional user/item embeddings (an MF-like scorer, dot products), their
training items excluded, with ``torch.set_num_threads(2)``. Also times the
negative sampling of one training epoch (810,128 interactions).

    .venv/bin/python benchmarks/bench_eval.py [--threads 2] [--batch-sizes 0 512 1024 4096]
        [--recbole .venv-recbole/bin/python] [--rounds 3] [--compare-only]

Beside RecBole (issue 13): MF and LightGCN built with ``dslrec.models.build`` (untrained,
dim 64, LightGCN 3 layers) are evaluated on the test split as the training loop does
(``evaluate(model.scorer(), dataset, split="test")``), and RecBole 1.2.1's full-sort test
evaluation of BPR and LightGCN on the same split is timed by ``benchmarks/recbole_eval.py``,
run by the RecBole interpreter (``--recbole``, default ``.venv-recbole/bin/python``; create
it with ``make recbole-env``; without it the comparison is skipped). Both sides use
``--threads`` threads; dslrec scores its default batch (8 MiB of float32 scores per thread; 16
MiB of bfloat16 scores where its candidate pass runs) and RecBole both as many users as
256 MiB of float32 scores hold and as many as 8 MiB per thread hold (``--recbole-batch``; the
smaller is RecBole's best here), its best kept;
the two sides alternate over ``--rounds`` rounds and each keeps its minimum. A profiled
evaluation of MF splits dslrec's time into phases (scores, exclusion, top-k, metrics).
Written under ``recbole_comparison`` and ``eval_phases``, keyed by thread count, beside the
other thread counts' entries already in the file. ``--compare-only`` runs only these.

Data: ``dslrec.data.load("gowalla")`` when available, else the LightGCN text
files under ``$DSLREC_DATA_DIR/gowalla`` (default ``<repo>/../shared/data``).
Prints a table and writes ``benchmarks/results/eval.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import platform
import pstats
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dslrec.data.dataset import Dataset, csr_from_pairs
from dslrec.data.sampling import epoch_batches, pairwise_epoch, pointwise_epoch
from dslrec.evaluate import evaluate, sampled_evaluate, sampled_negatives
from dslrec.evaluate.ranking import candidate_batch_size, default_batch_size, eval_users, uses_candidate_pass
from dslrec.models.base import DotScorer

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "eval.json"
RECBOLE_PYTHON = REPO / ".venv-recbole" / "bin" / "python"
RECBOLE_SCRIPT = REPO / "benchmarks" / "recbole_eval.py"
BACKBONES = ("mf", "lightgcn")


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


def write_split(d: Dataset, path: Path) -> None:
    """The dataset's train/valid/test as (user, item) index arrays, for ``recbole_eval.py``."""
    out = {}
    for split in ("train", "valid", "test"):
        m = d.split(split).tocoo()
        out[f"{split}_users"], out[f"{split}_items"] = m.row.astype(np.int64), m.col.astype(np.int64)
    np.savez(path, **out)


def build_model(name: str, d: Dataset, dim: int):
    """An untrained ``name`` backbone (seed 0, LightGCN with 3 layers) in eval mode."""
    from dslrec.models import build

    torch.manual_seed(0)
    kw = {"n_layers": 3} if name == "lightgcn" else {}
    model = build(name, d, dim=dim, **kw)
    model.eval()
    return model


def dslrec_test_eval(name: str, d: Dataset, dim: int, batch_size: int):
    """() -> test metrics of an untrained ``name`` model, evaluated as the training loop does
    (``training/run.py``'s ``make_evaluator``: eval mode, no grad, ``model.scorer()`` built
    per evaluation, so LightGCN propagates in every one)."""
    model = build_model(name, d, dim)

    def run() -> dict:
        with torch.no_grad():
            return evaluate(model.scorer(), d, split="test", ks=(20,), batch_size=batch_size)

    return run


class RecBole:
    """``recbole_eval.py --serve`` in the RecBole interpreter: data loaded once, one timed
    evaluation per backbone each time ``round()`` is called (it idles between rounds)."""

    def __init__(self, python: str, split: Path, threads: int, users_per_batch: int, n_items: int,
                 log: Path):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        # RecBole's eval_batch_size counts (user, item) pairs; its item count has a padding id
        cmd = [python, str(RECBOLE_SCRIPT), "--split", str(split), "--threads", str(threads),
               "--eval-batch-size", str(users_per_batch * (n_items + 1)), "--serve"]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, env=env, cwd=log.parent)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = "\n".join(self.log.read_text().splitlines()[-20:])
            raise RuntimeError(f"recbole_eval.py exited ({self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def round(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare_recbole(args, d: Dataset) -> dict | None:
    """dslrec's and RecBole's test evaluation times, alternated over ``args.rounds`` rounds."""
    python = args.recbole or (str(RECBOLE_PYTHON) if RECBOLE_PYTHON.exists() else None)
    if python is not None:  # absolute: RecBole runs in a temporary folder
        python = os.path.abspath(shutil.which(python) or python)
    if python is None:
        print(f"RecBole comparison skipped: no {RECBOLE_PYTHON.relative_to(REPO)}; "
              "create it with `make recbole-env` (or pass --recbole PYTHON)")
        return None
    ours_bs = default_batch_size("cpu", d.n_items)  # float32 scores: RecBole's best setting here
    probe = build_model("mf", d, args.dim).scorer()
    n_test = len(eval_users(d, "test"))
    ours_actual = (candidate_batch_size(d.n_items) if uses_candidate_pass(probe, n_test, d.n_items, 20, "cpu")
                   else ours_bs)
    # RecBole at its best of two batch settings: as many users as 256 MiB of scores (fast for it,
    # its default of 4,096 (user, item) pairs ranks one user at a time here and takes ~2x longer)
    # and dslrec's own batch; dslrec at its default
    batches = args.recbole_batch or sorted({(2**28) // (4 * d.n_items), ours_bs})
    runs = {b: dslrec_test_eval(b, d, args.dim, None) for b in BACKBONES}
    mine: dict[str, list[float]] = {b: [] for b in BACKBONES}
    theirs: dict[str, list[float]] = {b: [] for b in BACKBONES}
    metrics: dict = {}
    by_batch: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        split = Path(tmp) / "split.npz"
        write_split(d, split)
        servers = []
        for bs in batches:
            t = time.perf_counter()
            servers.append(RecBole(python, split, args.threads, bs, d.n_items, Path(tmp) / f"recbole-{bs}.log"))
            rb = servers[-1]
            print(f"RecBole {rb.info['recbole']} ready in {time.perf_counter() - t:.0f} s "
                  f"({rb.info['test_users']} test users, {rb.info['users_per_batch']} per batch, "
                  f"{rb.info['threads']} threads)")
        try:
            for r in range(args.rounds):
                def ours():
                    for b in BACKBONES:
                        sec, metrics[b] = timed(runs[b])
                        mine[b].append(sec)

                def recbole():
                    for server in servers:
                        for b, v in server.round().items():
                            theirs[b].append(v["seconds"])
                            by_batch.setdefault(f"{b}@{server.info['users_per_batch']}", []).append(v["seconds"])
                            metrics[f"recbole_{b}"] = v["metrics"]

                for side in ((ours, recbole) if r % 2 == 0 else (recbole, ours)):  # alternate who goes first
                    side()
                print(f"  round {r + 1}: " + ", ".join(
                    f"{b} {mine[b][-1]:.2f} s vs {theirs[b][-1]:.2f} s" for b in BACKBONES))
        finally:
            for server in servers:
                server.close()
    rows = [{"backbone": b, "dslrec_seconds": min(mine[b]), "recbole_seconds": min(theirs[b]),
             "ratio": min(mine[b]) / min(theirs[b])} for b in BACKBONES]
    print(f"\n{'backbone':<10} {'dslrec s':>9} {'RecBole s':>10} {'ratio':>7}   "
          f"(test full ranking, {args.threads} threads, best of {args.rounds})")
    for r in rows:
        print(f"{r['backbone']:<10} {r['dslrec_seconds']:>9.2f} {r['recbole_seconds']:>10.2f} {r['ratio']:>7.2f}")
    return {
        "rows": rows,
        "threads": args.threads,
        "rounds": args.rounds,
        "users_per_batch": {"dslrec": ours_actual, "recbole": batches},
        "all_seconds": {"dslrec": mine, "recbole": theirs, "recbole_by_batch": by_batch},
        "recbole": [{k: server.info[k] for k in ("recbole", "torch", "numpy", "eval_batch_size",
                                                 "users_per_batch", "test_users", "setup_seconds")}
                    for server in servers],
        "metrics_untrained": {k: {m: float(v) for m, v in ms.items()} for k, ms in metrics.items()},
        "load_average_at_end": os.getloadavg()[0],
    }


def rusage() -> dict | None:
    """This process's user and system CPU seconds and minor page faults so far (None off Unix)."""
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_user_seconds": r.ru_utime, "cpu_system_seconds": r.ru_stime, "minor_page_faults": r.ru_minflt}


# dslrec functions (by name) whose time, and that of what they call, is one phase of evaluation;
# names of both the per-batch ranking and the block-merging kernel. Any function under
# dslrec/models/ (the scorer, LightGCN's propagation) is "scores".
PHASES = {
    "own_scores": "scores", "clean_scores": "scores", "reduced_scores": "scores",
    "exclude_": "exclusion", "excluded_pairs": "exclusion", "_exclude_block": "exclusion",
    "exclusion_splits": "exclusion",
    "top_values": "topk", "topk_ordered": "topk", "exact_top": "topk", "order_top": "topk",
    "merge_top": "topk", "top": "topk",
    "target_hits": "metrics", "rank_metrics": "metrics", "discounts": "metrics", "summary": "metrics",
}


def profile_phases(run) -> dict:
    """Seconds of one profiled ``run()`` per phase: each function's own time (torch and numpy
    calls included) goes to its phase if it is a named dslrec function, else to its callers'
    phases in proportion to the time they spent in it; what no phase claims is "other"."""
    prof = cProfile.Profile()
    before = rusage()
    t = time.perf_counter()
    prof.enable()
    run()
    prof.disable()
    wall = time.perf_counter() - t
    after = rusage()
    stats = pstats.Stats(prof).stats  # func -> (cc, nc, tottime, cumtime, {caller: (.., tt, ct)})

    def own_phase(func) -> str | None:
        path, _, name = func
        if "dslrec" not in path.replace("\\", "/"):
            return None
        if "/models/" in path.replace("\\", "/"):
            return "scores"
        return PHASES.get(name)

    shares: dict = {}

    def share(func, seen=()) -> dict[str, float]:
        """{phase: fraction} of ``func``'s time."""
        if func in shares:
            return shares[func]
        phase = own_phase(func)
        if phase:
            out = {phase: 1.0}
        else:
            callers = {c: v[3] for c, v in stats.get(func, (0, 0, 0, 0, {}))[4].items() if c not in seen}
            total = sum(callers.values())
            out = {}
            for c, ct in callers.items():
                for p, f in share(c, seen + (func,)).items():
                    out[p] = out.get(p, 0.0) + f * (ct / total if total else 1 / len(callers))
            out = out or {"other": 1.0}
        if not seen:
            shares[func] = out
        return out

    phases: dict[str, float] = {}
    for func, (_, _, tt, _, _) in stats.items():
        for p, f in share(func).items():
            phases[p] = phases.get(p, 0.0) + f * tt
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    return {
        "wall_seconds_profiled": wall,
        # process CPU time and minor page faults of the profiled run (Unix): a fresh score block
        # per batch is paid again in page faults, seen as system time
        **({k: after[k] - before[k] for k in after} if after else {}),
        "seconds": {p: phases.get(p, 0.0) for p in ("scores", "exclusion", "topk", "metrics", "other")},
        "top_functions_own_seconds": [
            {"function": f"{Path(f[0]).name}:{f[1]}({f[2]})", "calls": v[1], "seconds": v[2]} for f, v in top
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[0, 512, 1024, 4096],
                    help="users per evaluation batch; 0 = evaluate's default (8 MiB of scores per thread)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each evaluation (best kept)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--recbole", metavar="PYTHON",
                    help="the RecBole venv's interpreter (default .venv-recbole/bin/python if present)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated dslrec/RecBole rounds (best kept)")
    ap.add_argument("--recbole-batch", type=int, nargs="+", default=None,
                    help="RecBole's users per batch (its best is kept; default: 256 MiB of scores and dslrec's batch)")
    ap.add_argument("--compare-only", action="store_true",
                    help="only the RecBole comparison and the phase profile (other figures in --out kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t_load, (d, how) = timed(load_gowalla)
    print(f"gowalla via {how}: {d.n_users} users, {d.n_items} items, "
          f"train {d.train.nnz}, valid {d.valid.nnz}, test {d.test.nnz} ({t_load:.1f} s)")
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = f"threads_{args.threads}"
    phases = profile_phases(dslrec_test_eval("mf", d, args.dim, None))
    print("dslrec MF test evaluation, profiled: " + ", ".join(
        f"{p} {v:.2f} s" for p, v in phases["seconds"].items()) + f" (wall {phases['wall_seconds_profiled']:.2f} s"
        + (f"; cpu user {phases['cpu_user_seconds']:.2f} s, system {phases['cpu_system_seconds']:.2f} s, "
           f"{phases['minor_page_faults']:,} minor page faults)" if "cpu_user_seconds" in phases else ")"))
    comparison = compare_recbole(args, d)
    extra = {"eval_phases": {**previous.get("eval_phases", {}), key: {"backbone": "mf", **phases}}}
    if comparison is not None:
        extra["recbole_comparison"] = {**previous.get("recbole_comparison", {}), key: comparison}
    if args.compare_only:
        write_json(args.out, {**previous, **extra})
        print(f"wrote {args.out}")
        return
    g = torch.Generator().manual_seed(0)
    user_emb = torch.randn(d.n_users, args.dim, generator=g) * 0.1
    item_emb = torch.randn(d.n_items, args.dim, generator=g) * 0.1

    scorer = DotScorer(lambda users: user_emb[users], item_emb.T)  # MF's scorer: the default route

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
    n_test = len(eval_users(d, "test"))
    default_bs = candidate_batch_size(d.n_items) if uses_candidate_pass(scorer, n_test, d.n_items, 20, "cpu") else bs0
    for bs in args.batch_sizes:
        bs = bs or default_bs
        t, cpu, res = timed_cpu(
            lambda: evaluate(scorer, d, "test", ks=(20,), batch_size=bs), args.repeat
        )
        evals[bs] = (t, res)
        label = " (the default)" if bs == default_bs else ""
        rows.append({"what": f"full-ranking evaluation, batch {bs}{label}", "seconds": t, "cpu_seconds": cpu})
    t, cpu, res32 = timed_cpu(
        lambda: evaluate(scorer, d, "test", ks=(20,), batch_size=bs0, candidate_pass=False), args.repeat
    )
    rows.append({"what": f"the same, float32 route only (candidate_pass=False), batch {bs0}",
                 "seconds": t, "cpu_seconds": cpu})
    same_metrics = all(res32 == r for _, r in evals.values())
    print(f"float32 route and default route give the same metrics: {same_metrics}")
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
        "default_batch_size": default_bs,
        "float32_route_same_metrics": same_metrics,
        "eval_seconds_best": evals[best_bs][0],
        "target_seconds": 10.0,
        "metrics_random_embeddings": metrics,
        "sampled_metrics_random_embeddings": sampled,
        **{k: previous[k] for k in ("recbole_comparison",) if k in previous},
        **extra,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
