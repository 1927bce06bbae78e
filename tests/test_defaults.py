"""Defaults that work on data the settings were never tuned on: delta_t follows the run, presets,
one definition of the sparse settings, early stopping that waits for a model to learn."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

import dslrec
from dslrec.cli import main
from dslrec.data.synthetic import synthetic_dataset
from dslrec.evaluate import evaluate
from dslrec.models.popularity import Popularity
from dslrec.sparse.config import SPARSE_KEYS, SparseConfig, SparseSettings
from dslrec.settings import RunConfig, resolve_delta_t
from dslrec.training.methods import sparse_config
from dslrec.settings import resolve_settings


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(n_users=600, n_items=400, seed=3)


def test_delta_t_follows_the_run_and_an_explicit_value_wins():
    cfg = resolve_settings(dict(model="mf", method="dsl"))
    assert cfg.delta_t is None  # the paper's 3000 is not the default any more
    assert resolve_delta_t(cfg, 37) == round(cfg.delta_t_epochs * 37)
    assert resolve_delta_t(resolve_settings(dict(model="mf", method="dsl", delta_t_epochs=0.5)), 37) == 18
    assert resolve_delta_t(resolve_settings(dict(model="mf", method="dsl", delta_t_epochs=0.01)), 37) == 1
    assert resolve_delta_t(resolve_settings(dict(model="mf", method="dsl", delta_t=7)), 37) == 7


def test_resolved_delta_t_is_printed_and_recorded(small, tmp_path, capsys):
    out = tmp_path / "run"
    s = dslrec.train(dict(model="mf", method="dsl", density=0.5, epochs=4, batch_size=512), dataset=small,
                     out=out, progress=True)
    steps = -(-int(small.train[small.trained_users()].nnz) // 512)
    expected = round(RunConfig.delta_t_epochs * steps)
    assert s["delta_t"] == {"iterations": expected,
                            "source": f"delta_t_epochs {RunConfig.delta_t_epochs:g} x {steps} steps per epoch"}
    assert yaml.safe_load((out / "config.yaml").read_text())["delta_t"] == expected
    printed = capsys.readouterr()
    assert f"delta_t = {expected} iterations" in printed.out + printed.err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["sparse"]["n_updates"] == (4 * steps - 1) // expected >= 1


def test_presets_sit_under_explicit_settings():
    paper = resolve_settings(dict(model="lightgcn", method="dsl", preset="paper"))
    assert paper.delta_t == 3000 and paper.lr == 1e-2
    rec = resolve_settings(dict(model="mf", preset="recommended"))
    assert (rec.method, rec.scope, rec.grow, rec.accumulate_steps) == ("dsl", "per_row", "accumulated", None)
    assert rec.density == 0.5  # the backbone's density for a sparse method
    mine = resolve_settings(dict(model="mf", preset="recommended", scope="global", density=0.2))
    assert (mine.scope, mine.density, mine.grow) == ("global", 0.2, "accumulated")
    # accumulate_steps null: the whole interval between updates
    engine_cfg = SparseConfig.from_settings(dataclasses.replace(rec, delta_t=40), method="dsl")
    assert engine_cfg.window() == 40
    with pytest.raises(dslrec.errors.DslrecError, match="unknown preset 'fast'; choose one of paper, recommended"):
        resolve_settings(dict(preset="fast"))


def test_sparse_settings_have_one_definition():
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(SPARSE_KEYS) <= run_fields  # inherited, not copied
    assert issubclass(RunConfig, SparseSettings) and issubclass(SparseConfig, SparseSettings)
    cfg = resolve_settings(dict(model="mf", method="gmp", density=0.3, delta_t=9, gmp_start=0.1, gmp_end=0.5,
                                include="*emb*", grow_momentum=0.8, pep_init=-3))
    engine_cfg = sparse_config(cfg, "gmp")
    for key in SPARSE_KEYS:
        assert getattr(engine_cfg, key) == getattr(cfg, key), key
    assert engine_cfg.include == ["*emb*"] and engine_cfg.gmp_end == 0.5


def test_engine_settings_reach_the_command_line_and_yaml(tmp_path, small):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(dict(model="mf", dataset="synthetic", method="gmp", density=0.5, epochs=2,
                                        gmp_start=0.0, gmp_end=0.5, exclude=["item.*"], accumulate_steps=None)))
    out = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(out), "--quiet", "--gmp_end", "0.25",
                 "--pep_deadline", "0.5"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["gmp_end"], saved["exclude"], saved["pep_deadline"], saved["accumulate_steps"]) == \
        (0.25, ["item.*"], 0.5, None)
    summary = json.loads((out / "summary.json").read_text())
    # only the user table is sparsified: the excluded item table keeps every weight
    users, items = summary["dataset"]["users"], summary["dataset"]["items"]
    assert summary["params"]["total"] == 64 * (users + items) and summary["params"]["sparsifiable"] == 64 * users


def test_bad_sparse_settings_name_the_setting(capsys, tmp_path):
    for args, words in ((["--gmp_start", "0.9", "--gmp_end", "0.5"], "gmp_start=0.9, gmp_end=0.5"),
                        (["--grow_momentum", "1.5"], "grow_momentum=1.5 must be in [0, 1)"),
                        (["--accumulate_steps", "0"], "accumulate_steps=0 must be an integer >= 1"),
                        (["--delta_t_epochs", "0"], "delta_t_epochs must be positive")):
        assert main(["train", "--epochs", "1", "--out", str(tmp_path / "x"), "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()


def run_with_scripted_validation(monkeypatch, small, tmp_path, values, **settings):
    """A run whose validation metric follows ``values`` (one per epoch), popularity's being 0.2."""
    import dslrec.training.run as run_module

    seq = iter(values)

    def fake_evaluator(cfg, dataset, sample=None):
        def evaluate_(model, split, per_user=False):
            metrics = {f"recall@{k}": next(seq) if split == "valid" else 0.0 for k in cfg.ks}
            return (metrics, None) if per_user else metrics
        return evaluate_

    monkeypatch.setattr(run_module, "make_evaluator", fake_evaluator)
    monkeypatch.setattr(run_module, "popularity_metrics",
                        lambda cfg, ds, users=None: {"valid": {cfg.metric: 0.2}, "test": {cfg.metric: 0.2}})
    monkeypatch.setattr(run_module, "group_breakdown", lambda *a, **k: {})
    return dslrec.train(dict(model="mf", epochs=len(values), batch_size=2048, **settings), dataset=small,
                        out=tmp_path / "run", progress=False)


def test_patience_waits_until_the_model_beats_popularity(monkeypatch, small, tmp_path):
    # noise around a level below popularity for 12 epochs (a model that has not started), then learning
    values = [0.10, 0.11, 0.10, 0.09, 0.11, 0.10, 0.10, 0.09, 0.10, 0.10, 0.10, 0.10, 0.25, 0.30, 0.29, 0.28, 0.27]
    s = run_with_scripted_validation(monkeypatch, small, tmp_path, values, patience=3)
    assert s["best_epoch"] == 14 and s["epochs_run"] == 17  # stopped 3 evaluations after the best
    with pytest.warns(UserWarning, match="does not beat ranking by popularity"):
        s = run_with_scripted_validation(monkeypatch, small, tmp_path / "b", [0.1, 0.12] + [0.11] * 8, patience=2)
    assert s["epochs_run"] == 10  # never beat popularity: never stopped early


def test_patience_counts_once_the_model_learns(monkeypatch, small, tmp_path):
    values = [0.25, 0.30, 0.29, 0.28, 0.31, 0.30, 0.29, 0.28, 0.27]
    s = run_with_scripted_validation(monkeypatch, small, tmp_path, values, patience=3)
    assert s["best_epoch"] == 5 and s["epochs_run"] == 8


@pytest.mark.parametrize("model", ["mf", "lightgcn", "neumf", "multvae"])
def test_each_backbone_learns_with_dsl_defaults(model, small, tmp_path):
    """Only the model, the method and a few epochs: at least one mask update, and better than popularity."""
    epochs = {"mf": 40, "lightgcn": 12, "neumf": 10, "multvae": 30}[model]
    s = dslrec.train(dict(model=model, method="dsl", epochs=epochs), dataset=small, out=tmp_path / model,
                     progress=False)
    log = [json.loads(line) for line in (tmp_path / model / "log.jsonl").read_text().splitlines()]
    assert log[-1]["sparse"]["n_updates"] >= 1
    pop = evaluate(Popularity.from_dataset(small).scorer(), small, split="test", ks=(20,))["recall@20"]
    assert s["test"]["recall@20"] > 1.1 * pop, (s["test"]["recall@20"], pop)


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; a learning rate is still written that way
    assert resolve_settings(dict(lr="1e-3", epochs="1e2", l2="1e-4")).lr == 1e-3
    conf = tmp_path / "c.yaml"
    conf.write_text("lr: 1e-3\nmodel: mf\nl2: 1e-4\n")
    cfg = resolve_settings(config_file=conf)
    assert cfg.lr == 1e-3 and cfg.model_options["l2"] == 1e-4


def test_a_preset_gives_way_to_the_method_or_init_asked_for(capsys, tmp_path):
    assert resolve_settings(dict(preset="recommended", method="pep", density=0.2)).scope == "per_tensor"
    assert resolve_settings(dict(preset="recommended", init="erk")).scope == "per_tensor"
    assert resolve_settings(dict(preset="paper")).method == "dsl"  # the paper's DSL, not a dense run
    # an explicit per_row with pep is refused while resolving, before anything is written
    assert main(["train", "--method", "pep", "--density", "0.2", "--scope", "per_row", "--epochs", "1",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "scope per_row does not apply to pep" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_popularity_reference_evaluates_the_same_users_as_the_model(tmp_path):
    from dslrec.data import load
    from dslrec.training.run import popularity_metrics

    folder = tmp_path / "cold"
    folder.mkdir()  # users 6 and 7 appear only in test.txt
    (folder / "train.txt").write_text("".join(f"{u} {' '.join(map(str, range(6 - u)))}\n" for u in range(6)))
    (folder / "test.txt").write_text("".join(f"{u} {6 + u % 4}\n" for u in range(6)) + "6 0\n7 2 9\n")
    ds = load(folder, progress=False)
    assert ds.sizes()["cold_users"]["test"] == 2
    drop = popularity_metrics(resolve_settings(dict(ks=3, metric="recall@3")), ds)
    popular = popularity_metrics(resolve_settings(dict(ks=3, metric="recall@3", cold_users="popular")), ds)
    # the cold users' items are the popular ones (0 and 2): ranking them by popularity hits them
    assert popular["test"]["recall@3"] > drop["test"]["recall@3"]
