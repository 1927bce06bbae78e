"""Cost of sparse training on MF-sized tables (Gowalla: 29,858 users x 40,981 items, dim 64).

Measures, on this machine's CPU:

* one DSL mask update (prune + grow with the dense gradient of a real batch),
  per-tensor, global and per-row scope, at the largest update ratio (zeta_0 = 0.5);
* the per-step re-masking overhead next to a plain Adam step, for the fast
  path (mask the gradient before the step) and the generic one (re-mask the
  weights and Adam's two moments after it);
* the per-step cost of ``grow="accumulated"`` (one more pass over the tables:
  the gradient is summed into the grow signal every step of the window), as an
  epoch of the ``dsl-row-accum`` setting (per-row, accumulating every step)
  beside the dense and plain sparse ones;
* one MF epoch (BPR, batch 2048) dense and with the engine attached, with
  torch's default Adam and with ``Adam(fused=True)``. (On x86 CPUs the default
  Adam's ``sqrt`` is ~10x slower on exact zeros, which a masked second moment is
  full of, so the default Adam step itself gets ~2x slower on a sparse model;
  the fused kernel has no such penalty and is several times faster anyway.)
  Runs on real Gowalla when ``dslrec.data.load("gowalla")`` finds it (set
  ``DSLREC_DATA_DIR``), else on random triples of the same count.

Prints a table and writes ``benchmarks/results/mask_update.json``.

    DSLREC_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_mask_update.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dslrec.sparse import SparseConfig, SparseEngine

N_USERS, N_ITEMS, N_TRAIN = 29_858, 40_981, 727_869  # Gowalla (LightGCN split)


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class PlainMF(torch.nn.Module):
    """Stand-in MF with BPR when ``dslrec.models`` is unavailable."""

    sampling = "pairwise"

    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        self.user = torch.nn.Embedding(n_users, dim)
        self.item = torch.nn.Embedding(n_items, dim)
        torch.nn.init.normal_(self.user.weight, std=0.1)
        torch.nn.init.normal_(self.item.weight, std=0.1)

    def loss(self, batch):
        u, p, n = self.user(batch["users"]), self.item(batch["pos"]), self.item(batch["neg"])
        diff = (u * p).sum(-1) - (u * n).sum(-1)
        return -torch.nn.functional.logsigmoid(diff).mean() + 1e-4 * (u.square().sum() + p.square().sum()
                                                                     + n.square().sum()) / len(u)


def setup(seed: int):
    """(model factory, list of batches, description of the data)."""
    try:
        from dslrec.data import load
        from dslrec.data.sampling import batches, pairwise_epoch
        from dslrec.models import build

        dataset = load("gowalla", download=False, progress=False)
        arrays = pairwise_epoch(dataset, seed)
        epoch = list(batches(arrays, 2048, rng=None))
        return (lambda: build("mf", dataset)), epoch, f"gowalla (dslrec.data.load), {dataset.train.nnz} train pairs"
    except Exception as e:  # noqa: BLE001 - any failure falls back to synthetic triples of the same size
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rng = np.random.default_rng(seed)
        arrays = {"users": rng.integers(0, N_USERS, N_TRAIN), "pos": rng.integers(0, N_ITEMS, N_TRAIN),
                  "neg": rng.integers(0, N_ITEMS, N_TRAIN)}
        epoch = [{k: torch.from_numpy(v[s:s + 2048]) for k, v in arrays.items()} for s in range(0, N_TRAIN, 2048)]
        return (lambda: PlainMF(N_USERS, N_ITEMS)), epoch, f"synthetic triples, Gowalla sizes ({reason})"


def run_epoch(model, optimizer, engine, epoch) -> float:
    t0 = time.perf_counter()
    for batch in epoch:
        optimizer.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        (engine.step if engine is not None else optimizer.step)()
    return time.perf_counter() - t0


def dsl_update(engine) -> None:
    """One DSL update now, reading the gradient afresh (the engine keeps it for the rest of a step)."""
    engine._grads.clear()
    engine.policy.update(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epoch-batches", type=int, default=0, help="time only this many batches (0 = all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable figures on a shared machine; 0 = torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mask_update.json"))
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    make_model, epoch, data_desc = setup(0)
    if args.epoch_batches:
        n_full = len(epoch)
        epoch = epoch[: args.epoch_batches]
    results: dict = {"data": data_desc, "batches_per_epoch": len(epoch), "density": args.density,
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "machine": platform.processor() or platform.machine()}

    # --- MF epoch: dense and with the engine, interleaved in chunks so that all runs see
    # the same load on a shared machine; no mask update inside (pure per-step cost). Two
    # Adam implementations: torch's default (single-tensor on CPU) and fused=True. ------------------
    runs = {}
    for adam in ("default", "fused"):
        for remask in ("dense", "auto", "full"):
            model = make_model()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=(adam == "fused"))
            engine = None
            if remask != "dense":
                cfg = SparseConfig(method="dsl", density=args.density, delta_t=10**9, remask=remask)
                engine = SparseEngine(model, opt, cfg, total_steps=10**6)
            run_epoch(model, opt, engine, epoch[:5])  # warm-up: optimiser state allocated
            runs[f"{adam}_{remask}"] = [model, opt, engine, 0.0]
    # dsl-row-accum between updates: every step folds the gradient into the grow signal
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    cfg = SparseConfig(method="dsl", density=args.density, scope="per_row", grow="accumulated",
                       delta_t=10**6, accumulate_steps=10**6)
    engine = SparseEngine(model, opt, cfg, total_steps=10**7)
    run_epoch(model, opt, engine, epoch[:5])
    runs["fused_accumulate"] = [model, opt, engine, 0.0]
    in_epoch_updates = []
    for start in range(0, len(epoch), 25):
        for name, run in runs.items():
            run[3] += run_epoch(run[0], run[1], run[2], epoch[start:start + 25])
            if name == "fused_auto":  # a real update, under the same load as the epochs (not counted in them)
                t0 = time.perf_counter()
                dsl_update(run[2])
                in_epoch_updates.append(time.perf_counter() - t0)
    results["mask_update_in_epoch_s"] = statistics.mean(in_epoch_updates)
    scale = n_full / len(epoch) if args.epoch_batches else 1.0
    for name, run in runs.items():
        results[f"epoch_{name}_s"] = run[3] * scale
    epoch_dense = results["epoch_default_dense_s"]
    results["numel"] = numel = sum(p.numel() for p in runs["default_dense"][0].parameters())
    for name in runs:
        results[f"adam_step_{name}_ms"] = timed(runs[name][1].step, args.repeat * 4) * 1e3

    # --- per-step re-masking cost on its own ---------------------------------------------
    engine = runs["default_full"][2]
    results["remask_full_ms"] = timed(engine.storage.apply, args.repeat * 4) * 1e3
    results["remask_fast_ms"] = timed(engine.storage.mask_grads, args.repeat * 4) * 1e3
    acc = runs["fused_accumulate"][2]
    results["accumulate_ms"] = timed(lambda: (acc._grads.clear(), acc._accumulate()), args.repeat * 4) * 1e3
    del runs, engine

    # --- one mask update (largest ratio), both scopes ----------------------------------
    for scope in ("per_tensor", "global", "per_row"):
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        cfg = SparseConfig(method="dsl", density=args.density, scope=scope, delta_t=10**9)
        engine = SparseEngine(model, opt, cfg, total_steps=10**6)
        run_epoch(model, opt, engine, epoch[:3])  # moments exist, gradient of a real batch is in .grad
        results[f"mask_update_{scope}_s"] = timed(lambda engine=engine: dsl_update(engine), args.repeat)
        results["zeta"] = engine.last_zeta

    worst_update = max(results["mask_update_per_tensor_s"], results["mask_update_global_s"])
    results["mask_update_share_of_epoch"] = worst_update / epoch_dense
    results["in_epoch_update_share_fused"] = results["mask_update_in_epoch_s"] / results["epoch_fused_dense_s"]
    for adam in ("default", "fused"):
        base = results[f"epoch_{adam}_dense_s"]
        for remask in ("auto", "full") + (("accumulate",) if adam == "fused" else ()):
            results[f"overhead_{adam}_{remask}"] = results[f"epoch_{adam}_{remask}_s"] / base - 1

    def epoch_row(adam, remask):
        value = results[f"epoch_{adam}_{remask}_s"]
        extra = "" if remask == "dense" else f" ({results[f'overhead_{adam}_{remask}']:+.1%} vs dense)"
        return (f"MF epoch, Adam {adam}, {remask}", f"{value:.2f} s{extra}")

    rows = [
        ("data", data_desc),
        ("sparsified weights", f"{numel:,} (density {args.density}, {results['threads']} thread(s))"),
        ("Adam step default: dense / sparse", f"{results['adam_step_default_dense_ms']:.1f} / "
                                              f"{results['adam_step_default_auto_ms']:.1f} ms"),
        ("Adam step fused: dense / sparse", f"{results['adam_step_fused_dense_ms']:.1f} / "
                                            f"{results['adam_step_fused_auto_ms']:.1f} ms"),
        ("re-mask per step, fast (grad)", f"{results['remask_fast_ms']:.1f} ms"),
        ("re-mask per step, full (w+m+v)", f"{results['remask_full_ms']:.1f} ms"),
        ("grow accumulated, per step", f"{results['accumulate_ms']:.1f} ms"),
        ("mask update, per_tensor", f"{results['mask_update_per_tensor_s'] * 1e3:.0f} ms (zeta {results['zeta']:.3f})"),
        ("mask update, global", f"{results['mask_update_global_s'] * 1e3:.0f} ms"),
        ("mask update, per_row", f"{results['mask_update_per_row_s'] * 1e3:.0f} ms "
                                 f"({results['mask_update_per_row_s'] / results['epoch_fused_dense_s']:.2%} of a fused epoch)"),
        ("mask update, per_tensor, amid the epochs",
         f"{results['mask_update_in_epoch_s'] * 1e3:.0f} ms (mean of {len(in_epoch_updates)})"),
        *[epoch_row(a, r) for a in ("default", "fused") for r in ("dense", "auto", "full")],
        epoch_row("fused", "accumulate"),
        ("mask update / dense epoch (default)", f"{results['mask_update_share_of_epoch']:.2%}"),
        ("mask update / dense epoch (fused)",
         f"{worst_update / results['epoch_fused_dense_s']:.2%} (amid the epochs: "
         f"{results['in_epoch_update_share_fused']:.2%})"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(results, f, indent=2)
    os.replace(f.name, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
