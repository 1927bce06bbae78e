"""Do the defaults work on data the settings were not tuned on? The README's defaults tables.

    .venv/bin/python scripts/defaults_check.py --learn      # every backbone with only --model/--dataset
    .venv/bin/python scripts/defaults_check.py --interval   # how the delta_t rule (delta_t_epochs) was picked
    .venv/bin/python scripts/defaults_check.py --dsl        # DSL with the defaults against dense and static

Every run is a plain ``dslrec.train`` run with only the settings shown (everything
else is the default), on the datasets in ``../shared/data``; finished runs are
kept in ``--out`` and not repeated. ``--interval`` uses training seeds 10, 11
(apart from the seeds the other tables report) and reads validation recall
only; the value with the best mean over datasets and densities is the default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from dsl_selection import run_jobs  # noqa: E402

# small and mid-sized data in ../shared/data (ml-100k and citeulike-t are split 80/10/10 per user,
# ml-1m keeps its own split with validation carved from training)
DATASETS = ("ml-100k", "citeulike-t", "ml-1m")
BACKBONES = ("mf", "lightgcn", "neumf", "multvae")
# what the README's tuned runs got (Results), for the side-by-side
TUNED = {("mf", "ml-1m"): 0.1994, ("lightgcn", "ml-1m"): 0.1930, ("neumf", "ml-1m"): 0.2099,
         ("mf", "ml-100k"): 0.3384, ("lightgcn", "ml-100k"): 0.3677}
INTERVAL_EPOCHS = (0.5, 1, 2, 4)  # ml-100k; fewer on the larger sets
INTERVAL_SEEDS = (10, 11)
SEEDS = (0, 1)


def learn_grid() -> list[tuple[str, dict]]:
    """Dense with only --model and --dataset: MF on every dataset here, the other backbones on ml-100k
    (on 2 CPU cores their default runs on the larger sets take from tens of minutes to hours)."""
    jobs = [(f"learn/mf/{data}/dense/seed0", dict(model="mf", dataset=data, seed=0)) for data in DATASETS]
    jobs += [(f"learn/{b}/ml-100k/dense/seed0", dict(model=b, dataset="ml-100k", seed=0))
             for b in BACKBONES if b != "mf"]
    return jobs


def interval_grid() -> list[tuple[str, dict]]:
    """MF, DSL with the defaults but delta_t_epochs, on seeds apart from the reported ones. The grid is
    thinner where a run is dear on 2 CPU cores (ml-1m about 5 min, citeulike-t about 9 min a run)."""
    plan = {  # dataset: (seeds, densities, delta_t_epochs values)
        "ml-100k": (INTERVAL_SEEDS, (0.5, 0.2), INTERVAL_EPOCHS),
        "ml-1m": (INTERVAL_SEEDS[:1], (0.5,), (0.5, 1, 2, 4)),
        "citeulike-t": (INTERVAL_SEEDS[:1], (0.5,), (1, 2, 4)),
    }
    jobs = []
    for data, (seeds, densities, values) in plan.items():
        for seed in seeds:
            jobs.append((f"interval/mf/{data}/dense/seed{seed}", dict(model="mf", dataset=data, seed=seed)))
            for density in densities:
                for e in values:
                    jobs.append((f"interval/mf/{data}/dsl@{density} e{e}/seed{seed}",
                                 dict(model="mf", dataset=data, method="dsl", density=density,
                                      delta_t_epochs=float(e), seed=seed)))
    # the dear runs first, so that the two workers finish together
    return sorted(jobs, key=lambda j: ("citeulike" not in j[0], "ml-1m" not in j[0]))


def dsl_grid() -> list[tuple[str, dict]]:
    """Dense, DSL and static sparse training with every other setting at its default, on the reported
    seeds (ml-100k two, the dearer sets one)."""
    plan = {"ml-100k": SEEDS, "citeulike-t": SEEDS[:1], "ml-1m": SEEDS[:1]}
    jobs = []
    for data, seeds in plan.items():
        for seed in seeds:
            base = dict(model="mf", dataset=data, seed=seed)
            jobs.append((f"dsl/mf/{data}/dense/seed{seed}", base))
            for method, density in (("dsl", 0.5), ("dsl", 0.2), ("static", 0.2)):
                jobs.append((f"dsl/mf/{data}/{method}@{density}/seed{seed}",
                             dict(base, method=method, density=density)))
    return sorted(jobs, key=lambda j: ("citeulike" not in j[0], "ml-1m" not in j[0]))


def popularity(data: str) -> float:
    """Test recall@20 of ranking by training popularity (the README's reference)."""
    import dslrec.data
    from dslrec.evaluate import evaluate
    from dslrec.models.popularity import Popularity

    ds = dslrec.data.load(data, progress=False)
    return float(evaluate(Popularity.from_dataset(ds).scorer(), ds, split="test", ks=(20,))["recall@20"])


def learn_table(results: dict) -> str:
    lines = ["| backbone | data | default run: test recall@20 | best epoch / run | popularity | README tuned |",
             "| --- | --- | --- | --- | --- | --- |"]
    pops = {d: popularity(d) for d in DATASETS}
    for name, r in sorted(results.items()):
        _, backbone, data, _, _ = name.split("/")
        tuned = TUNED.get((backbone, data))
        lines.append(f"| {backbone} | {data} | {r['test']['recall@20']:.4f} | {r['best_epoch']} / "
                     f"{r.get('epochs_run', '?')} | {pops[data]:.4f} | {f'{tuned:.4f}' if tuned else '-'} |")
    return "\n".join(lines)


def interval_table(results: dict) -> str:
    rel: dict[tuple[str, float, float], list[float]] = {}
    for name, r in results.items():
        _, _, data, label, seed = name.split("/")
        if label == "dense":
            continue
        method, _, rest = label.partition("@")
        density, _, e = rest.partition(" e")
        dense = results.get(f"interval/mf/{data}/dense/{seed}")
        if dense:
            rel.setdefault((data, float(density), float(e)), []).append(
                r["valid"]["recall@20"] / dense["valid"]["recall@20"])
    cols = sorted({(d, den) for d, den, _ in rel})
    lines = ["| delta_t_epochs | " + " | ".join(f"{d} @{den}" for d, den in cols) + " | worst | mean |",
             "| --- |" + " --- |" * (len(cols) + 2)]
    worst = {}
    for e in sorted({k[2] for k in rel}):
        cells = [statistics.mean(rel[(d, den, e)]) if (d, den, e) in rel else None for d, den in cols]
        known = [c for c in cells if c is not None]
        if len(known) == len(cols):  # only values run everywhere compete
            worst[e] = min(known)
        lines.append(f"| {e:g} | " + " | ".join(f"{c:.1%}" if c is not None else "-" for c in cells)
                     + f" | {min(known):.1%} | {statistics.mean(known):.1%} |")
    # the rule must hold on data nobody tuned it on: the value whose worst dataset is best wins
    if worst:
        lines.append(f"\nbest worst case: delta_t_epochs {max(worst, key=worst.get):g} "
                     f"(among the values run on every dataset)")
    return "\n".join(lines)


def dsl_table(results: dict) -> str:
    groups: dict[tuple[str, str], list[float]] = {}
    for name, r in results.items():
        _, _, data, label, _ = name.split("/")
        groups.setdefault((data, label), []).append(r["test"]["recall@20"])
    lines = ["| data | method | test recall@20 (mean of seeds) | % of dense |", "| --- | --- | --- | --- |"]
    for (data, label), xs in sorted(groups.items()):
        dense = groups.get((data, "dense"))
        rel = f"{statistics.mean(xs) / statistics.mean(dense):.1%}" if dense else "-"
        lines.append(f"| {data} | {label} | {statistics.mean(xs):.4f} ({len(xs)} seeds) | {rel} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--learn", action="store_true")
    which.add_argument("--interval", action="store_true")
    which.add_argument("--dsl", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "defaults"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="regex on run names")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "learn" if args.learn else "interval" if args.interval else "dsl"
    todo = {"learn": learn_grid, "interval": interval_grid, "dsl": dsl_grid}[kind]()
    results_path = out / f"{kind}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    jobs = [(n, s) for n, s in todo if n not in results and (not args.only or re.search(args.only, n))]
    t0 = time.perf_counter()
    run_jobs(jobs, results, results_path, out, args.workers)
    print({"learn": learn_table, "interval": interval_table, "dsl": dsl_table}[kind](results))
    compute_s = sum(r["time"]["train_s"] for r in results.values())
    print(f"\n{len(results)} runs, {compute_s / 60:.1f} min of training compute "
          f"(this invocation {(time.perf_counter() - t0) / 60:.1f} min wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
