"""One exception type for every user-facing problem.

The command line prints ``DslrecError`` as a single line (no traceback); the
message names the problem and what to do about it.
"""


class DslrecError(Exception):
    """A problem with the user's input, files or options (not a bug in dslrec)."""


def fail(message: str) -> "DslrecError":
    """Build a DslrecError; ``raise fail(...)`` reads naturally at call sites."""
    return DslrecError(message)
