"""``dslrec data list | info | get`` through ``dslrec.cli.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dslrec.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DSLREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "gowalla").is_dir(), reason=f"no dataset copies at {SHARED}")


@pytest.fixture
def shared_env(monkeypatch):
    monkeypatch.setenv("DSLREC_DATA_DIR", str(SHARED))
    monkeypatch.delenv("DSLREC_MIRROR", raising=False)


def row(out: str, label: str) -> list[str]:
    """The cells of the table row starting with ``label``."""
    for line in out.splitlines():
        if line.startswith(label + " ") or line == label:
            return line[len(label):].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


@needs_shared
def test_info_gowalla(shared_env, capsys):
    assert main(["data", "info", "gowalla"]) == 0
    out = capsys.readouterr().out
    assert row(out, "users") == ["29,858"] and row(out, "items") == ["40,981"]
    assert "810,128 in train.txt, 217,242 in test.txt" in out
    assert row(out, "train+valid")[:2] == ["810,128", "="]
    assert row(out, "test")[:2] == ["217,242", "29,858"]
    train, valid = (int(row(out, s)[0].replace(",", "")) for s in ("train", "valid"))
    assert train + valid == 810_128 and valid > 0


@needs_shared
def test_info_gowalla_exact_invocation():
    """The issue's check: `DSLREC_DATA_DIR=../shared/data dslrec data info gowalla` from the repo root."""
    rel = os.path.relpath(SHARED, ROOT)
    env = {**os.environ, "DSLREC_DATA_DIR": rel}
    env.pop("DSLREC_MIRROR", None)
    done = subprocess.run([sys.executable, "-m", "dslrec.cli", "data", "info", "gowalla"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for figure in ("29,858", "40,981", "810,128", "217,242"):
        assert figure in done.stdout


@needs_shared
def test_info_citeulike_is_truthful_about_items(shared_env, capsys):
    assert main(["data", "info", "citeulike-t", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["users"], info["items"], info["interactions"]) == (7_947, 25_584, 134_860)
    assert main(["data", "info", "citeulike-t"]) == 0
    out = capsys.readouterr().out
    assert "25,975 ids" in out and "25,584 occur" in out


def test_info_on_a_csv_path_with_options(tmp_path, capsys):
    lines = ["user,item,timestamp"] + [f"u{u},i{(u * 7 + k) % 13},{k}" for u in range(30) for k in range(6)]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    assert main(["data", "info", str(tmp_path / "log.csv"), "--split", "loo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protocol"] == "loo" and info["test"] == 30 and info["valid"] == 30 and info["train"] == 120
    assert "leave one out by timestamp" in info["split"]


def test_info_synthetic(capsys):
    assert main(["data", "info", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert row(out, "users") == ["2,000"] and row(out, "items") == ["1,000"]


def test_list(shared_env, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic", "gowalla", "yelp2018", "amazon-book", "ml-100k", "citeulike-t"):
        assert row(out, name)
    if (SHARED / "gowalla").is_dir():
        assert row(out, "gowalla")[-1] == str((SHARED / "gowalla").resolve())
    assert row(out, "yelp2018")[-1] == "-"


def test_get_from_a_mirror(tmp_path, monkeypatch, capsys):
    if not (SHARED / "ml-100k").is_dir():
        pytest.skip(f"no dataset copies at {SHARED}")
    src = tmp_path / "mirror" / "ml-100k"
    src.mkdir(parents=True)
    (src / "ml-100k.inter").write_bytes((SHARED / "ml-100k" / "ml-100k.inter").read_bytes())
    monkeypatch.setenv("DSLREC_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DSLREC_MIRROR", str(tmp_path / "mirror"))
    assert main(["data", "get", "ml-100k", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"ml-100k: {(tmp_path / 'cache' / 'ml-100k').resolve()}"


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dslrec: error: no dataset") and err.count("\n") == 1
    (tmp_path / "users.dat").write_text("2 1\n")
    assert main(["data", "info", str(tmp_path / "users.dat")]) == 2
    assert "users.dat:1: the count says 2 items but the line lists 1" in capsys.readouterr().err
