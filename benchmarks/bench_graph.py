"""Time LightGCN's graph on Gowalla: building D^-1/2 A D^-1/2 and propagating over it.

Usage: python benchmarks/bench_graph.py [--data DIR] [--repeats N]

Reads Gowalla's LightGCN-format train.txt (through ``dslrec.data.load`` when
that exists, else a minimal parse here), builds the normalised adjacency in
CSR and COO layouts, and times 3-layer propagation at dim 64: forward only,
and forward + backward with the symmetric backward dslrec uses against
autograd's own. Prints a table; writes benchmarks/results/graph.json.
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
import scipy.sparse as sp
import torch

from dslrec.errors import DslrecError
from dslrec.models.graph import normalized_adjacency_scipy, propagate, to_torch_sparse

ROOT = Path(__file__).resolve().parents[1]
DIM, LAYERS = 64, 3


def load_train(data_dir: Path) -> sp.csr_matrix:
    """Gowalla's training matrix (users x items)."""
    try:
        from dslrec.data import load  # the library's reader, once it exists
    except ImportError:
        load = None
    if load is not None:
        try:
            return load("gowalla").train
        except DslrecError as e:
            print(f"dslrec.data.load('gowalla') failed ({e}); parsing the file directly")
    users, items = [], []
    with open(data_dir / "gowalla" / "train.txt") as f:
        for line in f:  # one line per user; numpy does the per-item work
            ids = np.array(line.split(), dtype=np.int64)
            if len(ids) > 1:
                users.append(np.full(len(ids) - 1, ids[0]))
                items.append(ids[1:])
    u, i = np.concatenate(users), np.concatenate(items)
    shape = (int(u.max()) + 1, int(i.max()) + 1)
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def propagate_autograd(adj: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The same propagation through torch.sparse.mm's own backward (for comparison)."""
    out = layer = emb
    for _ in range(LAYERS):
        layer = torch.sparse.mm(adj, layer)
        out = out + layer
    return out / (LAYERS + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    train = load_train(args.data)
    rows = []

    def row(what: str, seconds: float) -> None:
        rows.append({"what": what, "seconds": round(seconds, 4)})

    row("build D^-1/2 A D^-1/2 (scipy CSR)", timed(lambda: normalized_adjacency_scipy(train), args.repeats))
    adj_sp = normalized_adjacency_scipy(train)
    graphs = {}
    for layout in ("csr", "coo"):
        row(f"build, to torch {layout.upper()} (total)", timed(
            lambda: to_torch_sparse(normalized_adjacency_scipy(train), layout), args.repeats))
        graphs[layout] = to_torch_sparse(adj_sp, layout)

    torch.manual_seed(0)
    emb = (torch.randn(adj_sp.shape[0], DIM) * 0.1).requires_grad_()
    for layout, adj in graphs.items():
        with torch.no_grad():
            row(f"propagate {LAYERS} layers fwd ({layout.upper()})",
                timed(lambda: propagate(adj, emb, LAYERS), args.repeats))
        row(f"propagate fwd+bwd, symmetric backward ({layout.upper()})",
            timed(lambda: propagate(adj, emb, LAYERS).pow(2).sum().backward(), args.repeats))
        row(f"propagate fwd+bwd, autograd backward ({layout.upper()})",
            timed(lambda: propagate_autograd(adj, emb).pow(2).sum().backward(), args.repeats))

    info = {
        "dataset": "gowalla",
        "users": train.shape[0],
        "items": train.shape[1],
        "interactions": int(train.nnz),
        "graph_nodes": adj_sp.shape[0],
        "graph_nnz": int(adj_sp.nnz),
        "dim": DIM,
        "layers": LAYERS,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "timings": rows,
    }
    width = max(len(r["what"]) for r in rows)
    print(f"gowalla: {info['users']} users, {info['items']} items, {info['interactions']} edges; "
          f"graph {info['graph_nodes']} nodes, {info['graph_nnz']} stored; dim {DIM}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'step':<{width}}  seconds")
    for r in rows:
        print(f"{r['what']:<{width}}  {r['seconds']:.4f}")

    out = ROOT / "benchmarks" / "results" / "graph.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
