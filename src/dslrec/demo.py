"""``make demo``: dense and DSL side by side on the built-in synthetic data.

Trains MF dense and MF with Dynamic Sparse Learning at density 0.2 (the
paper's DSL, ``--preset paper``, and dslrec's defaults: a per-row budget and
growth by the gradient accumulated since the last update) on the synthetic default (no download), prints test metrics, active weights
and time for each next to ranking by popularity, then exports the DSL model
in the compact format and recommends from it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

import dslrec
from dslrec.data import load
from dslrec.errors import DslrecError
from dslrec.evaluate import evaluate
from dslrec.models.popularity import Popularity

SETTINGS = dict(model="mf", dataset="synthetic", epochs=60, lr=2e-3, batch_size=1024, eval_every=2, patience=10, seed=0)
# (label, folder under --out, settings): dense, the paper's DSL (one budget per tensor, growth by one
# batch's gradient, its delta_t set here to suit 60 epochs), and DSL with dslrec's defaults: a per-row
# budget, growth by the gradient accumulated since the last update, delta_t from the run's length
# (README "Sparse training")
RUNS = (("MF dense", "dense", dict(method="dense")),
        ("MF DSL 0.2, paper", "dsl-paper", dict(preset="paper", method="dsl", density=0.2, delta_t=50)),
        ("MF DSL 0.2, defaults", "dsl", dict(method="dsl", density=0.2)))


def row(name: str, test: dict, active: str, seconds: str) -> str:
    return (f"{name:<22}{test['recall@20']:>11.4f}{test['ndcg@20']:>10.4f}"
            f"{test['hitrate@20']:>12.4f}{active:>22}{seconds:>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="where the two runs are written")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    dataset = load("synthetic")
    sizes = dataset.sizes()
    print(f"dataset: synthetic default, {sizes['users']:,} users, {sizes['items']:,} items, "
          f"{sizes['train']:,} train / {sizes['valid']:,} valid / {sizes['test']:,} test interactions\n")

    runs = {}
    for label, folder, extra in RUNS:
        print(f"training {label} ...", flush=True)
        settings = {**SETTINGS, **extra, "epochs": args.epochs}
        run_dir = out / folder
        shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own folder: a second `make demo` starts afresh
        runs[label] = dslrec.train(settings, dataset=dataset, out=run_dir, progress=False)

    pop = evaluate(Popularity.from_dataset(dataset).scorer(), dataset, split="test", ks=(20,))
    print()
    print(f"{'model':<22}{'recall@20':>11}{'ndcg@20':>10}{'hitrate@20':>12}{'active weights':>22}{'train time':>12}")
    print(row("popularity", pop, "-", "-"))
    for label, s in runs.items():
        p = s["params"]
        active = f"{p['active']:,} ({p['active'] / p['total']:.0%})"
        print(row(label, s["test"], active, f"{s['time']['train_s']:.1f}s"))
    dense = runs["MF dense"]
    print()
    for label, s in list(runs.items())[1:]:
        ratio = s["test"]["recall@20"] / dense["test"]["recall@20"]
        print(f"{label} keeps {ratio:.1%} of dense recall@20 with "
              f"{s['params']['mean_active'] / dense['params']['total']:.1%} of the weights active throughout.")
    print(f"runs written to {', '.join(str(out / folder) for _, folder, _ in RUNS)} "
          f"(summary.json, log.jsonl, best.safetensors)")
    show_export(out / "dsl", dataset)
    return 0


def show_export(run_dir: Path, dataset) -> None:
    """Export the DSL model compactly and recommend from the file alone."""
    from dslrec.export import Recommender, export

    print()
    for dtype in ("float32", "float16"):
        path = run_dir / f"model-{dtype}.dslrec"
        info = export(run_dir, path, dtype=dtype, dataset=dataset)
        sizes, dense = info["sizes"], info["dense_bytes"]
        print(f"compact model ({dtype}): {path}  {path.stat().st_size / 1e3:,.0f} kB file, weights "
              f"{sizes['weights'] / 1e3:,.0f} kB = {sizes['weights'] / dense:.2f}x the dense checkpoint "
              f"best.safetensors ({dense / 1e3:,.0f} kB); training items for exclude_seen "
              f"{sizes['seen'] / 1e3:,.0f} kB")
    rec = Recommender.load(run_dir / "model-float32.dslrec")
    users = list(dataset.user_ids[:3])
    result = rec.recommend(users, k=5, exclude_seen=True)
    print(f"\ntop-5 recommendations from {run_dir / 'model-float32.dslrec'} (raw item ids):")
    for user, ids in zip(users, result.ids):
        print(f"  user {user}: {', '.join(map(str, ids))}")
    print(f"(the same from the command line: .venv/bin/dslrec recommend --model "
          f"{run_dir / 'model-float32.dslrec'} --users {','.join(map(str, users))} --k 5)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DslrecError as e:
        print(f"dslrec: error: {e}", file=sys.stderr)
        sys.exit(2)
