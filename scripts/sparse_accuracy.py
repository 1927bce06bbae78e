"""The README's "Sparse methods on one budget" tables: a thin wrapper over two sweep files.

    .venv/bin/python scripts/sparse_accuracy.py            # dslrec sweep + dslrec report, for each
    .venv/bin/python scripts/sparse_accuracy.py --readme   # ... and writes the tables into README.md

The same as ``dslrec sweep --config sweeps/sparse_accuracy.yaml --jobs 2`` followed by ``dslrec
report benchmarks/results/sparse_accuracy`` (and the same for ``sparse_accuracy_ml1m``): the grids,
their settings and the choices behind them are in the sweep files. Finished runs are kept under each
sweep's ``runs/`` and not repeated; ``--readme`` puts each sweep's ``results.md`` table between the
README's ``sparse-accuracy`` (``sparse-accuracy-ml1m``) markers. How the DSL variant and the
intervals were chosen: ``scripts/dsl_selection.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEPS = {"sparse-accuracy": "sparse_accuracy.yaml", "sparse-accuracy-ml1m": "sparse_accuracy_ml1m.yaml"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.chdir(REPO)  # the sweep file's `out:` is relative to the repository
    from dslrec.experiments.report import write_report
    from dslrec.experiments.sweep import run_sweep

    for marker, name in SWEEPS.items():
        sweep = run_sweep(Path("sweeps") / name, jobs=args.jobs)  # relative: the report names the commands
        print(f"report: {write_report(sweep.out.relative_to(REPO))}")
        if args.readme:
            table = (sweep.out / "results.md").read_text().split("\n\nRun folders")[0].strip()
            readme = REPO / "README.md"
            block = f"<!-- {marker}:start -->\n{table}\n<!-- {marker}:end -->"
            readme.write_text(re.sub(f"<!-- {marker}:start -->.*<!-- {marker}:end -->", lambda _: block,
                                     readme.read_text(), flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
