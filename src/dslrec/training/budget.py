"""The parameter budget of a run over its whole life.

``active`` counts every weight the model really needs: all dense (not
sparsified) parameters plus the active weights of the sparsified ones. It is
observed at the start of every phase and at the end of every epoch; ``peak``
is the largest observation and ``mean`` the average over training steps,
taking each epoch's count as the mean of its start and end (exact when the
count is constant within an epoch, linear in between when it falls). A method that trains dense first (gradual magnitude
pruning, one-shot pruning, the lottery ticket, PEP before it reaches its
target) therefore shows a higher peak and mean than DSL at the same final
density.
"""

from __future__ import annotations

import torch

from dslrec.settings import RunConfig


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Budget:
    def __init__(self, model: torch.nn.Module, cfg: RunConfig):
        from dslrec.sparse import sparsifiable_parameters

        self.total = count_parameters(model)
        self.sparsifiable = sum(p.numel() for _, p in sparsifiable_parameters(model, cfg.include, cfg.exclude))
        self.target_active = self.total - self.sparsifiable + round(cfg.density * self.sparsifiable)
        self.peak = 0
        self.weighted_sum = 0.0
        self.steps = 0
        self.last_active = self.total

    def active_now(self, model: torch.nn.Module, engine) -> int:
        if engine is None:
            return self.total
        return self.total - self.sparsifiable + int(engine.active_count())

    def observe(self, model: torch.nn.Module, engine, steps: int) -> None:
        active = self.active_now(model, engine)
        before = self.last_active if steps else active
        self.last_active = active
        self.peak = max(self.peak, active)
        self.weighted_sum += (before + active) / 2 * steps
        self.steps += steps

    def summary(self, engine) -> dict:
        return {
            "total": self.total,
            "sparsifiable": self.sparsifiable,
            "active": self.last_active,
            "density": (self.last_active - (self.total - self.sparsifiable)) / max(self.sparsifiable, 1),
            "peak_active": self.peak,
            "mean_active": self.weighted_sum / self.steps if self.steps else float(self.last_active),
        }

    def state_dict(self) -> dict:
        return {"peak": self.peak, "weighted_sum": self.weighted_sum, "steps": self.steps,
                "last_active": self.last_active}

    def load_state_dict(self, state: dict) -> None:
        self.peak = int(state["peak"])
        self.weighted_sum = float(state["weighted_sum"])
        self.steps = int(state["steps"])
        self.last_active = int(state["last_active"])
