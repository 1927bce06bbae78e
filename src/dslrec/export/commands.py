"""``dslrec export`` (run directory -> compact model file) and ``dslrec recommend`` (top-k from it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dslrec.errors import DslrecError


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's best model as one compact file (active weights only)",
        description="Export RUN_DIR's best weights: sparse tensors as CSR of their active weights, "
                    "with raw ids, metrics and (by default) the training interactions.",
        epilog="example: dslrec export runs/mf-dsl --out model.dslrec --dtype float16",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by dslrec train")
    p.add_argument("--out", type=_out_file, help="output file (default RUN_DIR/model.dslrec)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "int8"), default="float32",
                   help="type of the stored weights (default float32; int8: symmetric per row, float32 row scales)")
    p.add_argument("--no-seen", dest="with_seen", action="store_false",
                   help="leave out the training interactions (MF/NeuMF only; then seen items cannot be excluded)")
    p.set_defaults(func=run_export)

    r = sub.add_parser(
        "recommend", help="top-k items for users from a compact model file",
        description="Recommend from a file written by dslrec export.",
        epilog="example: dslrec recommend --model model.dslrec --users 12,40 --k 10",
    )
    r.add_argument("--model", required=True, help="compact model file (dslrec export)")
    r.add_argument("--users", required=True, help="raw user ids, comma-separated")
    r.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    seen = r.add_mutually_exclusive_group()
    seen.add_argument("--exclude-seen", dest="exclude_seen", action="store_true", default=True,
                      help="leave out items the user trained on (default)")
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false")
    r.add_argument("--unknown", choices=("error", "popular"), default="error",
                   help="unknown users: an error (default) or the most popular items")
    r.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads for scoring (default: torch's default, one per core)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=run_recommend)


def _out_file(text: str) -> str:
    """--out is checked while the arguments are parsed, before anything is read or written."""
    from dslrec.fileio import check_out_file

    check_out_file(text, "--out")
    return text


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a positive integer, got {text!r}")
    return n


def _mb(n: int) -> str:
    return f"{n / 2**20:,.2f} MB"


def run_export(args: argparse.Namespace) -> int:
    from dslrec.export.compact import export

    result = export(args.run_dir, args.out, dtype=args.dtype, with_seen=args.with_seen)
    s, dense = result["sizes"], result["dense_bytes"]
    print(f"wrote {result['path']} ({args.dtype})")
    print(f"  weights     {_mb(s['weights']):>12}  ({s['weights'] / dense:.3f}x the dense weights, {_mb(dense)})")
    print(f"  seen items  {_mb(s['seen']):>12}" + ("" if args.with_seen else "  (left out: --no-seen)"))
    print(f"  other       {_mb(s['ids'] + s['popularity'] + s['header']):>12}  (ids, item counts, header)")
    with_items = f"; {s['file'] / (dense + s['seen']):.3f}x with the same seen items" if s["seen"] else ""
    print(f"  file        {_mb(s['file']):>12}  ({s['file'] / dense:.3f}x the dense weights{with_items})")
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    from dslrec.export.recommender import Recommender

    users = [u.strip() for u in args.users.split(",") if u.strip()]
    if not users:
        raise DslrecError("--users is empty; pass raw user ids like 196,186")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    rec = Recommender.load(Path(args.model))
    out = rec.recommend(users, k=args.k, exclude_seen=args.exclude_seen, unknown=args.unknown)
    if args.json:
        print(json.dumps(out.to_records(), indent=2))
        return 0
    print(f"{'user':>12} {'rank':>4} {'item':>16} {'score':>10}")
    for record in out.to_records():
        note = "" if record["known"] else "  (unknown user: popular items)"
        for rank, (item, score) in enumerate(zip(record["items"], record["scores"]), 1):
            print(f"{record['user']!s:>12} {rank:>4} {item!s:>16} {score:>10.4f}{note if rank == 1 else ''}")
    return 0
