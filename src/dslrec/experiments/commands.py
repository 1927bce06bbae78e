"""``dslrec sweep`` and ``dslrec report``: the command line of dslrec.experiments."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="train a grid of runs from a YAML file and write its results table",
        description="Train every run of a sweep file (a list is a grid axis, a scalar a fixed setting, `out:` the "
                    "folder) that has not finished yet, then write OUT/results.md, results.csv and runs.csv.\n"
                    "example: dslrec sweep --config sweeps/sparse_accuracy.yaml --jobs 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained side by side, one thread each (default 1: one run at a time, torch's threads)")
    p.set_defaults(func=sweep)
    p = sub.add_parser(
        "report", help="write a Markdown report with figures for a run or a sweep folder",
        description="Write report.md and figures/*.png for a run folder (training curves; for sparse runs the "
                    "exploration and where the budget went) or a sweep folder (accuracy against density and "
                    "against cost).\nexample: dslrec report benchmarks/results/sparse_accuracy")
    p.add_argument("folder", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--out", help="folder for report.md and figures/ (default: the folder reported on)")
    p.set_defaults(func=report)


def sweep(args: argparse.Namespace) -> int:
    from dslrec.experiments.sweep import run_sweep

    run_sweep(args.config, jobs=args.jobs, say=lambda text: print(text, flush=True))
    return 0


def report(args: argparse.Namespace) -> int:
    from dslrec.experiments.report import write_report

    path = write_report(args.folder, args.out)
    print(f"report written to {path}")
    return 0
