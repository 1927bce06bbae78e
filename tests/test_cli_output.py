"""The command line as people expect it: help, progress bars, the summary table."""

from __future__ import annotations

import io
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
