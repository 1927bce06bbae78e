"""The training loop: phases of epochs, evaluation, early stopping, checkpoints.

A run is a list of *phases*. Most methods have one; one-shot pruning has two
(dense training, then fine-tuning of the pruned model) and the lottery ticket
has one dense phase plus one per pruning round. Each phase has its own
optimiser, learning-rate schedule and early stopping; the result of a run is
the last phase's best validation epoch. The sparse engine, when there is one,
replaces ``optimizer.step()`` with ``engine.step()``; the loop knows nothing
else about it.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from dslrec import distributed, rundir
from dslrec.errors import DslrecError
from dslrec.memory import peak_rss_mb
from dslrec.progress import progress_bar
from dslrec.settings import RunConfig
from dslrec.training.optim import make_optimizer
from dslrec.training.records import BudgetSpread


def pick_device(name: str) -> torch.device:
    """The device of ``--device``; in a distributed run a GPU is the rank's own (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DslrecError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    group = distributed.current()
    if group is not None and name.startswith("cuda"):
        return torch.device("cuda", group.local_rank)
    return torch.device(name)


def make_lr_schedule(cfg: RunConfig, optimizer, total_steps: int):
    if cfg.lr_schedule == "cosine":
        lr_end = cfg.lr_end if cfg.lr_end is not None else cfg.lr / 100
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=lr_end)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@dataclass
class Phase:
    """``epochs`` of training; ``make_engine(model, optimizer, total_steps)`` or None for dense."""

    name: str
    epochs: int
    make_engine: Callable | None
    prepare: Callable[[], None] | None = None  # runs once before the phase starts (pruning, rewinding)
    previous: "PhaseResult | None" = None  # the result of the phase before, set by the runner


@dataclass
class PhaseResult:
    best_state: dict[str, torch.Tensor] | None
    best_epoch: int | None
    best_valid: dict[str, float]
    engine: Any


class NonFiniteLoss(DslrecError):
    pass


def save_masks(run_dir: Path, engine) -> None:
    """The best epoch's masks beside its weights (an active weight may be exactly zero). Compact
    storage's weights carry their positions: no masks file."""
    path = run_dir / rundir.BEST_MASKS
    if engine is None or engine.cfg.storage == "compact":
        path.unlink(missing_ok=True)
    else:
        rundir.save_weights(path, {k: m.to(torch.uint8) for k, m in engine.masks.items()})


def settled(engine) -> bool:
    """Early stopping counts only once a sparse run's masks have settled (DSL: its update ratio has
    decayed to half its start): while DSL still moves a large share of its weights at every update,
    a validation plateau says little about where the run ends (dslrec's defaults, README)."""
    return engine is None or engine.settled()


def tensor_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes of the model's parameters and buffers and of the optimiser's state (what training keeps)."""
    def nbytes(t: torch.Tensor) -> int:
        if t.layout == torch.sparse_csr:  # LightGCN's graph: what it stores, not its dense size
            return sum(nbytes(p) for p in (t.crow_indices(), t.col_indices(), t.values()))
        if t.layout == torch.sparse_coo:
            return nbytes(t._indices()) + nbytes(t._values())
        return t.numel() * t.element_size()

    def size(tensors) -> int:
        seen, total = set(), 0
        for t in tensors:
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += nbytes(t)
        return total

    state = [v for s in optimizer.state.values() for v in s.values()]
    return {"model": size([*model.parameters(), *model.buffers()]), "optimizer": size(state)}


class Trainer:
    """Runs the phases of one run and keeps its run directory up to date."""

    def __init__(self, cfg: RunConfig, dataset, model, run_dir: Path, *, progress: bool = True,
                 sampler, evaluator, budget, reference: float | None = None, device: torch.device | None = None):
        self.cfg = cfg
        self.dataset = dataset
        self.model = model
        self.run_dir = run_dir
        self.progress = progress
        # (given when the model is still on the meta device: compact storage initialises it in the engine)
        self.device = device if device is not None else next(model.parameters()).device
        self.epoch_batches = sampler  # (dataset, kind, batch_size, rng, **kw) -> iterator of batches
        self.evaluate = evaluator  # (model, split) -> metrics dict
        self.budget = budget  # tracks active-weight counts over the run
        # validation metric of ranking by popularity: early stopping waits until the model beats it
        self.reference = reference
        self.spread = BudgetSpread(dataset)
        self.records: list[dict] = []
        self.on_record = None  # called with each epoch's record once it is logged
        self.global_epoch = 0
        self.tensor_bytes: dict[str, int] = {}
        # a distributed run (torchrun): every rank trains, rank 0 alone writes the run directory
        self.dist = distributed.current()
        self.writer = self.dist is None or self.dist.writer

    # -- one phase ---------------------------------------------------------
    @functools.cached_property
    def steps_per_epoch(self) -> int:
        kind = self.model.sampling
        if kind == "rows":
            n = len(self.dataset.trained_users())
        else:
            n = int(self.dataset.train[self.dataset.trained_users()].nnz)
            if kind == "pointwise":
                n *= 1 + self.cfg.n_neg
        return max(1, math.ceil(n / self.cfg.batch_size))

    def planned_steps(self, phase: Phase) -> int:
        """Optimiser steps the phase plans: its epochs' steps, at most ``max_steps``. The horizon of
        the phase's schedules (DSL's update ratio, GMP, PEP, a cosine lr) is this count."""
        steps = phase.epochs * self.steps_per_epoch
        return steps if self.cfg.max_steps is None else min(steps, self.cfg.max_steps)

    def run_phase(self, index: int, phase: Phase, resume: dict | None) -> PhaseResult:
        cfg, model = self.cfg, self.model
        total_steps = self.planned_steps(phase)
        # epochs the phase trains: --max_steps cuts the last one short (it is then evaluated as the
        # last epoch always is)
        n_epochs = math.ceil(total_steps / self.steps_per_epoch)
        if resume is None and phase.prepare is not None:
            phase.prepare()
        # the engine first: compact storage replaces the model's tensors, the optimiser trains what it left
        engine = phase.make_engine(model, None, total_steps) if phase.make_engine else None
        optimizer = make_optimizer(cfg, model)
        if engine is not None:
            engine.attach(optimizer)
        schedule = make_lr_schedule(cfg, optimizer, total_steps)
        start_epoch, best_metric, best_epoch, bad_evals = 0, -math.inf, None, 0
        # the phase's first eligible validation value; patience counts only once the best value is past
        # it and past the popularity reference
        first_metric = None
        best_valid: dict[str, float] = {}
        best_state = None
        if resume is not None:
            # the engine may have re-parametrised the model (PEP): restore it first
            if engine is not None:
                engine.load_state_dict(resume["engine"])
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["lr_schedule"])
            torch.set_rng_state(resume["torch_rng"])
            start_epoch = int(resume["epoch"])
            best_metric = float(resume["best_metric"])
            best_epoch = resume["best_epoch"]
            bad_evals = int(resume["bad_evals"])
            first_metric = resume.get("first_metric")
            best_valid = dict(resume["best_valid"])
            if best_epoch is not None:  # a distributed run's ranks get rank 0's copy with the checkpoint
                best_state = resume.get("best_state")
                if best_state is None and (self.run_dir / rundir.BEST).exists():
                    best_state = rundir.load_weights(self.run_dir / rundir.BEST)
        else:
            self.budget.observe(model, engine, steps=0)
        # where the budget is before the first step (kept in the phase's first record: the report's "start")
        spread_start = (self.spread(engine.shapes, engine.axis_counts)
                        if engine is not None and resume is None else None)

        parallel = None
        if self.dist is not None:  # after resuming: a resumed phase may train other parameters (PEP
            # frozen, a compact tensor's values resized) and DDP reduces the ones it was built over
            from dslrec.training.parallel import DataParallel

            parallel = DataParallel(model, self.dist, self.device, phase.name)
        best_is_live = False  # best_state refers to the model's own tensors (not yet copied)
        for epoch in range(start_epoch, n_epochs):
            if best_is_live:  # training moves on: keep the best epoch's weights as they are now
                best_state, best_is_live = {k: v.clone() for k, v in best_state.items()}, False
            t0 = time.perf_counter()
            steps = min(self.steps_per_epoch, total_steps - epoch * self.steps_per_epoch)
            loss, steps, examples_by_rank = self.train_epoch(index, epoch, optimizer, schedule, engine, steps,
                                                             parallel)
            train_s = time.perf_counter() - t0
            self.budget.observe(model, engine, steps=steps)
            self.global_epoch += 1
            record: dict[str, Any] = {
                "epoch": self.global_epoch, "phase": phase.name, "loss": loss,
                "lr": optimizer.param_groups[0]["lr"], "train_s": train_s, "steps": steps,
                "active": self.budget.last_active,
            }
            if parallel is not None:  # every rank samples and trains on its own share of each batch
                record["examples_by_rank"] = examples_by_rank
            if engine is not None:
                record["sparse"] = engine.epoch_record()
                record["sparse"]["spread"] = self.spread(engine.shapes, engine.axis_counts)
                if spread_start is not None:
                    record["sparse"]["spread_start"], spread_start = spread_start, None
            eligible = engine is None or getattr(engine, "at_target", lambda: True)()
            last = epoch == n_epochs - 1
            if (epoch + 1) % cfg.eval_every == 0 or last:
                t1 = time.perf_counter()
                valid = self.evaluate(model, "valid")
                record["valid"] = valid
                record["eval_s"] = time.perf_counter() - t1
                value = valid[cfg.metric]
                if eligible and first_metric is None:
                    first_metric = value
                if eligible and value > best_metric:
                    best_metric, best_epoch, bad_evals, best_valid = value, self.global_epoch, 0, valid
                    # copied only if another epoch follows: a last epoch's best costs no model-sized copy
                    best_state = {k: v.detach() for k, v in model.state_dict().items()}
                    best_is_live = True
                    if self.writer:
                        rundir.save_weights(self.run_dir / rundir.BEST, best_state)
                        save_masks(self.run_dir, engine)
                elif eligible and self.learning(best_metric, first_metric) and settled(engine):
                    bad_evals += 1
                self.say(f"epoch {self.global_epoch:4d} [{phase.name}] loss {loss:.4f}  "
                         f"{cfg.metric} {value:.4f}  ({train_s:.1f}s)")
            self.records.append(record)
            if self.on_record is not None and self.writer:  # e.g. TensorBoard (--tensorboard)
                self.on_record(record)
            stop = cfg.patience > 0 and bad_evals >= cfg.patience
            # checkpoint first (it carries the log records too), then the log: a kill between
            # the two never leaves a log line without its checkpoint. Every rank builds the state
            # (the engine's is a collective); rank 0 writes it.
            checkpoint = {
                "phase": index, "epoch": epoch + 1, "global_epoch": self.global_epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                "engine": engine.state_dict() if engine is not None else {},
                "best_metric": best_metric, "best_epoch": best_epoch, "bad_evals": bad_evals,
                "first_metric": first_metric,
                "best_valid": best_valid, "budget": self.budget.state_dict(),
                "phase_done": stop or last, "records": self.records,
            }
            if self.writer:
                rundir.save_checkpoint(self.run_dir, checkpoint)
                rundir.write_log(self.run_dir, self.records)
            del checkpoint
            if stop:
                self.say(f"early stop: no {cfg.metric} improvement in {cfg.patience} evaluations")
                break
        self.tensor_bytes = tensor_bytes(model, optimizer)
        if engine is not None:
            engine.detach()  # the result keeps the engine (its counts), not the optimiser's state
        return PhaseResult(best_state, best_epoch, best_valid, engine)

    def learning(self, best: float, first: float) -> bool:
        """Whether the model has started to learn: its best validation value is above its first and
        above ranking by popularity. Until then early stopping never fires: a model that has not
        started (a small lr on small data, a sparse start) is given its epochs."""
        return best > first and (self.reference is None or best > self.reference)

    def train_epoch(self, phase: int, epoch: int, optimizer, schedule, engine,
                    steps: int | None = None, parallel=None) -> tuple[float, int, list[int] | None]:
        """One epoch of at most ``steps`` optimiser steps (a cut epoch samples only those batches);
        returns (mean loss, steps taken, examples each rank trained on: None on one process). ``parallel`` (a distributed run's ``DataParallel``): each
        rank samples and trains on its own share of every global batch (see ``training/parallel.py``)."""
        cfg, model = self.cfg, self.model
        model.train()
        # one generator per (seed, phase, epoch): a resumed run samples exactly the same batches
        rng = np.random.default_rng([cfg.seed, phase, epoch])
        ranks = {} if parallel is None else dict(rank=self.dist.rank, world=self.dist.world)
        batches = self.epoch_batches(self.dataset, model.sampling, cfg.batch_size, rng,
                                     per_user=cfg.per_user_sampling, n_neg=cfg.n_neg, device=self.device,
                                     max_batches=steps, **ranks)
        weights = None if parallel is None else batches.weights().tolist()
        examples, by_rank = 0, None  # rows this rank trained on (a distributed run records every rank's)
        total = torch.zeros((), device=self.device)
        n = 0
        bar = progress_bar(batches, enabled=self.progress, total=steps or self.steps_per_epoch,
                           desc=f"epoch {self.global_epoch + 1}", leave=False, unit="batch")
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)
            if parallel is None:
                loss = model.loss(batch)
            else:  # this rank's share, weighted so that the ranks average to the global batch's mean loss
                loss = parallel.loss(batch) * weights[n]
                examples += len(batch["users"]) if weights[n] > 0 else 0
            loss.backward()
            if engine is not None:
                engine.step()
            else:
                optimizer.step()
            if parallel is not None:
                parallel.after_step()
            schedule.step()
            total += loss.detach()
            n += 1
            if self.progress and n % 50 == 0:
                bar.set_postfix(loss=f"{total.item() / n:.4f}")
        optimizer.zero_grad(set_to_none=True)  # the last step's gradients are spent: not held through evaluation
        if engine is not None:
            engine.release_buffers()
        if parallel is not None:  # the global batches' mean loss (each rank's share weighted)
            total = distributed.all_sum_(self.dist, total.reshape(1)).reshape(()) / self.dist.world
            by_rank = [c for c, in distributed.all_gather_ints(self.dist, [examples])]
        mean = float(total.item() / max(n, 1))
        if not math.isfinite(mean):
            raise NonFiniteLoss(
                f"the training loss became {mean} in epoch {self.global_epoch + 1}; the run stopped and "
                f"its last good checkpoint is kept in {self.run_dir} (try a lower --lr or stronger --l2)")
        return mean, n, by_rank

    def say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)
