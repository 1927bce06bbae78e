"""A sweep's own tables: the ``tables:`` section of a sweep file, each a pivot of its runs.

    tables:
      - name: interval             # written to OUT/interval.md, and a section of results.md and report.md
        title: Validation recall as % of dense
        rows: [model, delta_t]     # the axes whose labels make a row
        columns: [method]          # the axes spread over the columns (none: one column per value)
        values: [valid recall@20]  # what a cell shows: METRIC or COUNTS below
        relative_to_dense: true    # each run's value over its dense reference's (same labels but method
                                   # and density, the same seed), as a percentage
        summary: [mean, worst]     # columns over each row's cells
        sort: mean                 # rows by that summary column, highest first

A cell is the mean over the runs with its row's and column's labels (over seeds, and over any axis
the table leaves out). A run that stands for several grid points (dense on a delta_t axis) counts at
each. In a relative table dense runs are the references: they show as a row of 100% when ``method``
is a row axis, and not at all otherwise (a summary over a row is then over the sparse runs only).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from dslrec.errors import DslrecError

# what a cell may show: a split's metric, the popularity reference's, or one of a run's counts
METRIC = re.compile(r"^(?P<popularity>popularity )?(valid|test) "
                    r"(?P<metric>sampled_(hitrate|ndcg|mrr)|recall|ndcg|precision|hitrate|mrr)@(?P<k>\d+)$")
COUNTS = ("best_epoch", "epochs_run", "train_s", "epoch_s")
SUMMARIES = ("mean", "worst", "best")
KEYS = ("name", "title", "rows", "columns", "values", "relative_to_dense", "summary", "sort")


@dataclass
class TableSpec:
    name: str
    rows: list[str]
    values: list[str]
    title: str = ""
    columns: list[str] = field(default_factory=list)
    relative_to_dense: bool = False
    summary: list[str] = field(default_factory=list)
    sort: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_tables(source: str, raw: Any, axes: list[str]) -> list[TableSpec]:
    """The sweep file's ``tables:`` list, checked against its axes (one-line errors)."""
    def bad(what: str) -> DslrecError:
        return DslrecError(f"sweep file {source}: tables: {what}")

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad("give a list of tables, each a mapping with name, rows and values")
    specs: list[TableSpec] = []
    for i, t in enumerate(raw, 1):
        if not isinstance(t, dict):
            raise bad(f"table {i} is not a mapping (name: ..., rows: [...], values: [...])")
        unknown = sorted(map(str, set(t) - set(KEYS)))
        if unknown:
            raise bad(f"table {i} has unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
        name = t.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in (
                "results", "report", "plan", "runs"):
            raise bad(f"table {i} needs a `name` made of letters, digits, '.', '_' or '-' (its file is OUT/NAME.md; "
                      f"not results, report, plan or runs), got {name!r}")
        if name in {s.name for s in specs}:
            raise bad(f"two tables are named {name!r}")

        def axis_list(key: str, required: bool) -> list[str]:
            value = t.get(key, [])
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or (required and not value):
                raise bad(f"table {name!r}: `{key}` must be a list of axes of the sweep ({', '.join(axes)})")
            for a in value:
                if a not in axes:
                    raise bad(f"table {name!r}: {key} names {a!r}, which is not an axis of the sweep (a list in the "
                              f"file); axes: {', '.join(axes) or 'none'}")
            return list(value)

        rows, columns = axis_list("rows", True), axis_list("columns", False)
        if set(rows) & set(columns):
            raise bad(f"table {name!r}: an axis is both a row and a column: {', '.join(sorted(set(rows) & set(columns)))}")
        values = t.get("values")
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values:
            raise bad(f"table {name!r}: `values` must list what a cell shows, e.g. [valid recall@20]")
        for v in values:
            m = METRIC.match(v) if isinstance(v, str) else None
            if m and m["popularity"] and m["metric"].startswith("sampled_"):
                raise bad(f"table {name!r}: {v!r}: the popularity reference is ranked in full, it has no sampled "
                          "metrics")
            if not isinstance(v, str) or not (m or v in COUNTS):
                raise bad(f"table {name!r}: unknown value {v!r}; use '[popularity] valid|test METRIC@K' "
                          f"(recall, ndcg, precision, hitrate, mrr; sampled_hitrate, sampled_ndcg, sampled_mrr for the "
                          f"leave-one-out runs' sampled protocol) or one of {', '.join(COUNTS)}")
        relative = t.get("relative_to_dense", False)
        if not isinstance(relative, bool):
            raise bad(f"table {name!r}: relative_to_dense is true or false, got {relative!r}")
        if relative and any(not METRIC.match(v) for v in values):
            raise bad(f"table {name!r}: relative_to_dense needs metric values, not {', '.join(COUNTS)}")
        summary = t.get("summary", [])
        summary = [summary] if isinstance(summary, str) else summary
        if not isinstance(summary, list) or any(s not in SUMMARIES for s in summary):
            raise bad(f"table {name!r}: summary is a list of {', '.join(SUMMARIES)}, got {summary!r}")
        if summary and len(values) > 1:
            raise bad(f"table {name!r}: a summary column needs a table of one value, it has {len(values)}")
        if {"worst", "best"} & set(summary) and not METRIC.match(values[0]):
            # which end of a count is "worst" depends on the count: say mean, or sort the rows yourself
            raise bad(f"table {name!r}: worst and best summarise a metric (higher is better), not {values[0]}; "
                      "use summary: [mean]")
        sort = t.get("sort")
        if sort is not None and sort not in summary:
            raise bad(f"table {name!r}: sort names a summary column ({', '.join(summary) or 'none given'}), got {sort!r}")
        title = t.get("title", "")
        if not isinstance(title, str):
            raise bad(f"table {name!r}: title is text, got {title!r}")
        specs.append(TableSpec(name, rows, values, title, columns, relative, summary, sort))
    return specs


def _pair(run) -> tuple:
    return run.config.get("model"), run.config.get("dataset")


def check_against_runs(source: str, specs: list[TableSpec], runs: list) -> None:
    """One-line errors, before anything trains, for tables the planned runs (``sweep.PlannedRun``s)
    could never fill: a cut-off no run evaluates, a relative table with no dense run."""
    for spec in specs:
        for v in spec.values:
            m = METRIC.match(v)
            if m and m["metric"].startswith("sampled_") and not any(r.config.get("split") == "loo" for r in runs):
                raise DslrecError(f"sweep file {source}: tables: table {spec.name!r} shows {v}, but no run uses the "
                                  "sampled protocol (split: loo); show a full-ranking metric")
            if m and not any(int(m["k"]) in r.config.get("ks", []) for r in runs):
                raise DslrecError(f"sweep file {source}: tables: table {spec.name!r} shows {v}, but no run evaluates "
                                  f"@{m['k']}; add it to the runs' cut-offs (ks: [[..., {m['k']}]]) or "
                                  "show a cut-off they have")
        if spec.relative_to_dense:
            pairs = set(map(_pair, runs))
            dense = {pair for pair, r in zip(map(_pair, runs), runs) if r.config.get("method") == "dense"}
            missing = sorted(pairs - dense, key=str)
            if missing:
                model, dataset = missing[0]
                raise DslrecError(f"sweep file {source}: tables: table {spec.name!r} is relative_to_dense, but the "
                                  f"sweep has no dense run of {model} on {dataset}; add dense to its method axis "
                                  "or drop relative_to_dense")


def value_of(summary: dict, value: str) -> float | None:
    """A run's figure named ``value`` (see ``METRIC`` and ``COUNTS``), None when it has none."""
    if value in COUNTS:
        v = summary["time"].get(value) if value.endswith("_s") else summary.get(value)
    else:
        popular, split, metric = METRIC.match(value)["popularity"], value.split()[-2], value.split()[-1]
        source = summary.get("popularity", {}) if popular else summary
        v = (source.get(split) or {}).get(metric)
    return None if v is None else float(v)


def _format(v: float, relative: bool, value: str) -> str:
    if relative:
        return f"{v:.1%}"
    if METRIC.match(value):
        return f"{v:.4f}"
    if abs(v) < 10:  # seconds per epoch, a best epoch averaged over seeds: three significant digits
        return f"{v:.3g}"
    return f"{v:,.1f}".removesuffix(".0")


def pivot(spec: TableSpec, results: list, axis_order: dict[str, list[str]]) -> tuple[list[str], list[list[str]], str]:
    """``spec``'s table of ``results`` (``sweep.RunResult``s): header, rows and a caption.
    ``axis_order`` gives each axis's labels in the file's order (rows and columns follow it)."""
    from dslrec.experiments.sweep import context

    points = [(r, labels) for r in results for labels in [r.labels, *r.also]]
    def scope(r, labels: dict[str, str]) -> tuple:  # the same data and backbone, the same labels but method/density
        return (r.summary.get("dataset") or {}).get("name"), r.summary.get("model"), context(labels)

    refs: dict[tuple, Any] = {}
    for r, labels in points:  # the first dense run of a scope, as sweep.reference_of picks it
        if r.summary["method"] == "dense":
            refs.setdefault(scope(r, labels), r)
    shows_dense = not spec.relative_to_dense or "method" in spec.rows
    cells: dict[tuple, list[float]] = {}
    unmatched = unusable = 0
    stood_in = False  # a run counted at a grid point it stands for, besides its own
    for r, labels in points:
        if r.summary["method"] == "dense" and not shows_dense:
            continue
        if any(a not in labels for a in spec.rows + spec.columns):
            continue
        row = tuple(labels[a] for a in spec.rows)
        col = tuple(labels[a] for a in spec.columns)
        for value in spec.values:
            v = value_of(r.summary, value)
            if v is not None and spec.relative_to_dense:
                ref = refs.get(scope(r, labels))
                if ref is None:
                    unmatched += 1
                    continue
                base = value_of(ref.summary, value)
                if base is None or not math.isfinite(base) or base == 0:
                    unusable += 1
                    continue
                v /= base
            if v is not None:
                cells.setdefault((row, col, value), []).append(v)
                stood_in |= labels is not r.labels

    def order(keys: set[tuple], axes: list[str]) -> list[tuple]:
        def rank(key: tuple) -> tuple:
            return tuple(axis_order.get(a, []).index(v) if v in axis_order.get(a, []) else len(axis_order.get(a, []))
                         for a, v in zip(axes, key))
        return sorted(keys, key=rank)

    row_keys = order({k[0] for k in cells}, spec.rows)
    col_keys = order({k[1] for k in cells}, spec.columns)
    head = list(spec.rows)
    for col in col_keys:
        for value in spec.values:
            name = value + (" % of dense" if spec.relative_to_dense else "")
            head.append(" ".join(col) + (f" ({name})" if len(spec.values) > 1 else "") if col else name)
    head += spec.summary
    table: list[tuple[list[str], dict[str, float]]] = []
    for row in row_keys:
        means = [statistics.mean(cells[(row, col, v)]) if (row, col, v) in cells else None
                 for col in col_keys for v in spec.values]
        known = [m for m in means if m is not None]
        sums = {"mean": statistics.mean(known), "worst": min(known), "best": max(known)}
        text = list(row) + ["-" if m is None else _format(m, spec.relative_to_dense, v)
                            for m, v in zip(means, [v for _ in col_keys for v in spec.values])]
        text += [_format(sums[s], spec.relative_to_dense, spec.values[0]) for s in spec.summary]
        table.append((text, sums))
    if spec.sort:
        table.sort(key=lambda t: -t[1][spec.sort])
    counts = [len(v) for v in cells.values()]
    what = ("each run's value as a percentage of its dense reference's (the dense run with the same labels on every "
            "axis but method and density, the same seed included)" if spec.relative_to_dense else "the runs' values")
    if counts:
        spread = f"{min(counts)}" + (f"-{max(counts)}" if max(counts) != min(counts) else "")
        stand_ins = "; a run that stands for several grid points counts at each" if stood_in else ""
        caption = f"Cells: {what}, mean over the runs of the cell ({spread} each{stand_ins})"
    else:
        caption = "No finished run has these values"
    if spec.summary and counts:
        caption += f"; {', '.join(spec.summary)}: over the cells of the row that have runs"
    if spec.sort and counts:
        caption += f"; rows by {spec.sort}, highest first"
    if unmatched:
        caption += f"; {unmatched} value(s) left out: their dense reference has not finished"
    if unusable:
        caption += f"; {unusable} value(s) left out: their dense reference's value is 0 or not a number"
    return head, [t[0] for t in table], caption + "."
