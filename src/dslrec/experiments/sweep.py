"""``dslrec sweep``: a grid of runs from one YAML file, resumable, and its results table.

The file's keys are run settings (``dslrec.settings``) plus ``out``, the sweep folder. A list
is a grid axis, a scalar a fixed setting. An axis value may be a mapping: a bundle of settings
applied together, named by its ``label`` (default: its value for the axis key), e.g.
``method: [dense, {label: dsl-row, method: dsl, scope: per_row}]``. Bundles override the plain
axes and the fixed settings, so ``{label: gmp, method: gmp, density: 0.2}`` runs GMP at 0.2
whatever the density axis says; ``method: dense`` always runs at density 1 (the reference, once
per value of the other axes). ``config: FILE``, fixed or in a bundle, reads a run config file as
the base the other settings override (``run: [{label: gowalla, config: configs/cpu/lightgcn-gowalla.yaml}]``).
Runs that come out with the same settings are trained once (the
interval does not count for methods that never read it), and such a run stands for every grid point
it covers (``also``). A setting whose value is itself a list (ks, k_core, include, layers) is a
one-value axis: ``ks: [[10, 20]]``. ``tables:`` declares the file's own tables (``pivot``).

Each run trains in ``OUT/runs/NAME``, NAME being its labels and a hash of its resolved settings.
A run is skipped when some ``OUT/runs/*/summary.json`` records the same settings (see
``config_differences``: folders from older scripts count too), resumed when its folder holds a
checkpoint without a summary, and trained otherwise. ``OUT/plan.json`` lists the runs and their
folders; the table goes to ``OUT/results.md``, ``results.csv`` (one row per group of seeds) and
``runs.csv`` (one row per run), each of the file's own tables to ``OUT/NAME.md`` (and results.md).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dslrec import rundir
from dslrec.errors import DslrecError, sigterm_as_interrupt, warnings_about
from dslrec.settings import RunConfig, read_config_file, resolve_settings

PLAN = "plan.json"
RUNS = "runs"
SEED_AXIS = "seed"
# settings a run may differ in and still be the same run (they change where or how fast it ran)
SESSION_KEYS = ("device", "eval_batch_size")
# methods that read delta_t (the interval of DSL's updates and of GMP's pruning)
USE_DELTA_T = ("dsl", "gmp")


@dataclass
class PlannedRun:
    name: str  # folder name under OUT/runs
    labels: dict[str, str]  # axis -> label of this run's value
    settings: dict[str, Any]  # what the sweep file sets
    config: dict[str, Any]  # the resolved settings, model options flattened (what matching compares)
    # the labels of the other grid points that came out as this same run (dense at every density or
    # every delta_t): it stands for them too, e.g. as the dense reference of each
    also: list[dict[str, str]] = field(default_factory=list)
    folder: str = ""  # where its result is (OUT/runs/...): its own folder or a kept one that matches
    state: str = "new"  # new | resume | done

    @property
    def group(self) -> tuple[str, ...]:
        """The labels of every axis but the seed: runs that differ only in seed are one table row."""
        return tuple(v for k, v in self.labels.items() if k != SEED_AXIS)


@dataclass
class Sweep:
    path: Path
    out: Path
    fixed: dict[str, Any]
    axes: list[tuple[str, list[Any]]]
    runs: list[PlannedRun] = field(default_factory=list)
    tables: list = field(default_factory=list)  # pivot.TableSpec: the file's own tables


# --- reading and expanding the file --------------------------------------------------------------

def read_sweep(path: str | Path) -> Sweep:
    """Parse a sweep file (one-line errors for malformed YAML, a missing ``out``, an empty axis,
    bad bundles) and plan its runs (settings resolved and checked before anything is trained)."""
    path = Path(path)
    data = read_config_file(path)  # the settings' own reader: one-line errors, model_options flattened
    out = data.pop("out", None)
    tables = data.pop("tables", None)
    if not isinstance(out, str) or not out.strip():
        raise DslrecError(f"sweep file {path} needs `out: FOLDER` (where the runs and the table go)")
    from dslrec.fileio import check_out_dir

    out_dir = Path(out)
    if not out_dir.is_absolute():  # relative to the working directory, like --out
        out_dir = Path.cwd() / out_dir
    check_out_dir(out_dir, f"sweep file {path}: out")
    fixed, axes = {}, []
    for key, value in data.items():
        if key == "config" and isinstance(value, list) and not all(isinstance(v, dict) for v in value):
            raise DslrecError(f"sweep file {path}: a list of config files goes in bundles, one per file: "
                              f"run: [{{label: NAME, config: FILE}}, ...]")
        if isinstance(value, list):
            if not value:
                raise DslrecError(f"sweep file {path}: axis {key!r} is an empty list; give it at least one value "
                                  f"(or a scalar for a fixed setting)")
            for v in value:
                _check_value(path, key, v)
            axes.append((key, value))
        elif isinstance(value, dict) and key not in ("columns",):
            raise DslrecError(f"sweep file {path}: {key!r} is a mapping; a bundle of settings goes in a list "
                              f"(an axis): {key}: [{{label: NAME, ...}}]")
        else:
            fixed[key] = value
    from dslrec.experiments.pivot import check_against_runs, parse_tables

    sweep = Sweep(path, out_dir, fixed, axes, tables=parse_tables(str(path), tables, [k for k, _ in axes]))
    sweep.runs = expand(sweep)
    from dslrec.data import check_source

    for dataset in dict.fromkeys(str(r.config.get("dataset")) for r in sweep.runs):
        try:
            check_source(dataset)
        except DslrecError as e:  # before any run trains, not once per run
            raise DslrecError(f"sweep file {path}: {e}") from None
    check_against_runs(str(path), sweep.tables, sweep.runs)
    return sweep


def _check_value(path: Path, axis: str, value: Any) -> None:
    if not isinstance(value, dict):
        return
    if not all(isinstance(k, str) for k in value):
        raise DslrecError(f"sweep file {path}: a bundle of axis {axis!r} has a key that is not a setting name: {value}")
    label = value.get("label", value.get(axis))
    if not isinstance(label, (str, int, float)) or isinstance(label, bool) or label == "":
        raise DslrecError(f"sweep file {path}: a bundle of axis {axis!r} needs a `label` (or a value for {axis}): "
                          f"{value}")


def _label(axis: str, value: Any) -> str:
    """A value's name in folder names and tables: strings as they are (a path's last part), numbers
    after their setting (``density0.5``, ``seed0``)."""
    if isinstance(value, str):
        text = Path(value).name if axis == "dataset" else value
    else:
        text = f"{axis}{value}"
    return "".join(c if c.isalnum() or c in "._@+=-" else "-" for c in text)


def flat_config(cfg: RunConfig | dict) -> dict[str, Any]:
    d = cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    return {**{k: v for k, v in d.items() if k != "model_options"}, **(d.get("model_options") or {})}


def expand(sweep: Sweep) -> list[PlannedRun]:
    """Every combination of the axes' values, bundles applied last, dense at density 1, duplicates
    (same resolved settings) dropped; each run's settings resolved now (errors before any training)."""
    runs: dict[str, PlannedRun] = {}
    digest_of: dict[tuple, str] = {}  # a grid point's labels -> the run that trains it
    names = [k for k, _ in sweep.axes]
    for combo in itertools.product(*(values for _, values in sweep.axes)):
        bundles = [value for value in combo if isinstance(value, dict)]
        # a config file (fixed or a bundle's) is the base, as with `dslrec train --config FILE --key value`
        settings = {}
        for source in [sweep.fixed, *bundles]:
            if "config" in source:
                settings.update(_config_file(sweep.path, source["config"]))
        settings.update({k: v for k, v in sweep.fixed.items() if k != "config"})
        for axis, value in zip(names, combo):
            if not isinstance(value, dict):
                settings[axis] = value
        for b in bundles:
            settings.update({k: v for k, v in b.items() if k not in ("label", "config")})
        if settings.get("method", RunConfig.method) == "dense" and "density" in settings:
            settings["density"] = 1.0  # the dense reference: one run, whatever the density axis says
        labels = {}
        for axis, value in zip(names, combo):
            if isinstance(value, dict):
                labels[axis] = _label(axis, value.get("label", value.get(axis)))
            else:
                labels[axis] = _label(axis, settings.get(axis, value))
        description = ", ".join(f"{k}={v}" for k, v in labels.items()) or "the only run"
        try:
            config = flat_config(resolve_settings(settings))
        except DslrecError as e:
            raise DslrecError(f"sweep file {sweep.path}, run {description}: {e}") from None
        digest = settings_hash(config)
        if digest_of.setdefault(tuple(labels.items()), digest) != digest:
            # two different runs the tables could not tell apart (averaged as if seeds)
            raise DslrecError(f"sweep file {sweep.path}: two different runs are both labelled {description}; give "
                              "each bundle a `label` of its own (a bundle without one is named by its value "
                              "for the axis, e.g. its method)")
        if digest in runs:
            if labels != runs[digest].labels and labels not in runs[digest].also:
                runs[digest].also.append(labels)
            continue
        name = "__".join(list(labels.values()) + [digest]) if labels else digest
        runs[digest] = PlannedRun(name, labels, settings, config)
    planned = list(runs.values())
    every = {a: {r.labels[a] for r in planned} | {x[a] for r in planned for x in r.also} for a in names}
    for run in planned:  # a run that stands for several values of an axis is not named after one of them
        if run.also:
            parts = []
            for axis, label in run.labels.items():
                covered = list(dict.fromkeys([label, *(x[axis] for x in run.also)]))
                parts.append(label if len(covered) == 1 else f"{axis}-all" if set(covered) >= every[axis]
                             else "+".join(covered))
            run.name = "__".join(parts + [run.name.rsplit("__", 1)[-1]])
    return planned


def _config_file(sweep_path: Path, path: Any) -> dict[str, Any]:
    """A run config file named in a sweep file (relative to the working directory, like --config)."""
    if not isinstance(path, str) or not path:
        raise DslrecError(f"sweep file {sweep_path}: config names a run config file (YAML or JSON), got {path!r}")
    try:
        data = read_config_file(path)
    except DslrecError as e:
        where = "" if Path(path).is_absolute() else f" (relative paths start at the working directory, {Path.cwd()})"
        raise DslrecError(f"sweep file {sweep_path}: {e}{where}") from None
    misplaced = [k for k in ("config", "out", "tables", "label") if k in data]
    if misplaced:  # sweep-file keys: in a run config file they would be lost or misread
        raise DslrecError(f"sweep file {sweep_path}: config file {path} sets {', '.join(misplaced)}, which a run "
                          "config file does not have; move it into the sweep file (or the config it names)")
    return data


def settings_hash(config: dict[str, Any]) -> str:
    """A run's identity: its settings but those that do not change what it trains (``SESSION_KEYS``,
    and the interval for methods that never read it: dense on a delta_t axis is one run)."""
    ignored = set(SESSION_KEYS) | (set() if config.get("method") in USE_DELTA_T else {"delta_t", "delta_t_epochs"})
    kept = {k: v for k, v in config.items() if k not in ignored}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:6]


# --- is a kept run the run asked for? ------------------------------------------------------------

def config_differences(wanted: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Settings in which a run recorded as ``recorded`` (summary.json's config) differs from the
    resolved ``wanted`` one, both flat. Not compared: ``SESSION_KEYS``; ``delta_t`` and
    ``delta_t_epochs`` for methods that never read them; ``delta_t_epochs`` when ``delta_t`` is set
    and ``delta_t`` when it is not (the run records the interval it resolved). A setting the run does
    not record (added to dslrec after it ran) counts as its default; a model option missing on one
    side as the backbone's default."""
    from dslrec import models

    recorded = flat_config(recorded)
    skip = set(SESSION_KEYS)
    if wanted.get("method") not in USE_DELTA_T:
        skip |= {"delta_t", "delta_t_epochs"}
    elif wanted.get("delta_t") is None:
        skip.add("delta_t")
    else:
        skip.add("delta_t_epochs")
    defaults = flat_config(RunConfig())
    try:
        defaults.update(models.model_kwargs(str(wanted.get("model"))))
    except Exception:  # an unknown backbone has no options to default
        pass
    out = []
    for key in sorted(set(wanted) | set(recorded)):
        if key in skip:
            continue
        a = wanted.get(key, defaults.get(key))
        b = recorded.get(key, defaults.get(key))
        if a != b and not (_is_num(a) and _is_num(b) and float(a) == float(b)):
            out.append(f"{key} ({b!r} recorded, {a!r} wanted)")
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_summary(folder: Path) -> dict | None:
    try:
        return json.loads((folder / rundir.SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def locate(sweep: Sweep) -> None:
    """Find each run's folder and state: done (a summary with its settings exists, in its own folder
    or any other under OUT/runs), resume (its folder has a checkpoint and no summary) or new."""
    root = sweep.out / RUNS
    kept = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            s = read_summary(folder) if folder.is_dir() else None
            if s is not None and "config" in s:
                kept[folder.name] = s["config"]
    for run in sweep.runs:
        own = root / run.name
        matches = [name for name, cfg in kept.items() if not config_differences(run.config, cfg)]
        if run.name in kept and run.name not in matches:
            diff = config_differences(run.config, kept[run.name])
            raise DslrecError(f"{own} holds a finished run with other settings ({'; '.join(diff[:3])}); "
                              f"move it away to train this run again")
        if matches:
            run.folder, run.state = (run.name if run.name in matches else matches[0]), "done"
        elif (own / rundir.CHECKPOINT).exists():
            saved = own / rundir.CONFIG
            diff = config_differences(run.config, read_config_file(saved)) if saved.is_file() else ["no config.yaml"]
            if diff:
                raise DslrecError(f"{own} holds an unfinished run with other settings ({'; '.join(diff[:3])}); "
                                  f"move it away to train this run again")
            run.folder, run.state = run.name, "resume"
        else:
            run.folder, run.state = run.name, "new"


def write_plan(sweep: Sweep) -> None:
    plan = {"source": str(sweep.path), "axes": [k for k, _ in sweep.axes], "fixed": sweep.fixed,
            "tables": [t.to_dict() for t in sweep.tables],
            "runs": [{"name": r.name, "labels": r.labels, "settings": r.settings, "folder": r.folder,
                      **({"also": r.also} if r.also else {})} for r in sweep.runs]}
    path = sweep.out / PLAN
    if path.is_file():  # a table the file no longer declares (renamed, dropped): its old file would mislead
        names = {t.name for t in sweep.tables}
        for old in json.loads(path.read_text()).get("tables", []):
            name = str(old.get("name", ""))
            if name and name not in names and Path(name).name == name:
                (sweep.out / f"{name}.md").unlink(missing_ok=True)
    rundir.write_json(path, plan)


# --- running ---------------------------------------------------------------------------------------

def train_one(run_dir: str, settings: dict[str, Any], resume: bool, threads: int | None) -> float:
    """One run of the sweep (in a worker process when jobs > 1); returns its training seconds."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from dslrec.training.run import train

    t0 = time.perf_counter()
    # a stopped sweep terminates its workers (SIGTERM): as Ctrl-C, so that a run without its first
    # checkpoint removes its folder instead of dying with it half written
    with sigterm_as_interrupt(), warnings_about(f"run {Path(run_dir).name}"):  # many runs, one terminal
        if resume:
            train(resume=run_dir, progress=False)
        else:
            train(dict(settings), out=run_dir, progress=False)
    return time.perf_counter() - t0


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    # tqdm's default lock holds a multiprocessing semaphore; a worker stopped with its sweep (terminate)
    # cannot release it, and Python's resource tracker then warns of a leaked semaphore at exit.
    # Bars are off in workers anyway (their stderr is not a terminal): a thread lock does.
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def run_sweep(path: str | Path, jobs: int = 1, say: Callable[[str], None] = print,
              trainer: Callable[..., float] = train_one) -> Sweep:
    """Train what is missing of the sweep in ``path`` and write its tables. ``jobs`` > 1 trains that
    many runs side by side, one thread each, in separate processes."""
    if jobs < 1:
        raise DslrecError(f"--jobs must be at least 1, got {jobs}")
    sweep = read_sweep(path)
    locate(sweep)
    sweep.out.mkdir(parents=True, exist_ok=True)
    write_plan(sweep)
    todo = [r for r in sweep.runs if r.state != "done"]
    say(f"sweep {sweep.path}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already done, "
        f"{sum(r.state == 'resume' for r in todo)} to resume, {sum(r.state == 'new' for r in todo)} to train "
        f"(into {sweep.out / RUNS})")
    failed: list[str] = []

    def finished(i: int, run: PlannedRun, seconds: float | None, error: BaseException | None) -> None:
        if error is not None:
            failed.append(f"{run.name}: {error}")
            say(f"[{i}/{len(todo)}] {run.name}: failed: {error}")
            return
        s = read_summary(sweep.out / RUNS / run.folder) or {}
        test = s.get("test", {})
        metric = next((k for k in test if k.startswith("recall@")), None)
        result = f"test {metric} {test[metric]:.4f}" if metric else "done"
        say(f"[{i}/{len(todo)}] {run.name}: {result} ({seconds:.0f}s)")

    args = [(str(sweep.out / RUNS / r.folder), r.settings, r.state == "resume") for r in todo]
    if jobs == 1 or len(todo) <= 1:
        for i, (run, a) in enumerate(zip(todo, args), 1):
            try:
                seconds = trainer(*a, threads=None)
            except DslrecError as e:
                finished(i, run, None, e)
                continue
            finished(i, run, seconds, None)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool, sigterm_as_interrupt():
            futures: dict = {}
            try:
                for run, a in zip(todo, args):
                    futures[pool.submit(trainer, *a, threads=1)] = run
                for i, f in enumerate(as_completed(futures), 1):
                    error = f.exception()
                    if error is not None and not isinstance(error, DslrecError):
                        raise error
                    finished(i, futures[f], None if error else f.result(), error)
            except BaseException:
                # the runs in progress stop too (a stopped sweep must not train on unseen); each keeps
                # its last checkpoint, and running the sweep again resumes it. The workers are taken
                # before shutdown, which forgets them.
                workers = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for worker in workers:
                    worker.terminate()
                raise
    write_tables(sweep.out)
    say(f"results: {sweep.out / 'results.md'} and results.csv, runs.csv")
    if failed:
        raise DslrecError(f"{len(failed)} of {len(todo)} runs failed (the table shows the others); first: {failed[0]}")
    return sweep


# --- the results table -----------------------------------------------------------------------------

@dataclass
class RunResult:
    name: str
    labels: dict[str, str]
    folder: str
    summary: dict
    also: list[dict[str, str]] = field(default_factory=list)  # PlannedRun.also


def read_plan(out: Path) -> dict:
    path = Path(out) / PLAN
    if not path.is_file():
        raise DslrecError(f"{out} is not a sweep folder (no {PLAN}); run `dslrec sweep --config FILE` first")
    return json.loads(path.read_text())


def collect(out: str | Path) -> list[RunResult]:
    """The finished runs of the sweep in ``out`` (runs not finished yet are left out)."""
    out = Path(out)
    results = []
    for r in read_plan(out)["runs"]:
        s = read_summary(out / RUNS / r["folder"])
        if s is not None:
            results.append(RunResult(r["name"], r["labels"], r["folder"], s, r.get("also", [])))
    return results


def metric_names(results: list[RunResult]) -> tuple[str, str]:
    """recall@K and ndcg@K at the first K every run reports, 20 when there."""
    ks = None
    for r in results:
        here = {int(k.split("@")[1]) for k in r.summary["test"] if k.startswith("recall@")}
        ks = here if ks is None else ks & here
    k = 20 if not ks or 20 in ks else min(ks)
    return f"recall@{k}", f"ndcg@{k}"


def run_row(r: RunResult, recall: str, ndcg: str) -> dict[str, Any]:
    """One run's figures: what the tables and figures show."""
    s = r.summary
    cfg, p = s["config"], s["params"]
    cost = s.get("cost", {})
    macs = cost.get("macs", {})
    train = macs.get("train_epoch", {})
    epochs = s["steps_run"] / s["steps_per_epoch"] if s.get("steps_per_epoch") else s["epochs_run"]
    run_macs = None
    if "sparse" in train:  # per-epoch cost interpolated between the final mask and dense by the mean budget
        final, total = p["active"], p["total"]
        frac = (p["mean_active"] - final) / (total - final) if total > final else 0.0
        run_macs = epochs * (train["sparse"] + (train["dense"] - train["sparse"]) * min(max(frac, 0.0), 1.0))
    return {
        "run": r.name, **r.labels, "dataset_name": s["dataset"]["name"], "model_name": s["model"],
        "method_name": s["method"], "density_value": float(cfg.get("density", 1.0)), "seed_value": cfg.get("seed"),
        "valid_" + recall: s["valid"].get(recall), recall: s["test"].get(recall), ndcg: s["test"].get(ndcg),
        "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"],
        "params_total": p["total"], "active_final": p["active"], "mean_active": p["mean_active"],
        "peak_active": p["peak_active"],
        "train_macs_epoch": train.get("sparse"), "train_macs_run_est": run_macs,
        "inference_macs": macs.get("inference", {}).get("sparse"),
        "model_bytes": cost.get("parameters", {}).get("compact_bytes_float32"),
        "train_s": s["time"]["train_s"], "epoch_s": s["time"]["epoch_s"], "folder": f"{RUNS}/{r.folder}",
    }


@dataclass
class Group:
    labels: dict[str, str]
    rows: list[dict]
    also: list[dict[str, str]] = field(default_factory=list)  # labels of the grid points it stands for too

    def covers(self, axis: str) -> list[str]:
        """The labels on ``axis`` of every grid point the group stands for, its own first."""
        out = [self.labels[axis]]
        out += [a[axis] for a in self.also if axis in a and a[axis] not in out]
        return out

    def shown(self, axis: str, every: set[str] | None = None) -> str:
        """The group's label on ``axis``; "all" when it stands for every value of it (``every``: the
        axis's values in the sweep; dense on a delta_t axis), else the values it stands for."""
        covered = self.covers(axis)
        if len(covered) == 1:
            return covered[0]
        return "all" if every is None or set(covered) >= every else ", ".join(covered)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.rows if r.get(key) is not None]

    def mean(self, key: str) -> float | None:
        v = self.values(key)
        return statistics.mean(v) if v else None

    def std(self, key: str) -> float:
        v = self.values(key)
        return statistics.stdev(v) if len(v) > 1 else 0.0

    @property
    def is_dense(self) -> bool:
        return self.rows[0]["method_name"] == "dense"


def groups_of(results: list[RunResult]) -> tuple[list[Group], tuple[str, str]]:
    recall, ndcg = metric_names(results)
    groups: dict[tuple, Group] = {}
    for r in results:
        key = tuple(v for k, v in r.labels.items() if k != SEED_AXIS)
        labels = {k: v for k, v in r.labels.items() if k != SEED_AXIS}
        group = groups.setdefault(key, Group(labels, []))
        group.rows.append(run_row(r, recall, ndcg))
        for also in r.also:
            also = {k: v for k, v in also.items() if k != SEED_AXIS}
            if also != labels and also not in group.also:
                group.also.append(also)
    return list(groups.values()), (recall, ndcg)


def context(labels: dict[str, str]) -> tuple:
    """What a run is compared within: its labels on every axis but method and density (the seed
    included when ``labels`` has one)."""
    return tuple((k, v) for k, v in labels.items() if k not in ("method", "density"))


def reference_of(group: Group, groups: list[Group]) -> Group | None:
    """The dense group with the same labels on every axis but method and density (its own, or those
    of a grid point it stands for)."""
    for g in groups:
        if g.is_dense and context(group.labels) in {context(a) for a in [g.labels, *g.also]} and (
                g.rows[0]["dataset_name"], g.rows[0]["model_name"]) == (
                group.rows[0]["dataset_name"], group.rows[0]["model_name"]):
            return g
    return None


def method_label(group: Group) -> str:
    return group.labels.get("method", group.rows[0]["method_name"])


def extra_axes(groups: list[Group]) -> list[str]:
    """Axes shown as their own column: all but those the fixed columns already show."""
    axes = list(groups[0].labels) if groups else []
    return [a for a in axes if a not in ("dataset", "model", "method", "density")]


def _pm(mean: float | None, std: float, n: int = 2) -> str:
    """mean ± std over seeds; the mean alone for one run (a std of 0 would read as "no variance")."""
    if mean is None:
        return "-"
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {std:.4f}"


def _count(v: float | None, unit: float = 1.0, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v / unit, fmt)


def axis_values(groups: list[Group], axis: str) -> set[str]:
    """Every label of ``axis`` among ``groups``, the grid points they stand for included."""
    return {v for g in groups for v in g.covers(axis)}


def table_rows(groups: list[Group], recall: str, ndcg: str) -> tuple[list[str], list[list[str]]]:
    extra = extra_axes(groups)
    every = {a: axis_values(groups, a) for a in extra}
    head = (["data", "backbone", "method", "density"] + extra +
            [f"test {recall}", f"test {ndcg}", "mean active (of total)", "peak active", "train GMACs (run, est.)",
             "inference GMACs", "model KB", "train s (mean)", "seeds"])
    rows = []
    for g in groups:
        r0 = g.rows[0]
        ref = None if g.is_dense else reference_of(g, groups)
        rel = ""
        if ref is not None and ref.mean(recall):
            rel = f" ({g.mean(recall) / ref.mean(recall):.1%} of dense)"
        mean_active = g.mean("mean_active")
        rows.append([r0["dataset_name"], r0["model_name"], method_label(g), f"{r0['density_value']:g}"]
                    + [g.shown(a, every[a]) for a in extra]
                    + [_pm(g.mean(recall), g.std(recall), len(g.values(recall))) + rel,
                       _pm(g.mean(ndcg), g.std(ndcg), len(g.values(ndcg))),
                       f"{mean_active:,.0f} ({mean_active / r0['params_total']:.0%})",
                       f"{max(g.values('peak_active')):,}",
                       _count(g.mean("train_macs_run_est"), 1e9, ".3g"), _count(g.mean("inference_macs"), 1e9, ".3g"),
                       _count(g.mean("model_bytes"), 1e3, ",.0f"), _seconds(g.mean("train_s")),
                       str(len(g.rows))])
    return head, rows


def _seconds(v: float | None) -> str:
    """Whole seconds, two digits below ten (a sub-second run is not "0")."""
    return "-" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def _duration(seconds: float) -> str:
    """Minutes, or seconds below one (a tiny sweep's total is not "0 min")."""
    return f"{seconds / 60:.0f} min" if seconds >= 59.5 else f"{_seconds(seconds)} s"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_tables(out: str | Path) -> str:
    """results.md, results.csv and runs.csv of the finished runs; returns the Markdown table."""
    out = Path(out)
    results = collect(out)
    if not results:
        rundir.write_text(out / "results.md", "No run of this sweep has finished yet.\n")
        return ""
    groups, (recall, ndcg) = groups_of(results)
    head, rows = table_rows(groups, recall, ndcg)
    table = markdown_table(head, rows)
    every = {a: axis_values(groups, a) for a in (list(groups[0].labels) if groups else [])}
    folders = "\n".join(f"- {' / '.join(g.shown(a, every[a]) for a in g.labels)}: "
                        + ", ".join(f"`{r['folder']}`" for r in g.rows) for g in groups)
    total_s = sum(r["train_s"] for g in groups for r in g.rows)
    text = (f"{table}\n\n{len(results)} runs (test metrics at the best validation epoch, mean ± standard deviation "
            f"over seeds, the mean alone for one run); their training times add up to {_duration(total_s)}.\n\n")
    own = own_tables(out, results)
    for spec, table_text in own:
        rundir.write_text(out / f"{spec.name}.md", table_text)
        text += f"## {spec.title or spec.name}\n\n{table_text}\n"
    # under a heading of its own when the file's tables came before, or it reads as the last table's
    text += ("## Run folders\n\nUnder this sweep folder:" if own else "Run folders (under this sweep folder):")
    text += f"\n\n{folders}\n"
    rundir.write_text(out / "results.md", text)
    numeric = [recall, ndcg, "mean_active", "peak_active", "train_macs_run_est", "inference_macs", "model_bytes",
               "train_s"]
    group_records = []
    for g in groups:
        r0 = g.rows[0]
        rec: dict[str, Any] = {"dataset": r0["dataset_name"], "model": r0["model_name"], "method": method_label(g),
                               "density": r0["density_value"], **{a: g.shown(a, every[a]) for a in extra_axes(groups)}}
        for key in numeric:
            rec[f"{key}_mean"] = g.mean(key)
            rec[f"{key}_std"] = g.std(key)
        rec["params_total"] = r0["params_total"]
        rec["seeds"] = len(g.rows)
        rec["runs"] = ";".join(r["folder"] for r in g.rows)
        group_records.append(rec)
    rundir.write_text(out / "results.csv", _csv(group_records))
    rundir.write_text(out / "runs.csv", _csv([r for g in groups for r in g.rows]))
    return table


def own_tables(out: Path, results: list[RunResult]) -> list[tuple[Any, str]]:
    """The sweep file's own tables (``tables:``, see ``pivot``) of the sweep in ``out``: (its
    ``TableSpec``, the Markdown table and its caption) for each."""
    from dslrec.experiments.pivot import TableSpec, pivot

    plan = read_plan(out)
    axis_order: dict[str, list[str]] = {}
    for r in plan["runs"]:
        for labels in [r["labels"], *r.get("also", [])]:
            for axis, label in labels.items():
                if label not in axis_order.setdefault(axis, []):
                    axis_order[axis].append(label)
    made = []
    for raw in plan.get("tables", []):
        spec = TableSpec(**raw)
        head, rows, caption = pivot(spec, results, axis_order)
        made.append((spec, f"{markdown_table(head, rows)}\n\n{caption}\n"))
    return made


def _csv(records: list[dict]) -> str:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()
