"""Benchmark: loading a big LightGCN-format folder (issue 10, "Big data on one machine").

    .venv/bin/python benchmarks/bench_loading.py [--users 2000000] [--items 500000] [--per-user 6]
                                                 [--repeat 3] [--folder DIR]

Writes (once; kept for later runs) a LightGCN folder of ``--users`` users and ``--items``
items with about ``--per-user`` interactions each and long-tailed (Zipf-like) item
popularity (``dslrec.data.synthetic.write_lightgcn_folder``; the default is 2,000,000 x
500,000, about 12M interactions, 110 MB of text), then measures, each in a fresh process
(files in the OS page cache; best wall and CPU time and largest peak RSS of ``--repeat``
runs; CPU time says more than wall time on a busy machine):

* ``dslrec data info FOLDER``, the command the issue timed (target: under 5 s, under 600 MB);
* the loading part of ``dslrec train``: ``load_dataset`` (read, filter, split), the
  dataset's checks and the run directory's ``data.safetensors``.

Prints a table and writes ``benchmarks/results/loading.json``. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "loading.json"
TARGET = {"seconds": 5.0, "peak_rss_mb": 600.0}

WRITE = """
import json, sys
from pathlib import Path
from dslrec.data.synthetic import write_lightgcn_folder
folder, users, items, per_user, seed = sys.argv[1:]
counts = write_lightgcn_folder(folder, int(users), int(items), float(per_user), int(seed))
(Path(folder) / "written.json").write_text(json.dumps(counts))
"""
TRAIN_LOAD = """
import sys, tempfile
from pathlib import Path
from dslrec import rundir
from dslrec.settings import load_dataset, resolve_settings
cfg = resolve_settings(dict(model="mf", dataset=sys.argv[1]))
ds = load_dataset(cfg, progress=False)
ds.check_usable(cold_users=cfg.cold_users)
with tempfile.TemporaryDirectory() as d:
    rundir.save_data(Path(d), ds)
"""


SRC = REPO / "src"


def measure(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one child process."""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-800:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=500_000)
    parser.add_argument("--per-user", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the folder is written (default: a folder in the temp dir, kept)")
    parser.add_argument("--src", type=Path, default=None,
                        help="the dslrec source tree to measure (default: this checkout's src; e.g. an older "
                             "version's, for a before/after comparison)")
    args = parser.parse_args()
    global SRC
    SRC = args.src or SRC
    # This process stays small (no numpy): a child's peak RSS counts its parent's at the fork.
    folder = args.folder or Path(tempfile.gettempdir()) / (
        f"dslrec-bench-lightgcn-{args.users}x{args.items}-{args.per_user:g}-{args.seed}")
    marker = folder / "written.json"
    if not marker.exists():
        seconds, _, _ = measure([sys.executable, "-c", WRITE, str(folder), str(args.users), str(args.items),
                              str(args.per_user), str(args.seed)])
        print(f"wrote {folder} in {seconds:.1f} s")
    counts = json.loads(marker.read_text())
    size_mb = sum((folder / f).stat().st_size for f in ("train.txt", "test.txt")) / 2**20

    commands = {
        "dslrec data info": [sys.executable, "-m", "dslrec.cli", "data", "info", str(folder)],
        "dslrec train: load + checks + data.safetensors": [sys.executable, "-c", TRAIN_LOAD, str(folder)],
    }
    rows = []
    for what, argv in commands.items():
        runs = [measure(argv) for _ in range(args.repeat)]
        rows.append({"what": what, "seconds": round(min(r[0] for r in runs), 2),
                     "cpu_seconds": round(min(r[1] for r in runs), 2), "peak_rss_mb": round(max(r[2] for r in runs)),
                     "runs": [[round(a, 2), round(b, 2), round(c)] for a, b, c in runs]})

    print(f"\n{counts['users']:,} users x {counts['items']:,} items, {counts['train'] + counts['test']:,} "
          f"interactions ({counts['train']:,} train, {counts['test']:,} test), {size_mb:.0f} MB of text")
    print(f"{'what':<50} {'seconds':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['what']:<50} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} {r['peak_rss_mb']:>12,}")
    print(f"target for dslrec data info: under {TARGET['seconds']:g} s and {TARGET['peak_rss_mb']:g} MB")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "loading", "repeat": args.repeat, "folder": {**counts, "text_mb": round(size_mb)},
        "command": " ".join(["benchmarks/bench_loading.py", *sys.argv[1:]]), "src": str(SRC.relative_to(REPO)) if SRC.is_relative_to(REPO) else str(SRC),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_average": [round(x, 2) for x in os.getloadavg()]},
        "target": TARGET, "results": rows,
    }
    if args.src is not None:  # a comparison run: the results file keeps this checkout's figures
        print(json.dumps(payload["results"]))
        return
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".loading.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, RESULTS)
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
