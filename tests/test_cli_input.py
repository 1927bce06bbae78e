"""Bad input on the command line: one-line errors that name the setting, file or option."""

from __future__ import annotations

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
    (["--finetune_epochs", "abc"], "finetune_epochs must be an integer >= 1"),
    (["--lr_end", "-1"], "lr_end must be a number >= 0"),
    (["--min_rating", "abc"], "min_rating must be a number"),
    (["--k_core", "abc"], "k_core must be an integer >= 1"),
    (["--k_core", "0"], "k_core must be an integer >= 1"),
    (["--split", "5"], "split must be a split name"),
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
    from dslrec.training.run import resolve_settings

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


def test_cli_prints_dslrec_warnings_as_one_line(tmp_path, capsys):
    path = tmp_path / "lat.csv"
    latin1_table(path, ",", "user,item,rating")
    assert main(["data", "info", str(path)]) == 0
    err = capsys.readouterr().err
    assert err == f"dslrec: warning: {path} is not UTF-8; read it as latin-1 (ids stay distinct); " \
                  "re-save it as UTF-8 if raw ids must print correctly\n"
