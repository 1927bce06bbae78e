"""Epoch time of LightGCN and MF on Gowalla, dense against DSL, on one device (a GPU if there is one).

    DSLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_device_epoch.py [--device cuda] [--steps 200]

LightGCN at the paper's settings (dim 64, 3 layers, batch 1024) and MF (dim 64,
batch 2048), each dense, DSL at density 0.5 with the paper's defaults, and DSL
at 0.5 with ``--scope per_row --grow accumulated`` (``dsl-row-accum``); fused
Adam as in dslrec's training loop. ``--steps`` steps are timed after a warm-up
and extrapolated to an epoch (``dsl-row-accum`` accumulates the gradient on
every one of them); then one mask update is timed on its own, since how often
it comes is ``delta_t``'s choice. On CUDA the clock waits for the device.
After the update, every sparse run is checked on the device itself: exactly
``round(0.5 * numel)`` active weights (per row for ``per_row``), and inactive
weights and Adam's moments exactly zero.
Prints a table (ratio to dense in the same run) and writes
``benchmarks/results/device_epoch_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"lightgcn": 1024, "mf": 2048}  # backbone: batch size
RUNS = {
    "dense": None,
    "dsl 0.5": dict(method="dsl", density=0.5),
    "dsl-row-accum 0.5": dict(method="dsl", density=0.5, scope="per_row", grow="accumulated"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_sparse(engine, density: float) -> str:
    """'ok' or what is wrong: exact active counts, inactive weights and optimiser state exactly zero."""
    from dslrec.sparse.masks import budget

    for name, p in engine.params.items():
        mask = engine.storage.masks[name]
        if engine.cfg.scope == "per_row":
            rows = mask.reshape(mask.shape[0], -1)
            want = budget(rows.shape[1], density)
            if not bool((rows.sum(dim=1) == want).all()):
                return f"{name}: a row does not hold {want} active weights"
        elif int(mask.sum()) != budget(mask.numel(), density):
            return f"{name}: {int(mask.sum())} active, expected {budget(mask.numel(), density)}"
        for t in [p.detach(), *engine.storage.state_tensors(name)]:
            if bool(t[~mask].ne(0).any()):
                return f"{name}: an inactive weight or its optimiser state is non-zero"
    return "ok"


def time_run(backbone: str, dataset, extra: dict | None, device: torch.device, steps: int, seed: int = 0):
    from dslrec import models
    from dslrec.data.sampling import epoch_batches
    from dslrec.sparse import SparseConfig, SparseEngine

    batches = list(epoch_batches(dataset, "pairwise", SETTINGS[backbone], np.random.default_rng(seed)))
    per_epoch = len(batches)
    warm, timed = 5, min(steps, per_epoch - 5)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches[: warm + timed]]
    torch.manual_seed(seed)
    model = models.build(backbone, dataset).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    engine = None
    if extra is not None:
        # no update due during the steps (it is timed apart), accumulation on every step
        cfg = SparseConfig(delta_t=10**6, accumulate_steps=10**6, **extra)
        engine = SparseEngine(model, opt, cfg, total_steps=10**7, seed=seed)
    step = engine.step if engine is not None else opt.step
    model.train()
    for i, b in enumerate(batches):
        if i == warm:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(b).backward()
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / timed * per_epoch
    update_s, status = None, "-"
    if engine is not None:  # the largest update ratio, on the last batch's gradient
        t0 = time.perf_counter()
        engine._grads.clear()
        engine.policy.update(engine)  # one DSL update, as the engine makes it at an update step
        sync(device)
        update_s = time.perf_counter() - t0
        status = check_sparse(engine, extra["density"])
    return seconds, per_epoch, timed, update_s, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200, help="steps timed per run (then extrapolated)")
    parser.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's default)")
    parser.add_argument("--backbones", default="lightgcn,mf")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    from dslrec.data import load

    device = torch.device(args.device)
    dataset = load("gowalla", download=False, progress=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"Gowalla, {dataset.train.nnz:,} training interactions; device {device} ({name}); torch {torch.__version__}")
    print(f"{'backbone':<10}{'run':<20}{'epoch s':>10}{'vs dense':>10}{'steps timed':>13}{'update ms':>11}  check")
    rows = []
    for backbone in args.backbones.split(","):
        dense_s = None
        for run, extra in RUNS.items():
            seconds, per_epoch, timed, update_s, status = time_run(backbone, dataset, extra, device, args.steps)
            dense_s = seconds if extra is None else dense_s
            rows.append(dict(backbone=backbone, run=run, epoch_s=seconds, vs_dense=seconds / dense_s,
                             steps_per_epoch=per_epoch, steps_timed=timed, update_s=update_s, check=status))
            update = f"{update_s * 1e3:.0f}" if update_s is not None else "-"
            print(f"{backbone:<10}{run:<20}{seconds:>10.2f}{seconds / dense_s:>9.2f}x{timed:>13}{update:>11}  {status}",
                  flush=True)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"device_epoch_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump({"device": str(device), "device_name": name, "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    os.replace(f.name, out)
    print(f"wrote {out}")
    return 0 if all(r["check"] in ("ok", "-") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
