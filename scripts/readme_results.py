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
          "defaults_dsl", "defaults_interval", "dense_backbones", "configs_cpu")
# README markers filled with a sweep's main table (the others are named after the sweep files' own tables)
MAIN_TABLES = {"sparse_accuracy": "sparse-accuracy", "sparse_accuracy_ml1m": "sparse-accuracy-ml1m"}


def block_pattern(marker: str) -> str:
    return f"<!-- {re.escape(marker)}:start -->.*?<!-- {re.escape(marker)}:end -->"


def replace_block(text: str, marker: str, table: str) -> str:
    block = f"<!-- {marker}:start -->\n{table.strip()}\n<!-- {marker}:end -->"
    return re.sub(block_pattern(marker), lambda _: block, text, flags=re.S)


def markers_of(name: str) -> list[str]:
    """The README markers sweep file ``name`` fills (its main table's, its own tables')."""
    from dslrec.experiments.sweep import read_sweep

    own = [spec.name for spec in read_sweep(Path("sweeps") / f"{name}.yaml").tables]
    return ([MAIN_TABLES[name]] if name in MAIN_TABLES else []) + own


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
    if args.readme:  # before hours of training, not after: every table has its place
        missing = [m for name in args.sweeps for m in markers_of(name) if not re.search(block_pattern(m), text, re.S)]
        if missing:
            raise SystemExit(f"README.md has no <!-- NAME:start --> ... <!-- NAME:end --> block for "
                             f"{', '.join(missing)}; add one where the table belongs")
    for name in args.sweeps:
        sweep = run_sweep(Path("sweeps") / f"{name}.yaml", jobs=args.jobs)  # relative: the report names the commands
        print(f"report: {write_report(sweep.out.relative_to(REPO))}")
        if name in MAIN_TABLES:
            main_table = "\n\n".join((sweep.out / "results.md").read_text().split("\n\n")[:2])  # table, caption
            text = replace_block(text, MAIN_TABLES[name], main_table)
        for spec in sweep.tables:
            table = sweep.out / f"{spec.name}.md"
            if not table.is_file():  # no run of the sweep finished
                raise SystemExit(f"{table} was not written: no run of sweeps/{name}.yaml has finished")
            text = replace_block(text, spec.name, table.read_text())
    if args.readme:
        readme.write_text(text)
        print(f"tables written into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
