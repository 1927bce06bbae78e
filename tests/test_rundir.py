"""Run directories: self-contained export, safe resume, no debris from failed runs, the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import dslrec
from dslrec.cli import main
from dslrec.data.synthetic import synthetic_dataset
from dslrec.errors import DslrecError
from dslrec.export import Recommender, export
from dslrec import rundir

QUICK = dict(model="mf", dim=16, batch_size=256, lr=5e-3)  # a few steps per epoch on the tiny CSV


def write_csv(path: Path, seed: int = 0, shuffle: bool = False) -> Path:
    """A tiny interaction file with string ids (60 users x 50 items, 15 items each)."""
    rng = np.random.default_rng(seed)
    items = np.argsort(rng.random((60, 50)), axis=1)[:, :15]
    users = np.repeat(np.arange(60), 15)
    rows = np.stack([np.char.add("u", users.astype(str)), np.char.add("i", items.ravel().astype(str))], 1)
    if shuffle:
        rows = rows[np.random.default_rng(seed + 1).permutation(len(rows))]
    path.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    return path


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dslrec: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture()
def csv_run(tmp_path, monkeypatch):
    """An MF run trained on a CSV given by a relative path from tmp/work; finished, 2 epochs."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_csv(work / "ratings.csv")
    out = tmp_path / "run"
    dslrec.train(dict(dataset="ratings.csv", epochs=2, **QUICK), out=out, progress=False)
    return out


def recommend_all(model_file: Path):
    rec = Recommender.load(model_file)
    return rec.recommend(rec.user_ids(), k=10)


# --- 1. export needs only the run directory -------------------------------------------------------

def test_export_reads_only_the_run_directory(csv_run, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    original = dslrec.data.load(work / "ratings.csv")
    # the reference: exported with the very dataset the run trained on (checked against what it kept)
    export(csv_run, tmp_path / "ref.dslrec", dataset=original)
    ref = recommend_all(tmp_path / "ref.dslrec")

    # the same file with its rows shuffled re-splits differently: export must not notice it
    write_csv(work / "ratings.csv", shuffle=True)
    assert rundir.data_differences(rundir.read_data(csv_run)[0], dslrec.data.load(work / "ratings.csv"))
    export(csv_run, tmp_path / "shuffled.dslrec")
    # and without the file, from another folder
    (work / "ratings.csv").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["export", str(csv_run), "--out", "moved.dslrec"]) == 0
    for name in ("shuffled.dslrec", "elsewhere/moved.dslrec"):
        got = recommend_all(tmp_path / name)
        assert np.array_equal(got.ids, ref.ids) and np.array_equal(got.scores, ref.scores), name
    assert ref.ids.dtype.kind == "U" and str(ref.ids[0, 0]).startswith("i")  # raw string ids kept
    capsys.readouterr()
    assert main(["recommend", "--model", "moved.dslrec", "--users", "u3", "--k", "10", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["items"] == ref.ids[list(ref.user_ids).index("u3")].tolist()


def test_run_data_round_trips_and_is_checked(tmp_path):
    data = synthetic_dataset(n_users=50, n_items=40, seed=1)
    data.train_users = np.arange(50) % 3 != 0
    rundir.save_data(tmp_path, data)
    back, counts = rundir.read_data(tmp_path)
    assert rundir.data_differences(back, data) == []
    assert np.array_equal(counts, data.item_popularity().astype(np.int64))
    assert np.array_equal(back.train_users, data.train_users) and back.protocol == data.protocol
    info = json.loads((tmp_path / rundir.DATA_INFO).read_text())
    info["sha256"] = "0" * 64  # a data.json from another run
    (tmp_path / rundir.DATA_INFO).write_text(json.dumps(info))
    with pytest.raises(DslrecError, match="damaged or do not belong together"):
        rundir.read_data(tmp_path)


def test_old_run_directory_without_its_data_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "old"
    dslrec.train(dict(epochs=1, **QUICK), dataset=synthetic_dataset(60, 50, seed=0), out=out, progress=False)
    (out / rundir.DATA).unlink()
    (out / rundir.DATA_INFO).unlink()
    assert main(["export", str(out)]) == 2
    one_line_error(capsys, "older dslrec", "retrain")
    assert not (out / "model.dslrec").exists()


# --- 2. --resume never damages a run ------------------------------------------------------------

def test_resume_refuses_other_settings_before_writing_anything(csv_run, tmp_path, capsys):
    before = files_of(csv_run)
    run = str(csv_run)
    refused = [
        (["--model", "lightgcn"], "model ('mf' -> 'lightgcn')"),
        (["--dim", "32"], "dim (16 -> 32)"),
        (["--lr", "0.1", "--method", "dsl", "--density", "0.5"], "density (1.0 -> 0.5), lr (0.005 -> 0.1), method"),
        (["--out", str(tmp_path / "other")], "--out"),
    ]
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("dim: 8\n")
    refused.append((["--config", str(bad_config)], "dim (16 -> 8)"))
    for extra, needle in refused:
        assert main(["train", "--resume", run, "--quiet", *extra]) == 2, extra
        one_line_error(capsys, needle)
        assert files_of(csv_run) == before, extra
    assert not (tmp_path / "other").exists()
    # its own config is no change; plain --resume and export still work
    assert main(["train", "--resume", run, "--quiet", "--config", str(csv_run / "config.yaml")]) == 0
    assert main(["train", "--resume", run, "--quiet", "--device", "cpu"]) == 0
    assert yaml.safe_load((csv_run / "config.yaml").read_text())["device"] == "auto"  # this session only
    assert main(["export", run]) == 0


def test_resume_with_fewer_epochs_or_inexact_extension_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "r.csv")
    dslrec.train(dict(dataset="r.csv", epochs=2, **QUICK), out=tmp_path / "mf", progress=False)
    before = files_of(tmp_path / "mf")
    assert main(["train", "--resume", str(tmp_path / "mf"), "--epochs", "1", "--quiet"]) == 2
    one_line_error(capsys, "already trained 2 epochs")
    # DSL's update ratio is annealed over the total steps: more epochs cannot extend it exactly
    dslrec.train(dict(dataset="r.csv", epochs=2, method="dsl", density=0.5, delta_t=7, **QUICK),
                 out=tmp_path / "dsl", progress=False)
    dsl_before = files_of(tmp_path / "dsl")
    assert main(["train", "--resume", str(tmp_path / "dsl"), "--epochs", "4", "--quiet"]) == 2
    one_line_error(capsys, "cosine update ratio spans the total steps", "start a new run")
    dslrec.train(dict(dataset="r.csv", epochs=1, method="oneshot", density=0.5, **QUICK),
                 out=tmp_path / "oneshot", progress=False)
    assert main(["train", "--resume", str(tmp_path / "oneshot"), "--epochs", "3", "--quiet"]) == 2
    one_line_error(capsys, "oneshot run: its phases are built from epochs")
    assert files_of(tmp_path / "mf") == before and files_of(tmp_path / "dsl") == dsl_before


@pytest.mark.parametrize("method", [
    dict(method="static"),
    # 3 steps an epoch: the 2-epoch run ends at step 6, between updates (4, and 8 in the longer run),
    # so the growth signal summed over steps 5 to 8 must hold the steps the shorter run ended with
    dict(method="dsl", schedule="constant", delta_t=4, grow="accumulated", storage="masked"),
    dict(method="dsl", schedule="constant", delta_t=4, grow="accumulated", storage="compact"),
], ids=["static", "dsl-accumulated-masked", "dsl-accumulated-compact"])
def test_extending_a_finished_run_trains_the_extra_epochs_exactly(tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "r.csv")
    settings = dict(dataset="r.csv", density=0.5, patience=0, **method, **QUICK)
    fresh = dslrec.train(dict(settings, epochs=4), out=tmp_path / "fresh", progress=False)
    dslrec.train(dict(settings, epochs=2), out=tmp_path / "ext", progress=False)
    extended = dslrec.train(resume=tmp_path / "ext", epochs=4, progress=False)

    a = torch.load(tmp_path / "fresh/checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ext/checkpoint.pt", weights_only=True)
    assert a["global_epoch"] == b["global_epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert extended["test"] == fresh["test"] and extended["best_epoch"] == fresh["best_epoch"]
    assert extended["epochs_run"] == 4 and extended["config"] == fresh["config"]
    saved = yaml.safe_load((tmp_path / "ext/config.yaml").read_text())
    assert saved == yaml.safe_load((tmp_path / "fresh/config.yaml").read_text()) and saved["epochs"] == 4
    log = [json.loads(line)["epoch"] for line in (tmp_path / "ext/log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


# --- 3. a failed run leaves nothing behind --------------------------------------------------------

def test_sigterm_before_the_first_checkpoint_removes_the_run_directory(tmp_path):
    """``kill`` (or torchrun stopping the other ranks) cleans up as Ctrl-C does: one line, exit 143,
    and the folder the run had begun is gone."""
    import os
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(Path(dslrec.__file__).parents[1]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dslrec.cli", "train", "--dataset", "synthetic", "--model",
                             "lightgcn", "--batch_size", "8", "--epochs", "1", "--out", "run"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "run" / rundir.CONFIG).exists():
        time.sleep(0.05)
    time.sleep(0.5)
    assert not (tmp_path / "run" / rundir.CHECKPOINT).exists(), "epoch 1 ended before the signal"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = proc.stderr.read().decode().strip()
    assert err.endswith("dslrec: terminated") and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_failures_before_the_first_checkpoint_remove_the_run_directory(tmp_path, capsys, monkeypatch):
    from dslrec import models
    from dslrec.training.loop import Trainer

    # bad data: found after the run directory was made
    assert main(["train", "--dataset", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    one_line_error(capsys, "missing.csv")
    assert not (tmp_path / "a").exists()

    data = synthetic_dataset(60, 50, seed=0)
    # Ctrl-C in the first epoch
    with monkeypatch.context() as m:
        def interrupted(self, *args, **kwargs):
            raise KeyboardInterrupt
        m.setattr(Trainer, "train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            dslrec.train(dict(epochs=2, **QUICK), dataset=data, out=tmp_path / "b", progress=False)
        assert not (tmp_path / "b").exists()
        # a directory this call did not create is left alone (with what the run wrote)
        (tmp_path / "mine").mkdir()
        with pytest.raises(KeyboardInterrupt):
            dslrec.train(dict(epochs=2, **QUICK), dataset=data, out=tmp_path / "mine", progress=False)
        assert (tmp_path / "mine").is_dir()

    # NaN in epoch 1: the message must not promise a checkpoint
    real_build = models.build

    def poisoned_build(name, dataset, **kw):
        model = real_build(name, dataset, **kw)
        loss = model.loss
        model.loss = lambda batch: loss(batch) * float("nan")
        return model

    monkeypatch.setattr(models, "build", poisoned_build)
    with pytest.raises(DslrecError, match="loss became nan in epoch 1") as e:
        dslrec.train(dict(epochs=2, **QUICK), dataset=data, out=tmp_path / "c", progress=False)
    assert "nothing was saved" in str(e.value) and "checkpoint is kept" not in str(e.value)
    assert not (tmp_path / "c").exists()


# --- 4. the Python API --------------------------------------------------------------------------

def test_train_takes_the_dataset_keyword_as_a_setting(tmp_path, monkeypatch):
    # the form the docstrings show (one full-batch step on the built-in synthetic data)
    s = dslrec.train(model="mf", dataset="synthetic", epochs=1, batch_size=10**6, dim=8, out=tmp_path / "a",
                     progress=False)
    assert s["config"]["dataset"] == "synthetic" and s["dataset"]["users"] == 2000
    monkeypatch.chdir(tmp_path)
    csv = write_csv(tmp_path / "r.csv")
    s = dslrec.train(dict(epochs=1, **QUICK), dataset=csv, out=tmp_path / "b", progress=False)  # a Path
    assert s["config"]["dataset"] == str(csv) and s["dataset"]["users"] == 60
    with pytest.raises(DslrecError, match="dataset must be a name, a path or a dslrec.data.Dataset"):
        dslrec.train(dict(epochs=1), dataset=42, out=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_plain_import_stays_light_and_reaches_dslrec_data():
    code = ("import sys, dslrec; heavy = [m for m in ('numpy', 'torch', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy; d = dslrec.data.load('synthetic'); print(d.n_users, callable(dslrec.data.load))")
    src = str(Path(dslrec.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src},
                         timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["2000", "True"]
