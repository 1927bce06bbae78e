"""How each ``--method`` maps onto phases of training.

    dense    one dense phase
    dsl      one phase, sparse from the first step, prune-and-grow (the method)
    static   one phase, a random mask frozen from the first step (SST)
    gmp      one phase, dense at first, gradual magnitude pruning to the density
    pep      one phase, learnable soft thresholds on the embeddings, mask frozen at the density
    oneshot  dense training, then magnitude pruning of its best weights and fine-tuning
    lth      dense training, then ``lth_rounds`` rounds of: prune to density**(r/R) by magnitude,
             rewind to the initial weights, retrain with the mask frozen (lottery ticket)
"""

from __future__ import annotations

from pathlib import Path

import torch

from dslrec import rundir
from dslrec.settings import RunConfig
from dslrec.training.loop import Phase

INIT_WEIGHTS = "init.safetensors"


def sparse_config(cfg: RunConfig, method: str):
    from dslrec.sparse.config import SparseConfig

    return SparseConfig.from_settings(cfg, method=method)


def engine_factory(cfg: RunConfig, method: str, masks_from=None, deferred=None):
    """A ``make_engine(model, optimizer, total_steps)`` for a phase; ``masks_from()`` gives fixed masks;
    ``deferred``: the model is on the meta device and the engine initialises it (compact storage)."""
    from dslrec import distributed
    from dslrec.sparse import SparseEngine

    def make(model, optimizer, total_steps):
        masks = masks_from() if masks_from is not None else None
        # every rank of a distributed run seeds its engine alike: the same initial masks and tie draws
        return SparseEngine(model, optimizer, sparse_config(cfg, method), total_steps=total_steps,
                            seed=cfg.seed, masks=masks, deferred=deferred, dist=distributed.current())

    return make


def build_phases(cfg: RunConfig, model: torch.nn.Module, run_dir: Path, deferred=None) -> list[Phase]:
    from dslrec.sparse import magnitude_masks, sparsifiable_parameters

    method = cfg.method
    if method == "dense":
        return [Phase("dense", cfg.epochs, None)]
    if method in ("dsl", "static", "gmp", "pep"):
        return [Phase(method, cfg.epochs, engine_factory(cfg, method, deferred=deferred))]

    def pruned_masks(phase: Phase, density: float):
        """Masks keeping the largest-magnitude weights of the previous phase's best model."""
        def masks():
            params = dict(sparsifiable_parameters(model, cfg.include, cfg.exclude))
            return magnitude_masks(params, density, cfg.scope)
        return masks

    def load_previous_best(phase: Phase):
        def prepare():
            model.load_state_dict(phase.previous.best_state)
        return prepare

    if method == "oneshot":
        tune = Phase("finetune", cfg.finetune_epochs or cfg.epochs, None)
        tune.make_engine = engine_factory(cfg, "static", pruned_masks(tune, cfg.density))
        tune.prepare = load_previous_best(tune)
        return [Phase("dense", cfg.epochs, None), tune]

    if method == "lth":
        init_path = run_dir / INIT_WEIGHTS

        def save_init():
            rundir.save_weights(init_path, model.state_dict())

        phases = [Phase("dense", cfg.epochs, None, prepare=save_init)]
        for r in range(1, cfg.lth_rounds + 1):
            phase = Phase(f"lth-{r}", cfg.epochs, None)
            density = cfg.density ** (r / cfg.lth_rounds)
            keep = pruned_masks(phase, density)

            def prepare(phase=phase, keep=keep):
                # masks come from the previous round's best weights, then weights rewind to init
                model.load_state_dict(phase.previous.best_state)
                phase.fixed_masks = keep()
                model.load_state_dict(rundir.load_weights(init_path))

            phase.prepare = prepare
            phase.make_engine = engine_factory(cfg, "static", lambda phase=phase: getattr(phase, "fixed_masks", None))
            phases.append(phase)
        return phases
    raise AssertionError(method)
