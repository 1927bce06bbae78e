"""Training that costs what the budget says: compact storage against dense and masked training.

Writes a big LightGCN-format folder (default 2,000,000 users x 500,000 items,
about 6 interactions per user, long-tailed items) and trains MF on it (dim 64,
density 0.1, 200 optimiser steps) through ``dslrec train``, one fresh process
per mode, one thread each:

    dense          dense training, fused Adam
    dense_sparse   dense training, sparse_adam (row-sparse lazy Adam: the practitioner's baseline)
    masked         DSL, masked storage, Adam
    compact        DSL, compact storage, Adam
    compact_sparse DSL, compact storage, sparse_adam
    static_sparse  static mask, compact storage, sparse_adam (a step between mask updates)

and prints, as ratios to dense training in the same run: peak RSS of the
process, ms per optimiser step (mask updates included), the time of the first
mask update (the update ratio is then about 0.5), and the bytes of the model's
tensors plus the optimiser's state. Writes benchmarks/results/compact.json.

    python benchmarks/bench_compact.py                  # the issue's size (about 15 minutes on one core)
    python benchmarks/bench_compact.py --users 200000 --items 50000   # a quick look
    python benchmarks/bench_compact.py --lightgcn gowalla               # LightGCN at density 0.2 on a real dataset
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dslrec.sparse.schedule import update_ratio

HERE = Path(__file__).resolve().parent
MODES = {
    "dense": dict(method="dense", optimizer="adam"),
    "dense_sparse": dict(method="dense", optimizer="sparse_adam"),
    "masked": dict(method="dsl", optimizer="adam", storage="masked"),
    "compact": dict(method="dsl", optimizer="adam", storage="compact"),
    "compact_sparse": dict(method="dsl", optimizer="sparse_adam", storage="compact"),
    "static_sparse": dict(method="static", optimizer="sparse_adam", storage="compact"),
}


def train(folder: Path, out: Path, mode: dict, args) -> dict:
    settings = dict(model=args.model, dataset=str(folder), epochs=1, max_steps=args.steps, eval_users=args.eval_users,
                    batch_size=args.batch_size, patience=0, dim=args.dim, **mode)
    if mode["method"] != "dense":
        settings.update(density=args.density, delta_t=args.delta_t)
    cmd = [sys.executable, "-m", "dslrec.cli", "train", "--out", str(out), "--quiet"]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = summary.get("steps_run") or args.steps
    updates = [u for r in log for u in r.get("sparse", {}).get("update_s", [])]
    train_s = sum(r["train_s"] for r in log)
    return {
        "wall_s": wall,
        "peak_rss_mb": summary["peak_rss_mb"],
        "ms_per_step": 1000 * train_s / steps,
        "ms_per_step_between_updates": 1000 * (train_s - sum(updates)) / max(steps - len(updates), 1),
        "updates": len(updates),
        "first_update_s": updates[0] if updates else None,
        "first_update_zeta": (update_ratio("cosine", args.delta_t, steps, 0.5, 0.005)
                              if mode["method"] == "dsl" else None),
        "tensor_mb": sum(summary["tensor_bytes"].values()) / 2**20,
        "tensor_bytes": summary["tensor_bytes"],
        "test": summary["test"],
        "steps": steps,
    }


def lightgcn_rows(args) -> dict:
    """LightGCN at density 0.2 on a real dataset: peak memory and time per step and per epoch (extrapolated
    from ``--lightgcn-steps`` steps), dense vs masked vs compact. Its propagation reads the whole table:
    compact storage builds it dense inside every step."""
    rows = {}
    for name, mode in (("dense", dict(method="dense")), ("masked", dict(method="dsl", storage="masked")),
                       ("compact", dict(method="dsl", storage="compact"))):
        settings = dict(model="lightgcn", dataset=args.lightgcn, epochs=1, max_steps=args.lightgcn_steps,
                        eval_users=args.eval_users, patience=0, **mode)
        if mode["method"] != "dense":
            settings.update(density=0.2, delta_t=max(args.lightgcn_steps // 3, 1))
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "dslrec.cli", "train", "--out", f"{tmp}/run", "--quiet"]
            for key, value in settings.items():
                cmd += [f"--{key}", str(value)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            s = json.loads(Path(f"{tmp}/run/summary.json").read_text())
            log = [json.loads(line) for line in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
        steps = s.get("steps_run") or args.lightgcn_steps
        ms = 1000 * sum(r["train_s"] for r in log) / steps
        rows[name] = {"peak_rss_mb": s["peak_rss_mb"], "ms_per_step": ms,
                      "epoch_s_extrapolated": ms * s.get("steps_per_epoch", steps) / 1000,
                      "tensor_mb": sum(s["tensor_bytes"].values()) / 2**20}
        print(f"  lightgcn {name:8s} peak {rows[name]['peak_rss_mb']:8.0f} MB  {ms:8.1f} ms/step  epoch "
              f"{rows[name]['epoch_s_extrapolated']:7.1f} s  tensors {rows[name]['tensor_mb']:8.1f} MB", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=500_000)
    ap.add_argument("--per-user", type=float, default=6.0)
    ap.add_argument("--model", default="mf")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--delta-t", dest="delta_t", type=int, default=20)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=2048)
    ap.add_argument("--eval-users", dest="eval_users", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--lightgcn", default=None, help="also LightGCN on this dataset (e.g. gowalla)")
    ap.add_argument("--lightgcn-steps", type=int, default=60)
    ap.add_argument("--out", default=str(HERE / "results" / "compact.json"))
    args = ap.parse_args()

    result = {"settings": vars(args), "modes": {}}
    names = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "big"
        if names:
            t0 = time.perf_counter()
            # in a child process: this one stays small (a child's ru_maxrss would start at our size)
            code = ("import json, sys; from dslrec.data.synthetic import write_lightgcn_folder; "
                    "print(json.dumps(write_lightgcn_folder(sys.argv[1], n_users=int(sys.argv[2]), "
                    "n_items=int(sys.argv[3]), per_user=float(sys.argv[4]), seed=0)))")
            proc = subprocess.run([sys.executable, "-c", code, str(folder), str(args.users), str(args.items),
                                   str(args.per_user)], capture_output=True, text=True, check=True)
            result["data"] = json.loads(proc.stdout)
            print(f"wrote {folder} in {time.perf_counter() - t0:.1f}s: {result['data']}", flush=True)
        for name in names:
            row = train(folder, Path(tmp) / name, MODES[name], args)
            result["modes"][name] = row
            print(f"  {name:15s} peak {row['peak_rss_mb']:8.0f} MB  {row['ms_per_step']:8.1f} ms/step  "
                  f"between updates {row['ms_per_step_between_updates']:8.1f}  first update "
                  f"{row['first_update_s'] or 0:6.2f} s  tensors {row['tensor_mb']:8.1f} MB", flush=True)
    modes = result["modes"]
    base, lazy = modes.get("dense"), modes.get("dense_sparse")
    print()
    print("| mode | peak RSS | x dense | ms/step | x dense | first mask update | tensors | x dense |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in modes.items():
        ratio = (lambda k: f"{row[k] / base[k]:.3f}x" if base else "-")
        update = f"{row['first_update_s']:.2f} s" if row["first_update_s"] is not None else "-"
        print(f"| {name} | {row['peak_rss_mb']:.0f} MB | {ratio('peak_rss_mb')} | {row['ms_per_step']:.1f} | "
              f"{ratio('ms_per_step')} | {update} | {row['tensor_mb']:.1f} MB | {ratio('tensor_mb')} |")
    targets = {}
    if base and "compact" in modes:
        c = modes["compact"]
        targets["compact peak RSS <= 0.3x dense"] = c["peak_rss_mb"] / base["peak_rss_mb"]
        targets["compact step (updates included) <= 0.3x dense"] = c["ms_per_step"] / base["ms_per_step"]
        targets["compact tensor bytes <= 0.15x dense"] = c["tensor_mb"] / base["tensor_mb"]
    if lazy and "static_sparse" in modes:
        targets["compact+sparse_adam step (static) <= 1.2x dense sparse_adam"] = (
            modes["static_sparse"]["ms_per_step"] / lazy["ms_per_step"])
    if "masked" in modes and "compact" in modes and modes["masked"]["first_update_s"]:
        targets["compact mask update <= 0.5x masked"] = (modes["compact"]["first_update_s"]
                                                         / modes["masked"]["first_update_s"])
    print()
    for what, value in targets.items():
        limit = float(what.split("<=")[1].split("x")[0])
        print(f"  {what:60s} {value:.3f}  {'met' if value <= limit else 'NOT met'}")
    result["targets"] = targets
    if args.lightgcn:
        result["lightgcn"] = lightgcn_rows(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
