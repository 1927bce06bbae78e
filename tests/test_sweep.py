"""dslrec sweep and dslrec report: a tiny grid interrupted and resumed, its table, its figures, bad input."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dslrec.errors import DslrecError
from dslrec.experiments import report, sweep as sw
from test_cli_input import one_line_error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY = """\
out: {out}
dataset: synthetic
model: mf
dim: 8
epochs: 2
batch_size: 4096
eval_users: 300
method: [dense, dsl, static]
density: [0.5, 0.2]
seed: [0, 1]
tables:
  - name: by-density
    title: Validation recall as % of dense
    rows: [method]
    columns: [density]
    values: [valid recall@20]
    relative_to_dense: true
    summary: [mean]
"""


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, (path, pixels.shape)
    assert pixels.std() > 0.01, f"{path} is blank"


def snapshot(runs: Path) -> dict[str, tuple[int, str]]:
    """Each finished run's summary mtime and its log (what a rerun would rewrite)."""
    return {p.parent.name: (p.stat().st_mtime_ns, (p.parent / "log.jsonl").read_text())
            for p in runs.glob("*/summary.json")}


def test_tiny_sweep_interrupted_resumed_table_and_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(out="sweep"))
    out = tmp_path / "sweep"
    calls: list[tuple[str, bool]] = []

    def interrupted(run_dir, settings, resume, threads):
        """Trains runs 1-4; the fifth is killed after its last checkpoint (no summary yet)."""
        calls.append((Path(run_dir).name, resume))
        seconds = sw.train_one(run_dir, settings, resume, threads)
        if len(calls) == 5:
            (Path(run_dir) / "summary.json").unlink()
            raise KeyboardInterrupt
        return seconds

    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(path, trainer=interrupted, say=lambda _: None)
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) == 10  # dense once per seed (its density is 1), dsl and static at 2 x 2
    assert {r["labels"]["density"] for r in plan["runs"] if r["labels"]["method"] == "dense"} == {"density1.0"}
    before = snapshot(out / "runs")
    assert len(before) == 4 and not (out / "results.md").exists()
    killed = calls[4][0]
    killed_log = (out / "runs" / killed / "log.jsonl").read_text()

    said: list[str] = []
    sw.run_sweep(path, jobs=2, say=said.append)  # the rest, two side by side in worker processes
    assert "4 already done, 1 to resume, 5 to train" in said[0]
    after = snapshot(out / "runs")
    assert len(after) == 10
    assert {k: after[k] for k in before} == before  # nothing finished was trained again
    # the killed run continued from its checkpoint: its first epochs are the ones it had logged
    assert (out / "runs" / killed / "log.jsonl").read_text().startswith(killed_log)

    # a third call trains nothing
    again: list[str] = []
    sw.run_sweep(path, say=again.append)
    assert "10 already done, 0 to resume, 0 to train" in again[0] and snapshot(out / "runs") == after

    # the table: one row per method and density, mean and std over the two seeds, each run's folder
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["method"], float(r["density"])) for r in rows) == [
        ("dense", 1.0), ("dsl", 0.2), ("dsl", 0.5), ("static", 0.2), ("static", 0.5)]
    for row in rows:
        folders = row["runs"].split(";")
        assert row["seeds"] == "2" and len(folders) == 2
        summaries = [json.loads((out / f / "summary.json").read_text()) for f in folders]
        recalls = [s["test"]["recall@20"] for s in summaries]
        assert float(row["recall@20_mean"]) == pytest.approx(statistics.mean(recalls))
        assert float(row["recall@20_std"]) == pytest.approx(statistics.stdev(recalls))
        assert {s["config"]["seed"] for s in summaries} == {0, 1}
        assert {s["method"] for s in summaries} == {row["method"]}
        assert float(row["peak_active_mean"]) == max(s["params"]["peak_active"] for s in summaries)
        assert float(row["model_bytes_mean"]) == statistics.mean(
            s["cost"]["parameters"]["compact_bytes_float32"] for s in summaries)
    table = (out / "results.md").read_text()
    assert table.count("% of dense)") == 4 and "| synthetic | mf | dsl | 0.2 |" in table
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 10

    # the file's own table: each run's validation recall over its dense reference (same seed), averaged
    own = (out / "by-density.md").read_text()
    assert "## Validation recall as % of dense" in table and own.split("\n\n")[0] in table
    runs = [(r["labels"], json.loads((out / "runs" / r["folder"] / "summary.json").read_text())["valid"]["recall@20"])
            for r in plan["runs"]]
    dense = {labels["seed"]: v for labels, v in runs if labels["method"] == "dense"}

    def rel(method: str, density: str) -> float:
        return statistics.mean(v / dense[labels["seed"]] for labels, v in runs
                               if labels["method"] == method and labels["density"] == density)

    lines = {line.split(" | ")[0].strip("| "): line for line in own.splitlines()[2:] if line.startswith("|")}
    assert own.splitlines()[0] == "| method | density1.0 | density0.5 | density0.2 | mean |"
    assert lines["dense"] == "| dense | 100.0% | - | - | 100.0% |"  # dense ran once per seed, at density 1
    for method in ("dsl", "static"):
        cells = [rel(method, d) for d in ("density0.5", "density0.2")]
        assert lines[method] == f"| {method} | - | {cells[0]:.1%} | {cells[1]:.1%} | {statistics.mean(cells):.1%} |"

    # the sweep's report and one sparse run's report: every figure a readable PNG
    report.write_report(out)
    text = (out / "report.md").read_text()
    assert own.split("\n\n")[0] in text
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == 2
    for f in figures:
        assert f"figures/{f.name}" in text
        assert_png(f)
    dsl_run = next(r["folder"] for r in plan["runs"] if r["labels"]["method"] == "dsl")
    report.write_report(out / "runs" / dsl_run, tmp_path / "run_report")
    run_figures = sorted(p.name for p in (tmp_path / "run_report" / "figures").glob("*.png"))
    assert run_figures == ["budget.png", "exploration.png", "training.png"]
    for name in run_figures:
        assert_png(tmp_path / "run_report" / "figures" / name)
    run_text = (tmp_path / "run_report" / "report.md").read_text()
    assert "before the first step" in run_text  # the spread recorded at the start of training


def test_bundles_override_axes_and_duplicates_train_once(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("out: o\nmodel: mf\nmethod: [dense, dsl, {label: gmp, method: gmp, density: 0.2}]\n"
                    "density: [0.5, 0.2]\nks: [[10, 20]]\n")
    runs = sw.read_sweep(path).runs
    assert [(r.labels["method"], r.config["density"]) for r in runs] == [
        ("dense", 1.0), ("dsl", 0.5), ("dsl", 0.2), ("gmp", 0.2)]
    assert all(r.config["ks"] == [10, 20] for r in runs)  # a list-valued setting as a one-value axis
    assert len({r.name for r in runs}) == 4


def test_kept_runs_are_recognised_by_their_settings():
    from dslrec.settings import resolve_settings

    wanted = sw.flat_config(resolve_settings(dict(model="mf", method="dsl", density=0.5, delta_t=100, l2=1e-3)))
    recorded = {k: v for k, v in wanted.items() if k not in ("storage", "max_steps", "eval_users", "l2")}
    recorded.update(delta_t_epochs=2.0, eval_batch_size=1024, device="cpu")  # unused / session settings
    # settings added since the run count as their defaults, as does a model option left at its default
    assert sw.config_differences(wanted, recorded) == ["l2 (0.0001 recorded, 0.001 wanted)"]
    recorded["l2"] = 1e-3
    assert sw.config_differences(wanted, recorded) == []
    assert sw.config_differences(wanted, {**recorded, "storage": "compact"}) == [
        "storage ('compact' recorded, 'masked' wanted)"]
    assert sw.config_differences(wanted, {**recorded, "delta_t": 50}) == ["delta_t (50 recorded, 100 wanted)"]
    dense = {**wanted, "method": "dense", "density": 1.0}
    assert sw.config_differences(dense, {**dense, "delta_t": 50}) == []  # dense never reads delta_t


def test_frontier_keeps_the_points_nothing_beats():
    points = [(1.0, 0.2), (2.0, 0.1), (2.0, 0.3), (3.0, 0.25), (4.0, 0.4)]
    assert report.frontier(points) == [(1.0, 0.2), (2.0, 0.3), (4.0, 0.4)]


@pytest.mark.parametrize("text, names", [
    ("out: o\nmodel: [mf\n", "is not valid YAML"),
    ("out: o\nmodel: mf\nbogus: [1, 2]\n", "unknown setting 'bogus'"),
    ("out: o\nseed: []\n", "axis 'seed' is an empty list"),
    ("model: mf\n", "needs `out: FOLDER`"),
    ("out: o\nmethod: [dsl, {scope: per_row}]\n", "needs a `label`"),
    ("out: o\nmethod: [dsl]\ndensity: [0.5, 2]\n", "density must be in (0, 1]"),
    ("- a\n- b\n", "must hold a mapping"),
    ("out: o\nseed: [0]\ntables: {name: t}\n", "give a list of tables"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [model], values: [valid recall@20]}]\n",
     "rows names 'model', which is not an axis"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [valid recal@20]}]\n", "unknown value"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [best_epoch], relative_to_dense: true}]\n",
     "relative_to_dense needs metric values"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [test ndcg@10], sort: mean}]\n",
     "sort names a summary column"),
    ("out: o\nseed: [0]\ntables: [{name: results, rows: [seed], values: [test ndcg@10]}]\n", "needs a `name`"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], value: [test ndcg@10]}]\n", "unknown key(s) value"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [best_epoch], 1: 2}]\n", "unknown key(s) 1;"),
    ("out: o\nrun: [{label: a, config: nope.yaml}]\n", "config file nope.yaml does not exist"),
    ("out: o\nrun: [{label: a, config: nope.yaml}]\n", "relative paths start at the working directory"),
    ("out: o\nmethod: [dense, dsl, {method: dsl, scope: per_tensor}]\n", "two different runs are both labelled"),
    ("out: o\nmodel: mf\ndataset: [ml-100k, ml100k]\n", "no dataset 'ml100k'"),
    ("out: o\nrun: [{label: a, config: 3}]\n", "config names a run config file"),
    ("out: o\nconfig: [a.yaml, b.yaml]\n", "a list of config files goes in bundles"),
    ("out: o\nmethod: [dense, {label: n, method: dsl, model: neumf}]\ntables: [{name: t, rows: [method], "
     "values: [test recall@20], relative_to_dense: true}]\n", "has no dense run of neumf on synthetic"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [test sampled_recall@20]}]\n", "unknown value"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [popularity test sampled_hitrate@20]}]\n",
     "has no sampled metrics"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [test sampled_hitrate@20]}]\n",
     "no run uses the sampled protocol"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [test ndcg@10]}]\n", "no run evaluates @10"),
    ("out: o\nmethod: [dsl]\nseed: [0]\ntables: [{name: t, rows: [seed], values: [valid recall@20], "
     "relative_to_dense: true}]\n", "the sweep has no dense run"),
    ("out: o\nseed: [0]\ntables: [{name: t, rows: [seed], values: [epoch_s], summary: [worst]}]\n",
     "worst and best summarise a metric"),
])
def test_bad_sweep_files_are_one_line_errors(capsys, tmp_path, monkeypatch, text, names):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    err = one_line_error(capsys, ["sweep", "--config", str(tmp_path / "s.yaml")])
    assert names in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_report_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    err = one_line_error(capsys, ["report", str(tmp_path)])
    assert "neither a run folder" in err
    err = one_line_error(capsys, ["report", str(tmp_path / "missing")])
    assert "is not a folder" in err
    with pytest.raises(DslrecError, match="not a sweep folder"):
        sw.read_plan(tmp_path)


def test_tensorboard_is_optional_and_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--model", "mf", "--epochs", "1", "--out", str(out), "--tensorboard"])
    assert "pip install 'dslrec[tensorboard]'" in err and not out.exists()


def test_tensorboard_logs_the_records_scalars(tmp_path, monkeypatch):
    import sys
    import types

    import dslrec

    written: dict[str, list[tuple[int, float]]] = {}

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, global_step):
            written.setdefault(tag, []).append((global_step, value))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    dslrec.train(dict(model="mf", dataset="synthetic", dim=8, epochs=2, batch_size=4096, method="dsl", density=0.5,
                      eval_users=300, delta_t=2), out=tmp_path / "run", progress=False, tensorboard=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert written["train/loss"] == [(r["epoch"], r["loss"]) for r in records]
    assert written["valid/recall@20"] == [(r["epoch"], r["valid"]["recall@20"]) for r in records]
    assert [v for _, v in written["sparse/exploration_rate"]] == [r["sparse"]["exploration_rate"] for r in records]
    assert [v for _, v in written["sparse/zeta"]] == [r["sparse"]["zeta_now"] for r in records]
    moved = written["sparse/moved_per_update"]
    assert moved and all(v > 0 for _, v in moved)
    spread = records[-1]["sparse"]["spread"]
    assert written["budget/active_per_user_group01"][-1][1] == pytest.approx(
        spread["user_groups"][0] / spread["user_group_sizes"][0])


def test_a_runs_warnings_name_the_run(tmp_path):
    """Runs of a sweep share the terminal: each warning says which run it comes from."""
    from dslrec.errors import DslrecWarning

    folder = tmp_path / "runs" / "synthetic__mf__dense__seed0"
    with pytest.warns(DslrecWarning) as caught:  # 1 epoch at a tiny lr does not beat popularity
        sw.train_one(str(folder), dict(dataset="synthetic", model="mf", dim=8, epochs=1, lr=1e-7,
                                       eval_users=200), False, None)
    messages = [str(w.message) for w in caught if issubclass(w.category, DslrecWarning)]
    assert messages and all(m.startswith("run synthetic__mf__dense__seed0: ") for m in messages), messages


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc (Linux)")
def test_sigterm_stops_a_parallel_sweep_and_its_runs(tmp_path):
    """``kill`` (SIGTERM) stops a --jobs sweep as Ctrl-C does: the runs in progress stop too, no worker
    trains on unseen, nothing is reported leaked, and running the sweep again resumes them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "s.yaml").write_text("out: sweep\ndataset: synthetic\nmodel: mf\nepochs: 400\n"
                                     "method: dense\nseed: [0, 1]\n")

    def workers(parent: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == parent and b"spawn_main" in cmdline:
                found.append(int(stat.parent.name))
        return found

    env = dict(os.environ, PYTHONPATH=str(Path(sw.__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "dslrec.cli", "sweep", "--config", "s.yaml", "--jobs", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(workers(proc.pid)) == 2
                                               and len(list((tmp_path / "sweep/runs").glob("*/checkpoint.pt"))) == 2):
        time.sleep(0.2)
    running = workers(proc.pid)
    assert len(running) == 2, "the sweep's two workers did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = proc.stderr.read().decode()  # to its end: the resource tracker, if it warns, writes after the exit
    assert "dslrec: terminated" in err
    assert "leaked" not in err  # a worker stopped mid-run held no semaphore
    time.sleep(0.5)
    alive = [pid for pid in running if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not alive, f"workers {alive} still train after the sweep stopped"
    assert not list((tmp_path / "sweep/runs").glob("*/summary.json"))  # stopped mid-run, resumable


def fake_result(labels: dict, method: str, valid: float | None, also: list | None = None) -> sw.RunResult:
    summary = {"method": method, "valid": {} if valid is None else {"recall@20": valid}, "test": {"recall@20": 0.1},
               "popularity": {"test": {"recall@20": 0.05}}, "best_epoch": 3, "epochs_run": 7,
               "time": {"train_s": 2.5}}
    return sw.RunResult("-".join(labels.values()), labels, "f", summary, also or [])


def test_pivot_tables_relative_to_the_dense_run_of_the_same_seed():
    from dslrec.experiments.pivot import TableSpec, pivot

    def labels(dt, method, seed):
        return {"delta_t": f"delta_t{dt}", "method": method, "seed": f"seed{seed}"}

    results = [  # dense ran once per seed (it never reads delta_t) and stands for both intervals
        fake_result(labels(10, "dense", 0), "dense", 0.4, [labels(20, "dense", 0)]),
        fake_result(labels(10, "dense", 1), "dense", 0.5, [labels(20, "dense", 1)]),
        fake_result(labels(10, "dsl", 0), "dsl", 0.2), fake_result(labels(10, "dsl", 1), "dsl", 0.4),
        fake_result(labels(20, "dsl", 0), "dsl", 0.3),  # its seed-1 twin has not finished
        fake_result(labels(10, "row", 0), "dsl", 0.4), fake_result(labels(10, "row", 1), "dsl", 0.45),
    ]
    order = {"delta_t": ["delta_t10", "delta_t20"], "method": ["dense", "dsl", "row"], "seed": ["seed0", "seed1"]}
    spec = TableSpec("t", rows=["delta_t"], columns=["method"], values=["valid recall@20"], relative_to_dense=True,
                     summary=["mean", "worst"], sort="worst")
    head, rows, caption = pivot(spec, results, order)
    # dense is the reference, not a column; dsl at 10: 0.2/0.4 and 0.4/0.5; row: 0.4/0.4 and 0.45/0.5
    assert head == ["delta_t", "dsl", "row", "mean", "worst"]  # one value: the title says what it is
    assert rows == [["delta_t20", "75.0%", "-", "75.0%", "75.0%"], ["delta_t10", "65.0%", "95.0%", "80.0%", "65.0%"]]
    assert "mean over the runs of the cell (1-2 each)" in caption and "rows by worst" in caption
    assert "counts at each" not in caption  # the dense stand-ins are references here, not cells

    # dense shows as a row of 100% when method is a row axis; absolute values and counts as they are
    head, rows, caption = pivot(TableSpec("u", rows=["method"], values=["valid recall@20"], relative_to_dense=True),
                                results, order)
    assert rows == [["dense", "100.0%"], ["dsl", f"{(0.5 + 0.8 + 0.75) / 3:.1%}"], ["row", "95.0%"]]
    assert "(2-4 each; a run that stands for several grid points counts at each)" in caption
    head, rows, _ = pivot(TableSpec("v", rows=["method"], values=["popularity test recall@20", "best_epoch",
                                                                    "train_s"]), results, order)
    assert head == ["method", "popularity test recall@20", "best_epoch", "train_s"]
    assert rows[0] == ["dense", "0.0500", "3", "2.5"]

    # a run is only ever compared with dense of its own data and backbone
    other = fake_result(labels(10, "row", 0), "dsl", 0.9)
    for r in results + [other]:
        r.summary.update(dataset={"name": "d"}, model="lightgcn" if r is other else "mf")
    _, rows, _ = pivot(TableSpec("w", rows=["method"], values=["valid recall@20"], relative_to_dense=True),
                       results + [other], order)
    assert rows[-1] == ["row", "95.0%"]  # not (0.9 / 0.4 + ...): the lightgcn run has no dense reference
    for r in results:
        del r.summary["dataset"], r.summary["model"]

    # a run whose dense reference has not finished is left out, and the caption says so
    _, rows, caption = pivot(spec, results[1:], order)
    assert rows == [["delta_t10", "80.0%", "90.0%", "85.0%", "80.0%"]]
    assert "3 value(s) left out: their dense reference has not finished" in caption
    # ... and one whose dense reference has no usable value (0 or NaN) too, for its own reason
    zero = fake_result(labels(10, "dense", 0), "dense", 0.0, [labels(20, "dense", 0)])
    _, rows, caption = pivot(spec, [zero] + results[1:], order)
    assert rows == [["delta_t10", "80.0%", "90.0%", "85.0%", "80.0%"]]
    assert "3 value(s) left out: their dense reference's value is 0 or not a number" in caption
    _, rows, caption = pivot(spec, results[2:], order)
    assert rows == [] and caption.startswith("No finished run has these values") and ".." not in caption


def test_config_files_as_bundles_are_the_base_the_sweep_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text("model: mf\nepochs: 3\nlr: 0.01\nseed: 5\n")
    (tmp_path / "s.yaml").write_text("out: o\nlr: 0.02\nrun:\n  - {label: as-is, config: small.yaml}\n"
                                     "  - {label: longer, config: small.yaml, epochs: 6}\n")
    runs = sw.read_sweep(tmp_path / "s.yaml").runs
    got = {r.labels["run"]: (r.config["model"], r.config["epochs"], r.config["lr"], r.config["seed"]) for r in runs}
    # the file's settings, the sweep's fixed lr over the file's, the bundle's epochs over both
    assert got == {"as-is": ("mf", 3, 0.02, 5), "longer": ("mf", 6, 0.02, 5)}
    # a fixed config file is the base too, under a bundle's file and under a plain axis
    (tmp_path / "base.yaml").write_text("epochs: 9\ndim: 16\n")
    (tmp_path / "s.yaml").write_text("out: o\nconfig: base.yaml\nepochs: [4]\nrun: [{label: a, config: small.yaml}]\n")
    (run,) = sw.read_sweep(tmp_path / "s.yaml").runs
    assert (run.config["epochs"], run.config["dim"], run.config["lr"]) == (4, 16, 0.01)


@pytest.mark.parametrize("config, names", [
    ("model: mf\nconfig: other.yaml\n", "sets config, which a run config file does not have"),
    ("model: mf\nout: elsewhere\n", "sets out, which a run config file does not have"),
    ("model: mf\n1: 2\n", "1 is not a setting name"),
    ("model: mf\nmodel_options: 3\n", "model_options must be a mapping"),
])
def test_bad_config_files_named_by_a_sweep_are_one_line_errors(capsys, tmp_path, monkeypatch, config, names):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(config)
    (tmp_path / "s.yaml").write_text("out: o\nrun: [{label: a, config: c.yaml}]\n")
    err = one_line_error(capsys, ["sweep", "--config", str(tmp_path / "s.yaml")])
    assert names in err and "c.yaml" in err


def test_a_worker_terminated_before_its_first_checkpoint_removes_its_run_folder(tmp_path):
    """A stopped sweep terminates its workers (SIGTERM). Without a handler the worker died at once
    and left a run folder with its settings and data but no checkpoint."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from dslrec import rundir
        from dslrec.experiments import sweep
        from dslrec.training import run

        def stopped_early(run_dir, cfg, *args, **kwargs):  # the data and settings written, then SIGTERM
            rundir.write_config(run_dir, cfg.to_dict())
            os.kill(os.getpid(), signal.SIGTERM)

        run._train_in = stopped_early
        try:
            sweep.train_one({str(tmp_path / "run")!r}, {{"model": "mf", "epochs": 1}}, False, threads=1)
        except KeyboardInterrupt:
            print("interrupted")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0 and "interrupted" in done.stdout, done.stderr
    assert not (tmp_path / "run").exists()


def test_a_table_the_file_no_longer_declares_loses_its_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = "  - {name: %s, rows: [seed], values: [valid recall@20]}\n"
    path = tmp_path / "s.yaml"
    path.write_text("out: o\nmodel: mf\nseed: [0]\ntables:\n" + table % "old" + table % "kept")
    sweep = sw.read_sweep(path)
    sw.write_plan(sweep)
    for name in ("old", "kept", "notes"):
        (sweep.out / f"{name}.md").write_text("a table")
    path.write_text("out: o\nmodel: mf\nseed: [0]\ntables:\n" + table % "kept" + table % "new")
    sw.write_plan(sw.read_sweep(path))
    assert sorted(p.name for p in sweep.out.glob("*.md")) == ["kept.md", "notes.md"]


def test_dense_on_an_interval_axis_trains_once_and_is_every_intervals_reference(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("out: o\nmodel: mf\ndensity: 0.5\ndelta_t: [10, 20]\nmethod: [dense, dsl, static]\nseed: [0, 1]\n")
    runs = sw.read_sweep(path).runs
    assert [(r.labels["method"], r.labels["delta_t"]) for r in runs if r.labels["seed"] == "seed0"] == [
        ("dense", "delta_t10"), ("dsl", "delta_t10"), ("static", "delta_t10"), ("dsl", "delta_t20")]
    dense = next(r for r in runs if r.labels["method"] == "dense" and r.labels["seed"] == "seed0")
    assert dense.also == [{"delta_t": "delta_t20", "method": "dense", "seed": "seed0"}]
    assert dense.name.startswith("delta_t-all__dense__seed0__")  # its folder is not named after one interval
    assert next(r for r in runs if r.labels["method"] == "dsl").name.startswith("delta_t10__dsl__seed0__")
    # in the results table, the dense group stands for both intervals and is each one's reference
    results = [fake_result(r.labels, r.labels["method"], 0.3, r.also) for r in runs]
    for r in results:
        r.summary.update(config={"density": 0.5, "seed": 0}, dataset={"name": "d"}, model="mf", steps_run=1,
                         params={"total": 10, "active": 5, "mean_active": 5, "peak_active": 5})
        r.summary["time"]["epoch_s"] = 1.0
    groups, _ = sw.groups_of(results)
    by_key = {tuple(g.labels.values()): g for g in groups}
    dense_group = by_key[("delta_t10", "dense")]
    assert dense_group.shown("delta_t") == "all" and by_key[("delta_t20", "dsl")].shown("delta_t") == "delta_t20"
    # standing for some of an axis's values is not "all"
    assert dense_group.shown("delta_t", {"delta_t10", "delta_t20", "delta_t40"}) == "delta_t10, delta_t20"
    for key in (("delta_t10", "dsl"), ("delta_t20", "dsl"), ("delta_t10", "static")):
        assert sw.reference_of(by_key[key], groups) is dense_group
    head, rows = sw.table_rows(groups, "recall@20", "ndcg@20")
    # static never reads delta_t either: one run per seed too
    assert [(row[2], row[4]) for row in rows] == [("dense", "all"), ("dsl", "delta_t10"), ("static", "all"),
                                                 ("dsl", "delta_t20")]


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_checked_in_sweep_files_plan_and_their_tables_have_a_place_in_the_readme(path, monkeypatch):
    """Every sweep file plans (its settings resolve), and every table it declares, or its main table when
    the README shows that, has a marked block in the README that scripts/readme_results.py fills."""
    import importlib.util

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "scripts" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert path.stem in module.SWEEPS
    sweep = sw.read_sweep(path.relative_to(REPO))
    assert sweep.runs and sweep.out.is_relative_to(REPO / "benchmarks" / "results")
    readme = (REPO / "README.md").read_text()
    markers = [t.name for t in sweep.tables] + ([module.MAIN_TABLES[path.stem]] if path.stem in module.MAIN_TABLES else [])
    assert markers, f"{path.name} feeds no README table"
    for marker in markers:
        assert f"<!-- {marker}:start -->" in readme and f"<!-- {marker}:end -->" in readme, marker


def fake_sweep(folder: Path, runs: list[tuple[dict, str, float, float]]) -> None:
    """A sweep folder as `dslrec sweep` leaves it: plan.json and one summary.json per run
    (labels, method, density, test recall[, the labels of the grid points it stands for too])."""
    plan = {"source": "fake.yaml", "axes": list(runs[0][0]), "fixed": {}, "tables": [], "runs": []}
    for i, (labels, method, density, recall, *also) in enumerate(runs):
        name = f"run{i}"
        plan["runs"].append({"name": name, "labels": labels, "settings": {}, "folder": name,
                             "also": also[0] if also else []})
        total = 1000
        summary = {"method": method, "model": "mf", "dataset": {"name": "d"}, "config": {"density": density, "seed": 0},
                   "valid": {"recall@20": recall}, "test": {"recall@20": recall, "ndcg@20": recall / 2},
                   "best_epoch": 3, "epochs_run": 4, "time": {"train_s": 1.0, "epoch_s": 0.2},
                   "params": {"total": total, "active": int(total * density), "mean_active": total * density,
                              "peak_active": int(total * density)},
                   "cost": {"macs": {"train_epoch": {"sparse": 1e6 * density, "dense": 1e6}},
                            "parameters": {"compact_bytes_float32": 4000 * density}}}
        (folder / "runs" / name).mkdir(parents=True)
        (folder / "runs" / name / "summary.json").write_text(json.dumps(summary))
    (folder / "plan.json").write_text(json.dumps(plan))


def test_report_figures_follow_what_the_sweep_varies(tmp_path):
    """x is a numeric axis (delta_t) when the sweep has one, the density when it varies, and a sweep at
    one density gets a bar per method; a context with dense alone gets no figure."""
    runs = [({"delta_t": f"delta_t{dt}", "method": m, "seed": "seed0"}, m if m == "dense" else "dsl",
             1.0 if m == "dense" else 0.5, 0.3 + 0.001 * dt) for dt in (10, 20, 40) for m in ("dense", "dsl", "row")]
    fake_sweep(tmp_path / "interval", runs)
    report.write_report(tmp_path / "interval")
    figures = sorted(p.name for p in (tmp_path / "interval" / "figures").glob("*.png"))
    assert figures == ["accuracy-vs-delta-t_d_mf.png", "cost-frontier_d_mf.png"]
    for name in figures:
        assert_png(tmp_path / "interval" / "figures" / name)
    assert "log scale" in (tmp_path / "interval" / "report.md").read_text()

    # methods that never read the axis ran once and stand for every value of it: dense as the band,
    # static as a flat line; an axis that holds 0 is drawn linear
    def point(z, m):
        return {"zeta0": f"zeta0{z}", "method": m, "seed": "seed0"}

    runs = [(point(0, "dense"), "dense", 1.0, 0.3, [point(0.5, "dense"), point(1, "dense")]),
            (point(0, "static"), "static", 0.5, 0.1, [point(0.5, "static"), point(1, "static")])]
    runs += [(point(z, "dsl"), "dsl", 0.5, 0.25 + 0.01 * z) for z in (0, 0.5, 1)]
    fake_sweep(tmp_path / "zeta", runs)
    text = report.write_report(tmp_path / "zeta").read_text()
    assert "figures/accuracy-vs-zeta0_d_mf.png" in text and "log scale" not in text.split("cost-frontier")[0]
    assert "a method that never reads zeta0 ran once and is a flat dash-dotted line across the values" in text
    assert text.count("## mf on d") == 1  # the stand-ins are in the one context, not a context of their own
    groups, _ = sw.groups_of(sw.collect(tmp_path / "zeta"))
    assert not report._log_scale(groups, "zeta0") and sorted(set(report._x_values(groups, "zeta0"))) == [0.0, 0.5, 1.0]

    runs = [({"model": "mf", "method": m, "seed": "seed0"}, "dense" if m == "dense" else "dsl",
             1.0 if m == "dense" else 0.5, r) for m, r in (("dense", 0.3), ("a", 0.25), ("b", 0.28), ("c", 0.2))]
    fake_sweep(tmp_path / "one", runs)
    text = report.write_report(tmp_path / "one").read_text()
    assert "figures/accuracy-by-method_d_mf.png" in text and "figures/cost-frontier_d_mf.png" in text
    assert_png(tmp_path / "one" / "figures" / "accuracy-by-method_d_mf.png")

    fake_sweep(tmp_path / "dense", [({"model": "mf", "seed": "seed0"}, "dense", 1.0, 0.3)])
    report.write_report(tmp_path / "dense")
    assert not (tmp_path / "dense" / "figures").exists()
    fake_sweep(tmp_path / "single", [({"model": "mf", "seed": "seed0"}, "dsl", 0.5, 0.3)])
    report.write_report(tmp_path / "single")  # one sparse run, nothing to compare it with
    assert not (tmp_path / "single" / "figures").exists()
