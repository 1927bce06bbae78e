"""Files dslrec writes: temporary files that end up with a normal mode, and output paths
checked before anything is written (so that a bad ``--out`` is a one-line error).

Kept free of heavy imports: the command line checks paths while it parses its arguments.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dslrec.errors import DslrecError


def mkstemp(suffix: str = "", prefix: str = "tmp", dir: str | Path | None = None) -> tuple[int, str]:
    """``tempfile.mkstemp`` with the mode of a normal new file, ``0o666 & ~umask``, not 0600.

    Temporary files are renamed into place once complete, and keep their mode: mkstemp's
    0600 would make every run file and every dataset in a shared cache private to its writer.
    The kernel applies the umask (and any default ACL), as for ``open(path, "w")``.
    """
    folder = os.fspath(dir) if dir is not None else "."
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, flags, 0o666), os.path.abspath(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def _check_folders_above(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` is a folder we may write in."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DslrecError(f"{option} {path}: {parent} is a file, not a folder; "
                                  "choose a path that does not go through a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise DslrecError(f"{option} {path}: no permission to write in {parent}; choose another path")
            return


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` can be (or already is) a directory that dslrec writes files into."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise DslrecError(f"{option} {path} is an existing file, not a folder; pass a directory path")
    _check_folders_above(path, option)
    return path


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` can be written as a file (replacing an existing file, never a folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DslrecError(f"{option} {path} is a folder; pass a file path such as {path / 'model.dslrec'}")
    _check_folders_above(path, option)
    return path
