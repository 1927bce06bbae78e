"""CSV/TSV column names and separator from the command line and from YAML (``columns``, ``sep``)."""

from __future__ import annotations

import json

import pytest
import yaml

from dslrec.cli import main
from dslrec.errors import DslrecError
from dslrec.settings import resolve_settings

COLUMNS = "user=Kunde,item=Artikel,rating=Sterne,timestamp=Zeit"


def write_log(path):
    """20 users x 6 items; ratings 1..5 (users rate items 0, 1 below 3); ';' separated, unusual headers."""
    rows = ["Zeit;Artikel;Kunde;Sterne"]
    for u in range(20):
        for j in range(6):
            item = (u + j) % 10
            rows.append(f"{1000 + 10 * u + j};i{item};u{u};{1 if j < 2 else 4}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_data_info_with_columns_and_sep(tmp_path, capsys):
    log = write_log(tmp_path / "ratings.csv")  # .csv would mean ',': the separator must be given
    assert main(["data", "info", str(log), "--columns", COLUMNS, "--sep", ";", "--min-rating", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["users"] == 20 and info["items"] == 10 and info["interactions"] == 20 * 4  # rating column used
    assert "delimited (';')" in info["source"]

    assert main(["data", "info", str(log), "--columns", COLUMNS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no column 'Kunde' (for user)" in err and "pass --sep ';'" in err

    assert main(["data", "info", str(log), "--sep", ";", "--columns", "user=Kunde,item=Produkt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dslrec: error: ") and "no column 'Produkt' (for item) in the header" in err
    assert len(err.splitlines()) == 1

    assert main(["data", "info", str(log), "--sep", ";", "--columns", "user:Kunde"]) == 2
    assert "--columns: 'user:Kunde' is not ROLE=COLUMN" in capsys.readouterr().err
    assert main(["data", "info", "synthetic", "--sep", ";"]) == 2
    assert "sep applies to CSV/TSV files" in capsys.readouterr().err


def test_train_with_columns_from_cli_and_yaml(tmp_path, capsys):
    log = write_log(tmp_path / "ratings.csv")
    out = tmp_path / "cli"
    argv = ["train", "--model", "mf", "--dataset", str(log), "--epochs", "1", "--quiet", "--out", str(out),
            "--columns", COLUMNS, "--sep", ";", "--split", "temporal", "--min_rating", "3"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    # rating 4 only (80 interactions); temporal split by the Zeit column: each user's latest item is test
    assert summary["dataset"]["interactions"] == 80 and summary["dataset"]["test"] == 20
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["columns"] == {"user": "Kunde", "item": "Artikel", "rating": "Sterne", "timestamp": "Zeit"}
    assert saved["sep"] == ";"

    config = tmp_path / "run.yaml"  # a mapping and a named separator in YAML
    config.write_text(f"dataset: {log}\nepochs: 1\ncolumns:\n  user: Kunde\n  item: Artikel\nsep: semicolon\n")
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "yaml")]) == 0
    summary = json.loads((tmp_path / "yaml" / "summary.json").read_text())
    assert summary["dataset"]["interactions"] == 120 and summary["config"]["sep"] == ";"
    capsys.readouterr()


def test_columns_and_sep_settings_are_coerced_and_checked():
    cfg = resolve_settings(columns="user=uid, item=iid", sep="tab")
    assert cfg.columns == {"user": "uid", "item": "iid"} and cfg.sep == "\t"
    assert resolve_settings(columns={"user": "a", "item": "b"}, sep="\\t").sep == "\t"
    assert resolve_settings().columns is None and resolve_settings().sep is None
    with pytest.raises(DslrecError, match=r"setting columns: unknown column role\(s\) \['usr'\]"):
        resolve_settings(columns="usr=uid")
    with pytest.raises(DslrecError, match="setting columns: 'item' is not ROLE=COLUMN"):
        resolve_settings(columns="user=uid,item")
    with pytest.raises(DslrecError, match="setting sep must be one character"):
        resolve_settings(sep=";;")
