"""``dslrec data list | info NAME_OR_PATH | get NAME...``."""

from __future__ import annotations

import argparse
import json

import numpy as np

from dslrec.data import InteractionLog, is_synthetic, list_datasets, load, read_log, registry
from dslrec.data.preprocess import METHODS, prepare
from dslrec.data.readers import FORMATS, TEST, TRAIN, VALID, parse_columns, parse_sep


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Aligned plain-text table; columns in ``right`` are right-aligned (numbers)."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _n(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _list(args: argparse.Namespace) -> int:
    rows = [["name", "users", "items", "interactions", "split", "format", "local copy"]]
    rows.append(["synthetic", "2,000", "1,000", "~80,000", "ratio", "embedded", "(generated)"])
    for e in registry.REGISTRY.values():
        split = "train/test files" if e.split is None else f"{e.split} (default)"
        where = registry.locate(e)
        rows.append([e.name, _n(e.users), _n(e.items), _n(e.interactions), split, e.format,
                     str(where) if where else "-"])
    print(_table(rows, right={1, 2, 3}))
    print("\ndata folders searched: " + ", ".join(map(str, registry.data_dirs())))
    return 0


def _item_id_note(item_ids: np.ndarray) -> str | None:
    """When raw item ids are integers that skip values, say how many ids the range has."""
    if len(item_ids) == 0 or not np.char.isdigit(item_ids).all():
        return None
    ids = item_ids.astype(np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo + 1 == len(ids):
        return None
    return (f"raw item ids run {lo:,}..{hi:,} ({hi - lo + 1:,} ids); {len(ids):,} occur and are "
            f"counted as items ({hi - lo + 1 - len(ids):,} never occur)")


def _info(args: argparse.Namespace) -> int:
    opts = dict(split=args.split, seed=args.seed, min_rating=args.min_rating, k_core=args.k_core,
                valid_ratio=args.valid_ratio, test_ratio=args.test_ratio, fold_in=args.fold_in)
    columns, sep = parse_columns(args.columns, "--columns"), parse_sep(args.sep, "--sep")
    if is_synthetic(args.dataset):  # exactly what load() gives, no files
        ds = load("synthetic", columns=columns, sep=sep, **opts)
        log = InteractionLog(users=np.zeros(0), items=np.zeros(0), user_ids=ds.user_ids,
                             item_ids=ds.item_ids, source="synthetic")
    else:
        log, name, default = read_log(args.dataset, fmt=args.format, columns=columns, sep=sep,
                                      download=not args.no_download)
        ds = prepare(log, name=name, **{**opts, "split": args.split or default})
    s = ds.sizes()
    users_in = {sp: int((np.diff(ds.split(sp).indptr) > 0).sum()) for sp in ("train", "valid", "test")}
    files = None
    if log.split is not None:  # counts of the files as read, before filtering and re-splitting
        codes = {"train": TRAIN, "valid": VALID, "test": TEST}
        files = {sp: int((log.split == code).sum()) for sp, code in codes.items()}
    how = ds.source[len(log.source):].lstrip("; ") if ds.source.startswith(log.source) else ""
    how = how or f"per-user random split (seed {args.seed})"  # synthetic_dataset's own split
    if args.json:
        print(json.dumps({**s, "users_with": users_in, "files": files, "source": log.source, "split": how},
                         indent=2))
        return 0
    rows = [["dataset", ds.name],
            ["users", f"{s['users']:,}"],
            ["items", f"{s['items']:,}"],
            ["interactions", f"{s['interactions']:,}  (density {s['density']:.5f})"],
            ["source", log.source]]
    if files is not None:
        parts = [f"{n:,} in {sp}.txt" for sp, n in files.items() if n]
        rows.append(["files", ", ".join(parts)])
    rows.append(["split", f"protocol {ds.protocol}: {how}"])
    note = _item_id_note(ds.item_ids)
    if note:
        rows.append(["note", note])
    print(_table(rows))
    carved = files is not None and files["valid"] == 0 and ds.protocol == "fixed" and s["valid"] > 0
    notes = {"train": "train.txt minus valid", "valid": "carved from train.txt", "test": "test.txt"}
    table = [["split", "interactions", "users", ""]]
    for sp in ("train", "valid", "test"):
        table.append([sp, f"{s[sp]:,}", f"{users_in[sp]:,}", notes[sp] if carved else ""])
    if carved:  # the file's training total, which is what the dataset's papers report as "train"
        table.append(["train+valid", f"{s['train'] + s['valid']:,}", "", "= train.txt"])
    table.append(["total", f"{s['interactions']:,}", "", ""])
    if ds.train_users is not None:
        table.append(["training users", "", f"{int(ds.train_users.sum()):,}", "users whose rows are trained on"])
    print()
    print(_table(table, right={1, 2}))
    cold = [f"cold users ({sp}, no training): {n:,}" for sp, n in s["cold_users"].items() if n]
    if cold:  # users the model cannot rank: left out of evaluation unless --cold-users popular
        print()
        print("\n".join(cold))
    return 0


def _get(args: argparse.Namespace) -> int:
    for name in args.names:
        folder = registry.get(name, progress=not args.quiet)
        print(f"{registry.entry(name).name}: {folder}")
    return 0


def _load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=METHODS, default=None,
                   help="split method (default: the files' own split, else ratio 0.8/0.1/0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of random splits (default 0)")
    p.add_argument("--valid-ratio", type=float, default=0.1, help="validation share (default 0.1)")
    p.add_argument("--test-ratio", type=float, default=0.1, help="test share (default 0.1)")
    p.add_argument("--fold-in", type=float, default=0.8, help="fold-in share of held-out users (split users)")
    p.add_argument("--min-rating", type=float, default=None, help="keep interactions rated at least this")
    p.add_argument("--k-core", type=int, default=None, help="keep the k-core (users and items with >= k)")
    p.add_argument("--format", choices=FORMATS, default=None, help="file format of a path (default: detected)")
    p.add_argument("--columns", default=None, metavar="ROLE=NAME,...",
                   help="CSV/TSV/.inter header names, e.g. user=uid,item=iid,rating=r,timestamp=ts")
    p.add_argument("--sep", default=None, help="CSV/TSV separator, e.g. ';' or tab (default: detected)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")


def register(sub) -> None:
    p = sub.add_parser("data", help="list, inspect and download datasets",
                       description="List, inspect and download datasets.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("list", help="known datasets and where they are")
    q.set_defaults(func=_list)
    q = dsub.add_parser("info", help="users, items and interactions per split",
                        description="Load a dataset and print its size per split.")
    q.add_argument("dataset", metavar="NAME_OR_PATH",
                   help=f"a registry name ({', '.join(list_datasets())}) or a dataset folder/file")
    _load_options(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=_info)
    q = dsub.add_parser("get", help="download datasets into the data folder",
                        description="Download (or verify) registry datasets.")
    q.add_argument("names", nargs="+", metavar="NAME", help=", ".join(registry.names()))
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_get)
