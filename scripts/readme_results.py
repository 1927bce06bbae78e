"""The README's results tables: a thin wrapper over the sweep files in ``sweeps/``.

    .venv/bin/python scripts/readme_results.py                       # dslrec sweep + dslrec report, each file
    .venv/bin/python scripts/readme_results.py --readme              # ... and writes the tables into README.md
    .venv/bin/python scripts/readme_results.py --sweeps dsl_interval # only some files (names without .yaml)

For each file the same as ``dslrec sweep --config sweeps/NAME.yaml --jobs 2`` followed by ``dslrec
report OUT`` (OUT: the file's ``out:``). The grids, their settings and the choices behind them are
in the sweep files. Finished runs are kept under each sweep's ``runs/`` and not repeated.
``--readme`` puts each table between the README's markers of the same name: a sweep's main table
(``results.md``) for the names in ``MAIN_TABLES``, and each table a sweep file declares under
``tables:`` (``OUT/NAME.md``) for its ``name``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEPS = ("sparse_accuracy", "sparse_accuracy_ml1m", "dsl_selection", "dsl_interval", "defaults_learn",
          "defaults_dsl", "defaults_interval", "dense_backbones")
# README markers filled with a sweep's main table (the others are named after the sweep files' own tables)
MAIN_TABLES = {"sparse_accuracy": "sparse-accuracy", "sparse_accuracy_ml1m": "sparse-accuracy-ml1m"}


def replace_block(text: str, marker: str, table: str) -> str:
    pattern = f"<!-- {marker}:start -->.*<!-- {marker}:end -->"
    if not re.search(pattern, text, flags=re.S):
        raise SystemExit(f"README.md has no <!-- {marker}:start --> ... <!-- {marker}:end --> block for this table")
    block = f"<!-- {marker}:start -->\n{table.strip()}\n<!-- {marker}:end -->"
    return re.sub(pattern, lambda _: block, text, flags=re.S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS), metavar="NAME",
                        help=f"the sweep files to run (default: all of {', '.join(SWEEPS)})")
    args = parser.parse_args()
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.chdir(REPO)  # the sweep files' `out:` is relative to the repository
    from dslrec.experiments.report import write_report
    from dslrec.experiments.sweep import run_sweep

    readme = REPO / "README.md"
    text = readme.read_text()
    for name in args.sweeps:
        sweep = run_sweep(Path("sweeps") / f"{name}.yaml", jobs=args.jobs)  # relative: the report names the commands
        print(f"report: {write_report(sweep.out.relative_to(REPO))}")
        if name in MAIN_TABLES:
            main_table = "\n\n".join((sweep.out / "results.md").read_text().split("\n\n")[:2])  # table, caption
            text = replace_block(text, MAIN_TABLES[name], main_table)
        for spec in sweep.tables:
            text = replace_block(text, spec.name, (sweep.out / f"{spec.name}.md").read_text())
    if args.readme:
        readme.write_text(text)
        print(f"tables written into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
