"""``dslrec train``: train a backbone, dense or sparse, and write a run directory."""

from __future__ import annotations

import argparse

from dslrec.errors import DslrecError
from dslrec.sparse.config import GROWS, PRUNES, SCHEDULES, SCOPES

NAMED = ("model", "dataset", "epochs", "method", "density", "prune", "grow", "schedule", "scope",
         "delta_t", "zeta0", "device", "seed")


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (dense or sparse) and write a run directory",
        description="Train a backbone. Any setting can be given as --key value (see README, 'Settings').",
        epilog="example: dslrec train --model mf --dataset ml-100k --method dsl --density 0.2 --epochs 50",
    )
    p.add_argument("--model", choices=("mf", "lightgcn", "neumf", "multvae"), help="backbone (default mf)")
    p.add_argument("--dataset", help="registered name (dslrec data list), a folder or a file; default synthetic")
    p.add_argument("--config", help="YAML/JSON file of settings (command-line settings override it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run directory (default runs/DATE-MODEL-METHOD-DATASET)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run (only --epochs, --device, --eval_batch_size may differ from its config)")
    p.add_argument("--method", choices=("dense", "dsl", "static", "gmp", "oneshot", "lth", "pep"))
    p.add_argument("--density", type=float, help="fraction of sparsifiable weights kept active")
    p.add_argument("--prune", choices=PRUNES)
    p.add_argument("--grow", choices=GROWS)
    p.add_argument("--schedule", choices=SCHEDULES, help="DSL update-ratio schedule")
    p.add_argument("--scope", choices=SCOPES)
    p.add_argument("--delta-t", dest="delta_t", type=int, help="iterations between mask updates")
    p.add_argument("--zeta0", type=float, help="initial update ratio")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run, extra_settings=True)


def parse_extra(extra: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs for any other setting."""
    settings: dict[str, str] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) < 3:
            raise DslrecError(f"unexpected argument {token!r}; settings are given as --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise DslrecError(f"setting --{key} needs a value (--{key} VALUE)")
            value = extra[i + 1]
            i += 1
        settings[key.replace("-", "_")] = value
        i += 1
    return settings


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from dslrec.training.run import train

    settings = {k: getattr(args, k) for k in NAMED if getattr(args, k) is not None}
    settings.update(parse_extra(extra))
    if args.resume:
        # --config and --out are checked against the run (train refuses what would change it)
        summary = train(resume=args.resume, config_file=args.config, out=args.out, progress=not args.quiet,
                        **settings)
    else:
        summary = train(settings, config_file=args.config, out=args.out, progress=not args.quiet)
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    p = summary["params"]
    lines = [
        f"{summary['model']} / {summary['method']} on {summary['dataset']['name']}: "
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}",
        f"  {'split':<6}" + "".join(f"{k:>14}" for k in summary["test"]),
        f"  {'valid':<6}" + "".join(f"{summary['valid'].get(k, float('nan')):>14.4f}" for k in summary["test"]),
        f"  {'test':<6}" + "".join(f"{v:>14.4f}" for v in summary["test"].values()),
        f"  params: {p['active']:,} active of {p['total']:,} (peak {p['peak_active']:,}, "
        f"mean {p['mean_active']:,.0f} over the run)",
        f"  time: {summary['time']['train_s']:.1f}s training, {summary['time']['epoch_s']:.2f}s per epoch",
        f"  run written to {summary['run_dir']}",
    ]
    return "\n".join(lines)
