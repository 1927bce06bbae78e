"""How the README's DSL variant and exploration intervals were chosen, and the compact-storage check.

    .venv/bin/python scripts/dsl_selection.py --select            # how the `dsl-row-accum` variant was picked
    .venv/bin/python scripts/dsl_selection.py --select-interval   # how each backbone's delta_t was picked
    .venv/bin/python scripts/dsl_selection.py --storage compact   # the grid's dsl/static rows with compact storage

The main table (every method against dense) is a sweep now: ``sweeps/sparse_accuracy.yaml``, run by
``scripts/sparse_accuracy.py`` (``dslrec sweep`` + ``dslrec report``). The grids here keep their
results in ``benchmarks/results/sparse_accuracy/{selection,interval}.json`` (finished runs are not
repeated), with the settings below: MF and LightGCN on ml-100k (per-user 80/10/10 split, split
seed 0), the same settings as the sweep file's. Runs go in parallel, one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# one setting per backbone, shared by every method (only method/density/grow differ). delta_t, the
# exploration interval of DSL (and GMP's pruning interval), is the one picked on validation by
# --select-interval; the other settings are set so that dense peaks inside the run.
# The table's `dsl` rows are the paper's DSL (one budget per tensor, growth by one batch's gradient),
# pinned here since a run's defaults are now the recommended variant (`dsl-row-accum`).
PAPER_DSL = dict(scope="per_tensor", grow="gradient", accumulate_steps=20)
BASE = {
    "mf": dict(model="mf", epochs=60, lr=1e-3, batch_size=1024, l2=1e-4, eval_every=2, patience=0,
               delta_t=100, **PAPER_DSL),
    "lightgcn": dict(model="lightgcn", epochs=50, lr=1e-2, batch_size=2048, l2=1e-4, eval_every=2,
                     patience=0, lr_schedule="constant", delta_t=200, **PAPER_DSL),
}
# the interval guessed before any selection (about 1.3 epochs for both); --select compares DSL
# settings at it, --select-interval then compares multiples of it
INTERVAL_GUESS = {"mf": 100, "lightgcn": 50}
ML1M = dict(model="mf", dataset="ml-1m", epochs=20, lr=5e-3, batch_size=4096, l2=1e-4, eval_every=2,
            patience=0, delta_t=100, **PAPER_DSL)
SEEDS = (0, 1, 2)


def row_accum(delta_t: int) -> dict:
    """The DSL variant of the table's `dsl-row-accum` rows: every row keeps its own budget and growth
    follows the gradient summed over the whole interval since the last update. Picked on seed 0's
    *validation* recall at 0.5, relative to dense and averaged over MF and LightGCN, among the
    CANDIDATES below (``--select``, at the guessed interval); the plain `dsl` rows keep the paper's
    defaults. Both then run at the interval picked per backbone (``--select-interval``)."""
    return dict(method="dsl", scope="per_row", grow="accumulated", accumulate_steps=delta_t)


# the DSL settings compared (ml-100k, density 0.5, seed 0, validation recall of MF and LightGCN) to pick
# row_accum; "whole interval": the gradient summed over every step since the last update (delta_t steps)
WHOLE = 10**9  # accumulate_steps is capped at delta_t
CANDIDATES = {
    "paper defaults": {},
    "delta_t x0.25": dict(delta_t="/4"),
    "delta_t x4": dict(delta_t="*4"),
    "zeta0 0.1": dict(zeta0=0.1),
    "momentum, zeta0 0.3": dict(grow="momentum", zeta0=0.3),
    "explore_until 0.5": dict(explore_until=0.5),
    "magnitude init, zeta0 0.05": dict(init="magnitude", zeta0=0.05),
    "prune taylor": dict(prune="taylor"),
    "prune set": dict(prune="set"),
    "grow momentum": dict(grow="momentum"),
    "grow accumulated (20 steps)": dict(grow="accumulated"),
    "grow accumulated (whole interval)": dict(grow="accumulated", accumulate_steps=WHOLE),
    "global": dict(scope="global"),
    "global, grow momentum": dict(scope="global", grow="momentum"),
    "per_row": dict(scope="per_row"),
    "per_row, grow momentum": dict(scope="per_row", grow="momentum"),
    "per_row, grow accumulated (20 steps)": dict(scope="per_row", grow="accumulated"),
    "per_row, grow accumulated (whole interval)": dict(scope="per_row", grow="accumulated", accumulate_steps=WHOLE),
}


def selection_grid() -> list[tuple[str, dict]]:
    jobs = []
    for backbone, base in BASE.items():
        base = {**base, "delta_t": INTERVAL_GUESS[backbone]}
        jobs.append((f"select/{backbone}/dense", {**base, "dataset": "ml-100k", "method": "dense", "seed": 0}))
        for name, extra in CANDIDATES.items():
            extra = dict(extra)
            if isinstance(extra.get("delta_t"), str):  # relative to the backbone's delta_t
                op, factor = extra["delta_t"][0], int(extra["delta_t"][1:])
                extra["delta_t"] = base["delta_t"] // factor if op == "/" else base["delta_t"] * factor
            jobs.append((f"select/{backbone}/{name}",
                         {**base, "dataset": "ml-100k", "method": "dsl", "density": 0.5, "seed": 0, **extra}))
    return jobs


# the exploration interval is a per-backbone setting (the paper sets delta_t per backbone too): multiples of
# the guess, each with the paper's defaults and with row_accum, on seeds apart from the table's
INTERVAL_FACTORS = (0.5, 1, 2, 4, 8)
INTERVAL_SEEDS = (10, 11, 12)


def interval_grid() -> list[tuple[str, dict]]:
    jobs = []
    for backbone, base in BASE.items():
        for seed in INTERVAL_SEEDS:
            jobs.append((f"interval/{backbone}/dense/seed{seed}",
                         {**base, "dataset": "ml-100k", "method": "dense", "seed": seed}))
            for factor in INTERVAL_FACTORS:
                dt = int(INTERVAL_GUESS[backbone] * factor)
                for label, extra in (("paper defaults", dict(method="dsl")), ("row_accum", row_accum(dt))):
                    jobs.append((f"interval/{backbone}/{label} dt{dt}/seed{seed}",
                                 {**base, "dataset": "ml-100k", **extra, "density": 0.5, "delta_t": dt,
                                  "seed": seed}))
    return jobs


def interval_table(results: dict) -> tuple[str, dict]:
    """Validation recall as % of dense on the same seed, mean over seeds, per backbone and delta_t; the
    best delta_t per backbone by the mean over both DSL settings."""
    rel: dict[tuple[str, int, str], list[float]] = {}
    for name, r in results.items():
        _, backbone, label, seed = name.split("/")
        if label == "dense":
            continue
        setting, _, dt = label.rpartition(" dt")
        dense = results.get(f"interval/{backbone}/dense/{seed}")
        if dense:
            rel.setdefault((backbone, int(dt), setting), []).append(
                r["valid"]["recall@20"] / dense["valid"]["recall@20"])
    lines = ["| backbone | delta_t | paper defaults, valid % of dense | dsl-row-accum, valid % of dense | mean |",
             "| --- | --- | --- | --- | --- |"]
    best: dict[str, tuple[float, int]] = {}
    for backbone in BASE:
        for dt in sorted({k[1] for k in rel if k[0] == backbone}):
            cells = [rel.get((backbone, dt, s), []) for s in ("paper defaults", "row_accum")]
            if not all(cells):
                continue
            mean = statistics.mean(statistics.mean(c) for c in cells)
            best[backbone] = max(best.get(backbone, (-1.0, 0)), (mean, dt))
            lines.append(f"| {backbone} | {dt} | " + " | ".join(f"{statistics.mean(c):.1%}" for c in cells)
                         + f" | {mean:.1%} |")
    return "\n".join(lines), {b: dt for b, (_, dt) in best.items()}


def selection_table(results: dict) -> str:
    """Candidates by their mean (over backbones) validation recall relative to dense, best first."""
    dense = {b: results[f"select/{b}/dense"] for b in BASE}
    names = {n.split("/", 2)[2] for n in results} - {"dense"}
    rel = {n: [results[f"select/{b}/{n}"]["valid"]["recall@20"] / dense[b]["valid"]["recall@20"] for b in BASE
               if f"select/{b}/{n}" in results] for n in names}
    lines = ["| DSL setting (ml-100k, density 0.5, seed 0) | MF valid (test) recall@20 | LightGCN valid (test) "
             "recall@20 | mean valid, % of dense |", "| --- | --- | --- | --- |"]
    for n in sorted(names, key=lambda n: -statistics.mean(rel[n])):
        cells = []
        for b in BASE:
            r = results.get(f"select/{b}/{n}")
            cells.append(f"{r['valid']['recall@20']:.4f} ({r['test']['recall@20']:.4f})" if r else "-")
        lines.append(f"| {n} | {' | '.join(cells)} | {statistics.mean(rel[n]):.1%} |")
    lines.append("| dense | " + " | ".join(f"{dense[b]['valid']['recall@20']:.4f} ({dense[b]['test']['recall@20']:.4f})"
                                           for b in BASE) + " | 100% |")
    return "\n".join(lines)


def variants(delta_t: int) -> list[tuple[str, dict]]:
    out = [("dense", dict(method="dense"))]
    for d in (0.5, 0.2, 0.1):
        out += [(f"dsl@{d}", dict(method="dsl", density=d)),
                (f"static@{d}", dict(method="static", density=d)),
                (f"dsl-random-grow@{d}", dict(method="dsl", density=d, grow="random")),
                (f"dsl-row-accum@{d}", dict(row_accum(delta_t), density=d)),
                # the variant's own controls: the same per-row budgets, frozen or grown at random
                (f"static-row@{d}", dict(method="static", scope="per_row", density=d)),
                (f"dsl-row-random-grow@{d}", dict(method="dsl", scope="per_row", grow="random", density=d))]
    out += [(f"{m}@0.2", dict(method=m, density=0.2)) for m in ("gmp", "oneshot", "lth", "pep")]
    return out


def grid() -> list[tuple[str, dict]]:
    jobs = []
    for backbone, base in BASE.items():
        for label, extra in variants(base["delta_t"]):
            for seed in SEEDS:
                jobs.append((f"ml-100k/{backbone}/{label}/seed{seed}",
                             {**base, "dataset": "ml-100k", **extra, "seed": seed}))
    for label, extra in (("dense", dict(method="dense")), ("dsl@0.2", dict(method="dsl", density=0.2)),
                         ("static@0.2", dict(method="static", density=0.2)),
                         ("dsl-row-accum@0.2", dict(row_accum(ML1M["delta_t"]), density=0.2))):
        for seed in SEEDS:
            jobs.append((f"ml-1m/mf/{label}/seed{seed}", {**ML1M, **extra, "seed": seed}))
    return jobs


def run_dir_of(out: Path | str, name: str) -> Path:
    return Path(out) / "runs" / name.replace("/", "__")


def flat_config(summary: dict) -> dict:
    """A run's resolved settings with the model's options beside the rest."""
    return {**summary["config"], **summary["config"].get("model_options", {})}


USE_DELTA_T = ("dsl", "gmp")  # the other methods never read delta_t


def is_stale(result: dict, settings: dict) -> bool:
    """Whether a kept result was trained with other settings than the grid's now (then it is rerun)."""
    # results kept before PAPER_DSL was pinned ran with it as the defaults and do not record it
    config = {**PAPER_DSL, **result.get("config", {})}
    return any(config.get(k) != v for k, v in settings.items()
               if k != "delta_t" or settings.get("method") in USE_DELTA_T)


def run_one(name: str, settings: dict, out: str) -> tuple[str, dict]:
    import torch

    torch.set_num_threads(1)
    import dslrec

    run_dir = run_dir_of(out, name)
    if (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists():
        summary = dslrec.train(resume=run_dir, progress=False)
    elif (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        summary = dslrec.train(settings, out=run_dir, progress=False)
    return name, {"test": summary["test"], "valid": summary["valid"], "params": summary["params"],
                  "time": summary["time"], "best_epoch": summary["best_epoch"],
                  "epochs_run": summary["epochs_run"], "delta_t": summary.get("delta_t"),
                  "config": {k: flat_config(summary).get(k) for k in settings}}


def run_jobs(jobs: list[tuple[str, dict]], results: dict, results_path: Path, out: Path, workers: int) -> None:
    """Train ``jobs`` (name, settings) side by side, one thread each, adding each result to ``results``
    and rewriting ``results_path`` as it comes (so an interrupted grid keeps what finished)."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, n, s, str(out)) for n, s in jobs]
        for i, f in enumerate(as_completed(futures), 1):
            name, r = f.result()
            results[name] = r
            results_path.write_text(json.dumps(results, indent=1))
            print(f"[{i}/{len(jobs)}] {name}: valid {r['valid']['recall@20']:.4f} test {r['test']['recall@20']:.4f}, "
                  f"best epoch {r['best_epoch']} of {r['epochs_run']} ({r['time']['train_s']:.0f}s)", flush=True)


def compare_compact(args) -> int:
    """The grid's dsl and static rows again with compact storage, beside the kept (masked) results."""
    kept = json.loads((Path(args.out) / "results.json").read_text())
    out = Path(args.out).with_name(Path(args.out).name + "_compact")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo = [(n, {**s, "storage": "compact"}) for n, s in grid()
            if s.get("method") in ("dsl", "static") and (not args.only or re.search(args.only, n))]
    run_jobs([(n, s) for n, s in todo if n not in results], results, results_path, out, args.workers)
    groups: dict[str, list[str]] = {}
    for n, _ in todo:
        groups.setdefault(n.rsplit("/", 1)[0], []).append(n)
    print("| run | masked (kept results) | compact | seeds |")
    print("| --- | --- | --- | --- |")
    for group, names in groups.items():
        masked = [kept[n]["test"]["recall@20"] for n in names if n in kept]
        compact = [results[n]["test"]["recall@20"] for n in names if n in results]
        fmt = (lambda xs: f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"
               if xs else "-")
        print(f"| {group} | {fmt(masked)} | {fmt(compact)} | {len(compact)} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sparse_accuracy"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="regex on run names, e.g. 'ml-100k/mf'")
    parser.add_argument("--select", action="store_true",
                        help="run the DSL settings compared to pick the variant; print them by validation recall")
    parser.add_argument("--storage", choices=("masked", "compact"), default="masked",
                        help="compact: rerun the grid's dsl and static rows with --storage compact (into "
                             "sparse_accuracy_compact/) and compare them with the kept masked results")
    parser.add_argument("--select-interval", action="store_true",
                        help="run the delta_t values compared to pick each backbone's; print them by validation recall")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    if args.storage == "compact":
        return compare_compact(args)
    if not (args.select or args.select_interval):
        parser.error("the main table is a sweep now: scripts/sparse_accuracy.py (or dslrec sweep --config "
                     "sweeps/sparse_accuracy.yaml); pass --select, --select-interval or --storage compact")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / ("selection.json" if args.select else "interval.json")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo = selection_grid() if args.select else interval_grid()
    for n, settings in todo:  # a result from older settings (or an older script) is trained again
        if n in results and is_stale(results[n], settings):
            print(f"{n}: kept result used other settings; training it again", flush=True)
            del results[n]
            shutil.rmtree(run_dir_of(out, n), ignore_errors=True)
    jobs = [(n, s) for n, s in todo if n not in results and (not args.only or re.search(args.only, n))]
    run_jobs(jobs, results, results_path, out, args.workers)
    compute_s = sum(r["time"]["train_s"] for r in results.values())
    if args.select_interval:
        text, best = interval_table(results)
        print(text)
        print(f"\nbest delta_t by mean validation recall: {best}; in use: "
              f"{ {b: base['delta_t'] for b, base in BASE.items()} }")
        print(f"{len(results)} runs, {compute_s / 60:.1f} min of training compute")
        return 0
    print(selection_table(results))
    print(f"\n{len(results)} runs, {compute_s / 60:.1f} min of training compute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
