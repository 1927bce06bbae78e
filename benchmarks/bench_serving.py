"""Serving from the compact file against the dense export: MF, DSL at density 0.2, in one run.

    python benchmarks/bench_serving.py                          # the issue's sizes (about 25 minutes on 2 cores)
    python benchmarks/bench_serving.py --datasets gowalla        # the real dataset only (a few minutes)
    python benchmarks/bench_serving.py --big-users 200000 --big-items 50000   # a quick look

Datasets: ``big``, a LightGCN-format folder written here (default 2,000,000
users x 500,000 items, about 6 interactions per user, long-tailed items), and
``gowalla`` (``../shared/data`` is used as the mirror when it holds it). On
each, MF (dim 64) is trained twice through ``dslrec train`` (``--max_steps``
and ``--eval_users`` keep it short: the weights have the real sparsity pattern
of a DSL run, not converged values): dense, and DSL at density 0.2. The dense
run is exported as float32 (every tensor dense), the DSL run as float32,
float16 and int8. Each file is then measured in a fresh process with
``--threads`` threads: file and section sizes, ``Recommender.load`` time,
resident memory (VmRSS / VmHWM from /proc/self/status) after imports, after
load, the peak while loading and the peak while serving (VmHWM reset after
loading through /proc/self/clear_refs), and the time to recommend top-20 for
``--users`` random known users (seen items excluded; median of 3 after one
warm-up; variants alternate over ``--rounds`` processes and the fastest time
is kept, as the machine is shared; memory is the median over the rounds, each
round's figures are in the JSON). Memory is reported whole-process and as
growth over the process after imports (torch alone is about 250 MB); beside
VmRSS, the growth of private memory (RssAnon: VmRSS less file-backed pages,
such as the torch code a first call runs) after load, and what the process
keeps after serving (the users are chosen, and the harness's own arrays
freed, before the serving peak is reset).
On gowalla, recall@20 of ``recommend`` over every test user is computed for
each file; the accuracy of int8 against float32 is judged on trained models:
the accuracy grid's kept MF DSL runs at density 0.2 (``--accuracy-runs``,
``scripts/readme_results.py`` writes them), each exported as float32, float16
and int8 and ranked on its test split. Prints tables of ratios to the dense export;
writes benchmarks/results/serving.json (``--json``). Finished run directories
under --work are reused (delete them to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> (run, dtype)
    "dense float32": ("dense", "float32"),
    "dsl-0.2 float32": ("dsl-0.2", "float32"),
    "dsl-0.2 float16": ("dsl-0.2", "float16"),
    "dsl-0.2 int8": ("dsl-0.2", "int8"),
}
RUNS = {"dense": dict(method="dense"), "dsl-0.2": dict(method="dsl", density=0.2)}


def status_kb() -> dict[str, int]:
    """VmRSS, VmHWM and RssAnon (private memory: VmRSS less file-backed pages such as torch's
    code) of this process in kB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(value.split()[0])
    return out


def measure(path: str, n_users: int, seed: int, threads: int, repeats: int = 3) -> dict:
    """Run in a fresh process: load the file, serve n_users, report times and memory."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from dslrec.export import Recommender
    from dslrec.memory import release_freed_memory

    start = status_kb()  # after imports: growth is counted from here
    t0 = time.perf_counter()
    rec = Recommender.load(path)
    load_s = time.perf_counter() - t0
    loaded = status_kb()
    rng = np.random.default_rng(seed)
    has_items = np.flatnonzero(np.diff(rec.seen.indptr.numpy()) > 0)
    users = rec.user_ids(rng.choice(has_items, size=min(n_users, len(has_items)), replace=False))
    del has_items
    release_freed_memory()  # choosing the users (arrays over every user) is the harness's, not serving's
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on is serving's, not loading's
    rec.recommend(users, k=20)  # warm-up; timed below
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = rec.recommend(users, k=20)
        times.append(time.perf_counter() - t0)
    st = status_kb()
    base, after_load, peak_load = start["VmRSS"], loaded["VmRSS"], loaded["VmHWM"]
    return {
        "file_bytes": os.path.getsize(path),
        "load_s": load_s,
        "recommend_s": statistics.median(times),
        "users": len(users),
        "rss_base_mb": base / 1024,
        "rss_after_load_mb": after_load / 1024,
        "rss_load_delta_mb": (after_load - base) / 1024,
        "rss_peak_load_mb": peak_load / 1024,
        "rss_peak_load_delta_mb": (peak_load - base) / 1024,
        "rss_peak_mb": st["VmHWM"] / 1024,  # while serving
        "rss_peak_delta_mb": (st["VmHWM"] - base) / 1024,
        "anon_load_delta_mb": (loaded["RssAnon"] - start["RssAnon"]) / 1024,  # private memory only
        "rss_served_delta_mb": (st["VmRSS"] - base) / 1024,  # what the process keeps after serving
        "anon_served_delta_mb": (st["RssAnon"] - start["RssAnon"]) / 1024,
        "held_arrays_mb": rec.memory_bytes() / 2**20,
        "checksum_items": int(out.items.sum()),
    }


def aggregate(variant: str, rounds: list[dict]) -> dict:
    """One variant's rounds as one: the fastest time, the median of each memory figure (each on its
    own), every round's figures under ``rounds``; counts and the checksum must agree across rounds."""
    out = {}
    for key in rounds[0]:
        values = [m[key] for m in rounds]
        if key.endswith("_s"):
            out[key] = min(values)
        elif key.endswith("_mb"):
            out[key] = statistics.median(values)
        elif len(set(values)) > 1:
            sys.exit(f"bench_serving: {variant}: {key} differs between rounds ({values}); the ranking or the "
                     "file changed between processes")
        else:
            out[key] = values[0]
    out["rounds"] = {key: [m[key] for m in rounds] for key in rounds[0] if key.endswith(("_s", "_mb"))}
    return out


def train_runs(name: str, dataset: str, args, work: Path) -> dict[str, Path]:
    out = {}
    for run, settings in RUNS.items():
        run_dir = work / f"{name}-mf-{run}"
        if not (run_dir / "summary.json").is_file():
            cmd = [sys.executable, "-m", "dslrec.cli", "train", "--out", str(run_dir), "--quiet", "--model", "mf",
                   "--dataset", dataset, "--dim", "64", "--epochs", str(args.epochs), "--eval_users", "1000"]
            if name == "big":
                cmd += ["--max_steps", str(args.steps), "--patience", "0"]
            for key, value in settings.items():
                cmd += [f"--{key}", str(value)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            print(f"trained {name} {run} in {time.perf_counter() - t0:.0f}s -> {run_dir}", flush=True)
        out[run] = run_dir
    return out


def recall_from_recommend(path: Path, dataset) -> float:
    """Mean recall@20 of ``recommend`` over the test users (training items excluded, as served)."""
    import numpy as np

    from dslrec.export import Recommender

    rec = Recommender.load(path)
    test = dataset.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    users = users[np.diff(dataset.train.indptr)[users] > 0]
    out = rec.recommend(dataset.user_ids[users], k=20)
    hits = test[users[:, None], np.maximum(out.items, 0)].toarray() * (out.items >= 0)
    return float((hits.sum(1) / np.minimum(np.diff(test.indptr)[users], 20)).mean())


def accuracy_of_dtypes(run_dirs: list[Path], work: Path) -> dict:
    """recall@20 from ``recommend`` on the test split for each stored dtype of trained runs."""
    from dslrec.export import export
    from dslrec.settings import load_dataset, resolve_settings

    out = {}
    for run_dir in run_dirs:
        data = load_dataset(resolve_settings(config_file=run_dir / "config.yaml"), progress=False)
        row = {}
        for dtype in ("float32", "float16", "int8"):
            path = work / f"accuracy-{run_dir.name}-{dtype}.dslrec"
            export(run_dir, path, dtype=dtype)
            row[dtype] = recall_from_recommend(path, data)
        row["int8 / float32"] = row["int8"] / row["float32"]
        out[run_dir.name] = row
        print(f"  {run_dir.name:<40} recall@20 float32 {row['float32']:.4f}  float16 {row['float16']:.4f}  "
              f"int8 {row['int8']:.4f}  (int8 {row['int8 / float32']:.4f}x)", flush=True)
    return out


def bench_dataset(name: str, dataset: str, args) -> dict:
    from dslrec.export import export

    runs = train_runs(name, dataset, args, args.work)
    exported, results = {}, {}
    for variant, (run, dtype) in VARIANTS.items():
        path = args.work / f"{name}-{variant.replace(' ', '-')}.dslrec"
        exported[variant] = (path, export(runs[run], path, dtype=dtype))
    # Variants alternate over rounds and the fastest time of each is kept: the machine is shared,
    # and interference only ever adds time. Memory is the median over the rounds: the heap's peak
    # in identical processes varies by tens of MB (where glibc places the freed score blocks).
    rounds: dict[str, list[dict]] = {variant: [] for variant in exported}
    for _ in range(args.rounds):
        for variant, (path, _) in exported.items():
            cmd = [sys.executable, __file__, "--measure", str(path), "--users", str(args.users),
                   "--seed", str(args.seed), "--threads", str(args.threads)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            rounds[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for variant, ms in rounds.items():
        results[variant] = aggregate(variant, ms)
    for variant, (run, _) in VARIANTS.items():
        summary = json.loads((runs[run] / "summary.json").read_text())
        sizes = exported[variant][1]["sizes"]
        dense_bytes = exported[variant][1]["dense_bytes"]
        results[variant].update(
            weights_bytes=sizes["weights"], seen_bytes=sizes["seen"], checkpoint_bytes=dense_bytes,
            # the target's denominator: the dense checkpoint plus the same training items
            checkpoint_plus_seen_bytes=dense_bytes + sizes["seen"],
            active_params=summary["params"]["active"])
    if name == "gowalla":
        import dslrec.data

        data = dslrec.data.load(dataset, progress=False)
        for variant, (path, _) in exported.items():
            results[variant]["recall@20_recommend"] = recall_from_recommend(path, data)
    return results


ROWS = [("file size", "file_bytes"), ("weights section", "weights_bytes"), ("load time", "load_s"),
        ("RSS after load (whole)", "rss_after_load_mb"), ("RSS after load - base", "rss_load_delta_mb"),
        ("RSS peak loading - base", "rss_peak_load_delta_mb"),
        ("RSS peak serving (whole)", "rss_peak_mb"), ("RSS peak serving - base", "rss_peak_delta_mb"),
        ("private after load - base", "anon_load_delta_mb"), ("RSS after serving - base", "rss_served_delta_mb"),
        ("private after serving - base", "anon_served_delta_mb"),
        ("arrays held", "held_arrays_mb"), ("recommend top-20", "recommend_s")]


def show(name: str, results: dict, args) -> dict:
    base = results["dense float32"]
    print(f"\nMF dim 64 on {name}, {args.users} users, {args.threads} thread(s); ratios to the dense export "
          "(absolute in brackets)")
    print(f"{'':<24}" + "".join(f"{n:>24}" for n in results))
    for label, key in ROWS:
        cells = []
        for m in results.values():
            value = m[key]
            shown = f"{value / 2**20:.1f}MB" if key.endswith("bytes") else (
                f"{value:.3f}s" if key.endswith("_s") else f"{value:.0f}MB")
            cells.append(f"{value / base[key]:.3f} ({shown})")
        print(f"{label:<24}" + "".join(f"{c:>24}" for c in cells))
    if "recall@20_recommend" in base:
        print(f"{'recall@20 (recommend)':<24}" + "".join(f"{m['recall@20_recommend']:>24.4f}" for m in results.values()))
    c, q = results["dsl-0.2 float32"], results["dsl-0.2 int8"]
    targets = {
        "recommend time <= 1.0x dense": c["recommend_s"] / base["recommend_s"],
        "RSS growth after load <= 0.35x dense": c["rss_load_delta_mb"] / base["rss_load_delta_mb"],
        "RSS peak growth while serving <= 0.5x dense": c["rss_peak_delta_mb"] / base["rss_peak_delta_mb"],
        "file <= 0.3x (dense checkpoint + same training items)": c["file_bytes"] / c["checkpoint_plus_seen_bytes"],
        "int8 weights section <= 0.15x dense checkpoint": q["weights_bytes"] / q["checkpoint_bytes"],
    }
    if "recall@20_recommend" in q:
        targets["int8 recall@20 >= 0.98x float32"] = q["recall@20_recommend"] / max(c["recall@20_recommend"], 1e-12)
    print("targets (whole-process memory ratios: after load "
          f"{c['rss_after_load_mb'] / base['rss_after_load_mb']:.3f}x, peak {c['rss_peak_mb'] / base['rss_peak_mb']:.3f}x)")
    for what, value in targets.items():
        limit = float(what.split("= ")[1].split("x")[0])
        ok = value >= limit if ">=" in what else value <= limit
        print(f"  {what:<58} {value:.3f}  {'met' if ok else 'NOT met'}")
    return {"ratios_to_dense": {n: {k: m[k] / base[k] for _, k in ROWS} for n, m in results.items()},
            "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="big,gowalla")
    parser.add_argument("--big-users", type=int, default=2_000_000)
    parser.add_argument("--big-items", type=int, default=500_000)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps on the big data")
    parser.add_argument("--epochs", type=int, default=2, help="epochs on gowalla (and the cap on big)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds (fastest time, median memory kept)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-serving")
    parser.add_argument("--accuracy-runs", default="mf__dsl__density0.2__seed*",
                        help="kept runs (benchmarks/results/sparse_accuracy/runs, a glob) whose dtypes' recall is compared")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the subprocess's job
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.users, args.seed, args.threads)))
        return

    shared = ROOT.parent / "shared" / "data"
    if "DSLREC_MIRROR" not in os.environ and shared.is_dir():
        os.environ["DSLREC_MIRROR"] = str(shared)  # the local copy of the registry's files
    args.work.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "serving", "model": "mf", "dim": 64, "users": args.users, "threads": args.threads,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "datasets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        if name == "big":
            folder = args.work / f"big-{args.big_users}x{args.big_items}"
            if not (folder / "train.txt").is_file():
                from dslrec.data.synthetic import write_lightgcn_folder

                info = write_lightgcn_folder(folder, n_users=args.big_users, n_items=args.big_items,
                                             per_user=6.0, seed=0)
                print(f"wrote {folder}: {info}", flush=True)
            dataset = str(folder)
        else:
            dataset = name
        results = bench_dataset(name, dataset, args)
        out["datasets"][name] = {"results": results, **show(name, results, args)}
    kept = sorted((ROOT / "benchmarks" / "results" / "sparse_accuracy" / "runs").glob(args.accuracy_runs))
    if kept:
        print("\naccuracy of the stored dtypes (trained runs of the accuracy grid, real data):")
        out["accuracy"] = accuracy_of_dtypes(kept, args.work)
        ratios = [r["int8 / float32"] for r in out["accuracy"].values()]
        print(f"  int8 recall@20 >= 0.98x float32: worst {min(ratios):.4f}  {'met' if min(ratios) >= 0.98 else 'NOT met'}")
    else:
        print(f"\nno kept runs match --accuracy-runs {args.accuracy_runs!r} under benchmarks/results/sparse_accuracy/runs: "
              "int8 against float32 on trained models not measured (scripts/readme_results.py trains them)")
    path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
