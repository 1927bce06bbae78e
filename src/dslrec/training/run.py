"""``dslrec.train(...)``: one call from settings to a finished run directory and its summary."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dslrec import __version__, distributed
from dslrec.errors import DslrecError, warn
from dslrec.memory import release_freed_memory
from dslrec import rundir
from dslrec.training.budget import Budget
from dslrec.settings import (RunConfig, load_dataset, read_config_file, resolve_delta_t,  # noqa: F401
                             resolve_settings, validate)
from dslrec.training.loop import NonFiniteLoss, PhaseResult, Trainer, peak_rss_mb, pick_device
from dslrec.training.methods import INIT_WEIGHTS, build_phases


def resolve_interval(cfg: RunConfig, steps_per_epoch: int) -> str:
    """Fix ``cfg.delta_t`` in iterations for this run; returns where the value came from."""
    if cfg.delta_t is not None:
        return "set"
    cfg.delta_t = resolve_delta_t(cfg, steps_per_epoch)
    return f"delta_t_epochs {cfg.delta_t_epochs:g} x {steps_per_epoch} steps per epoch"


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(str(cfg.dataset)).name or "data"
    return Path("runs") / f"{stamp}-{cfg.model}-{cfg.method}-{name}"


def eval_sample(cfg: RunConfig, dataset) -> tuple[np.ndarray | None, dict | None]:
    """``--eval_users N``: (the users every evaluation of the run ranks, None for all; what
    summary.json records). One seeded sample (``seed``) for the whole run, validation and test alike."""
    if cfg.eval_users is None:
        return None, None
    from dslrec.evaluate.ranking import eval_users, sample_users

    users, pool = sample_users(dataset, cfg.eval_users, cfg.seed, cfg.cold_users)
    info = {"requested": cfg.eval_users, "sampled": users is not None, "seed": cfg.seed, "of": pool,
            "users": pool if users is None else len(users)}
    for split in ("valid", "test"):  # the sampled users that have items in each split
        info[split] = len(eval_users(dataset, split, users, cfg.cold_users))
        if info[split] == 0 and users is not None:
            raise DslrecError(f"--eval_users {cfg.eval_users} samples no user with {split} items (of {pool:,} users "
                              f"evaluated); raise --eval_users")
    return users, info


def rank_shared(scorer, dataset, split: str, cfg: RunConfig, users: np.ndarray | None = None,
                device: str | torch.device = "cpu"):
    """Per-user full-ranking results (``UserMetrics``) over ``users`` (default all). A distributed run
    splits the users into contiguous shares, one per rank, and gathers the per-user values in their
    order: averaged by ``UserMetrics.summary`` as one process would, the metrics are those of one
    process. Every rank gets the whole result."""
    from dslrec.evaluate import evaluate
    from dslrec.evaluate.ranking import eval_users, join_user_metrics

    group = distributed.current()
    ranked = lambda who: evaluate(scorer, dataset, split=split, ks=tuple(cfg.ks),  # noqa: E731
                                  batch_size=cfg.eval_batch_size, device=device, users=who, per_user=True,
                                  cold_users=cfg.cold_users)[1]
    if group is None or group.world == 1:
        return ranked(users)
    everyone = eval_users(dataset, split, users, cfg.cold_users)
    if len(everyone) == 0:
        return ranked(everyone)  # the single-process error, on every rank
    start, stop = distributed.shard(len(everyone), group.rank, group.world)
    mine = ranked(everyone[start:stop]) if stop > start else None
    return join_user_metrics([part for part in distributed.gather_objects(group, mine) if part is not None])


def make_evaluator(cfg: RunConfig, dataset, sample: np.ndarray | None = None):
    """``evaluate(model, split)`` -> metrics over the users of ``sample`` (default all; see ``eval_sample``);
    leave-one-out data adds the sampled 1-in-101 protocol. Distributed: the users are shared out over
    the ranks (``rank_shared``), every rank calls it."""
    from dslrec.evaluate.sampled import sampled_evaluate, sampled_negatives

    # the same sampled candidates at every evaluation, fixed by the split seed
    negatives = ({s: sampled_negatives(dataset, s, 100, cfg.split_seed, sample) for s in ("valid", "test")}
                 if dataset.protocol == "loo" else {})

    def run(model: torch.nn.Module, split: str, per_user: bool = False):
        device = next(model.parameters()).device
        release_freed_memory()  # what training freed goes back first: evaluation's blocks come on top
        model.eval()
        with torch.no_grad():
            scorer = model.scorer()
            release_freed_memory()  # the scorer's build transients (a compact table made dense, in slices)
            users = rank_shared(scorer, dataset, split, cfg, sample, device)
            metrics = {k: float(v) for k, v in users.summary().items()}
            if split in negatives:
                metrics.update(sampled_evaluate(scorer, dataset, split, ks=tuple(cfg.ks),
                                                negatives=negatives[split], device=device))
        model.train()
        return (metrics, users) if per_user else metrics

    return run


def popularity_metrics(cfg: RunConfig, dataset, users: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Validation and test metrics of ranking by training popularity, the reference a model must beat."""
    from dslrec.models.popularity import Popularity

    scorer = Popularity.from_dataset(dataset).scorer()
    # the same users as the model's evaluation (cold users dropped or ranked by popularity alike,
    # the --eval_users sample)
    return {split: {k: float(v) for k, v in rank_shared(scorer, dataset, split, cfg, users).summary().items()}
            for split in ("valid", "test")}


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
    if cfg.storage == "compact":
        cost = compact_run_cost(dataset, cfg, run_dir)
    else:
        cost = cost_section(model, dataset, masks, cfg)
    cost["measured"] = {
        "epoch_s": summary["time"]["epoch_s"],
        "eval_s": summary["time"]["eval_s"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "peak_cuda_mb": summary.get("peak_cuda_mb"),
    }
    return cost


# The exact MAC counts build dense masks (numpy, 8 bytes a position); a compact run above this many
# sparsified positions records its parameter counts only, so that counting never costs more memory
# than the training it describes.
COST_DENSE_LIMIT = 20_000_000


def compact_run_cost(dataset, cfg: RunConfig, run_dir: Path) -> dict:
    """``cost`` of a compact run, from its best weights' positions and a backbone built on meta."""
    from dslrec import models
    from dslrec.export.cost import cost_section
    from dslrec.sparse.compact import packed_masks, split_compact_state

    _, packed = split_compact_state(rundir.load_weights(run_dir / rundir.BEST))
    positions = sum(math.prod(p["shape"]) for p in packed.values())
    if positions > COST_DENSE_LIMIT:
        active = sum(int(p["values"].numel()) for p in packed.values())
        return {"parameters": {"sparsified": positions, "sparsified_active": active},
                "macs": {"note": f"not counted: {positions:,} sparsified positions is above the exact count's "
                                 f"limit of {COST_DENSE_LIMIT:,} (it builds dense masks)"}}
    with torch.device("meta"):
        meta = models.build(cfg.model, dataset, **cfg.model_options)
    return cost_section(meta, dataset, packed_masks(packed), cfg)


def train(settings: dict[str, Any] | None = None, *, config_file: str | Path | None = None,
          out: str | Path | None = None, resume: str | Path | None = None, dataset=None,
          progress: bool = True, tensorboard: str | Path | bool | None = None, **overrides) -> dict:
    """Train a model and return its summary (also written to ``RUN_DIR/summary.json``).

    >>> summary = dslrec.train(model="mf", dataset="ml-100k", method="dsl", density=0.2, epochs=20)
    >>> summary["test"]["recall@20"]

    ``dataset`` is a setting like any other (a registered name or a path); a ready
    :class:`dslrec.data.Dataset` is trained on as it is (then ``settings['dataset']``
    is only its label). ``resume`` continues a run from its directory with its
    saved settings: only ``epochs`` (see :func:`check_epochs_change`), ``device``
    and ``eval_batch_size`` may differ, anything else is refused before a file is
    written. A run that fails before its first checkpoint leaves no directory behind.
    ``tensorboard`` (True, or a folder; default ``RUN_DIR/tensorboard``) also logs each epoch's
    scalars for TensorBoard (an optional extra).
    """
    dataset = dataset_argument(dataset, overrides)
    # launched by torchrun: join the process group (every rank runs this function)
    group = distributed.setup(str(overrides.get("device") or (settings or {}).get("device") or "auto"))
    progress = progress and (group is None or group.writer)  # one progress bar: rank 0's
    checkpoint, recorded = None, None
    if resume is not None:
        run_dir = Path(resume)

        def resumed():
            cfg, recorded, checkpoint = resume_settings(run_dir, settings, config_file, out, overrides)
            if group is not None and (run_dir / rundir.BEST).exists():  # the other ranks get rank 0's copy
                checkpoint["best_state"] = rundir.load_weights(run_dir / rundir.BEST)
            return cfg, recorded, checkpoint

        # rank 0 reads the run directory (the others need not see it) and hands the state to every rank
        cfg, recorded, checkpoint = distributed.from_rank0(group, resumed)
        created = False
    else:
        cfg = resolve_settings(settings, config_file, **overrides)

        def new_dir():
            run_dir = Path(out) if out is not None else default_run_dir(cfg)
            if (run_dir / rundir.CHECKPOINT).exists():
                raise DslrecError(f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                                  "or choose another --out")
            return run_dir, not run_dir.exists()

        run_dir, created = distributed.from_rank0(group, new_dir)  # rank 0's clock names the folder
    if group is not None:
        check_distributed(cfg, group)
    on_record = None
    if tensorboard and (group is None or group.writer):
        from dslrec.training.records import tensorboard_logger

        on_record = tensorboard_logger(run_dir / "tensorboard" if tensorboard is True else Path(tensorboard))
    try:
        return _train_in(run_dir, cfg, recorded, checkpoint, dataset, progress, on_record)
    except BaseException as e:
        if created and (group is None or group.writer) and remove_failed_run_dir(run_dir) and \
                isinstance(e, NonFiniteLoss):
            # the loop's message promises a checkpoint that this early failure never wrote
            raise NonFiniteLoss(str(e).replace(f"its last good checkpoint is kept in {run_dir}",
                                               f"nothing was saved ({run_dir} was removed)")) from None
        raise


def _train_in(run_dir: Path, cfg: RunConfig, recorded: RunConfig | None, checkpoint: dict | None, dataset,
              progress: bool, on_record=None) -> dict:
    """The run itself. ``recorded``: a resumed run's settings as its config.yaml keeps them (``cfg``
    less the settings of this session only); None for a new run."""
    group = distributed.current()
    writer = group is None or group.writer  # only rank 0 of a distributed run writes the run directory
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)

    from dslrec import models
    from dslrec.data.sampling import epoch_batches

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if dataset is None:
        dataset = load_dataset(cfg, progress)
    dataset.check_usable(cold_users=cfg.cold_users)
    if checkpoint is not None:
        distributed.from_rank0(group, lambda: check_same_data(run_dir, dataset))
    device = pick_device(cfg.device)
    if group is not None:
        group.backend = "nccl" if device.type == "cuda" else "gloo"
    deferred = None
    if cfg.storage == "compact" and cfg.init != "magnitude":
        # compact storage never builds the dense tables: the engine initialises the active values only
        from dslrec.sparse.deferred import deferred_build

        model, deferred = deferred_build(lambda: models.build(cfg.model, dataset, **cfg.model_options), device)
    else:
        model = models.build(cfg.model, dataset, **cfg.model_options).to(device)
    budget = Budget(model, cfg)
    evaluated, eval_info = eval_sample(cfg, dataset)
    popular = popularity_metrics(cfg, dataset, evaluated)
    trainer = Trainer(cfg, dataset, model, run_dir, progress=progress, sampler=epoch_batches, device=device,
                      evaluator=make_evaluator(cfg, dataset, evaluated), budget=budget,
                      reference=popular["valid"].get(cfg.metric))
    trainer.on_record = on_record
    delta_t_source = resolve_interval(cfg, trainer.steps_per_epoch)
    if recorded is None:
        recorded = cfg
    else:  # a resumed run's config.yaml holds the delta_t it resolved at its start
        recorded.delta_t = cfg.delta_t
    if cfg.method in ("dsl", "gmp"):
        trainer.say(f"delta_t = {cfg.delta_t} iterations ({delta_t_source})")
    if writer:
        write_run_files(run_dir, recorded, dataset, resumed=checkpoint is not None)
    phases = build_phases(cfg, model, run_dir, deferred)
    check_max_steps(cfg, trainer, phases)

    start_phase, phase_resume, previous = 0, None, None
    if checkpoint is not None:
        trainer.records = list(checkpoint["records"])
        trainer.global_epoch = int(checkpoint["global_epoch"])
        budget.load_state_dict(checkpoint["budget"])
        start_phase = int(checkpoint["phase"])
        if checkpoint["phase_done"] and not extends_finished_phase(checkpoint, cfg, phases, trainer):
            start_phase += 1
            finished = phases[start_phase - 1]
            if cfg.storage == "compact" and finished.make_engine is not None:
                # a compact model's state is its values and positions: the finished phase's engine
                # puts the model in that form (no dense tables) before the state is loaded
                finished.make_engine(model, None, trainer.planned_steps(finished)).load_state_dict(
                    checkpoint["engine"])
            model.load_state_dict(checkpoint["model"])
            # the next phase draws on from where the finished one left the generator (dropout, ties in
            # magnitude pruning), as in a run that was never interrupted
            torch.set_rng_state(checkpoint["torch_rng"])
            # the checkpoint's best epoch is the finished phase's (also when that was the last phase)
            best = checkpoint.get("best_state")
            previous = PhaseResult(best if best is not None else rundir.load_weights(run_dir / rundir.BEST),
                                   checkpoint["best_epoch"], dict(checkpoint["best_valid"]), None)
        else:
            phase_resume = checkpoint

    steps_before = budget.steps  # this session's communication is counted from here
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
        "dataset": {**dataset.sizes(), "cold_users_policy": cfg.cold_users},
        "config": recorded.to_dict(),
        "delta_t": {"iterations": cfg.delta_t, "source": delta_t_source},
        "best_epoch": result.best_epoch,
        "epochs_run": trainer.global_epoch,
        "steps_run": budget.steps,
        "steps_per_epoch": trainer.steps_per_epoch,
        "max_steps": cfg.max_steps,
        "valid": result.best_valid,
        "test": test,
        "popularity": popular,
        "eval_users": eval_info,
        "test_groups": group_breakdown(dataset, "test", test_users, cfg.ks),
        "params": budget.summary(result.engine),
        "time": {
            "train_s": train_s,
            "epoch_s": statistics.median(epoch_times) if epoch_times else None,
            "eval_s": eval_s,
        },
        "peak_rss_mb": peak_rss_mb(),
        "tensor_bytes": trainer.tensor_bytes,  # model and optimiser state at the end of training
        "storage": cfg.storage,
        "device": str(device),
        "world_size": 1 if group is None else group.world,
        "backend": None if group is None else group.backend,
        "dslrec_version": __version__,
        "run_dir": str(run_dir),
    }
    if group is not None:
        summary["communication"] = communication(group, budget.steps - steps_before)
    if device.type == "cuda":
        summary["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    def finish() -> dict:  # from the run directory: rank 0's part (it hands the summary to every rank)
        summary["cost"] = run_cost(model, dataset, cfg, run_dir, summary)
        if not rundir.has_data(run_dir):  # a run begun by an older dslrec: keep the data it finished on
            rundir.save_data(run_dir, dataset)
        best, reference = (result.best_valid or {}).get(cfg.metric), popular["valid"].get(cfg.metric)
        if best is not None and reference is not None and best <= reference:
            warn(f"the model's best validation {cfg.metric} ({best:.4f}) does not beat ranking by popularity "
                 f"({reference:.4f}); train for more --epochs or raise --lr")
        rundir.write_json(run_dir / rundir.SUMMARY, summary)
        return summary

    return distributed.from_rank0(group, finish)


# --- several processes --------------------------------------------------------------------

def check_distributed(cfg: RunConfig, group) -> None:
    """What a distributed run cannot do, refused in one line before anything is written."""
    if cfg.method == "lth":
        raise DslrecError("--method lth rewinds to initial weights kept in a file of the run directory, which only "
                          "rank 0 writes; train it on one process")
    if cfg.optimizer == "sparse_adam":
        raise DslrecError("--optimizer sparse_adam makes sparse gradients, which distributed training does not "
                          "average; use --optimizer adam (or train on one process)")


def communication(group, steps: int) -> dict:
    """summary.json's ``communication``: the bytes this rank handed to collectives in this session, in
    all and per optimiser step (every rank sends the same amounts)."""
    sent = dict(group.sent)
    per_step = {k: v / max(steps, 1) for k, v in sent.items()}
    return {"steps": steps, "bytes": sent, "bytes_per_step": per_step,
            "total_bytes_per_step": sum(per_step.values())}


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

# Settings a resumed run may change. `epochs` is recorded in config.yaml (it changes what is
# trained, see check_epochs_change); the others only affect this session and are not recorded.
SESSION_SETTINGS = ("device", "eval_batch_size")
RESUMABLE_CHANGES = ("epochs", *SESSION_SETTINGS)
SINGLE_PHASE = ("dense", "dsl", "static", "gmp", "pep")


def _flat(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    options = d.pop("model_options")
    return {**d, **options}


def resume_settings(run_dir: Path, settings: dict | None, config_file, out,
                    overrides: dict[str, Any]) -> tuple[RunConfig, RunConfig, dict]:
    """(settings of this session, settings config.yaml records, checkpoint) of a resumed run.

    Everything that would make the resumed run differ from its config.yaml is refused here,
    before a file is written: settings other than ``RESUMABLE_CHANGES`` that differ from the
    saved ones (``--config`` files count as given settings), another ``--out``, and epochs
    changes that ``check_epochs_change`` cannot make exact.
    """
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise DslrecError(f"--out {out} cannot be used with --resume {run_dir}: a resumed run stays in its own "
                          "directory; drop --out (or copy the run directory first and resume the copy)")
    checkpoint = rundir.load_checkpoint(run_dir)
    saved_file = run_dir / rundir.CONFIG
    if not saved_file.is_file():
        raise DslrecError(f"{run_dir} has no {rundir.CONFIG}, so its settings are unknown; it cannot be resumed, "
                          "start a new run")
    saved = resolve_settings(config_file=saved_file)
    asked: dict[str, Any] = {}
    if config_file is not None:
        asked.update(read_config_file(config_file))
    asked.update(settings or {})
    asked.update(overrides)
    asked = {k.replace("-", "_"): v for k, v in asked.items() if v is not None}
    if "model" in asked and str(asked["model"]) != saved.model:
        # another backbone may not even accept the saved model options: refuse it first
        _refuse_changes(run_dir, {"model": (saved.model, asked["model"])})
    cfg = resolve_settings(asked, saved_file)
    old, new = _flat(saved), _flat(cfg)
    _refuse_changes(run_dir, {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                              if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES})
    check_epochs_change(run_dir, saved, cfg.epochs, checkpoint)
    recorded = dataclasses.replace(saved, epochs=cfg.epochs)
    validate(recorded)
    return cfg, recorded, checkpoint


def _refuse_changes(run_dir: Path, refused: dict[str, tuple[Any, Any]]) -> None:
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in refused.items())
        raise DslrecError(f"--resume {run_dir} continues the run with the settings in its {rundir.CONFIG}; "
                          f"refusing to change {listed} (only {', '.join(RESUMABLE_CHANGES)} may change on resume; "
                          "start a new run with --out for other settings)")


def check_epochs_change(run_dir: Path, saved: RunConfig, epochs: int, checkpoint: dict) -> None:
    """Refuse an ``epochs`` change on resume unless the resumed run is exactly the run a fresh
    start with the new ``epochs`` would have been (same seed, CPU), so that config.yaml always
    describes what was trained.

    That needs one phase (the phases of oneshot and lth are built from ``epochs``), no epoch
    trained beyond the new count, and nothing so far that depended on the total number of
    steps: a cosine learning rate, DSL's cosine/linear update ratio or ``explore_until``, GMP's
    ramp and PEP's deadline all do; so does an evaluation forced at the old last epoch off the
    ``eval_every`` grid, or a DSL mask update skipped because its step was the old last one. An
    early-stopped run extended stays as it is: a longer fresh run stops at the same epoch.
    """
    if epochs == saved.epochs:
        return
    change = f"--epochs {epochs} on resume (the run was set to {saved.epochs})"
    if saved.method not in SINGLE_PHASE:
        raise DslrecError(f"{change} is refused for a {saved.method} run: its phases are built from epochs; "
                          f"start a new run with --epochs {epochs}")
    done = int(checkpoint["global_epoch"])
    if epochs < done:
        raise DslrecError(f"{change} is refused: {run_dir} has already trained {done} epochs; "
                          f"pass --epochs {done} or more, or start a new run")
    reasons = []
    if saved.max_steps is not None and int(checkpoint["budget"]["steps"]) >= saved.max_steps:
        reasons.append(f"it has trained its max_steps ({saved.max_steps} steps), and max_steps cannot change "
                       "on resume")
    if saved.lr_schedule != "constant":
        reasons.append(f"the {saved.lr_schedule} learning rate spans the total steps")
    if saved.method == "dsl" and saved.schedule != "constant":
        reasons.append(f"DSL's {saved.schedule} update ratio spans the total steps")
    if saved.method == "dsl" and saved.explore_until < 1.0:
        reasons.append("explore_until is a fraction of the total steps")
    if saved.method in ("gmp", "pep"):
        reasons.append(f"{saved.method}'s pruning schedule spans the total steps")
    stopped = saved.patience > 0 and int(checkpoint["bad_evals"]) >= saved.patience
    if not checkpoint["phase_done"] and epochs == done and done % saved.eval_every:
        reasons.append(f"its epoch {done}, the last one now, was not evaluated (eval_every={saved.eval_every})")
    if checkpoint["phase_done"] and not stopped:  # it ran to its last epoch
        if done % saved.eval_every:
            reasons.append(f"its last epoch ({done}) was evaluated off the eval_every={saved.eval_every} grid")
        step = int(checkpoint.get("engine", {}).get("step", 0))
        if saved.method == "dsl" and step % saved.delta_t == 0:
            reasons.append(f"the mask update due at its last step ({step}) was skipped")
    if reasons:
        raise DslrecError(f"{change} is refused: the result would not be that of a run trained for {epochs} epochs "
                          f"({'; '.join(reasons)}); start a new run with --epochs {epochs}")


def extends_finished_phase(checkpoint: dict, cfg: RunConfig, phases: list, trainer) -> bool:
    """A run whose single phase ran to its last epoch and was given more epochs trains on."""
    stopped = cfg.patience > 0 and int(checkpoint["bad_evals"]) >= cfg.patience
    if len(phases) != 1 or stopped:
        return False
    planned_epochs = -(-trainer.planned_steps(phases[int(checkpoint["phase"])]) // trainer.steps_per_epoch)
    return int(checkpoint["epoch"]) < planned_epochs


def check_max_steps(cfg: RunConfig, trainer, phases: list) -> None:
    """Say when ``max_steps`` cuts the run, and warn when DSL's or GMP's interval then leaves no
    mask update (delta_t follows the epoch, which --max_steps may cut to fewer steps than it)."""
    if cfg.max_steps is None:
        return
    cut = [p for p in phases if trainer.planned_steps(p) < p.epochs * trainer.steps_per_epoch]
    if not cut:
        return
    planned = trainer.planned_steps(cut[0])
    per = " per phase" if len(phases) > 1 else ""
    trainer.say(f"max_steps = {cfg.max_steps}{per}: training stops after {planned} steps "
                f"({planned / trainer.steps_per_epoch:.2f} epochs of {trainer.steps_per_epoch} steps)")
    if cfg.method in ("dsl", "gmp") and cfg.delta_t >= planned * (cfg.explore_until if cfg.method == "dsl" else 1):
        warn(f"delta_t = {cfg.delta_t} iterations is not below the {planned} steps --max_steps {cfg.max_steps} "
             f"leaves, so {cfg.method} never updates its mask; pass a smaller --delta-t "
             f"(e.g. {max(1, planned // 10)}) or --delta_t_epochs")


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

def write_run_files(run_dir: Path, recorded: RunConfig, dataset, resumed: bool) -> None:
    """config.yaml and the run's training data, before the first epoch. A resumed run rewrites
    its config only when it changed (more epochs), so a refused or failed resume changes nothing."""
    if not resumed:
        rundir.save_data(run_dir, dataset)
    path = run_dir / rundir.CONFIG
    if resumed and resolve_settings(config_file=path) == recorded:
        return
    rundir.write_config(run_dir, recorded.to_dict())


# what a run writes before its first checkpoint (and nothing else) is removed when it fails
EARLY_FILES = (rundir.CONFIG, rundir.DATA, rundir.DATA_INFO, rundir.BEST, rundir.BEST_MASKS, rundir.LOG,
               INIT_WEIGHTS)


def remove_failed_run_dir(run_dir: Path) -> bool:
    """Remove the directory of a run that failed before its first checkpoint (the caller created
    it): the files the run wrote, then the folder if nothing else is in it. True if removed."""
    if (run_dir / rundir.CHECKPOINT).exists() or not run_dir.is_dir():
        return False
    for name in EARLY_FILES:
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it: leave it
        return False
    return True
