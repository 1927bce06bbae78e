"""The command line as people expect it: help, progress bars, the summary table."""

from __future__ import annotations

import io
import re
import sys

import pytest

import dslrec
from dslrec.data.synthetic import synthetic_dataset
from dslrec.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, enabled, drawn", [
    (Terminal(), True, True), (Terminal(), False, False), (io.StringIO(), True, False),
])
def test_progress_bars_only_on_a_terminal(monkeypatch, stream, enabled, drawn):
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(3), enabled=enabled, desc="work"):
        pass
    assert ("work" in stream.getvalue()) == drawn


def test_progress_bars_in_a_notebook_widget(monkeypatch):
    import tqdm.auto

    class NotebookBar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            self.asked_disable = kwargs["disable"]

    NotebookBar.__module__ = "tqdm.notebook"
    monkeypatch.setattr(tqdm.auto, "tqdm", NotebookBar)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(range(3)).asked_disable is False


def test_training_into_a_log_file_prints_epoch_lines_but_no_bars(tmp_path, capsys):
    data = synthetic_dataset(n_users=200, n_items=100, seed=1)
    dslrec.train(dict(model="mf", epochs=2, batch_size=64), dataset=data, out=tmp_path / "r", progress=True)
    out, err = capsys.readouterr()  # captured: not a terminal
    assert out.count("epoch ") >= 2 and "recall@20" in out
    assert "\r" not in out + err and "batch/s" not in out + err


def test_summary_table_columns_fit_their_names():
    from dslrec.training.commands import format_summary

    names = ["recall@20", "ndcg@20", "hitrate@20", "sampled_hitrate@20", "sampled_ndcg@20"]
    summary = {
        "model": "mf", "method": "dense", "dataset": {"name": "d"}, "best_epoch": 1, "epochs_run": 1,
        "valid": {k: 0.1 + i / 10 for i, k in enumerate(names)}, "test": {k: 0.5 + i / 100 for i, k in enumerate(names)},
        "params": {"active": 10, "total": 10, "peak_active": 10, "mean_active": 10.0},
        "time": {"train_s": 1.0, "epoch_s": 1.0}, "run_dir": "r",
    }
    header, valid, test = format_summary(summary).splitlines()[1:4]
    assert header.split() == ["split", *names]
    assert valid.split()[1:] == [f"{0.1 + i / 10:.4f}" for i in range(5)]
    # every value ends under the end of its column's name
    ends = lambda line: [m.end() for m in __import__("re").finditer(r"\S+", line)][1:]  # noqa: E731
    assert ends(header) == ends(valid) == ends(test)


# ---------------------------------------------------------------- help


def run_python(code: str) -> str:
    import os
    import subprocess
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_answers_without_importing_torch():
    out = run_python(
        "import contextlib, io, sys, time\n"
        "t = time.perf_counter()\n"
        "from dslrec.cli import build_parser, main\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'build_parser imported torch'\n"
        "for argv in (['--help'], ['train', '--help'], ['export', '--help'], ['recommend', '--help'],\n"
        "             ['sweep', '--help'], ['report', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0\n"
        "    assert 'torch' not in sys.modules, f'{argv} imported torch'\n"
        "    assert 'usage: dslrec' in text.getvalue()\n"
        "print(f'{time.perf_counter() - t:.2f}')\n"
    )
    print(f"parser and four help texts without torch in {out.strip()} s")


def test_train_help_lists_every_setting_with_its_default():
    from dslrec.training.commands import run_defaults, show_value

    text = run_python("from dslrec.cli import main\nmain(['train', '--help'])")
    defaults = run_defaults()
    assert {"lr", "batch_size", "split", "optimizer", "epochs", "patience", "eval_every"} <= set(defaults)
    for key, value in defaults.items():
        assert re.search(rf"^  --{key} +{re.escape(show_value(value))}\*? ", text, re.M), key
    assert re.search(r"^  mf +dim 64, l2 0.0001$", text, re.M)  # model options per backbone
    flat = " ".join(text.split())
    assert re.search(r"--epochs EPOCHS [^-]*\(default 100\*\)", flat)  # named arguments show theirs
    assert re.search(r"--zeta0 ZETA0 [^-]*\(default 0.5\)", flat)
    assert 'README, section "Settings"' in text


def test_settings_help_groups_every_setting_once():
    from dslrec.training.commands import run_defaults, setting_groups

    rows = [key for _, group in setting_groups() for key, _ in group]
    assert sorted(rows) == sorted(run_defaults())
    titles = [title for title, _ in setting_groups()]
    assert titles[0] == "what to train on what" and "optimisation" in titles
    assert all(meaning for _, group in setting_groups() for _, meaning in group)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "neumf", "multvae"])
def test_backbone_options_read_from_source_match_the_models(name):
    from dslrec import models
    from dslrec.training.commands import BACKBONES, backbone_source
    from dslrec.settings import PAPER_KEY_ALIASES

    assert set(BACKBONES) == set(models.BACKBONES)
    options, paper = backbone_source(name)
    assert options == models.model_kwargs(name)
    assert paper == {PAPER_KEY_ALIASES.get(k, k): v for k, v in models.default_settings(name).items()}


def test_readme_settings_section_lists_every_setting():
    from pathlib import Path

    from dslrec.training.commands import run_defaults

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    assert readme.index("\n## Training\n") < readme.index("\n## Settings\n")
    listed = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert set(run_defaults()) <= listed, sorted(set(run_defaults()) - listed)


def test_settings_still_work_as_key_value_pairs():
    from dslrec.training.commands import parse_extra

    assert parse_extra(["--lr", "0.01", "--batch-size=64", "--dim", "32"]) == {
        "lr": "0.01", "batch_size": "64", "dim": "32"}
