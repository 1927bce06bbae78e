"""``dslrec report``: a Markdown report with PNG figures, for a run folder or a sweep folder.

A sweep (``plan.json``): its results table and own tables; per data set and backbone, test
Recall@K and NDCG@K against what the sweep varies (a numeric axis of its own, else the density; one
line per method, dense as a reference band, error bars over seeds; a dot per method at one density)
and accuracy against cost (training MACs, model bytes) with the frontier drawn. A run (``log.jsonl``):
its training curves; for a sparse run also the update ratio, the weights each update moved and the
exploration rate over training, and the active weights per user and per item by popularity group
at the start and at the end. Everything is read from what the runs wrote (summary.json, log.jsonl,
the run's data); nothing is trained or evaluated here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dslrec import rundir
from dslrec.errors import DslrecError
from dslrec.experiments import sweep as sw

FIGURES = "figures"
REPORT = "report.md"
DPI = 110


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise DslrecError("dslrec report needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                         "legend.fontsize": 8.5, "figure.dpi": DPI})
    return plt


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` for ``folder`` into ``out`` (default ``folder``);
    returns the report's path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DslrecError(f"{folder} is not a folder; pass a run folder (with log.jsonl) or a sweep folder "
                          f"(with {sw.PLAN})")
    from dslrec.fileio import check_out_dir

    out = check_out_dir(out if out is not None else folder, "--out")
    if (folder / sw.PLAN).is_file():
        text = sweep_report(folder, out)
    elif (folder / rundir.LOG).is_file() or (folder / rundir.SUMMARY).is_file():
        text = run_report(folder, out)
    else:
        raise DslrecError(f"{folder} is neither a run folder (no {rundir.LOG} or {rundir.SUMMARY}) nor a sweep "
                          f"folder (no {sw.PLAN}); pass the folder `dslrec train --out` or a sweep's `out:` names")
    path = out / REPORT
    rundir.write_text(path, text)
    return path


def _save(fig, out: Path, name: str) -> str:
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    rel = f"{FIGURES}/{name}.png"
    with rundir.atomic_path(out / rel) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return rel


def figure(fig, out: Path, name: str, alt: str, caption: str) -> list[str]:
    """Save ``fig`` as ``figures/NAME.png``; the report's lines that show it and say what it shows."""
    return [f"![{alt}]({_save(fig, out, name)})", "", caption, ""]


def _slug(*parts: str) -> str:
    return "_".join("".join(c if c.isalnum() or c in ".-" else "-" for c in p) for p in parts)


# --- a sweep -----------------------------------------------------------------------------------------

METHOD_STYLE_MARKERS = "osD^v<>PXh*p"


def sweep_report(folder: Path, out: Path) -> str:
    plt = _plt()
    plan = sw.read_plan(folder)
    results = sw.collect(folder)
    lines = [f"# Sweep report: `{plan.get('source', folder)}`", ""]
    if not results:
        return "\n".join(lines + ["No run of this sweep has finished yet.", ""])
    groups, (recall, ndcg) = sw.groups_of(results)
    head, rows = sw.table_rows(groups, recall, ndcg)
    n_planned = len(plan["runs"])
    lines += [f"{len(results)} of {n_planned} planned runs finished. Test metrics at the best validation epoch, "
              "mean ± standard deviation over seeds (the mean alone for one run); \"mean active\" is the "
              "step-weighted mean of active parameters over the whole run, \"peak\" its maximum. Costs come from "
              "each run's `summary.json` (`cost`): "
              "MACs count the products a sparse kernel would execute for the active weights; \"train GMACs "
              "(run, est.)\" is the epoch's count with the final mask times the epochs trained, moved towards the "
              "dense count by the share of the run spent above the final budget (methods that train dense "
              "first); \"model KB\" is the compact float32 file's weights (`dslrec export`).", "",
              sw.markdown_table(head, rows), ""]
    for spec, text in sw.own_tables(folder, results):
        lines += [f"## {spec.title or spec.name}", "", text]
    x_axis = plot_axis(groups)
    lined = x_axis not in (None, "density")  # x is another axis: each line's density in its name
    apart = ("method", "density", "model", "dataset", x_axis)
    contexts: dict[tuple, list[sw.Group]] = {}
    for g in groups:  # a group that stands for several grid points belongs to the context of each
        r0 = g.rows[0]
        keys = {(r0["dataset_name"], r0["model_name"]) + tuple((k, v) for k, v in labels.items() if k not in apart)
                for labels in [g.labels, *g.also]}
        for key in sorted(keys):
            contexts.setdefault(key, []).append(g)
    colours = _method_colours(groups, lined)
    for key, gs in contexts.items():
        if all(g.is_dense for g in gs) or len(gs) < 2:
            continue  # nothing to compare (dense alone, or one run): the tables say it all
        dataset, model = key[0], key[1]
        extra = ", ".join(f"{k} {v}" for k, v in key[2:])
        title = f"{model} on {dataset}" + (f" ({extra})" if extra else "")
        seeds = max(len(g.rows) for g in gs)
        lines += [f"## {title}", ""]
        suffix = [str(v) for _, v in key[2:]]
        if x_axis is None:
            lines += figure(method_figure(plt, gs, (recall, ndcg), colours, title, seeds), out,
                            _slug("accuracy_by_method", dataset, model, *suffix),
                            f"test {recall} and {ndcg} by method, {title}",
                            f"Test {pretty(recall)} (left) and {pretty(ndcg)} (right) of each method, a dot each "
                            f"(one density: {next(g for g in gs if not g.is_dense).rows[0]['density_value']:g}), "
                            "highest first; error bars: ± one standard deviation over seeds; the dashed line and grey "
                            "band are dense training (mean ± std).")
        else:
            what = ("the density, the fraction of the sparsifiable weights kept active" if x_axis == "density"
                    else x_axis)
            flat = any(_stands_for_all(g, x_axis) for g in gs if not g.is_dense)
            lines += figure(accuracy_figure(plt, gs, (recall, ndcg), colours, title, seeds, x_axis, lined), out,
                            _slug(f"accuracy_vs_{x_axis}", dataset, model, *suffix),
                            f"test {recall} and {ndcg} against {x_axis}, {title}",
                            f"Test {pretty(recall)} (left) and {pretty(ndcg)} (right) against {what}"
                            f"{' (log scale)' if _log_scale(gs, x_axis) else ''}. One line per method, error bars: ± "
                            "one standard deviation over seeds; the dashed line and grey band are dense training (mean "
                            "± std). Methods run at one value are single points" + (
                                f"; a method that never reads {x_axis} ran once and is a flat dash-dotted line "
                                "across the values it stands for" if flat else "") + ".")
        lines += figure(cost_figure(plt, gs, recall, colours, title, x_axis or "density", lined), out,
                        _slug("cost_frontier", dataset, model, *suffix),
                        f"test {recall} against training cost and model size, {title}",
                        f"Test {pretty(recall)} against the training cost of the whole run (left: GMACs, estimated "
                        "as in the table) and the model's size (right: KB of the compact float32 weights), both on "
                        f"log scales. Each point is a method at one {x_axis or 'density'} (the small number; mean over "
                        "seeds, ± std); the dotted line joins the frontier: the points no other point beats on both "
                        "accuracy and cost." + (f" Runs that stand for several values of {x_axis} (dense, and "
                        f"methods that never read it) carry no number." if x_axis not in (None, "density") else ""))
    lines += ["Reproduce: `dslrec sweep --config " + str(plan.get("source", "SWEEP.yaml")) +
              "` (finished runs are kept and skipped), then `dslrec report " + str(folder) + "`.", ""]
    return "\n".join(lines)


def pretty(metric: str) -> str:
    """recall@20 -> Recall@20, ndcg@20 -> NDCG@20 (as papers write them)."""
    name, _, k = metric.partition("@")
    return {"recall": "Recall", "ndcg": "NDCG", "precision": "Precision", "hitrate": "HitRate",
            "mrr": "MRR"}.get(name, name) + (f"@{k}" if k else "")


def _plain_log_ticks(axis, values: list[float]) -> None:
    """Tick labels of a log axis as plain numbers (0.1, 200, 1,000), not powers of ten: at 1, 2 and 5
    times the powers of ten (also 3 and 7 times when the values span less than a decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    narrow = bool(values) and max(values) < 10 * min(values)
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def numeric_label(axis: str, label: str) -> float | None:
    """The number in a numeric axis value's label (``delta_t200`` -> 200), None for other labels."""
    if not label.startswith(axis):
        return None
    try:
        return float(label[len(axis):])
    except ValueError:
        return None


def plot_axis(groups: list[sw.Group]) -> str | None:
    """What the accuracy figures put on x: the first numeric axis of the sweep with two or more values
    among the sparse runs (delta_t, delta_t_epochs, ...), else the density when the sparse runs have
    two or more, else nothing (a dot per method)."""
    sparse = [g for g in groups if not g.is_dense]
    for axis in sw.extra_axes(groups):
        values = {numeric_label(axis, g.labels[axis]) for g in sparse}
        if None not in values and len(values) > 1:
            return axis
    return "density" if len({g.rows[0]["density_value"] for g in sparse}) > 1 else None


def x_value(g: sw.Group, x_axis: str) -> float:
    return g.rows[0]["density_value"] if x_axis == "density" else numeric_label(x_axis, g.labels[x_axis])


def line_label(g: sw.Group, lined: bool) -> str:
    """A group's line: its method, and its density when the figure's x is another axis."""
    return sw.method_label(g) + (f" @{g.rows[0]['density_value']:g}" if lined else "")


def _method_colours(groups: list[sw.Group], lined: bool = False) -> dict[str, tuple]:
    import matplotlib

    names = []
    for g in groups:
        if not g.is_dense and line_label(g, lined) not in names:
            names.append(line_label(g, lined))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: (cmap(i % cmap.N), METHOD_STYLE_MARKERS[i % len(METHOD_STYLE_MARKERS)]) for i, n in enumerate(names)}


def _stands_for_all(g: sw.Group, x_axis: str) -> bool:
    """A sparse method that never reads ``x_axis`` (static on a delta_t axis) ran once for several of
    its values: a level across the figure rather than a point."""
    return x_axis != "density" and len(g.covers(x_axis)) > 1


def _x_values(groups: list[sw.Group], x_axis: str) -> list[float]:
    xs = [x for g in groups if not g.is_dense for x in (
        [numeric_label(x_axis, v) for v in g.covers(x_axis)] if _stands_for_all(g, x_axis) else [x_value(g, x_axis)])]
    if x_axis == "density":
        xs.append(1.0 if any(g.is_dense for g in groups) else 0.5)
    return xs


def _log_scale(groups: list[sw.Group], x_axis: str) -> bool:
    """A log x axis, unless some value is 0 or negative (an axis like zeta0 may hold 0)."""
    return min(_x_values(groups, x_axis), default=1.0) > 0


def _log_axis(ax, values: list[float], x_axis: str) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    log = min(values) > 0
    ticks = sorted(set(values))
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(ticks) / 1.25, max(ticks) * 1.25)
    else:
        pad = 0.08 * (max(ticks) - min(ticks) or 1.0)
        ax.set_xlim(min(ticks) - pad, max(ticks) + pad)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{d:g}" for d in ticks])
    scale = ", log scale" if log else ""
    ax.set_xlabel(f"density (fraction of weights active{scale})" if x_axis == "density" else
                  f"{x_axis}{' (log scale)' if log else ''}")


def _legend(fig, axes, title: str) -> None:
    """One legend for the figure, right of the panels: each label once (every panel draws the same)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), title=title)


def _dense_band(ax, dense: list[sw.Group], metric: str, vertical: bool = False) -> None:
    for d in dense:
        m, s = d.mean(metric), d.std(metric)
        (ax.axvline if vertical else ax.axhline)(m, color="0.25", lw=1.5, ls="--", zorder=1)
        (ax.axvspan if vertical else ax.axhspan)(m - s, m + s, color="0.6", alpha=0.3, zorder=0)
    if dense:  # one legend entry however many references a context has
        ax.plot([], [], color="0.25", ls="--", label="dense (band: ± std)")


def accuracy_figure(plt, groups: list[sw.Group], metrics: tuple[str, str], colours: dict, title: str, seeds: int,
                    x_axis: str = "density", lined: bool = False):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    dense = [g for g in groups if g.is_dense]
    by_line: dict[str, list[sw.Group]] = {}
    for g in groups:
        if not g.is_dense:
            by_line.setdefault(line_label(g, lined), []).append(g)
    xs = _x_values(groups, x_axis)
    for ax, metric in zip(axes, metrics):
        _dense_band(ax, dense, metric)
        for name, gs in by_line.items():
            colour, marker = colours[name]
            flat = [g for g in gs if _stands_for_all(g, x_axis)]
            for g in flat:  # ran once for the values of x it covers: a level across them, not a point
                covered = [numeric_label(x_axis, v) for v in g.covers(x_axis)]
                ax.hlines(g.mean(metric), min(covered), max(covered), color=colour, ls="-.", lw=1.3, zorder=2,
                          label=name)
            gs = sorted((g for g in gs if g not in flat), key=lambda g: x_value(g, x_axis))
            if not gs:
                continue
            ax.errorbar([x_value(g, x_axis) for g in gs], [g.mean(metric) for g in gs],
                        yerr=[g.std(metric) for g in gs], color=colour, marker=marker, ms=5,
                        lw=1.4 if len(gs) > 1 else 0, elinewidth=1, capsize=3, label=name, zorder=3)
        _log_axis(ax, xs, x_axis)
        ax.set_ylabel(f"test {pretty(metric)}")
        ax.set_title(f"test {pretty(metric)} against {x_axis}")
    _legend(fig, axes, "method @ density" if lined else "method")
    fig.suptitle(f"{title}: test metrics at the best validation epoch (mean ± std over {_seeds(seeds)})")
    fig.tight_layout()
    return fig


def method_figure(plt, groups: list[sw.Group], metrics: tuple[str, str], colours: dict, title: str, seeds: int):
    """One dot per method (a sweep at one density), highest recall on top. Dots, not bars: the axis
    is zoomed on the differences, and a bar's length from a cut-off axis would overstate them."""
    sparse = sorted((g for g in groups if not g.is_dense), key=lambda g: g.mean(metrics[0]) or 0.0)
    dense = [g for g in groups if g.is_dense]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.4 + 0.32 * len(sparse)), sharey=True)
    for ax, metric in zip(axes, metrics):
        _dense_band(ax, dense, metric, vertical=True)
        for y, g in enumerate(sparse):
            colour, marker = colours[line_label(g, False)]
            ax.errorbar([g.mean(metric)], [y], xerr=[g.std(metric)], color=colour, marker=marker, ms=6, lw=0,
                        elinewidth=1.2, capsize=3, zorder=3)
        values = [v for v in [g.mean(metric) for g in sparse + dense] if v is not None]
        lo, hi = min(values), max(values)
        pad = max(0.08 * (hi - lo), 1e-3 * abs(hi), 1e-12)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-0.6, len(sparse) - 0.4)
        ax.set_yticks(range(len(sparse)))
        ax.set_yticklabels([sw.method_label(g) for g in sparse])
        ax.set_xlabel(f"test {pretty(metric)}")
        ax.set_title(f"test {pretty(metric)} by method")
    if dense:
        _legend(fig, axes, "reference")
    fig.suptitle(f"{title}: test metrics at the best validation epoch (mean ± std over {_seeds(seeds)})")
    fig.tight_layout()
    return fig


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (cost, accuracy) that no other point beats on both (lower cost, higher accuracy),
    by increasing cost."""
    best, out = -math.inf, []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            out.append((c, a))
            best = a
    return out


def cost_figure(plt, groups: list[sw.Group], metric: str, colours: dict, title: str, x_axis: str = "density",
                lined: bool = False):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    costs = (("train_macs_run_est", 1e9, "training cost of the run (GMACs, estimated; log scale)"),
             ("model_bytes", 1e3, "model size (KB, compact float32 weights; log scale)"))
    for ax, (key, unit, xlabel) in zip(axes, costs):
        points = []
        for g in groups:
            c, a = g.mean(key), g.mean(metric)
            if c is None or a is None:
                continue
            c /= unit
            points.append((c, a))
            if g.is_dense:
                colour, marker, label = "0.2", "*", "dense"
            else:
                label = line_label(g, lined)
                colour, marker = colours[label]
            ax.errorbar([c], [a], yerr=[g.std(metric)], color=colour, marker=marker, ms=8 if g.is_dense else 5,
                        lw=0, elinewidth=1, capsize=2, label=label, zorder=3)
            if not (g.is_dense and x_axis != "density") and not _stands_for_all(g, x_axis):  # ran for all values
                ax.annotate(f"{x_value(g, x_axis):g}", (c, a), textcoords="offset points", xytext=(4, 3),
                            fontsize=7, color="0.35")
        if points:
            f = frontier(points)
            ax.plot([p[0] for p in f], [p[1] for p in f], color="0.4", ls=":", lw=1.2, zorder=2, label="frontier")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, [p[0] for p in points])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {pretty(metric)}")
        ax.set_title(f"test {pretty(metric)} against {'training cost' if key.startswith('train') else 'model size'}")
    _legend(fig, axes, f"{'method @ density' if lined else 'method'} (numbers: {x_axis})")
    fig.suptitle(f"{title}: accuracy against cost (mean over seeds; up and left is better)")
    fig.tight_layout()
    return fig


# --- a run -------------------------------------------------------------------------------------------

def read_records(folder: Path) -> list[dict]:
    path = folder / rundir.LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_report(folder: Path, out: Path) -> str:
    plt = _plt()
    records = read_records(folder)
    summary = sw.read_summary(folder)
    config = (summary or {}).get("config") or _read_config(folder)
    metric = config.get("metric", "recall@20")
    name = f"{config.get('model', '?')} / {config.get('method', '?')}"
    if config.get("method") != "dense":
        name += f" at density {config.get('density')}"
    name += f" on {config.get('dataset', '?')} (seed {config.get('seed')})"
    lines = [f"# Run report: {name}", "", f"Run folder: `{folder}`.", ""]
    if summary is None:
        lines += ["The run has not finished (no summary.json): the curves show the epochs trained so far.", ""]
    else:
        lines += _summary_lines(summary)
    if not records:
        return "\n".join(lines + ["The run has no log records yet.", ""])
    popular = ((summary or {}).get("popularity") or {}).get("valid", {}).get(metric)
    lines += ["## Training", ""] + figure(
        training_figure(plt, records, metric, (summary or {}).get("best_epoch"), popular, name), out, "training",
        f"training loss and validation {metric}",
        f"Left: the mean training loss of each epoch. Right: validation {pretty(metric)} at each evaluated epoch; "
        "the dotted line marks the best epoch (its weights are the ones tested), the grey line ranking by training "
        "popularity." + (" Shaded spans are the phases of the method." if _phases(records)[1:] else ""))
    sparse = [r for r in records if "sparse" in r]
    if sparse and not any(r["sparse"].get("method") == "dsl" for r in sparse):
        lines += ["## Budget over training", ""] + figure(
            active_figure(plt, records, name), out, "active", "active parameters over training",
            "Active parameters (dense ones and the active weights of the sparsified tensors) at the end of each "
            "epoch: methods that train dense first reach their budget only later; the mask is never pruned and "
            "regrown, so there is no update ratio or exploration to show.")
    elif sparse:
        lines += ["## Exploration", ""] + figure(
            exploration_figure(plt, records, name), out, "exploration",
            "update ratio, weights moved and exploration rate",
            "Left: the update ratio zeta_t (the fraction of active weights a mask update moves) at the end of each "
            "epoch. Middle: weights moved (pruned and regrown) per mask update, mean over the epoch's updates. "
            "Right: the exploration rate, the share of all sparsifiable positions that have been active at least "
            "once.")
    spread = budget_spread(folder, sparse) if sparse else None
    if spread is not None:
        if sparse[0] is not records[0]:  # a dense phase came first (oneshot, lth)
            spread["start_label"] = spread["start_label"].replace("first step", "first sparse phase's first step")
        lines += ["## Where the budget went", ""] + figure(
            budget_figure(plt, spread, name), out, "budget", "active weights per user and item group",
            "Active weights per user (left) and per item (right), mean over each popularity group (10 groups "
            "holding equal shares of the training interactions; group 1 the least active users or least "
            f"popular items), {spread['start_label']} and at the end of training.")
    return "\n".join(lines)


def _read_config(folder: Path) -> dict:
    path = folder / rundir.CONFIG
    if not path.is_file():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _summary_lines(s: dict) -> list[str]:
    p = s["params"]
    test = ", ".join(f"{k} {v:.4f}" for k, v in s["test"].items() if "@" in k and not k.startswith("sampled"))
    return [f"- test at the best validation epoch ({s['best_epoch']} of {s['epochs_run']}): {test}",
            f"- parameters: {p['active']:,} active of {p['total']:,} at the end; mean {p['mean_active']:,.0f}, "
            f"peak {p['peak_active']:,} over the run",
            f"- time: {s['time']['train_s']:.1f} s of training and validation, {s['time']['epoch_s']:.2f} s per "
            f"epoch (median), on {s.get('device', '?')}", ""]


def _phases(records: list[dict]) -> list[tuple[str, int, int]]:
    """(phase name, first epoch, last epoch) in order."""
    out: list[tuple[str, int, int]] = []
    for r in records:
        if out and out[-1][0] == r.get("phase"):
            out[-1] = (out[-1][0], out[-1][1], r["epoch"])
        else:
            out.append((r.get("phase", ""), r["epoch"], r["epoch"]))
    return out


def _shade_phases(ax, records: list[dict]) -> None:
    phases = _phases(records)
    if len(phases) < 2:
        return
    for i, (name, a, b) in enumerate(phases):
        if i % 2:
            ax.axvspan(a - 0.5, b + 0.5, color="0.9", zorder=0)
        ax.text((a + b) / 2, 0.98, name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7.5,
                color="0.35", clip_on=True)


def training_figure(plt, records: list[dict], metric: str, best_epoch, popular, title: str):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in records]
    a.plot(epochs, [r["loss"] for r in records], color="C0", lw=1.4)
    _epoch_axis(a)
    a.set_ylabel("training loss (mean over the epoch)")
    a.set_title("training loss")
    ev = [r for r in records if "valid" in r and metric in r["valid"]]
    b.plot([r["epoch"] for r in ev], [r["valid"][metric] for r in ev], color="C1", marker="o", ms=3, lw=1.4,
           label=f"validation {pretty(metric)}")
    if popular is not None:
        b.axhline(popular, color="0.5", lw=1, label=f"popularity ranking ({popular:.4f})")
    if best_epoch is not None:
        b.axvline(best_epoch, color="k", ls=":", lw=1, label=f"best epoch ({best_epoch})")
    _epoch_axis(b)
    b.set_ylabel(f"validation {pretty(metric)}")
    b.set_title(f"validation {pretty(metric)}")
    b.legend(loc="lower right")
    for ax in (a, b):
        _shade_phases(ax, records)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def exploration_figure(plt, records: list[dict], title: str):
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    sparse = [r for r in records if "sparse" in r]
    epochs = [r["epoch"] for r in sparse]
    # the update ratio is DSL's (the other methods' engines report a schedule they do not use)
    zeta = [r["sparse"].get("zeta_now") if r["sparse"].get("method") == "dsl" else None for r in sparse]
    if any(z is not None for z in zeta):
        axes[0].plot(epochs, [math.nan if z is None else z for z in zeta], color="C2", lw=1.5)
    else:
        _no_data(axes[0], f"no update ratio: {sparse[0]['sparse'].get('method')} does not prune and regrow")
    axes[0].set_ylabel("update ratio zeta_t (fraction of active)")
    axes[0].set_title("update ratio zeta_t")
    moved = [(r["epoch"], r["sparse"]["moved"] / r["sparse"]["updates"]) for r in sparse
             if r["sparse"].get("updates")]
    if moved:
        axes[1].plot([m[0] for m in moved], [m[1] for m in moved], color="C3", marker="o", ms=2.5, lw=1.2)
    else:
        _no_data(axes[1], "no mask update in this run")
    axes[1].set_ylabel("weights moved per mask update")
    axes[1].set_title("weights moved per update")
    axes[1].yaxis.set_major_formatter(_thousands())
    axes[2].plot(epochs, [100 * r["sparse"]["exploration_rate"] for r in sparse], color="C4", lw=1.5)
    axes[2].set_ylabel("positions ever active (% of all)")
    axes[2].set_title("exploration rate")
    for ax in axes:
        _epoch_axis(ax)
        _shade_phases(ax, sparse)
    for ax in axes[:2]:
        ax.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _epoch_axis(ax) -> None:
    """An x axis of epochs: labelled, ticks on whole epochs only."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def active_figure(plt, records: list[dict], title: str):
    fig, ax = plt.subplots(figsize=(7, 3.9))
    ax.plot([r["epoch"] for r in records], [r["active"] for r in records], color="C0", lw=1.5)
    _epoch_axis(ax)
    ax.set_ylabel("active parameters")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_title("active parameters at the end of each epoch")
    _shade_phases(ax, records)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4", wrap=True)
    ax.set_yticks([])


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def budget_spread(folder: Path, sparse: list[dict]) -> dict[str, Any] | None:
    """{entity: (start counts, end counts, group sizes)}, and what "start" is: the spread before the
    first step when the run recorded it, else after its first epoch (runs from before that record)."""
    first = sparse[0]["sparse"]
    start = first.get("spread_start")
    start_label = "before the first step"
    if start is None:
        start, start_label = first.get("spread"), "after the first epoch"
    end = sparse[-1]["sparse"].get("spread")
    if not start or not end:
        return None
    out: dict[str, Any] = {"start_label": start_label}
    sizes = None
    for entity in ("user", "item"):
        key = f"{entity}_groups"
        if key not in start or key not in end:
            continue
        size = end.get(f"{entity}_group_sizes")
        if size is None:  # recorded before the sizes were: from the run's own training data
            if sizes is None:
                sizes = _group_sizes(folder, len(end[key]))
            size = sizes.get(entity) if sizes else None
        out[entity] = (start[key], end[key], size)
    return out if len(out) > 1 else None


def _group_sizes(folder: Path, n_groups: int) -> dict[str, list[int]] | None:
    if not rundir.has_data(folder):
        return None
    import numpy as np

    from dslrec.evaluate.groups import item_groups, user_groups

    dataset, _ = rundir.read_data(folder)
    return {"user": np.bincount(user_groups(dataset, n_groups), minlength=n_groups).tolist(),
            "item": np.bincount(item_groups(dataset, n_groups), minlength=n_groups).tolist()}


def budget_figure(plt, spread: dict[str, Any], title: str):
    import numpy as np

    entities = [e for e in ("user", "item") if e in spread]
    fig, axes = plt.subplots(1, len(entities), figsize=(6 * len(entities), 4), squeeze=False)
    for ax, entity in zip(axes[0], entities):
        start, end, sizes = spread[entity]
        per = sizes is not None
        div = np.maximum(np.asarray(sizes, dtype=float), 1) if per else 1.0
        x = np.arange(1, len(start) + 1)
        ax.bar(x - 0.2, np.asarray(start) / div, width=0.4, color="0.65", label=spread["start_label"])
        ax.bar(x + 0.2, np.asarray(end) / div, width=0.4, color="C0", label="end of training")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{g}\n({n:,})" for g, n in zip(x, sizes)] if per else [str(g) for g in x])
        ax.set_xlabel(f"{entity} popularity group: 1 = least {'active' if entity == 'user' else 'popular'}, "
                      f"10 = most" + (f" (in brackets: {entity}s in the group)" if per else ""))
        ax.set_ylabel(f"active weights per {entity}" if per else f"active weights of the group's {entity}s")
        ax.set_title(f"{entity}s: active weights by popularity group")
        top = max(np.max(np.asarray(start) / div), np.max(np.asarray(end) / div))
        ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
        ax.legend(loc="upper left", ncol=2)
    fig.suptitle(f"{title}: where the budget went")
    fig.tight_layout()
    return fig
