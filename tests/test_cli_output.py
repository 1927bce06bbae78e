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
