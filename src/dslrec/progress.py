"""Progress bars only where someone watches them.

A bar is drawn when it is wanted and stderr is a terminal (or in a Jupyter notebook,
where tqdm draws a widget instead); redirected to a file or a pipe, bars would fill
the log with carriage returns, so they are off and only the per-epoch lines remain.
"""

from __future__ import annotations

import sys


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and someone can see it."""
    from tqdm.auto import tqdm

    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    return tqdm(iterable, disable=not (enabled and (notebook or stderr_is_terminal())), **kwargs)
