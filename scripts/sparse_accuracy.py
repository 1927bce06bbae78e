"""The README's "Sparse methods on one budget" table: a thin wrapper over one sweep file.

    .venv/bin/python scripts/sparse_accuracy.py            # dslrec sweep + dslrec report
    .venv/bin/python scripts/sparse_accuracy.py --readme   # ... and writes the table into README.md

The same as ``dslrec sweep --config sweeps/sparse_accuracy.yaml --jobs 2`` followed by ``dslrec
report benchmarks/results/sparse_accuracy``: the grid, its settings and the choices behind them are
in the sweep file. Finished runs are kept under the sweep's ``runs/`` and not repeated; ``--readme``
puts the sweep's ``results.md`` table between the README's ``sparse-accuracy`` markers. How the DSL
variant and the intervals were chosen: ``scripts/dsl_selection.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "sparse_accuracy.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.chdir(REPO)  # the sweep file's `out:` is relative to the repository
    from dslrec.experiments.report import write_report
    from dslrec.experiments.sweep import run_sweep

    sweep = run_sweep(SWEEP, jobs=args.jobs)
    print(f"report: {write_report(sweep.out)}")
    if args.readme:
        table = (sweep.out / "results.md").read_text().split("\n\nRun folders")[0].strip()
        readme = REPO / "README.md"
        block = f"<!-- sparse-accuracy:start -->\n{table}\n<!-- sparse-accuracy:end -->"
        readme.write_text(re.sub(r"<!-- sparse-accuracy:start -->.*<!-- sparse-accuracy:end -->", lambda _: block,
                                 readme.read_text(), flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
