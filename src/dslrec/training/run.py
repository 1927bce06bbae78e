"""``dslrec.train(...)``: one call from settings to a finished run directory and its summary."""

from __future__ import annotations

import datetime as _dt
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dslrec import __version__
from dslrec.errors import DslrecError
from dslrec.training import rundir
from dslrec.training.budget import Budget
from dslrec.training.config import RunConfig, read_config_file, resolve
from dslrec.training.loop import PhaseResult, Trainer, peak_rss_mb, pick_device
from dslrec.training.methods import build_phases


def resolve_settings(settings: dict[str, Any] | None = None, config_file: str | Path | None = None,
                     **overrides) -> RunConfig:
    from dslrec import models

    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update(settings or {})
    merged.update(overrides)
    return resolve(merged, models.paper_settings, models.model_kwargs)


def load_dataset(cfg: RunConfig, progress: bool = True):
    from dslrec import data

    kwargs = {"seed": cfg.split_seed, "progress": progress}
    for key in ("split", "min_rating", "k_core"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return data.load(cfg.dataset, **kwargs)


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(str(cfg.dataset)).name or "data"
    return Path("runs") / f"{stamp}-{cfg.model}-{cfg.method}-{name}"


def make_evaluator(cfg: RunConfig, dataset):
    """``evaluate(model, split)`` -> metrics; leave-one-out data adds the sampled 1-in-101 protocol."""
    from dslrec.evaluate import evaluate
    from dslrec.evaluate.sampled import sampled_evaluate, sampled_negatives

    # the same sampled candidates at every evaluation, fixed by the split seed
    negatives = ({s: sampled_negatives(dataset, s, 100, cfg.split_seed) for s in ("valid", "test")}
                 if dataset.protocol == "loo" else {})

    def run(model: torch.nn.Module, split: str, per_user: bool = False):
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            scorer = model.scorer()
            result = evaluate(scorer, dataset, split=split, ks=tuple(cfg.ks), batch_size=cfg.eval_batch_size,
                              device=device, per_user=per_user)
            metrics, users = result if per_user else (result, None)
            metrics = {k: float(v) for k, v in metrics.items()}
            if split in negatives:
                metrics.update(sampled_evaluate(scorer, dataset, split, ks=tuple(cfg.ks),
                                                negatives=negatives[split], device=device))
        model.train()
        return (metrics, users) if per_user else metrics

    return run


def group_breakdown(dataset, split: str, users, ks) -> dict:
    """Test metrics per popularity group (10 user groups, 10 item groups; group 0 = least popular)."""
    from dslrec.evaluate.groups import item_group_metrics, item_groups, user_group_metrics, user_groups

    return {"user_groups": user_group_metrics(users, user_groups(dataset)),
            "item_groups": item_group_metrics(users, dataset.split(split), item_groups(dataset), ks=tuple(ks))}


def run_cost(model, dataset, cfg: RunConfig, run_dir: Path, summary: dict) -> dict:
    """summary.json's ``cost``: counted parameters and MACs, plus what was measured."""
    from dslrec.export.cost import cost_section

    masks_path = run_dir / rundir.BEST_MASKS
    masks = ({k: v.bool() for k, v in rundir.load_weights(masks_path).items()} if masks_path.exists() else None)
    cost = cost_section(model, dataset, masks, cfg)
    cost["measured"] = {
        "epoch_s": summary["time"]["epoch_s"],
        "eval_s": summary["time"]["eval_s"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "peak_cuda_mb": summary.get("peak_cuda_mb"),
    }
    return cost


def train(settings: dict[str, Any] | None = None, *, config_file: str | Path | None = None,
          out: str | Path | None = None, resume: str | Path | None = None, dataset=None,
          progress: bool = True, **overrides) -> dict:
    """Train a model and return its summary (also written to ``RUN_DIR/summary.json``).

    >>> summary = dslrec.train(model="mf", dataset="ml-100k", method="dsl", density=0.2, epochs=20)
    >>> summary["test"]["recall@20"]

    ``dataset`` is a setting like any other (a registered name or a path); a ready
    :class:`dslrec.data.Dataset` is trained on as it is (then ``settings['dataset']``
    is only its label). ``resume`` continues an interrupted run from its directory.
    """
    dataset = dataset_argument(dataset, overrides)
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        cfg = resolve_settings(config_file=run_dir / rundir.CONFIG, **overrides)
        checkpoint = rundir.load_checkpoint(run_dir)
    else:
        cfg = resolve_settings(settings, config_file, **overrides)
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        if (run_dir / rundir.CHECKPOINT).exists():
            raise DslrecError(f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                              "or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    from dslrec import models
    from dslrec.data.sampling import epoch_batches

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if dataset is None:
        dataset = load_dataset(cfg, progress)
    dataset.check_usable()
    if checkpoint is not None:
        check_same_data(run_dir, dataset)
    device = pick_device(cfg.device)
    model = models.build(cfg.model, dataset, **cfg.model_options).to(device)
    write_run_files(run_dir, cfg, dataset, resumed=checkpoint is not None)

    budget = Budget(model, cfg)
    trainer = Trainer(cfg, dataset, model, run_dir, progress=progress, sampler=epoch_batches,
                      evaluator=make_evaluator(cfg, dataset), budget=budget)
    phases = build_phases(cfg, model, run_dir)

    start_phase, phase_resume, previous = 0, None, None
    if checkpoint is not None:
        trainer.records = list(checkpoint["records"])
        trainer.global_epoch = int(checkpoint["global_epoch"])
        budget.load_state_dict(checkpoint["budget"])
        start_phase = int(checkpoint["phase"])
        if checkpoint["phase_done"]:
            start_phase += 1
            model.load_state_dict(checkpoint["model"])
            # the checkpoint's best epoch is the finished phase's (also when that was the last phase)
            previous = PhaseResult(rundir.load_weights(run_dir / rundir.BEST), checkpoint["best_epoch"],
                                   dict(checkpoint["best_valid"]), None)
        else:
            phase_resume = checkpoint

    result = previous
    for index in range(start_phase, len(phases)):
        phase = phases[index]
        phase.previous = result
        result = trainer.run_phase(index, phase, phase_resume)
        phase_resume = None
    # summed from the log so that a resumed run reports the time of the whole run
    train_s = sum(r["train_s"] + r.get("eval_s", 0.0) for r in trainer.records)

    if result is None or result.best_state is None:
        raise DslrecError("no epoch reached the target density, so there is no model to report; "
                          "train for more epochs")
    model.load_state_dict(result.best_state)
    t_eval = time.perf_counter()
    test, test_users = trainer.evaluate(model, "test", per_user=True)
    eval_s = time.perf_counter() - t_eval

    epoch_times = [r["train_s"] for r in trainer.records]
    summary = {
        "model": cfg.model,
        "method": cfg.method,
        "dataset": dataset.sizes(),
        "config": cfg.to_dict(),
        "best_epoch": result.best_epoch,
        "epochs_run": trainer.global_epoch,
        "valid": result.best_valid,
        "test": test,
        "test_groups": group_breakdown(dataset, "test", test_users, cfg.ks),
        "params": budget.summary(result.engine),
        "time": {
            "train_s": train_s,
            "epoch_s": statistics.median(epoch_times) if epoch_times else None,
            "eval_s": eval_s,
        },
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "dslrec_version": __version__,
        "run_dir": str(run_dir),
    }
    if device.type == "cuda":
        summary["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    summary["cost"] = run_cost(model, dataset, cfg, run_dir, summary)
    if not rundir.has_data(run_dir):  # a run begun by an older dslrec: keep the data it finished on
        rundir.save_data(run_dir, dataset)
    rundir.write_json(run_dir / rundir.SUMMARY, summary)
    return summary


# --- the dataset argument -----------------------------------------------------------------

def dataset_argument(dataset, overrides: dict[str, Any]):
    """``train(dataset=...)``: a name or a path is the ``dataset`` setting (moved into
    ``overrides``); a :class:`dslrec.data.Dataset` is returned to be trained on as it is."""
    from dslrec.data.dataset import Dataset

    if dataset is None or isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        overrides["dataset"] = os.fspath(dataset)
        return None
    raise DslrecError(f"dataset must be a name, a path or a dslrec.data.Dataset, got a {type(dataset).__name__}; "
                      "load one with dslrec.data.load(NAME_OR_PATH)")


# --- resuming -----------------------------------------------------------------------------

def check_same_data(run_dir: Path, dataset) -> None:
    """A resumed run must train on the data it began with (a re-ordered file gives other ids)."""
    if not rundir.has_data(run_dir):
        return
    stored, _ = rundir.read_data(run_dir)
    diff = rundir.data_differences(stored, dataset)
    if diff:
        raise DslrecError(f"the dataset loaded to resume {run_dir} ({dataset.name!r}) is not the one the run began "
                          f"with (differs in: {', '.join(diff)}); resume with the same data, or start a new run")


# --- the run directory --------------------------------------------------------------------

def write_run_files(run_dir: Path, cfg: RunConfig, dataset, resumed: bool) -> None:
    """config.yaml and (new runs) the run's training data, before the first epoch."""
    if not resumed:
        rundir.save_data(run_dir, dataset)
    rundir.write_config(run_dir, cfg.to_dict())

