"""Bad input on the command line: one-line errors that name the setting, file or option."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dslrec.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr (no traceback); return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("dslrec: error: "), err
    return err


@pytest.mark.parametrize("args, names", [
    (["--seed", "-1"], "seed must be an integer from 0"),
    (["--seed", "4294967296"], "seed must be an integer from 0"),
    (["--split_seed", "-1"], "split_seed must be an integer from 0"),
    (["--ks", "5,abc"], "setting ks must be comma-separated integers"),
    (["--ks", "[5, abc]"], "setting ks must be a list of integers"),
    (["--weight_decay", "-1"], "weight_decay must be >= 0"),
    (["--optimizer", "sgd", "--momentum", "-5"], "momentum must be in [0, 1)"),
    (["--dim", "[1"], "setting dim must be an integer, got '[1'"),
    (["--dim", "1.5"], "setting dim must be an integer"),
    (["--model", "neumf", "--layers", "[32, 16"], "option layers of model 'neumf'"),
    (["--model", "neumf", "--layers", "32"], "option layers of model 'neumf' must be a list"),
    (["--method", "oneshot", "--density", "0.5", "--finetune_epochs", "-1"], "finetune_epochs must be an integer >= 1"),
    (["--finetune_epochs", "abc"], "setting finetune_epochs must be an integer"),
    (["--lr_end", "-1"], "lr_end must be a number >= 0"),
    (["--min_rating", "abc"], "min_rating must be a number"),
    (["--k_core", "abc"], "setting k_core must be an integer"),
    (["--k_core", "0"], "k_core must be an integer >= 1"),
    (["--split", "5"], "unknown split '5'; choose one of"),
    (["--n_neg", "0"], "n_neg must be at least 1"),
    (["--eval_batch_size", "0"], "eval_batch_size must be at least 1"),
    (["--metric", "recall@0"], "metric must cut off at k >= 1"),
    (["--device", "cuda:x"], "device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_settings_name_the_setting(capsys, tmp_path, args, names):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--model", "mf", "--epochs", "1", "--out", str(out), *args])
    assert names in err
    assert not out.exists()  # refused before anything is written


def test_good_values_of_the_new_checks_still_resolve():
    from dslrec.settings import resolve_settings

    cfg = resolve_settings(dict(seed=2**32 - 1, split_seed=0, ks="5,10", weight_decay=0, momentum=0,
                                lr_end=0, k_core=[2, 3], min_rating=4, finetune_epochs=2, device="cuda:1",
                                split="loo", model="neumf", layers="[16, 8]"))
    assert cfg.ks == [5, 10, 20] and cfg.k_core == [2, 3] and cfg.model_options["layers"] == [16, 8]
    assert resolve_settings(dict(model="mf", dim="32.0")).model_options["dim"] == 32


def latin1_table(path, sep: str, header: str) -> None:
    """30 users x 6 items each, item names with a latin-1 byte (é = 0xe9), not valid UTF-8."""
    rows = [f"{u}{sep}caf\xe9 {(u + j) % 10}{sep}{1 + j % 5}" for u in range(30) for j in range(6)]
    path.write_bytes((header + "\n" + "\n".join(rows) + "\n").encode("latin-1"))


@pytest.mark.parametrize("name, sep, header", [
    ("lat.csv", ",", "user,item,rating"),
    ("lat.tsv", "\t", "user\titem\trating"),
    ("lat.inter", "\t", "user_id:token\titem_id:token\trating:float"),
])
def test_non_utf8_table_is_read_as_latin1_with_a_warning(tmp_path, name, sep, header):
    from dslrec.data import read

    path = tmp_path / name
    latin1_table(path, sep, header)
    with pytest.warns(UserWarning, match=rf"{name} is not UTF-8; read it as latin-1") as caught:
        log = read(path)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert len(log) == 180 and log.n_users == 30
    assert sorted(log.item_ids) == [f"caf\xe9 {i}" for i in range(10)]  # decoded, and all distinct


def test_non_utf8_header_byte_is_decoded_like_the_rows(tmp_path):
    from dslrec.data import read

    path = tmp_path / "h.csv"
    path.write_bytes("user,item,r\xe9sum\xe9\n1,a,x\n2,b,y\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="not UTF-8"):
        log = read(path)
    assert list(log.user_ids) == ["1", "2"] and list(log.item_ids) == ["a", "b"]


def test_utf8_table_reads_without_a_warning(tmp_path, recwarn):
    from dslrec.data import read

    path = tmp_path / "u.csv"
    path.write_text("\ufeffuser,item\n1,caf\u00e9\n2,th\u00e9\n", encoding="utf-8")  # with a BOM
    assert sorted(read(path).item_ids) == ["caf\u00e9", "th\u00e9"]
    assert not [w for w in recwarn if "UTF-8" in str(w.message)]


def test_cli_prints_dslrec_warnings_as_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "lat.csv"
    latin1_table(path, ",", "user,item,rating")
    done = subprocess.run([sys.executable, "-m", "dslrec.cli", "data", "info", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert done.stderr == f"dslrec: warning: {path} is not UTF-8; read it as latin-1 (ids stay distinct); " \
                  "re-save it as UTF-8 if raw ids must print correctly\n"


# ---------------------------------------------------------------- output paths


def test_train_out_under_a_regular_file_is_refused_before_writing(capsys, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("keep me\n")
    err = one_line_error(capsys, ["train", "--epochs", "1", "--out", str(blocker / "run")])
    assert f"--out {blocker / 'run'}: {blocker} is a file, not a folder" in err
    err = one_line_error(capsys, ["train", "--epochs", "1", "--out", str(blocker)])
    assert f"--out {blocker} is an existing file, not a folder" in err
    assert blocker.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


def test_export_out_under_a_regular_file_or_on_a_folder_is_refused_before_reading(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me\n")
    # the run directory does not even exist: --out is checked first, while parsing
    err = one_line_error(capsys, ["export", str(tmp_path / "run"), "--out", str(blocker / "under" / "m.dslrec")])
    assert f"{blocker} is a file, not a folder" in err
    err = one_line_error(capsys, ["export", str(tmp_path / "run"), "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a folder; pass a file path" in err
    assert blocker.read_text() == "keep me\n"


def test_out_in_a_folder_without_write_permission_is_refused(capsys, tmp_path, monkeypatch):
    import dslrec.fileio as fileio

    monkeypatch.setattr(fileio.os, "access", lambda path, mode: Path(path) != tmp_path)
    err = one_line_error(capsys, ["train", "--epochs", "1", "--out", str(tmp_path / "a" / "run")])
    assert f"no permission to write in {tmp_path}" in err


@pytest.mark.parametrize("users", ["", " , ,"])
def test_recommend_with_empty_users_is_an_error(capsys, tmp_path, users):
    err = one_line_error(capsys, ["recommend", "--model", str(tmp_path / "m.dslrec"), "--users", users])
    assert "--users is empty; pass raw user ids like 196,186" in err
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- file modes


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # what a file created with open() gets under this umask
    os.umask(old)


def test_atomic_writes_get_the_mode_of_a_normal_file(tmp_path, umask_027):
    from dslrec import rundir

    normal = tmp_path / "normal.txt"
    normal.write_text("x")
    rundir.write_json(tmp_path / "summary.json", {"a": 1})
    rundir.save_weights(tmp_path / "w.safetensors", {"w": __import__("torch").zeros(2)})
    for name in ("summary.json", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == stat.S_IMODE(normal.stat().st_mode) == umask_027


def test_downloaded_dataset_files_get_the_mode_of_a_normal_file(tmp_path, umask_027):
    import hashlib

    from dslrec.data import registry

    src = tmp_path / "src.txt"
    src.write_bytes(b"0 1 2\n1 2\n")
    dest = tmp_path / "cache" / "ds" / "train.txt"
    registry.download(src.as_uri(), dest, hashlib.sha256(src.read_bytes()).hexdigest(), 10, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == umask_027
    assert [p.name for p in dest.parent.iterdir()] == ["train.txt"]  # no temporary file left


def test_mkstemp_makes_distinct_exclusive_files(tmp_path):
    from dslrec import fileio

    made = set()
    for _ in range(20):
        fd, name = fileio.mkstemp(dir=tmp_path, prefix=".x.", suffix=".tmp")
        os.close(fd)
        made.add(name)
    assert len(made) == 20 and all(Path(n).parent == tmp_path and Path(n).name.startswith(".x.") for n in made)
