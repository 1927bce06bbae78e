"""One exception type for every user-facing problem.

The command line prints ``DslrecError`` as a single line (no traceback); the
message names the problem and what to do about it.
"""

import contextlib
import signal
import threading
import warnings


class DslrecError(Exception):
    """A problem with the user's input, files or options (not a bug in dslrec)."""


def fail(message: str) -> "DslrecError":
    """Build a DslrecError; ``raise fail(...)`` reads naturally at call sites."""
    return DslrecError(message)


class DslrecWarning(UserWarning):
    """Something the user should know about their data or run, that does not stop it."""


_about: list[str] = []  # what the warnings being issued are about (innermost last)


@contextlib.contextmanager
def warnings_about(label: str):
    """Prefix the warnings issued inside with ``label``: a sweep names the run each warning comes from."""
    _about.append(label)
    try:
        yield
    finally:
        _about.pop()


def warn(message: str) -> None:
    """Issue a DslrecWarning: a standard Python warning, printed as one line ``dslrec: warning: ...``."""
    if _about:
        message = f"{_about[-1]}: {message}"
    warnings.warn(message, DslrecWarning, stacklevel=2)


_default_format = warnings.formatwarning


def _format(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, DslrecWarning):
        return f"dslrec: warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


warnings.formatwarning = _format


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, torchrun stopping the other ranks), raised as Ctrl-C's
    KeyboardInterrupt so that the same clean-up runs: a run that has not written its first checkpoint
    removes its folder, a sweep stops its workers."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside, SIGTERM raises ``Terminated`` in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
