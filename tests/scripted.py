"""Runs whose metrics are scripted per epoch, for tests of what the training loop does with them.

``scripted_run`` trains for real (so phases, engines, checkpoints and the run directory are the real
ones) but replaces the evaluator: every evaluation returns the scripted value of the epoch whose
weights it is shown, recognised by a hash of the model's state taken at the end of every epoch. A
run then selects the epoch the validation script prefers only if it selects on validation, and
reports the test value of that epoch only if it evaluates that epoch's weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import dslrec
from dslrec import rundir


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / rundir.LOG).read_text().splitlines()]


def fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def scripted_run(monkeypatch, dataset, out: Path, valid: list[float], test: list[float] | None = None,
                 popularity: float = 0.0, **settings):
    """Train on ``dataset`` with ``settings`` (MF, dim 8, batch 1024, no early stopping unless given);
    evaluating the weights at the end of epoch ``e + 1`` gives ``valid[e]`` or ``test[e]`` for every
    metric (``test`` defaults to zeros); ranking by popularity scores ``popularity``. Returns
    ``(summary, calls)``, ``calls`` being the evaluations made, as ``(split, epoch)``."""
    import dslrec.training.run as run_module
    from dslrec.training.loop import Trainer

    test = test if test is not None else [0.0] * len(valid)
    epoch_of: dict[str, int] = {}
    calls: list[tuple[str, int]] = []
    real_epoch = Trainer.train_epoch

    def train_epoch(self, *args, **kwargs):
        loss = real_epoch(self, *args, **kwargs)
        epoch_of[fingerprint(self.model)] = self.global_epoch  # epochs finished before this one
        return loss

    def scripted_evaluator(cfg, data, sample=None):
        def evaluate_(model, split, per_user=False):
            e = epoch_of[fingerprint(model)]
            calls.append((split, e + 1))
            value = (valid if split == "valid" else test)[e]
            metrics = {f"{name}@{k}": value for name in ("recall", "ndcg") for k in cfg.ks}
            return (metrics, None) if per_user else metrics
        return evaluate_

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(run_module, "make_evaluator", scripted_evaluator)
    monkeypatch.setattr(run_module, "popularity_metrics",
                        lambda cfg, ds, users=None: {s: {cfg.metric: popularity} for s in ("valid", "test")})
    monkeypatch.setattr(run_module, "group_breakdown", lambda *a, **k: {})
    settings = dict(dict(model="mf", dim=8, batch_size=1024, patience=0), **settings)
    summary = dslrec.train(settings, dataset=dataset, out=out, progress=False)
    return summary, calls
