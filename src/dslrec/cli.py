"""The ``dslrec`` command line.

Each subcommand lives with the code it drives and exposes ``register(sub)``,
which adds its parser and sets ``func``. Problems with the user's input are
``DslrecError`` and print as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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
        print(f"dslrec: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("dslrec: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as the shell reports a process the signal killed
    except KeyboardInterrupt:
        print("dslrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
