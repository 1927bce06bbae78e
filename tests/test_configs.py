"""configs/: the paper's settings per backbone and dataset, and their CPU reductions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dslrec import models
from dslrec.settings import PAPER_KEY_ALIASES, resolve_settings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = sorted((CONFIGS / "paper").glob("*.yaml"))
CPU = sorted((CONFIGS / "cpu").glob("*.yaml"))


def flat(path: Path) -> dict:
    d = resolve_settings(config_file=path).to_dict()
    return {**d, **d.pop("model_options")}


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_configs_hold_the_papers_settings(path):
    cfg = flat(path)
    assert path.stem == f"{cfg['model']}-{cfg['dataset']}"
    paper = {PAPER_KEY_ALIASES.get(k, k): v for k, v in models.paper_settings(cfg["model"]).items()}
    assert {k: cfg[k] for k in paper} == paper
    # the paper's DSL: one budget per tensor, growth by one batch's gradient, every epoch trained
    assert (cfg["method"], cfg["scope"], cfg["grow"], cfg["device"], cfg["patience"]) == (
        "dsl", "per_tensor", "gradient", "auto", 0)
    protocol = {"lightgcn": None, "neumf": "loo", "multvae": "users"}[cfg["model"]]
    assert cfg["split"] == protocol


@pytest.mark.parametrize("path", CPU, ids=lambda p: p.name)
def test_cpu_configs_reduce_a_paper_config_and_say_how_long_they_take(path):
    assert (CONFIGS / "paper" / path.name).is_file()
    cpu, paper = flat(path), flat(CONFIGS / "paper" / path.name)
    for key in ("model", "dataset", "split", "method", "density", "scope", "grow"):
        assert cpu[key] == paper[key], key
    text = path.read_text()
    assert re.search(r"# Measured here: \d[\d.]* (s|min)", text), "state the measured time"
    assert "instead of" in text  # says what it reduces
