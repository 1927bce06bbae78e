"""Distributed training (torchrun, gloo on loopback) against one process.

    DSLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_distributed.py [--steps 300] [--epochs 40]

1. Throughput: MF (dim 64, batch 2048, DSL at density 0.2, ``--delta-t 100``) on Gowalla for
   ``--steps`` optimiser steps, masked and compact storage, as one process with one thread and two
   processes with one thread each (torchrun); ``--two-threads`` adds one process with two threads. Samples per second
   are the global batch times the steps over the training time of the log (evaluation left out), and
   the bytes each rank hands to collectives per step come from summary.json (``communication``):
   the gradients DDP all-reduces every step, the growth signal averaged at updates (and at the
   checkpoint), the mask checksums.
2. Learning: MF with DSL at 0.2 on ml-100k for ``--epochs`` epochs, one process against two with the
   same global batch: test recall@20 and NDCG@20.

Prints a table and writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(args: list[str], out: Path, procs: int, threads: int) -> tuple[dict, list[dict], float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO / "src"))
    if procs == 1:
        cmd = [sys.executable, "-m", "dslrec", "train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "dslrec", "train"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, *args, "--out", str(out), "--quiet"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        log = REPO / "benchmarks" / "results" / "distributed_failure.txt"
        log.write_text(done.stdout + "\n" + done.stderr)
        raise SystemExit(f"{' '.join(cmd + args)} failed (output in {log}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return summary, log, wall


def throughput(steps: int, tmp: Path, two_threads: bool) -> list[dict]:
    rows = []
    for storage in ("masked", "compact"):
        for procs, threads in ((1, 1), (1, 2), (2, 1)) if two_threads else ((1, 1), (2, 1)):
            args = ["--model", "mf", "--dataset", "gowalla", "--method", "dsl", "--density", "0.2", "--delta-t",
                    "100", "--batch_size", "2048", "--max_steps", str(steps), "--eval_users", "300",
                    "--storage", storage]
            out = tmp / f"gowalla-{storage}-{procs}x{threads}"
            summary, log, wall = train(args, out, procs, threads)
            train_s = sum(r["train_s"] for r in log)
            run_steps = sum(r["steps"] for r in log)
            row = {"storage": storage, "processes": procs, "threads_each": threads, "steps": run_steps,
                   "train_s": train_s, "samples_per_s": run_steps * 2048 / train_s, "wall_s": wall,
                   "active": summary["params"]["active"], "sparsifiable": summary["params"]["sparsifiable"],
                   "world_size": summary["world_size"], "backend": summary["backend"]}
            if "communication" in summary:
                row["bytes_per_step"] = summary["communication"]["bytes_per_step"]
                row["total_bytes_per_step"] = summary["communication"]["total_bytes_per_step"]
            rows.append(row)
            print(f"  {storage:8s} {procs} x {threads} thread(s): {row['samples_per_s']:,.0f} samples/s "
                  f"({train_s:.1f} s for {run_steps} steps)", flush=True)
    return rows


def learning(epochs: int, tmp: Path) -> list[dict]:
    rows = []
    args = ["--model", "mf", "--dataset", "ml-100k", "--method", "dsl", "--density", "0.2", "--epochs", str(epochs),
            "--patience", "0", "--batch_size", "1024", "--storage", "compact"]
    for procs in (1, 2):
        summary, log, wall = train(args, tmp / f"ml-100k-{procs}", procs, 1)
        rows.append({"processes": procs, "recall@20": summary["test"]["recall@20"],
                     "ndcg@20": summary["test"]["ndcg@20"], "best_epoch": summary["best_epoch"],
                     "active": summary["params"]["active"], "wall_s": wall})
        print(f"  ml-100k {procs} process(es): recall@20 {rows[-1]['recall@20']:.4f} ndcg@20 "
              f"{rows[-1]['ndcg@20']:.4f} (best epoch {summary['best_epoch']}, {wall:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of each Gowalla run")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each ml-100k run")
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--two-threads", action="store_true", help="also one process with two threads")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        print("throughput, MF on Gowalla:", flush=True)
        speed = throughput(args.steps, Path(tmp), args.two_threads)
        learned = [] if args.skip_learning else (print("learning, MF on ml-100k:", flush=True),
                                                 learning(args.epochs, Path(tmp)))[1]
    print()
    print("| storage | processes x threads | samples/s | gradients all-reduced per step | growth signal per step "
          "(averaged at updates) | total per step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in speed:
        b = r.get("bytes_per_step")
        comm = (f"{b['gradients'] / 1e6:.2f} MB", f"{b['signal'] / 1e6:.3f} MB",
                f"{r['total_bytes_per_step'] / 1e6:.2f} MB") if b else ("-", "-", "-")
        print(f"| {r['storage']} | {r['processes']} x {r['threads_each']} | {r['samples_per_s']:,.0f} | "
              + " | ".join(comm) + " |")
    if learned:
        print()
        print("| ml-100k, MF DSL 0.2 | test recall@20 | test ndcg@20 |")
        print("| --- | --- | --- |")
        for r in learned:
            print(f"| {r['processes']} process(es) | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} |")
    result = {"command": " ".join(sys.argv), "load_average_at_start": load, "throughput": speed,
              "learning": learned, "load_average_at_end": os.getloadavg()}
    path = REPO / "benchmarks" / "results" / "distributed.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
