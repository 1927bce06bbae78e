"""One training epoch of MF and LightGCN on Gowalla, against a straightforward baseline.

    .venv/bin/python benchmarks/bench_train_epoch.py [--steps 100] [--threads 2]

MF: a whole epoch of dslrec's loop body (sampling, BPR, fused Adam) at batch 2048.
LightGCN at the paper's settings (dim 64, 3 layers, batch 1024): ``--steps``
steps of dslrec's model, and of a plain implementation (COO adjacency,
``torch.sparse.mm`` with autograd, gather, BPR, the same Adam) on the same batches,
both extrapolated to a full epoch. The memory-bandwidth bound is the bytes the
sparse products must move per step (forward and backward: indices, values,
the gathered rows of the dense operand, the written output) divided by the
copy bandwidth measured in the same process. Prints a table and writes
benchmarks/results/train_epoch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def copy_bandwidth_gbs() -> float:
    x = torch.empty(64 * 2**20, dtype=torch.float32).uniform_()  # 256 MiB
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - t)
    return 2 * x.numel() * 4 / best / 1e9  # read + write


class PlainLightGCN(torch.nn.Module):
    """The textbook implementation: COO graph, torch.sparse.mm and autograd."""

    def __init__(self, adj_coo: torch.Tensor, n_users: int, dim: int = 64, layers: int = 3, l2: float = 1e-4):
        super().__init__()
        self.adj, self.n_users, self.layers, self.l2 = adj_coo, n_users, layers, l2
        self.embedding = torch.nn.Embedding(adj_coo.shape[0], dim)
        torch.nn.init.normal_(self.embedding.weight, std=0.1)

    def loss(self, batch):
        x = self.embedding.weight
        out = [x]
        for _ in range(self.layers):
            x = torch.sparse.mm(self.adj, x)
            out.append(x)
        final = torch.stack(out).mean(0)
        u = final[batch["users"]]
        p = final[self.n_users + batch["pos"]]
        n = final[self.n_users + batch["neg"]]
        bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        e0 = self.embedding.weight
        reg = (e0[batch["users"]].pow(2).sum() + e0[self.n_users + batch["pos"]].pow(2).sum()
               + e0[self.n_users + batch["neg"]].pow(2).sum()) / 2 / len(batch["users"])
        return bpr + self.l2 * reg


def time_steps(model, batches) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as dslrec's training loop
    model.train()
    t = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        model.loss(b).backward()
        opt.step()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="LightGCN steps timed (then extrapolated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_epoch.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DSLREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    from dslrec import models
    from dslrec.data import load
    from dslrec.data.sampling import epoch_batches
    from dslrec.models.graph import normalized_adjacency

    ds = load("gowalla", progress=False)
    rows = []

    # MF, a whole epoch
    torch.manual_seed(0)
    mf = models.build("mf", ds)
    t = time.perf_counter()
    batches = list(epoch_batches(ds, "pairwise", 2048, np.random.default_rng(0)))
    sample_s = time.perf_counter() - t
    mf_s = time_steps(mf, batches)
    rows.append(("MF epoch (batch 2048)", len(batches), sample_s + mf_s, None))

    # LightGCN, paper settings, the first `steps` batches of an epoch
    batches = list(epoch_batches(ds, "pairwise", 1024, np.random.default_rng(0)))
    steps_per_epoch = len(batches)
    timed = batches[: args.steps]
    torch.manual_seed(0)
    ours = models.build("lightgcn", ds)
    ours_s = time_steps(ours, timed) / len(timed) * steps_per_epoch
    adj_coo = normalized_adjacency(ds.train, layout="coo")
    plain = PlainLightGCN(adj_coo, ds.n_users)
    plain_s = time_steps(plain, timed) / len(timed) * steps_per_epoch
    rows.append(("LightGCN epoch, dslrec (extrapolated)", steps_per_epoch, ours_s, plain_s))
    rows.append(("LightGCN epoch, plain torch.sparse.mm", steps_per_epoch, plain_s, plain_s))

    # bandwidth bound of the sparse products of one LightGCN step (3 layers forward + 3 backward)
    nnz, n_nodes, dim = ours.graph.values().numel(), ours.graph.shape[0], 64
    per_spmm = nnz * (8 + 4) + nnz * dim * 4 + n_nodes * dim * 4  # int64 idx + f32 val, gathered rows, output
    bytes_step = 2 * 3 * per_spmm
    bw = copy_bandwidth_gbs()
    bound_epoch = bytes_step / (bw * 1e9) * steps_per_epoch

    print(f"Gowalla: {ds.n_users:,} users, {ds.n_items:,} items, {ds.train.nnz:,} training interactions; "
          f"{args.threads} threads")
    print(f"{'what':<40}{'steps':>8}{'seconds':>10}{'vs plain':>10}")
    for name, steps, sec, base in rows:
        ratio = f"{sec / base:.2f}x" if base else "-"
        print(f"{name:<40}{steps:>8}{sec:>10.1f}{ratio:>10}")
    print(f"sparse products move {bytes_step / 1e9:.2f} GB per step; at the measured copy bandwidth "
          f"{bw:.1f} GB/s that is {bound_epoch:.1f} s per epoch, so dslrec's LightGCN epoch is "
          f"{ours_s / bound_epoch:.1f}x the bandwidth bound of its sparse products")
    result = {"threads": args.threads, "rows": [dict(zip(("what", "steps", "seconds", "plain_seconds"), r)) for r in rows],
              "bandwidth_gbs": bw, "spmm_bytes_per_step": bytes_step, "bandwidth_bound_epoch_s": bound_epoch,
              "lightgcn_steps_timed": len(timed)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
