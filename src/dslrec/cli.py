"""The ``dslrec`` command line.

Each subcommand lives with the code it drives and exposes ``register(sub)``,
which adds its parser and sets ``func``. Problems with the user's input are
``DslrecError`` and print as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dslrec import __version__
from dslrec.errors import DslrecError, Terminated, sigterm_as_interrupt

# module path of each subcommand group, in the order shown by --help
COMMANDS = ("dslrec.data.commands", "dslrec.training.commands", "dslrec.export.commands",
            "dslrec.experiments.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dslrec", description="Train recommenders sparse from scratch (Dynamic Sparse Learning)."
    )
    parser.add_argument("--version", action="version", version=f"dslrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    # dslrec's own warnings (DslrecWarning) print as one line, like its errors: see dslrec.errors
    return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)  # argument types may check paths (DslrecError)
        if extra and not getattr(args, "extra_settings", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        with sigterm_as_interrupt():  # kill cleans up as Ctrl-C does (a run's half-made folder goes)
            if getattr(args, "extra_settings", False):
                return int(args.func(args, extra) or 0)
            return int(args.func(args) or 0)
    except DslrecError as e:
        # one write, the newline included: the ranks of a torchrun launch share the terminal
        sys.stderr.write(f"dslrec: error{_rank_label()}: {e}\n")
        sys.stderr.flush()
        return 2
    except Terminated:
        print("dslrec: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as the shell reports a process the signal killed
    except KeyboardInterrupt:
        print("dslrec: interrupted", file=sys.stderr)
        return 130


def _rank_label() -> str:
    """`` (rank N)`` on the ranks after the first of a torchrun launch: each rank prints its error, and
    a reader can then tell the copies of one error (or which rank alone failed) apart."""
    try:
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        several = False
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if several and rank != "0" else ""


if __name__ == "__main__":
    sys.exit(main())
