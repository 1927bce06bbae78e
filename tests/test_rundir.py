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
from dslrec.training import rundir

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
