"""Benchmark: loading the local datasets (read + checksum, filter/split, build the Dataset).

    .venv/bin/python benchmarks/bench_load.py [--repeat 3] [--names gowalla ml-1m]

Data: ``$DSLREC_DATA_DIR`` (default ``<repo>/../shared/data``); every registry
dataset found there is timed with its default split. Each figure is the best
of ``--repeat`` runs in this process (files in the OS page cache). Target:
Gowalla (810,128 + 217,242 interactions) under 3 s in total. Prints a table
and writes ``benchmarks/results/load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "load.json"
TARGET_S = {"gowalla": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--names", nargs="*", default=None, help="datasets (default: all found locally)")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))

    from dslrec.data import prepare, read_log, registry

    names = args.names or [e.name for e in registry.REGISTRY.values() if registry.locate(e)]
    if not names:
        raise SystemExit(f"no datasets under {os.environ['DSLREC_DATA_DIR']}; set DSLREC_DATA_DIR")
    rows = []
    for name in names:
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            log, ds_name, default = read_log(name, download=False, progress=False)
            t1 = time.perf_counter()
            ds = prepare(log, name=ds_name, split=default)
            t2 = time.perf_counter()
            run = (t1 - t0, t2 - t1, t2 - t0)
            best = run if best is None or run[2] < best[2] else best
        s = ds.sizes()
        rows.append({
            "dataset": name, "users": s["users"], "items": s["items"], "interactions": s["interactions"],
            "read_s": round(best[0], 3), "split_s": round(best[1], 3), "total_s": round(best[2], 3),
            "target_s": TARGET_S.get(name),
        })

    header = ["dataset", "users", "items", "interactions", "read s", "split s", "total s", "target"]
    table = [header] + [[r["dataset"], f"{r['users']:,}", f"{r['items']:,}", f"{r['interactions']:,}",
                         f"{r['read_s']:.3f}", f"{r['split_s']:.3f}", f"{r['total_s']:.3f}",
                         f"< {r['target_s']:g} s" if r["target_s"] else ""] for r in rows]
    widths = [max(len(t[c]) for t in table) for c in range(len(header))]
    for t in table:
        print("  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(t, widths))))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "load", "repeat": args.repeat, "data_dir": os.environ["DSLREC_DATA_DIR"],
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "results": rows,
    }
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".load.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, RESULTS)
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    slow = [r["dataset"] for r in rows if r["target_s"] and r["total_s"] >= r["target_s"]]
    if slow:
        raise SystemExit(f"over target: {', '.join(slow)}")


if __name__ == "__main__":
    main()
